//! Secret providers: where the server resolves `secret:<path>` references at publish.
//!
//! [`FileProvider`] reads one file per secret under `<state-dir>/secrets/`, component
//! by component through directory handles (`openat` with `O_NOFOLLOW`), and refuses
//! any directory or file that is not the server's own or that group or others may
//! access. [`CommandProvider`] runs a configured program directly (no shell) with the
//! path as its last argument, after `--` so that no path is ever read as an option,
//! and takes the value from its standard output.
//!
//! A resolved value is a [`Secret`]: it lives in memory only and never prints.
//! Errors name the file, program or path at fault, never a value; a failing
//! program's standard output is never quoted (it may hold the secret).

use std::io::Read as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use vigo_executors::safe_fs::{self, Kind, Meta, SafeFsError};
use vigo_model::Secret;
use vigo_model::secretref::SecretPath;
use wait_timeout::ChildExt as _;

use crate::settings::{SecretProviderKind, Secrets};
use crate::state_dir::StateDir;

/// The largest secret accepted, in bytes.
pub const MAX_SECRET_BYTES: u64 = 64 * 1024;
/// How much of a failing program's standard error is kept (its first line is shown).
const STDERR_CAP: u64 = 4096;

/// Why a secret could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{path}: no such file")]
    NotFound { path: PathBuf },
    #[error("{path}: not a {expected}")]
    WrongKind { path: PathBuf, expected: &'static str },
    #[error("{path}: mode {mode:04o} gives group or others access; it must be {want:04o}")]
    TooOpen { path: PathBuf, mode: u32, want: u32 },
    #[error("{path}: owned by uid {uid}, not by the server's uid {expected}")]
    Owner { path: PathBuf, uid: u32, expected: u32 },
    #[error("{what}: larger than {MAX_SECRET_BYTES} bytes")]
    TooLarge { what: String },
    #[error("{what}: the value is not UTF-8 text")]
    NotText { what: String },
    #[error("{what}: the value is empty")]
    Empty { what: String },
    #[error(transparent)]
    Fs(SafeFsError),
    #[error("{program}: cannot run: {source}")]
    Spawn { program: String, source: std::io::Error },
    #[error("{program} {path}: {status}: {stderr}")]
    Failed { program: String, path: String, status: String, stderr: String },
    #[error("{program} {path}: no answer within {secs} s; stopped")]
    Timeout { program: String, path: String, secs: u64 },
    #[error("{program}: {source}")]
    Io { program: String, source: std::io::Error },
}

impl From<SafeFsError> for SecretError {
    fn from(e: SafeFsError) -> Self {
        match e {
            SafeFsError::TooLarge { path, .. } => SecretError::TooLarge { what: path.display().to_string() },
            other => SecretError::Fs(other),
        }
    }
}

/// Resolves secret paths to values.
pub trait SecretProvider: Send + Sync {
    fn resolve(&self, path: &SecretPath) -> Result<Secret, SecretError>;
    /// Where an operator puts `path` so that it resolves (for hints).
    fn describe(&self, path: &SecretPath) -> String;
}

/// The provider `server.yaml` configures.
pub fn from_settings(settings: &Secrets, state: &StateDir) -> Arc<dyn SecretProvider> {
    match (settings.provider, &settings.command) {
        (SecretProviderKind::Command, Some(argv)) if !argv.is_empty() => {
            Arc::new(CommandProvider { argv: argv.clone(), timeout: Duration::from_secs(settings.timeout_secs) })
        }
        // Settings are checked when read; anything else is the file provider.
        _ => Arc::new(FileProvider::new(state.root.clone())),
    }
}

/// One file per secret: `<state-dir>/secrets/<path>`.
pub struct FileProvider {
    state_dir: PathBuf,
    uid: u32,
}

impl FileProvider {
    pub fn new(state_dir: PathBuf) -> Self {
        Self { state_dir, uid: nix::unistd::geteuid().as_raw() }
    }

