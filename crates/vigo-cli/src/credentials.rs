//! Which server, admin token and CA certificate a command uses.
//!
//! Each of the three is looked up on its own, first match wins: command-line
//! flag, then environment (`VIGO_SERVER`, `VIGO_TOKEN` holding the token itself,
//! `VIGO_CA`), then the file `vigocli login` saved. Every value remembers where it
//! came from so an error can point at the place to fix.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

/// The port vigosrv serves its REST API on unless told otherwise.
pub const DEFAULT_API_PORT: u16 = 8443;

/// Flags every command accepts, before or after the subcommand.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConnectionArgs {
    /// The server's REST API, such as `https://vigo.example.com:8443` [env: VIGO_SERVER].
    #[arg(long, global = true, value_name = "URL")]
    pub server: Option<String>,
    /// A file holding the admin token [env: VIGO_TOKEN holds the token itself].
    #[arg(long, global = true, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// The fleet CA certificate, `<state dir>/ca/ca.pem` on the server [env: VIGO_CA].
    #[arg(long, global = true, value_name = "PATH")]
    pub ca: Option<PathBuf>,
}

/// Everything needed to talk to a server.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// Base URL without a trailing slash, such as `https://host:8443`.
    pub server: String,
    pub token: String,
    pub ca_pem: String,
    /// Where the CA came from, for TLS error messages.
    pub ca_source: String,
}

/// What `vigocli login` saves (mode 0600: it holds the admin token).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Saved {
    pub server: String,
    pub token: String,
    /// The CA certificate itself, so the login survives the file it came from.
    pub ca: String,
}

/// Where `vigocli login` saves: `$XDG_CONFIG_HOME/vigo/cli.yaml`, else `~/.config/vigo/cli.yaml`.
pub fn saved_path() -> Option<PathBuf> {
    let non_empty = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    let base = non_empty("XDG_CONFIG_HOME").or_else(|| non_empty("HOME").map(|h| h.join(".config")))?;
    Some(base.join("vigo").join("cli.yaml"))
}

/// A value and where it came from.
struct Found {
    value: String,
    source: String,
}

impl ConnectionArgs {
    /// Resolves the three settings: flags, then environment, then the saved login.
    pub fn resolve(&self) -> anyhow::Result<Credentials> {
        let saved_path = saved_path();
        let saved = match &saved_path {
            Some(p) => load_saved(p)?,
            None => None,
        };
        let shown = saved_path.as_deref().map_or_else(|| "the saved login".to_string(), |p| p.display().to_string());
        let from_saved =
            |f: fn(&Saved) -> &String| saved.as_ref().map(|s| Found { value: f(s).clone(), source: shown.clone() });

        let server = self
            .server_flag_or_env()
            .or_else(|| from_saved(|s| &s.server))
            .context("no server given: pass --server https://HOST:8443, set VIGO_SERVER or run `vigocli login`")?;
        let token = match self.token_flag_or_env()? {
            Some(t) => Some(t),
            None => from_saved(|s| &s.token),
        }
        .context("no admin token given: pass --token-file PATH, set VIGO_TOKEN or run `vigocli login`")?;
        let ca = match self.ca_flag_or_env()? {
            Some(c) => Some(c),
            None => from_saved(|s| &s.ca),
        }
        .context("no CA certificate given: pass --ca PATH (the server's <state dir>/ca/ca.pem), set VIGO_CA or run `vigocli login`")?;

        if token.value.trim().is_empty() {
            bail!("the admin token from {} is empty", token.source);
        }
        Ok(Credentials {
            server: normalize_server(&server.value).with_context(|| format!("server from {}", server.source))?,
            token: token.value.trim().to_string(),
            ca_pem: ca.value,
            ca_source: ca.source,
        })
    }

    fn server_flag_or_env(&self) -> Option<Found> {
        if let Some(s) = &self.server {
            return Some(Found { value: s.clone(), source: "--server".into() });
        }
        env("VIGO_SERVER").map(|v| Found { value: v, source: "VIGO_SERVER".into() })
    }

