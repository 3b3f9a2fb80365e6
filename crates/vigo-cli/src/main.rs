//! `vigocli`: the admin command line of a Vigo fleet, a thin client of the vigosrv REST API.
//!
//! `cmd` holds one file per subcommand group; `credentials` decides which server,
//! token and CA to use; `client` talks HTTPS and turns failures into messages an
//! operator can act on; `output` prints tables and times.

mod client;
mod cmd;
mod credentials;
mod output;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    restore_sigpipe();
    let cli = cmd::Cli::parse();
    vigo_pki::install_provider();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vigocli: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(cmd::run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("vigocli: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// `vigocli … | head` must end quietly, not panic on a closed stdout: restore the default SIGPIPE action.
#[allow(unsafe_code)]
fn restore_sigpipe() {
    // SAFETY: runs first in `main`, before any thread exists; SIG_DFL installs no handler code.
    let _ =
        unsafe { nix::sys::signal::signal(nix::sys::signal::Signal::SIGPIPE, nix::sys::signal::SigHandler::SigDfl) };
}
