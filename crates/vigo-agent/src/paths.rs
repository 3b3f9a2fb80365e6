//! Where the agent keeps its settings and state.
//!
//! `/etc/vigo` holds `agent.yaml`; `/var/lib/vigo` holds keys, certificates, the
//! cached bundle and run state. `VIGO_ETC_DIR` and `VIGO_STATE_DIR` move both
//! (for the quickstart and for tests).

use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct AgentPaths {
    pub etc: PathBuf,
    pub state: PathBuf,
}

impl AgentPaths {
    pub fn from_env() -> Self {
        let etc = std::env::var_os("VIGO_ETC_DIR").map_or_else(|| PathBuf::from("/etc/vigo"), PathBuf::from);
        let state = std::env::var_os("VIGO_STATE_DIR").map_or_else(|| PathBuf::from("/var/lib/vigo"), PathBuf::from);
        Self { etc, state }
    }
    pub fn settings(&self) -> PathBuf {
        self.etc.join("agent.yaml")
    }
    pub fn tls_key(&self) -> PathBuf {
        self.state.join("tls.key")
    }
    pub fn tls_cert(&self) -> PathBuf {
        self.state.join("tls.crt")
    }
    pub fn ca(&self) -> PathBuf {
        self.state.join("ca.crt")
    }
    pub fn signing_key(&self) -> PathBuf {
        self.state.join("signing.key")
    }
    /// The age X25519 identity secrets in bundles are sealed to (0600).
    pub fn age_key(&self) -> PathBuf {
        self.state.join("age.key")
    }
    pub fn bundle_pub(&self) -> PathBuf {
        self.state.join("bundle.pub")
    }
    pub fn bundle(&self) -> PathBuf {
        self.state.join("bundle.json")
    }
    pub fn run_state(&self) -> PathBuf {
        self.state.join("state.json")
    }
}

/// `agent.yaml`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AgentSettings {
    /// This envoy's name (its hostname at enrollment).
    pub name: String,
    /// The server's host name or address.
    pub server: String,
    #[serde(default = "default_grpc_port")]
    pub grpc_port: u16,
    /// Seconds between check-ins (the server may change it).
    #[serde(default = "default_interval")]
    pub interval_secs: u32,
}

fn default_grpc_port() -> u16 {
    1530
}

fn default_interval() -> u32 {
    60
}

impl AgentSettings {
    pub fn load(paths: &AgentPaths) -> anyhow::Result<Self> {
        let path = paths.settings();
        let text = std::fs::read_to_string(&path)
            .map_err(|e| anyhow::anyhow!("{}: {e} (is this machine enrolled? run `vigo enroll`)", path.display()))?;
        serde_saphyr::from_str_with_options(&text, vigo_model::raw::options())
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    pub fn save(&self, paths: &AgentPaths) -> anyhow::Result<()> {
        let text = serde_saphyr::to_string(self).map_err(|e| anyhow::anyhow!("agent.yaml: {e}"))?;
        crate::files::write_atomic(&paths.settings(), text.as_bytes(), 0o644)
    }
}