    fn token_flag_or_env(&self) -> anyhow::Result<Option<Found>> {
        if let Some(p) = &self.token_file {
            return Ok(Some(Found { value: read(p, "admin token")?, source: format!("--token-file {}", p.display()) }));
        }
        Ok(env("VIGO_TOKEN").map(|v| Found { value: v, source: "VIGO_TOKEN".into() }))
    }

    fn ca_flag_or_env(&self) -> anyhow::Result<Option<Found>> {
        let path = match (&self.ca, env("VIGO_CA")) {
            (Some(p), _) => (p.clone(), "--ca"),
            (None, Some(p)) => (PathBuf::from(p), "VIGO_CA"),
            (None, None) => return Ok(None),
        };
        let value = read(&path.0, "CA certificate")?;
        Ok(Some(Found { value, source: format!("{} {}", path.1, path.0.display()) }))
    }
}

fn env(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.trim().is_empty())
}

fn read(path: &Path, what: &str) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read the {what} {}", path.display()))
}

/// Accepts `host`, `host:port` or an `https://` URL; the API is served over TLS only.
pub fn normalize_server(text: &str) -> anyhow::Result<String> {
    let text = text.trim();
    if text.starts_with("http://") {
        bail!("`{text}`: the API is served over HTTPS only; use https://");
    }
    let rest = text.strip_prefix("https://").unwrap_or(text).trim_end_matches('/');
    if rest.is_empty() || rest.contains('/') || rest.contains(char::is_whitespace) {
        bail!("`{text}` is not a server address: give https://HOST[:PORT]");
    }
    // A bracketed IPv6 address ends with `]` unless a port follows it.
    let has_port = rest.rsplit_once(':').is_some_and(|(host, port)| {
        !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && (!host.contains(':') || host.ends_with(']'))
    });
    Ok(if has_port { format!("https://{rest}") } else { format!("https://{rest}:{DEFAULT_API_PORT}") })
}

fn load_saved(path: &Path) -> anyhow::Result<Option<Saved>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => bail!("cannot read {}: {e}", path.display()),
    };
    warn_if_readable_by_others(path);
    let saved = serde_saphyr::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}; run `vigocli login` again", path.display()))?;
    Ok(Some(saved))
}

fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        eprintln!("vigocli: warning: {} holds an admin token but others may read it; chmod 600 it", path.display());
    }
}

/// Writes the login file with mode 0600, atomically, creating its directory (0700).
pub fn save(path: &Path, saved: &Saved) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    let dir = path.parent().context("the login file has no parent directory")?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let text = serde_saphyr::to_string(saved).map_err(|e| anyhow::anyhow!("cannot encode the login: {e}"))?;
    let tmp = path.with_extension(format!("yaml.tmp{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        bail!("cannot write {}: {e}", tmp.display());
    }
    std::fs::rename(&tmp, path).with_context(|| format!("cannot move {} into place", tmp.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses_are_normalised() {
        let cases = [
            ("vigo.example.com", "https://vigo.example.com:8443"),
            ("vigo.example.com:9000", "https://vigo.example.com:9000"),
            ("https://10.0.0.1:8443/", "https://10.0.0.1:8443"),
            ("https://[::1]:8443", "https://[::1]:8443"),
            ("[::1]", "https://[::1]:8443"),
        ];
        for (given, want) in cases {
            assert_eq!(normalize_server(given).expect(given), want, "{given}");
        }
        for bad in ["http://host:8443", "https://host/api", "", "https://"] {
            assert!(normalize_server(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn saved_login_round_trips_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("conf/vigo/cli.yaml");
        let ca = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let saved = Saved { server: "https://h:8443".into(), token: "vga_1_x".into(), ca: ca.into() };
        save(&path, &saved).expect("save");
        save(&path, &saved).expect("saving again replaces the file");
        assert_eq!(std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777, 0o600);
        let back = load_saved(&path).expect("load").expect("present");
        assert_eq!((back.server.as_str(), back.token.as_str(), back.ca.as_str()), ("https://h:8443", "vga_1_x", ca));
        assert!(load_saved(&dir.path().join("missing.yaml")).expect("missing is fine").is_none());
    }
}
