//! Enrollment: trade a one-time token for a certificate from the fleet CA.
//!
//! The agent makes its TLS key and CSR, its ED25519 request-signing key and its
//! age X25519 identity (the server seals secrets to its recipient), connects
//! trusting only the pinned CA (by fingerprint or file), and stores what the
//! server returns. Private keys never leave the machine.

use base64::Engine as _;
use vigo_pki::{AgeIdentity, EnvoyTlsKey, PublicKey, SigningKey};
use vigo_proto::EnrollRequest;

use crate::files::write_atomic;
use crate::paths::{AgentPaths, AgentSettings};

/// How the agent knows the fleet CA before it has one.
pub enum CaTrust {
    Fingerprint(String),
    Pem(String),
}

pub struct EnrollArgs {
    pub server: String,
    pub grpc_port: u16,
    pub token: String,
    pub name: String,
    pub trust: CaTrust,
}

/// Enrolls this machine; returns its envoy name.
pub async fn enroll(paths: &AgentPaths, args: EnrollArgs) -> anyhow::Result<String> {
    if paths.tls_cert().exists() {
        anyhow::bail!("this machine is already enrolled ({} exists)", paths.tls_cert().display());
    }
    let tls_key = EnvoyTlsKey::generate()?;
    let signing = SigningKey::generate();
    let age = AgeIdentity::generate();
    let csr = tls_key.csr(&args.name)?;
    let (config, pinned) = match &args.trust {
        CaTrust::Fingerprint(fp) => {
            let pin = vigo_pki::pinned::PinnedCa::new(fp);
            (pin.client_config()?, Some(pin))
        }
        CaTrust::Pem(pem) => (vigo_pki::server_client_config(pem, None)?, None),
    };
    let mut client = crate::client::connect(&args.server, args.grpc_port, config).await.map_err(|e| {
        if pinned.is_some() { anyhow::anyhow!("{e} (does --ca-fingerprint match the server's CA?)") } else { e }
    })?;
    let request = EnrollRequest {
        token: args.token.trim().to_string(),
        hostname: args.name.clone(),
        csr_pem: csr,
        signing_public_key: signing.public_key().as_bytes().to_vec(),
        age_recipient: age.recipient(),
    };
    let reply = client
        .enroll(request)
        .await
        .map_err(|s| anyhow::anyhow!("the server refused enrollment: {}", s.message()))?
        .into_inner();
    // The CA this agent trusts: the one whose fingerprint it pinned (seen in the
    // handshake), or the file it was given. The server's answer must name the same
    // CA, and the bundle key it hands out must carry that CA's endorsement.
    let trusted = match (&pinned, &args.trust) {
        (Some(pin), _) => pin.ca_pem().ok_or_else(|| anyhow::anyhow!("no pinned CA seen in the handshake"))?,
        (None, CaTrust::Pem(pem)) => pem.clone(),
        (None, CaTrust::Fingerprint(_)) => unreachable!("a fingerprint is always pinned"),
    };
    if vigo_pki::tls::pem_fingerprint(&trusted)? != vigo_pki::tls::pem_fingerprint(&reply.ca_pem)? {
        anyhow::bail!("the server returned a CA other than the pinned one");
    }
    let bundle_key = check_bundle_key(&trusted, &reply.bundle_public_key, &reply.bundle_key_endorsement)?;
    std::fs::create_dir_all(&paths.state).map_err(|e| anyhow::anyhow!("{}: {e}", paths.state.display()))?;
    tls_key.save(&paths.tls_key())?;
    signing.save(&paths.signing_key())?;
    age.save(&paths.age_key())?;
    write_atomic(&paths.ca(), trusted.as_bytes(), 0o644)?;
    write_atomic(&paths.bundle_pub(), bundle_key.to_b64().as_bytes(), 0o644)?;
    write_atomic(&paths.tls_cert(), reply.certificate_pem.as_bytes(), 0o644)?;
    AgentSettings {
        name: reply.envoy.clone(),
        server: args.server,
        grpc_port: args.grpc_port,
        interval_secs: reply.interval_secs,
    }
    .save(paths)?;
    Ok(reply.envoy)
}

/// The bundle-signing key the server handed out, accepted only with the trusted
/// CA's endorsement: a key the CA did not endorse would let whoever answered sign
/// this machine's policy.
pub fn check_bundle_key(ca_pem: &str, key: &[u8], endorsement: &[u8]) -> anyhow::Result<PublicKey> {
    let text = base64::engine::general_purpose::STANDARD.encode(key);
    let key = PublicKey::from_b64(&text).map_err(|e| anyhow::anyhow!("the server's bundle key: {e}"))?;
    vigo_pki::verify_bundle_key_endorsement(ca_pem, &key, endorsement)
        .map_err(|e| anyhow::anyhow!("{e}; refusing to enroll (is this the fleet's server?)"))?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::check_bundle_key;

    /// A bundle key is taken only with the pinned CA's endorsement of that very key.
    #[test]
    fn an_unendorsed_bundle_key_is_refused() {
        let ca = vigo_pki::FleetCa::generate("fleet").expect("ca");
        let key = vigo_pki::SigningKey::generate().public_key();
        let endorsement = ca.endorse_bundle_key(&key).expect("endorse");
        assert_eq!(check_bundle_key(ca.cert_pem(), key.as_bytes(), &endorsement).expect("endorsed"), key);

        let swapped = vigo_pki::SigningKey::generate().public_key();
        let err = check_bundle_key(ca.cert_pem(), swapped.as_bytes(), &endorsement).expect_err("swapped key");
        assert!(err.to_string().contains("not endorsed"), "{err}");
        let err = check_bundle_key(ca.cert_pem(), key.as_bytes(), &[]).expect_err("no endorsement");
        assert!(err.to_string().contains("refusing to enroll"), "{err}");
        let other = vigo_pki::FleetCa::generate("other").expect("ca");
        let foreign = other.endorse_bundle_key(&key).expect("endorse");
        assert!(check_bundle_key(ca.cert_pem(), key.as_bytes(), &foreign).is_err(), "another CA's endorsement");
        assert!(check_bundle_key(ca.cert_pem(), &[1, 2, 3], &endorsement).is_err(), "not a key");
    }
}
