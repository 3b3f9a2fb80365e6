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
