//! `vigo`: the agent binary and the machine admin's local command line.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    restore_sigpipe();
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

/// `vigo traits | head` must end quietly, not panic on a closed stdout: restore the default SIGPIPE action.
#[allow(unsafe_code)]
fn restore_sigpipe() {
    // SAFETY: runs first in `main`, before any thread exists; SIG_DFL installs no handler code.
    let _ =
        unsafe { nix::sys::signal::signal(nix::sys::signal::Signal::SIGPIPE, nix::sys::signal::SigHandler::SigDfl) };
}
