//! The agent's side of enrollment: its TLS key, the certificate signing
//! request it sends with its enrollment token, and storage of both the key and
//! the certificate it gets back.
//!
//! The CSR's subject is only a courtesy: the CA names the envoy itself and
//! keeps nothing from the request but the public key.

use std::path::{Path, PathBuf};

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_ECDSA_P256_SHA256};

use crate::files::{self, FileError, PRIVATE_MODE};

#[derive(Debug, thiserror::Error)]
pub enum EnvoyError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("cannot generate the envoy TLS key: {0}")]
    KeyGeneration(rcgen::Error),
    #[error("{path}: not a PEM private key: {source}")]
    KeyPem { path: PathBuf, source: rcgen::Error },
    #[error("cannot build a certificate signing request for {envoy:?}: {source}")]
    Csr { envoy: String, source: rcgen::Error },
    #[error("{path}: no PEM certificate found")]
    CertPem { path: PathBuf },
}

/// The envoy's TLS private key (ECDSA P-256). Never printed.
pub struct EnvoyTlsKey {
    key: KeyPair,
}

impl std::fmt::Debug for EnvoyTlsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EnvoyTlsKey(<redacted>)")
    }
}

impl EnvoyTlsKey {
    pub fn generate() -> Result<Self, EnvoyError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(EnvoyError::KeyGeneration)?;
        Ok(Self { key })
    }

    /// A PEM certificate signing request with CN = `envoy_name`, signed by this key.
    pub fn csr(&self, envoy_name: &str) -> Result<String, EnvoyError> {
        let csr_err = |source| EnvoyError::Csr { envoy: envoy_name.to_string(), source };
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, envoy_name);
        params.distinguished_name = dn;
        params.serialize_request(&self.key).and_then(|csr| csr.pem()).map_err(csr_err)
    }

    /// The private key as PKCS#8 PEM, for rustls configs and storage.
    pub fn private_key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// The raw public key bytes (the uncompressed EC point).
    pub fn public_key_raw(&self) -> &[u8] {
        self.key.public_key_raw()
    }

    /// Writes the key to `path` atomically with mode 0600.
    pub fn save(&self, path: &Path) -> Result<(), EnvoyError> {
        files::write_atomic(path, self.private_key_pem().as_bytes(), PRIVATE_MODE)?;
        Ok(())
    }

    /// Loads a key saved by [`EnvoyTlsKey::save`], refusing a file that group
    /// or others can access.
    pub fn load(path: &Path) -> Result<Self, EnvoyError> {
        let pem = files::read_private(path)?;
        let key = KeyPair::from_pem(&pem).map_err(|source| EnvoyError::KeyPem { path: path.to_path_buf(), source })?;
        Ok(Self { key })
    }
}

/// Stores the envoy's certificate (or the CA certificate it pinned) with mode
/// 0600, replacing any previous one atomically.
pub fn save_cert(path: &Path, cert_pem: &str) -> Result<(), EnvoyError> {
    check_cert_pem(path, cert_pem)?;
    files::write_atomic(path, cert_pem.as_bytes(), PRIVATE_MODE)?;
    Ok(())
}

/// Loads a certificate stored by [`save_cert`].
pub fn load_cert(path: &Path) -> Result<String, EnvoyError> {
    let pem = files::read_public(path)?;
    check_cert_pem(path, &pem)?;
    Ok(pem)
}

fn check_cert_pem(path: &Path, cert_pem: &str) -> Result<(), EnvoyError> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map(drop)
        .map_err(|_| EnvoyError::CertPem { path: path.to_path_buf() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::{self, Permissions};
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn key_round_trips_with_private_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("envoy.key");
        let key = EnvoyTlsKey::generate().expect("generate");
        key.save(&path).expect("save");
        assert_eq!(fs::metadata(&path).expect("stat").permissions().mode() & 0o777, 0o600);
        let loaded = EnvoyTlsKey::load(&path).expect("load");
        assert_eq!(loaded.public_key_raw(), key.public_key_raw());
        assert_eq!(format!("{loaded:?}"), "EnvoyTlsKey(<redacted>)");

        fs::set_permissions(&path, Permissions::from_mode(0o640)).expect("chmod");
        assert!(matches!(EnvoyTlsKey::load(&path), Err(EnvoyError::File(FileError::TooOpen { .. }))));
    }

    #[test]
    fn cert_storage_checks_pem_and_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("envoy.pem");
        let ca = crate::FleetCa::generate("fleet").expect("ca");
        save_cert(&path, ca.cert_pem()).expect("save");
        assert_eq!(fs::metadata(&path).expect("stat").permissions().mode() & 0o777, 0o600);
        assert_eq!(load_cert(&path).expect("load"), ca.cert_pem());

        let bad = dir.path().join("bad.pem");
        let err = save_cert(&bad, "garbage").expect_err("not a certificate");
        assert!(err.to_string().contains("bad.pem"), "{err}");
        assert!(!bad.exists());
    }

    #[test]
    fn csr_carries_the_requested_name_and_key() {
        let key = EnvoyTlsKey::generate().expect("generate");
        let csr = key.csr("web-01").expect("csr");
        let parsed = rcgen::CertificateSigningRequestParams::from_pem(&csr).expect("valid csr");
        assert_eq!(
            parsed.params.distinguished_name.get(&DnType::CommonName),
            Some(&rcgen::DnValue::Utf8String("web-01".into()))
        );
        assert_eq!(rcgen::PublicKeyData::der_bytes(&parsed.public_key), key.public_key_raw());
    }
}
