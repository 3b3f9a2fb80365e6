//! `server.yaml`: listen addresses, check-in interval, storage backend and secret provider.

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
    /// Where `secret:<path>` values are resolved at publish.
    pub secrets: Secrets,
    /// Days a run report is kept; each envoy's newest report is kept regardless.
    /// 0 keeps every report.
    pub report_retention_days: u32,
}

/// The longest a secret command may run.
pub const MAX_SECRET_TIMEOUT_SECS: u64 = 300;

/// `secrets:` in `server.yaml`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Secrets {
    pub provider: SecretProviderKind,
    /// For `provider: command`: the program (an absolute path) and its first
    /// arguments; `--` and the secret's path are appended as the last arguments.
    pub command: Option<Vec<String>>,
    /// For `provider: command`: seconds the program may run (1–300).
    pub timeout_secs: u64,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum SecretProviderKind {
    /// One file per secret under `<state-dir>/secrets/`.
    #[default]
    File,
    /// A program prints the secret on its standard output.
    Command,
}

impl Default for Secrets {
    fn default() -> Self {
        Self { provider: SecretProviderKind::File, command: None, timeout_secs: 10 }
    }
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
        Self {
            listen: Listen::default(),
            interval_secs: 60,
            storage: Storage::default(),
            bundle_expiry_secs: None,
            secrets: Secrets::default(),
            report_retention_days: 14,
        }
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
        self.secrets.check().map_err(|message| SettingsError::Invalid { path: shown.to_string(), message })
    }
}

impl Secrets {
    fn check(&self) -> Result<(), String> {
        if !(1..=MAX_SECRET_TIMEOUT_SECS).contains(&self.timeout_secs) {
            return Err(format!(
                "secrets.timeout_secs {} is out of range (1 to {MAX_SECRET_TIMEOUT_SECS})",
                self.timeout_secs
            ));
        }
        match (self.provider, &self.command) {
            (SecretProviderKind::File, None) => Ok(()),
            (SecretProviderKind::File, Some(_)) => Err("secrets.command is only used with `provider: command`".into()),
            (SecretProviderKind::Command, None) => {
                Err("secrets.provider command needs secrets.command (e.g. [\"/usr/local/bin/vault-get\"])".into())
            }
            (SecretProviderKind::Command, Some(argv)) => match argv.first() {
                // No search path: the program that sees every secret is named exactly.
                Some(program) if Path::new(program).is_absolute() => Ok(()),
                Some(program) => Err(format!("secrets.command program `{program}` must be an absolute path")),
                None => Err("secrets.command is empty; name the program to run".into()),
            },
        }
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
        assert_eq!(s.report_retention_days, 14);
        let s = Settings::parse("s", "report_retention_days: 0\n").expect("keep every report");
        assert_eq!(s.report_retention_days, 0);
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

    #[test]
    fn secret_providers() {
        let s = Settings::parse("s", "").expect("defaults");
        assert_eq!(s.secrets.provider, SecretProviderKind::File);
        let s = Settings::parse(
            "s",
            "secrets:\n  provider: command\n  command: [/usr/local/bin/vault-get, --field, value]\n  timeout_secs: 3\n",
        )
        .expect("command");
        assert_eq!(s.secrets.command.as_deref().map(<[String]>::len), Some(3));
        assert_eq!(s.secrets.timeout_secs, 3);
        let cases = [
            ("secrets:\n  provider: command\n", "needs secrets.command"),
            ("secrets:\n  provider: command\n  command: []\n", "secrets.command is empty"),
            ("secrets:\n  provider: command\n  command: [vault-get]\n", "must be an absolute path"),
            ("secrets:\n  command: [/bin/true]\n", "only used with `provider: command`"),
            ("secrets:\n  timeout_secs: 0\n", "out of range"),
            ("secrets:\n  provider: vault\n", "vault"),
            ("secrets:\n  dir: /tmp\n", "dir"),
        ];
        for (text, want) in cases {
            let e = Settings::parse("server.yaml", text).expect_err(text).to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
    }
}
