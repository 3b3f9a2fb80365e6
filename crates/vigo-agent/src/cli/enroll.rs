//! `vigo enroll`: enroll this machine with a server using a one-time token.

use crate::enroll::{CaTrust, EnrollArgs};
use crate::paths::AgentPaths;

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("trust").required(true).args(["ca_fingerprint", "ca_file"])))]
pub struct Args {
    /// The server's host name or address (as in its certificate).
    #[arg(long)]
    pub server: String,
    /// The server's gRPC port.
    #[arg(long, default_value_t = 1530)]
    pub port: u16,
    /// The one-time enrollment token (`vigocli token create`).
    #[arg(long)]
    pub token: String,
    /// SHA-256 fingerprint of the fleet CA (printed by `vigosrv init`).
    #[arg(long)]
    pub ca_fingerprint: Option<String>,
    /// The fleet CA certificate (PEM), instead of its fingerprint.
    #[arg(long)]
    pub ca_file: Option<std::path::PathBuf>,
    /// The name to enroll as (default: this machine's hostname).
    #[arg(long)]
    pub name: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let trust = match (args.ca_fingerprint, args.ca_file) {
        (Some(fp), _) => CaTrust::Fingerprint(fp),
        (None, Some(f)) => {
            CaTrust::Pem(std::fs::read_to_string(&f).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?)
        }
        (None, None) => anyhow::bail!("give --ca-fingerprint or --ca-file"),
    };
    let name = match args.name {
        Some(n) => n,
        None => nix::unistd::gethostname()?.to_string_lossy().to_string(),
    };
    let paths = AgentPaths::from_env();
    let enroll = EnrollArgs { server: args.server, grpc_port: args.port, token: args.token, name, trust };
    let envoy = super::runtime()?.block_on(crate::enroll::enroll(&paths, enroll))?;
    println!("enrolled as `{envoy}`; run `vigo run` to start converging");
    Ok(0)
}