    /// Refuses what another user owns or what group or others may access.
    fn check(&self, meta: &Meta, path: &Path, kind: Kind, want: u32) -> Result<(), SecretError> {
        if meta.kind != kind {
            let expected = if kind == Kind::Dir { "directory" } else { "regular file" };
            return Err(SecretError::WrongKind { path: path.to_path_buf(), expected });
        }
        if meta.uid != self.uid {
            return Err(SecretError::Owner { path: path.to_path_buf(), uid: meta.uid, expected: self.uid });
        }
        if meta.mode & 0o077 != 0 {
            return Err(SecretError::TooOpen { path: path.to_path_buf(), mode: meta.mode, want });
        }
        Ok(())
    }
}

impl SecretProvider for FileProvider {
    fn resolve(&self, path: &SecretPath) -> Result<Secret, SecretError> {
        let mut shown = self.state_dir.join("secrets");
        let not_found = |e: SafeFsError, at: &Path| match e {
            SafeFsError::Sys { errno: nix::errno::Errno::ENOENT, .. } => {
                SecretError::NotFound { path: at.to_path_buf() }
            }
            SafeFsError::WrongKind { path, expected } => SecretError::WrongKind { path, expected },
            other => other.into(),
        };
        let root = safe_fs::open_dir(&self.state_dir)?;
        let mut dir = safe_fs::open_subdir(&root, "secrets", &shown).map_err(|e| not_found(e, &shown))?;
        self.check(&safe_fs::meta_of(&dir, &shown)?, &shown, Kind::Dir, 0o700)?;
        let components: Vec<&str> = path.components().collect();
        let (file, parents) = components.split_last().expect("a secret path has at least one component");
        for name in parents {
            shown.push(name);
            dir = safe_fs::open_subdir(&dir, name, &shown).map_err(|e| not_found(e, &shown))?;
            self.check(&safe_fs::meta_of(&dir, &shown)?, &shown, Kind::Dir, 0o700)?;
        }
        shown.push(file);
        let (bytes, meta) = safe_fs::read_with_meta(&dir, file, &shown, MAX_SECRET_BYTES)?
            .ok_or_else(|| SecretError::NotFound { path: shown.clone() })?;
        self.check(&meta, &shown, Kind::File, 0o600)?;
        value_of(bytes, &shown.display().to_string())
    }

    fn describe(&self, path: &SecretPath) -> String {
        format!(
            "put the value in {} (mode 0600, owned by the server's user, in directories of mode 0700)",
            self.state_dir.join("secrets").join(path.as_str()).display()
        )
    }
}

/// A program that prints the secret: `argv… -- <path>`, with `VIGO_SECRET_PATH` set too.
pub struct CommandProvider {
    pub argv: Vec<String>,
    pub timeout: Duration,
}

impl SecretProvider for CommandProvider {
    fn resolve(&self, path: &SecretPath) -> Result<Secret, SecretError> {
        let program = self.argv[0].clone();
        let mut child = Command::new(&program)
            .args(&self.argv[1..])
            // Validation already refuses a component starting with `-`; `--` makes sure
            // the program takes the path as its operand whatever it looks like.
            .arg("--")
            .arg(path.as_str())
            .env("VIGO_SECRET_PATH", path.as_str())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so a timeout stops whatever it started as well.
            .process_group(0)
            .spawn()
            .map_err(|source| SecretError::Spawn { program: program.clone(), source })?;
        let stdout = child.stdout.take().map(|out| read_capped(out, MAX_SECRET_BYTES));
        let stderr = child.stderr.take().map(|err| read_capped(err, STDERR_CAP));
        let io = |source| SecretError::Io { program: program.clone(), source };
        let status = match child.wait_timeout(self.timeout).map_err(io)? {
            Some(status) => status,
            None => {
                kill_group(&child);
                let _ = child.wait();
                let _ = stdout.map(std::thread::JoinHandle::join);
                let _ = stderr.map(std::thread::JoinHandle::join);
                return Err(SecretError::Timeout { program, path: path.to_string(), secs: self.timeout.as_secs() });
            }
        };
        let out = joined(stdout).map_err(io)?;
        let err = joined(stderr).unwrap_or_default();
        let what = format!("{program} {path}");
        // First: a program cut off after the cap dies of SIGPIPE, which is not its fault.
        if out.len() as u64 > MAX_SECRET_BYTES {
            return Err(SecretError::TooLarge { what });
        }
        if !status.success() {
            let first = String::from_utf8_lossy(&err)
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .map_or_else(|| "(nothing on standard error)".to_string(), |l| l.chars().take(300).collect());
            return Err(SecretError::Failed {
                program,
                path: path.to_string(),
                status: status.to_string(),
                stderr: first,
            });
        }
        value_of(out, &what)
    }

