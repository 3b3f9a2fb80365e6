//! The one error type of the testkit: every variant names the host, path, tool or
//! command at fault, so a failing test says what to fix.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Shorthand used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("vigo-testkit must run as root (namespaces, bridges and mounts need it); effective uid is {uid}")]
    NotRoot { uid: u32 },

    #[error("`{tool}` not found in PATH or the system directories: install the Debian package `{package}`")]
    MissingTool { tool: &'static str, package: &'static str },

    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("cannot start `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: io::Error,
    },

    #[error("`{command}` failed ({status}): {}", stderr.trim_end())]
    CommandFailed { command: String, status: String, stdout: String, stderr: String },

    #[error("`{command}` did not finish within {after:?}; stderr so far: {}", stderr.trim_end())]
    CommandTimedOut { command: String, after: Duration, stdout: String, stderr: String },

    #[error("timed out after {after:?} waiting for {what}")]
    Timeout { what: String, after: Duration },

    #[error("all {count} test subnets in 198.18.0.0/15 are held by live fleets")]
    SubnetsExhausted { count: u16 },

    #[error("fleet {fleet} is full: a /24 holds at most {max} hosts")]
    FleetFull { fleet: String, max: usize },

    #[error("invalid host name `{name}`: {reason}")]
    InvalidHostName { name: String, reason: &'static str },

    #[error("host `{name}` already exists in fleet {fleet}")]
    DuplicateHost { fleet: String, name: String },

    #[error("invalid private directory {}: {reason}", path.display())]
    InvalidPrivateDir { path: PathBuf, reason: &'static str },

    #[error("cannot add account `{name}` on host {host}: {reason}")]
    Account { host: String, name: String, reason: String },

    #[error("invalid helper request `{request}`: {reason}")]
    HelperRequest { request: String, reason: String },
}

impl Error {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io { action, path: path.into(), source }
    }
}
