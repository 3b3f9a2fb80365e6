//! `server.yaml`: listen addresses, check-in interval and storage backend.

use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;

/// The shortest check-in interval an operator may set.
pub const MIN_INTERVAL_SECS: u32 = 15;

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub listen: Listen,
    /// Seconds between agent check-ins (at least 15).
    pub interval_secs: u32,
    pub storage: Storage,
    /// Seconds after a publish during which agents that cannot reach the server keep
    /// enforcing its bundles; past it they refuse to converge offline until they hear
    /// from the server again. Unset: bundles never expire. Online agents are unaffected.
    pub bundle_expiry_secs: Option<u64>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Listen {
    /// gRPC for agents.
    pub grpc: SocketAddr,
    /// REST API and web UI.
    pub api: SocketAddr,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Storage {
    pub backend: Backend,
    /// PostgreSQL URL (with the user in it); unused for SQLite.
    pub url: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    #[default]
    Sqlite,
    Postgres,
}

impl Default for Listen {
    fn default() -> Self {
        Self { grpc: ([0, 0, 0, 0], 1530).into(), api: ([0, 0, 0, 0], 8443).into() }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self { listen: Listen::default(), interval_secs: 60, storage: Storage::default(), bundle_expiry_secs: None }
    }
}

/// Why `server.yaml` could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

impl Settings {
    /// Reads `server.yaml` from the config directory; a missing file means defaults.
    pub fn load(config_dir: &Path) -> Result<Self, SettingsError> {
        let path = config_dir.join("server.yaml");
        let shown = path.display().to_string();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(SettingsError::Invalid { path: shown, message: e.to_string() }),
        };
        Self::parse(&shown, &text)
    }

    pub fn parse(shown: &str, text: &str) -> Result<Self, SettingsError> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let s: Settings = serde_saphyr::from_str_with_options(text, vigo_model::raw::options()).map_err(|e| {
            let (pos, msg) = vigo_model::raw::yaml_error(&e);
            SettingsError::Invalid { path: format!("{shown}:{}:{}", pos.line, pos.col), message: msg }
        })?;
        s.check(shown)?;
        Ok(s)
    }

    fn check(&self, shown: &str) -> Result<(), SettingsError> {
        if self.interval_secs < MIN_INTERVAL_SECS {
            return Err(SettingsError::Invalid {
                path: shown.to_string(),
                message: format!("interval_secs {} is below the minimum of {MIN_INTERVAL_SECS}", self.interval_secs),
            });
        }
        if self.storage.backend == Backend::Postgres && self.storage.url.is_none() {
            return Err(SettingsError::Invalid {
                path: shown.to_string(),
                message: "storage.backend postgres needs storage.url (postgres://user@host/db)".into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        assert_eq!(Settings::parse("s", "").expect("empty"), Settings::default());
        let s = Settings::parse("s", "interval_secs: 15\nlisten:\n  grpc: 127.0.0.1:1530\n").expect("valid");
        assert_eq!(s.interval_secs, 15);
        assert_eq!(s.listen.grpc, "127.0.0.1:1530".parse().expect("addr"));
        assert_eq!(s.listen.api, Listen::default().api);
    }

    #[test]
    fn bad_settings_name_the_problem() {
        let e = Settings::parse("server.yaml", "interval_secs: 5\n").expect_err("too short").to_string();
        assert!(e.contains("minimum of 15"), "{e}");
        let e = Settings::parse("server.yaml", "intervall: 20\n").expect_err("unknown").to_string();
        assert!(e.contains("server.yaml:1:1") && e.contains("intervall"), "{e}");
        let e = Settings::parse("server.yaml", "storage:\n  backend: postgres\n").expect_err("no url").to_string();
        assert!(e.contains("storage.url"), "{e}");
    }
}
