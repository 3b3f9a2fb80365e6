//! The fleet CA: one self-signed ECDSA P-256 root that issues the server's TLS
//! certificate and signs the envoys' client certificates.
//!
//! The CA decides every identity it certifies. An envoy's CSR contributes its
//! public key and nothing else: subject, SANs and extensions it asks for are
//! ignored, because the server names the envoy from its enrollment token.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
};
use rustls::pki_types::{CertificateDer, DnsName, pem::PemObject};
use time::{Duration, OffsetDateTime};

use crate::files::{self, FileError, PRIVATE_MODE, PUBLIC_MODE};

/// File name of the CA certificate inside the CA directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// File name of the CA private key inside the CA directory.
pub const CA_KEY_FILE: &str = "ca.key";
/// How long a new fleet CA is valid.
pub const CA_VALIDITY_DAYS: i64 = 3650;
/// How long a server certificate is valid.
pub const SERVER_CERT_VALIDITY_DAYS: u32 = 825;
/// Upper bound for an envoy certificate's validity.
pub const MAX_ENVOY_VALIDITY_DAYS: u32 = 3650;
/// Back-dating of `notBefore`, so a peer whose clock runs a little behind
/// does not reject a certificate issued a moment ago.
const CLOCK_SKEW: Duration = Duration::hours(1);

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("cannot generate the fleet CA key: {0}")]
    KeyGeneration(rcgen::Error),
    #[error("cannot build the fleet CA certificate {common_name:?}: {source}")]
    SelfSign { common_name: String, source: rcgen::Error },
    #[error("{path}: not a PEM certificate")]
    CertPem { path: PathBuf },
    #[error("{path}: not a usable CA certificate: {source}")]
    CertParse { path: PathBuf, source: rcgen::Error },
    #[error("{path}: not a PEM private key: {source}")]
    KeyPem { path: PathBuf, source: rcgen::Error },
    #[error("{key_path} does not belong to the certificate in {cert_path}")]
    KeyMismatch { cert_path: PathBuf, key_path: PathBuf },
    #[error("a server certificate needs at least one DNS name or IP address")]
    NoNames,
    #[error("{name:?} is neither a valid DNS name nor an IP address")]
    BadName { name: String },
    #[error("envoy name {name:?} is not a valid DNS name")]
    BadEnvoyName { name: String },
    #[error("validity of {days} days for envoy {envoy:?} is outside 1..={MAX_ENVOY_VALIDITY_DAYS}")]
    BadValidity { envoy: String, days: u32 },
    #[error("certificate signing request for envoy {envoy:?} is invalid: {source}")]
    Csr { envoy: String, source: rcgen::Error },
    #[error("cannot issue a certificate for {subject:?}: {source}")]
    Issue { subject: String, source: rcgen::Error },
}

/// The fleet certificate authority: its certificate and signing key.
pub struct FleetCa {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for FleetCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetCa").field("fingerprint", &self.fingerprint()).finish_non_exhaustive()
    }
}

