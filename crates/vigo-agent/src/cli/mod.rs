//! The `vigo` subcommands, one file each.

mod apply;
mod enroll;
mod run;
mod status;
pub mod traits;
pub mod types;
mod validate;

pub use types::reference;

use std::io::IsTerminal;

use clap::{Parser, Subcommand};

use crate::output::Style;

/// Vigo agent: keeps this machine in the state its configuration declares.
#[derive(Debug, Parser)]
#[command(name = "vigo", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Converge this machine to a configuration directory or module file.
    Apply(apply::Args),
    /// Check a configuration and print every problem found.
    Validate(validate::Args),
    /// Enroll this machine with a Vigo server.
    Enroll(enroll::Args),
    /// Check in with the server and converge, every interval (or once).
    Run(run::Args),
    /// What this envoy enforces, its policy source, last run and pending results.
    Status(status::Args),
    /// Show the traits collected on this machine.
    Traits(traits::Args),
    /// List resource types, or show one with its fields and an example.
    Types(types::Args),
}

/// Runs a parsed command line; the result is the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Apply(a) => apply::run(a),
        Command::Validate(a) => validate::run(a),
        Command::Enroll(a) => enroll::run(a),
        Command::Run(a) => run::run(a),
        Command::Status(a) => status::run(a),
        Command::Traits(a) => traits::run(a),
        Command::Types(a) => types::run(a),
    }
}

fn style() -> Style {
    Style { color: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none() }
}

fn print_diagnostics(d: &vigo_model::Diagnostics) {
    let s = Style { color: std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none() };
    for diag in d.iter() {
        eprintln!("{}: {} {}", diag.loc, s.paint("31", "error:"), diag.message);
        if let Some(h) = &diag.hint {
            eprintln!("  {} {h}", s.paint("36", "hint:"));
        }
    }
    eprintln!("{} problem(s) found", d.len());
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    vigo_pki::install_provider();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start runtime: {e}"))
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VIGO_LOG").unwrap_or_else(|_| "info".into());
    let ansi = std::io::stderr().is_terminal();
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).try_init();
}
