//! Enrollment: trade a one-time token for a certificate from the fleet CA.
//!
//! The agent makes its TLS key and CSR, its ED25519 request-signing key and its
//! age X25519 identity (the server seals secrets to its recipient), connects
//! trusting only the pinned CA (by fingerprint or file), and stores what the
//! server returns. Private keys never leave the machine.

use base64::Engine as _;
use vigo_pki::{AgeIdentity, EnvoyTlsKey, SigningKey};
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
        CaTrust::Pem(pem) => (vigo_pki::client_config(pem, None)?, None),
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
    if let Some(pin) = &pinned {
        let seen = pin.ca_pem().ok_or_else(|| anyhow::anyhow!("no pinned CA seen in the handshake"))?;
        if vigo_pki::tls::pem_fingerprint(&seen)? != vigo_pki::tls::pem_fingerprint(&reply.ca_pem)? {
            anyhow::bail!("the server returned a CA other than the pinned one");
        }
    }
    std::fs::create_dir_all(&paths.state).map_err(|e| anyhow::anyhow!("{}: {e}", paths.state.display()))?;
    tls_key.save(&paths.tls_key())?;
    signing.save(&paths.signing_key())?;
    age.save(&paths.age_key())?;
    write_atomic(&paths.ca(), reply.ca_pem.as_bytes(), 0o644)?;
    let bundle_pub = base64::engine::general_purpose::STANDARD.encode(&reply.bundle_public_key);
    write_atomic(&paths.bundle_pub(), bundle_pub.as_bytes(), 0o644)?;
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