impl FleetCa {
    /// Creates a new CA with a fresh P-256 key, valid for [`CA_VALIDITY_DAYS`].
    pub fn generate(common_name: &str) -> Result<Self, CaError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(CaError::KeyGeneration)?;
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name_dn(common_name);
        // Path length 0: the fleet CA signs leaves only, never sub-CAs.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        params.serial_number = Some(random_serial());
        params.not_before = now - CLOCK_SKEW;
        params.not_after = now + Duration::days(CA_VALIDITY_DAYS);
        let cert = params
            .self_signed(&key)
            .map_err(|source| CaError::SelfSign { common_name: common_name.to_string(), source })?;
        Ok(Self { cert_pem: cert.pem(), cert_der: cert.der().clone(), issuer: Issuer::new(params, key) })
    }

    /// Writes `ca.pem` (0644) and `ca.key` (0600) into `dir`, creating it if
    /// needed. Each file is replaced atomically.
    pub fn save(&self, dir: &Path) -> Result<(), CaError> {
        files::ensure_dir(dir)?;
        // Key first: a crash in between leaves a new key with the old cert,
        // which `load` detects as a mismatch instead of silently pairing them.
        let key_pem = self.issuer.key().serialize_pem();
        files::write_atomic(&dir.join(CA_KEY_FILE), key_pem.as_bytes(), PRIVATE_MODE)?;
        files::write_atomic(&dir.join(CA_CERT_FILE), self.cert_pem.as_bytes(), PUBLIC_MODE)?;
        Ok(())
    }

    /// Loads the CA saved by [`FleetCa::save`]. Refuses a key file that group
    /// or others can access, and a key that does not match the certificate.
    pub fn load(dir: &Path) -> Result<Self, CaError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        let key_pem = files::read_private(&key_path)?;
        let cert_pem = files::read_public(&cert_path)?;

        let key = KeyPair::from_pem(&key_pem).map_err(|source| CaError::KeyPem { path: key_path.clone(), source })?;
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|_| CaError::CertPem { path: cert_path.clone() })?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&cert_der).map_err(|_| CaError::CertParse {
            path: cert_path.clone(),
            source: rcgen::Error::CouldNotParseCertificate,
        })?;
        if parsed.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(CaError::KeyMismatch { cert_path, key_path });
        }
        let issuer = Issuer::from_ca_cert_der(&cert_der, key)
            .map_err(|source| CaError::CertParse { path: cert_path.clone(), source })?;
        Ok(Self { cert_pem, cert_der, issuer })
    }

    /// The CA certificate in PEM, as handed to agents and TLS configs.
    #[cfg(test)]
    pub(crate) fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    pub(crate) fn issuer(&self) -> &Issuer<'static, KeyPair> {
        &self.issuer
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// SHA-256 of the CA certificate's DER as lowercase hex: what agents pin
    /// with `--ca-fingerprint` before trusting a server they enroll with.
    pub fn fingerprint(&self) -> String {
        crate::tls::cert_fingerprint(&self.cert_der)
    }

    /// Issues a server certificate for `names` (DNS names and IP addresses),
    /// returning `(cert_pem, key_pem)`. The first name becomes the CN. Its extended
    /// key usage is serverAuth plus the fleet server purpose
    /// ([`crate::fleet_server`]), which only this certificate carries.
    pub fn issue_server_cert(&self, names: &[String]) -> Result<(String, String), CaError> {
        let first = names.first().ok_or(CaError::NoNames)?;
        let sans = names.iter().map(|name| server_san(name)).collect::<Result<Vec<_>, _>>()?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(CaError::KeyGeneration)?;
        let mut params = leaf_params(first, SERVER_CERT_VALIDITY_DAYS);
        params.subject_alt_names = sans;
        // serverAuth and the fleet server purpose, which no envoy certificate carries.
        params.custom_extensions = vec![rcgen::CustomExtension::from_oid_content(
            &crate::fleet_server::EXT_KEY_USAGE_OID,
            crate::fleet_server::server_ext_key_usage(),
        )];
        let cert =
            params.signed_by(&key, &self.issuer).map_err(|source| CaError::Issue { subject: first.clone(), source })?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// Signs an envoy's CSR into a client certificate for `envoy_name`.
    ///
    /// Only the CSR's public key is used (its self-signature is checked first,
    /// proving the envoy holds the private key). The certificate carries
    /// CN = SAN DNS = `envoy_name`, EKU clientAuth and serverAuth (the same
    /// certificate serves the swarm peer port), and a random serial.
    pub fn sign_envoy_csr(&self, csr_pem: &str, envoy_name: &str, validity_days: u32) -> Result<String, CaError> {
        let envoy = envoy_name.to_string();
        let dns = DnsName::try_from(envoy_name).map_err(|_| CaError::BadEnvoyName { name: envoy.clone() })?;
        if !(1..=MAX_ENVOY_VALIDITY_DAYS).contains(&validity_days) {
            return Err(CaError::BadValidity { envoy, days: validity_days });
        }
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|source| CaError::Csr { envoy: envoy.clone(), source })?;

        let mut params = leaf_params(envoy_name, validity_days);
        let san = dns_san(dns.as_ref()).ok_or_else(|| CaError::BadEnvoyName { name: envoy.clone() })?;
        params.subject_alt_names = vec![san];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth, ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(|source| CaError::Issue { subject: envoy, source })?;
        Ok(cert.pem())
    }
}

