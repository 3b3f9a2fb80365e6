//! The `vigocli` subcommands, one file per group.

mod audit;
mod envoys;
mod login;
mod publish;
mod status;
mod swarm;
mod token;
mod versions;

use clap::{Parser, Subcommand};

use crate::client::Client;
use crate::credentials::ConnectionArgs;

/// Administer a Vigo fleet through the server's REST API.
///
/// The server, admin token and CA come from the flags, else from VIGO_SERVER,
/// VIGO_TOKEN and VIGO_CA, else from what `vigocli login` saved.
#[derive(Debug, Parser)]
#[command(name = "vigocli", version, about, long_about)]
pub struct Cli {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the credentials against the server and save them for later commands.
    Login(login::Args),
    /// Enrollment tokens: create, list, revoke.
    #[command(subcommand)]
    Token(token::Command),
    /// Enrolled agents: list, show, revoke.
    #[command(subcommand)]
    Envoys(envoys::Command),
    /// Validate the server's configuration directory and make it the active version.
    Publish(publish::Args),
    /// Published versions.
    #[command(subcommand)]
    Versions(versions::Command),
    /// The fleet at a glance.
    Status(status::Args),
    /// The tamper-evident audit trail: list, verify.
    #[command(subcommand)]
    Audit(audit::Command),
    /// The peer-to-peer layer: vigosync status.
    #[command(subcommand)]
    Swarm(swarm::Command),
}

/// `--json` for read verbs: print the server's JSON instead of a table.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Format {
    /// Print the server's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs a parsed command line; the result is the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<u8> {
    // Login gathers its credentials itself: it is how they come to exist.
    let connect = || Client::new(cli.connection.resolve()?);
    match cli.command {
        Command::Login(a) => login::run(&cli.connection, a).await,
        Command::Token(c) => token::run(&connect()?, c).await,
        Command::Envoys(c) => envoys::run(&connect()?, c).await,
        Command::Publish(a) => publish::run(&connect()?, a).await,
        Command::Versions(c) => versions::run(&connect()?, c).await,
        Command::Status(a) => status::run(&connect()?, a).await,
        Command::Audit(c) => audit::run(&connect()?, c).await,
        Command::Swarm(c) => swarm::run(&connect()?, c).await,
    }
}

/// A path segment with the characters that would change the URL's meaning escaped.
fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn segments_are_escaped() {
        assert_eq!(super::segment("web-1.example"), "web-1.example");
        assert_eq!(super::segment("../a b/?"), "..%2Fa%20b%2F%3F");
    }
}
