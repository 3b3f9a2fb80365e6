//! `vigo`: the agent binary and the machine admin's local command line.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = match vigo_agent::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match vigo_agent::cli::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("vigo: {e:#}");
            ExitCode::from(1)
        }
    }
}