    fn describe(&self, path: &SecretPath) -> String {
        format!("`{} -- {}` must print the value and exit 0", self.argv.join(" "), path.as_str())
    }
}

/// Reads at most `cap + 1` bytes on a thread (so a chatty program cannot fill a pipe
/// and stall), then drops the pipe.
fn read_capped(
    pipe: impl std::io::Read + Send + 'static,
    cap: u64,
) -> std::thread::JoinHandle<std::io::Result<Vec<u8>>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        pipe.take(cap.saturating_add(1)).read_to_end(&mut buf)?;
        Ok(buf)
    })
}

fn joined(handle: Option<std::thread::JoinHandle<std::io::Result<Vec<u8>>>>) -> std::io::Result<Vec<u8>> {
    match handle {
        Some(h) => h.join().unwrap_or_else(|_| Err(std::io::Error::other("pipe reader panicked"))),
        None => Ok(Vec::new()),
    }
}

fn kill_group(child: &std::process::Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
}

/// The value as a secret: UTF-8, not empty, one trailing newline removed (files and
/// programs usually end their output with one).
fn value_of(mut bytes: Vec<u8>, what: &str) -> Result<Secret, SecretError> {
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
    }
    if bytes.is_empty() {
        return Err(SecretError::Empty { what: what.to_string() });
    }
    String::from_utf8(bytes).map(Secret::new).map_err(|_| SecretError::NotText { what: what.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn path(p: &str) -> SecretPath {
        SecretPath::parse(p).expect("valid path")
    }

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }

    /// A state dir with `secrets/` (0700) holding `app/db` (0600).
    fn state() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let app = dir.path().join("secrets/app");
        std::fs::create_dir_all(&app).expect("mkdir");
        chmod(&dir.path().join("secrets"), 0o700);
        chmod(&app, 0o700);
        std::fs::write(app.join("db"), "s3cret-value\n").expect("write");
        chmod(&app.join("db"), 0o600);
        dir
    }

    #[test]
    fn file_provider_reads_private_files_and_strips_one_newline() {
        let dir = state();
        let p = FileProvider::new(dir.path().to_path_buf());
        assert_eq!(p.resolve(&path("app/db")).expect("resolves").expose(), "s3cret-value");
        std::fs::write(dir.path().join("secrets/app/db"), "two\n\n").expect("write");
        assert_eq!(p.resolve(&path("app/db")).expect("resolves").expose(), "two\n", "only one newline goes");
        std::fs::write(dir.path().join("secrets/top"), "x").expect("write");
        chmod(&dir.path().join("secrets/top"), 0o400);
        assert_eq!(p.resolve(&path("top")).expect("top level").expose(), "x");
    }

    #[test]
    fn file_provider_refusals_name_the_file() {
        type Setup = fn(&Path);
        let cases: &[(&str, Setup, &str, &str)] = &[
            ("missing", |_| {}, "app/nope", "secrets/app/nope: no such file"),
            ("missing dir", |_| {}, "other/db", "secrets/other: no such file"),
            (
                "group-readable file",
                |d| chmod(&d.join("secrets/app/db"), 0o640),
                "app/db",
                "secrets/app/db: mode 0640 gives group or others access",
            ),
            ("world-readable file", |d| chmod(&d.join("secrets/app/db"), 0o604), "app/db", "secrets/app/db: mode 0604"),
            ("open secrets dir", |d| chmod(&d.join("secrets"), 0o755), "app/db", "secrets: mode 0755"),
            ("open subdir", |d| chmod(&d.join("secrets/app"), 0o750), "app/db", "secrets/app: mode 0750"),
            (
                "symlinked file",
                |d| {
                    std::fs::remove_file(d.join("secrets/app/db")).expect("rm");
                    std::os::unix::fs::symlink("/etc/hostname", d.join("secrets/app/db")).expect("symlink");
                },
                "app/db",
                "symlink",
            ),
            (
                "symlinked dir",
                |d| {
                    std::fs::rename(d.join("secrets/app"), d.join("elsewhere")).expect("mv");
                    std::os::unix::fs::symlink(d.join("elsewhere"), d.join("secrets/app")).expect("symlink");
                },
                "app/db",
                "symlink",
            ),
            (
                "too large",
                |d| std::fs::write(d.join("secrets/app/db"), vec![b'x'; 70_000]).expect("write"),
                "app/db",
                "larger than 65536 bytes",
            ),
            ("empty", |d| std::fs::write(d.join("secrets/app/db"), "\n").expect("write"), "app/db", "is empty"),
            (
                "not text",
                |d| std::fs::write(d.join("secrets/app/db"), [0xff, 0xfe]).expect("write"),
                "app/db",
                "not UTF-8",
            ),
            ("a directory", |_| {}, "app", "secrets/app: not a regular file"),
        ];
        for (what, setup, p, want) in cases {
            let dir = state();
            setup(dir.path());
            let err = FileProvider::new(dir.path().to_path_buf()).resolve(&path(p)).expect_err(what).to_string();
            assert!(err.contains(want), "{what}: {err}");
            assert!(!err.contains("s3cret-value"), "{what}: the value leaked: {err}");
        }
    }

    #[test]
    fn file_provider_refuses_files_of_another_user() {
        let dir = state();
        let mut p = FileProvider::new(dir.path().to_path_buf());
        p.uid = p.uid.wrapping_add(1);
        let err = p.resolve(&path("app/db")).expect_err("not ours").to_string();
        assert!(err.contains("secrets: owned by uid") && err.contains("not by the server's uid"), "{err}");
    }

    fn script(dir: &Path, body: &str) -> String {
        let p = dir.join("get-secret");
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).expect("script");
        chmod(&p, 0o700);
        p.display().to_string()
    }

    fn command(argv: Vec<String>, secs: u64) -> CommandProvider {
        CommandProvider { argv, timeout: Duration::from_secs(secs) }
    }

    #[test]
    fn command_provider_passes_the_path_and_reads_stdout() {
        let dir = tempfile::tempdir().expect("tempdir");
        // The path comes last, after `--`: a program never reads it as one of its options.
        let prog = script(dir.path(), r#"echo "$#|$1|$2|$3|$VIGO_SECRET_PATH""#);
        let p = command(vec![prog, "--field".into()], 5);
        assert_eq!(p.resolve(&path("app/db")).expect("resolves").expose(), "3|--field|--|app/db|app/db");
    }

    #[test]
    fn command_provider_failures_show_status_and_stderr_never_stdout() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cases: &[(&str, &str, u64, &str)] = &[
            (
                "exit 3",
                "echo leaked-stdout; echo 'vault: permission denied' >&2; echo second >&2; exit 3",
                5,
                "exit status: 3: vault: permission denied",
            ),
            ("silent failure", "exit 1", 5, "(nothing on standard error)"),
            ("empty output", "true", 5, "the value is empty"),
            ("timeout", "echo leaked-stdout; sleep 30", 1, "no answer within 1 s"),
            ("too much", "head -c 70000 /dev/zero | tr '\\0' x", 5, "larger than 65536 bytes"),
        ];
        for (what, body, secs, want) in cases {
            let p = command(vec![script(dir.path(), body)], *secs);
            let started = std::time::Instant::now();
            let err = p.resolve(&path("app/db")).expect_err(what).to_string();
            assert!(err.contains(want), "{what}: {err}");
            assert!(!err.contains("leaked-stdout"), "{what}: stdout shown: {err}");
            assert!(started.elapsed() < Duration::from_secs(20), "{what}: took {:?}", started.elapsed());
        }
        let missing = command(vec!["/nonexistent/vault-get".into()], 5);
        let err = missing.resolve(&path("a")).expect_err("no program").to_string();
        assert!(err.contains("/nonexistent/vault-get: cannot run"), "{err}");
    }
}