fn common_name_dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

fn leaf_params(common_name: &str, validity_days: u32) -> CertificateParams {
    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    params.distinguished_name = common_name_dn(common_name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.serial_number = Some(random_serial());
    params.not_before = now - CLOCK_SKEW;
    params.not_after = now + Duration::days(i64::from(validity_days));
    params.use_authority_key_identifier_extension = true;
    params
}

fn server_san(name: &str) -> Result<SanType, CaError> {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    DnsName::try_from(name)
        .ok()
        .and_then(|dns| dns_san(dns.as_ref()))
        .ok_or_else(|| CaError::BadName { name: name.to_string() })
}

fn dns_san(name: &str) -> Option<SanType> {
    Some(SanType::DnsName(name.to_string().try_into().ok()?))
}

/// 128 random bits with the sign bit cleared (serials must be positive) and a
/// non-zero leading byte so the DER encoding keeps all sixteen bytes.
fn random_serial() -> SerialNumber {
    let mut bytes = crate::random_bytes::<16>();
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    SerialNumber::from_slice(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::{self, Permissions};
    use std::os::unix::fs::PermissionsExt;
    use x509_parser::extensions::GeneralName;

    fn parse_pem(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).expect("pem certificate")
    }

    #[test]
    fn save_load_round_trip_keeps_identity_and_modes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca_dir = dir.path().join("ca");
        let ca = FleetCa::generate("Vigo test fleet").expect("generate");
        ca.save(&ca_dir).expect("save");

        let mode = |name: &str| fs::metadata(ca_dir.join(name)).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(CA_CERT_FILE), 0o644);
        assert_eq!(mode(CA_KEY_FILE), 0o600);

        let loaded = FleetCa::load(&ca_dir).expect("load");
        assert_eq!(loaded.fingerprint(), ca.fingerprint());
        assert_eq!(loaded.cert_pem(), ca.cert_pem());
        assert_eq!(ca.fingerprint().len(), 64);
        assert!(ca.fingerprint().chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));

        // The loaded CA can still issue: its certificate chains to the original.
        let (cert_pem, _key) = loaded.issue_server_cert(&["vigo.example".into()]).expect("issue");
        let der = parse_pem(&cert_pem);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("parse");
        let (_, ca_cert) = x509_parser::parse_x509_certificate(&ca.cert_der).expect("parse ca");
        cert.verify_signature(Some(ca_cert.public_key())).expect("signed by the original CA");
    }

    #[test]
    fn load_refuses_a_key_readable_by_others() {
        let dir = tempfile::tempdir().expect("tempdir");
        FleetCa::generate("fleet").expect("generate").save(dir.path()).expect("save");
        let key_path = dir.path().join(CA_KEY_FILE);
        fs::set_permissions(&key_path, Permissions::from_mode(0o644)).expect("chmod");
        let err = FleetCa::load(dir.path()).expect_err("world-readable key must be refused");
        assert!(matches!(err, CaError::File(FileError::TooOpen { .. })), "{err}");
        assert!(err.to_string().contains("ca.key"), "message names the file: {err}");
    }

    #[test]
    fn load_refuses_a_key_from_another_ca() {
        let dir = tempfile::tempdir().expect("tempdir");
        let other = tempfile::tempdir().expect("tempdir");
        FleetCa::generate("one").expect("generate").save(dir.path()).expect("save");
        FleetCa::generate("two").expect("generate").save(other.path()).expect("save");
        fs::copy(other.path().join(CA_KEY_FILE), dir.path().join(CA_KEY_FILE)).expect("copy");
        let err = FleetCa::load(dir.path()).expect_err("mismatched key");
        assert!(matches!(err, CaError::KeyMismatch { .. }), "{err}");
    }

    #[test]
    fn csr_identity_is_decided_by_the_ca() {
        let ca = FleetCa::generate("fleet").expect("generate");
        let key = crate::EnvoyTlsKey::generate().expect("key");
        // The envoy asks to be someone else; the CA names it anyway.
        let csr = key.csr("admin.evil.example").expect("csr");
        let cert_pem = ca.sign_envoy_csr(&csr, "web-01.example", 30).expect("sign");
        let der = parse_pem(&cert_pem);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("parse");

        let cn: Vec<_> = cert.subject().iter_common_name().map(|cn| cn.as_str().expect("utf8")).collect();
        assert_eq!(cn, ["web-01.example"]);
        let san = cert.subject_alternative_name().expect("san ok").expect("san present");
        let names: Vec<_> = san.value.general_names.iter().collect();
        assert_eq!(names, [&GeneralName::DNSName("web-01.example")]);
        let eku = cert.extended_key_usage().expect("eku ok").expect("eku present").value;
        assert!(eku.client_auth && eku.server_auth);
        assert!(!cert.is_ca());
        assert_eq!(cert.public_key().subject_public_key.data.as_ref(), key.public_key_raw(), "certifies the CSR's key");
        let days = (cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp()) / 86_400;
        assert_eq!(days, 30, "30 days plus the one-hour back-dating");
    }

    #[test]
    fn serials_are_random() {
        let ca = FleetCa::generate("fleet").expect("generate");
        let key = crate::EnvoyTlsKey::generate().expect("key");
        let csr = key.csr("a").expect("csr");
        let serial = |pem: String| {
            let der = parse_pem(&pem);
            let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("parse");
            cert.raw_serial().to_vec()
        };
        let one = serial(ca.sign_envoy_csr(&csr, "a", 1).expect("sign"));
        let two = serial(ca.sign_envoy_csr(&csr, "a", 1).expect("sign"));
        assert_eq!(one.len(), 16);
        assert_ne!(one, two);
    }

    #[test]
    fn bad_inputs_are_refused_with_the_culprit_named() {
        let ca = FleetCa::generate("fleet").expect("generate");
        let csr = crate::EnvoyTlsKey::generate().expect("key").csr("x").expect("csr");
        let cases: Vec<(Result<String, CaError>, &str)> = vec![
            (ca.sign_envoy_csr(&csr, "bad name", 30), "\"bad name\""),
            (ca.sign_envoy_csr(&csr, "", 30), "envoy name \"\""),
            (ca.sign_envoy_csr(&csr, "ok", 0), "0 days"),
            (ca.sign_envoy_csr("not a csr", "ok", 30), "envoy \"ok\""),
            (ca.issue_server_cert(&["ok".into(), "no way".into()]).map(|p| p.0), "\"no way\""),
            (ca.issue_server_cert(&[]).map(|p| p.0), "at least one"),
        ];
        for (result, needle) in cases {
            let err = result.expect_err(needle);
            assert!(err.to_string().contains(needle), "{err} should mention {needle}");
        }
    }

    #[test]
    fn a_tampered_csr_is_refused() {
        let ca = FleetCa::generate("fleet").expect("generate");
        let csr_pem = crate::EnvoyTlsKey::generate().expect("key").csr("x").expect("csr");
        let mut der = pem::parse(&csr_pem).expect("pem").into_contents();
        // Flip a bit inside the subject: the self-signature no longer matches.
        let at = der.len() / 3;
        der[at] ^= 0x01;
        let tampered = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der));
        assert!(matches!(ca.sign_envoy_csr(&tampered, "x", 30), Err(CaError::Csr { .. })));
    }

    #[test]
    fn server_cert_carries_dns_and_ip_names() {
        let ca = FleetCa::generate("fleet").expect("generate");
        let (cert_pem, key_pem) =
            ca.issue_server_cert(&["vigo.example".into(), "127.0.0.1".into(), "::1".into()]).expect("issue");
        assert!(key_pem.contains("PRIVATE KEY"));
        let der = parse_pem(&cert_pem);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("parse");
        let san = cert.subject_alternative_name().expect("ok").expect("present");
        assert_eq!(san.value.general_names.len(), 3);
        assert!(san.value.general_names.contains(&GeneralName::IPAddress(&[127, 0, 0, 1])));
        let eku = cert.extended_key_usage().expect("ok").expect("present").value;
        assert!(eku.server_auth && !eku.client_auth);
    }
}
