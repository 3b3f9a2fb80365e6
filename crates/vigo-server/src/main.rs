//! `vigosrv`: the Vigo server.

/// The server allocates and frees small buffers for every request on every core; mimalloc
/// does that with less contention and fragmentation than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use vigo_server::settings::Settings;
use vigo_server::state_dir::StateDir;

/// The Vigo server: agents check in over gRPC (1530), admins use the REST API (8443).
#[derive(Debug, Parser)]
#[command(name = "vigosrv", version, about)]
struct Cli {
    /// The server's state directory (keys, certificates, database).
    #[arg(long, global = true, default_value = "/var/lib/vigo/server", env = "VIGO_SERVER_STATE")]
    state_dir: PathBuf,
    /// The configuration directory (YAML only).
    #[arg(long, default_value = "/etc/vigo/config")]
    config_dir: PathBuf,
    /// gRPC listen address (overrides server.yaml).
    #[arg(long)]
    grpc_listen: Option<std::net::SocketAddr>,
    /// REST API listen address (overrides server.yaml).
    #[arg(long)]
    api_listen: Option<std::net::SocketAddr>,
    /// Check-in interval in seconds (overrides server.yaml; at least 15).
    #[arg(long)]
    interval: Option<u32>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the fleet CA, server certificate, keys, database and first admin token (idempotent).
    Init {
        /// Extra names and addresses for the server certificate.
        #[arg(long = "san")]
        sans: Vec<String>,
    },
}

fn main() -> std::process::ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return std::process::ExitCode::from(if e.use_stderr() { 1 } else { 0 });
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    vigo_pki::install_provider();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vigosrv: cannot start runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vigosrv: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let state = StateDir::new(&cli.state_dir);
    if let Some(Command::Init { sans }) = cli.command {
        let out = vigo_server::state_dir::init(&state, &sans, None).await?;
        for c in &out.created {
            println!("created {c}");
        }
        if out.created.is_empty() {
            println!("state directory {} is complete; nothing to do", state.root.display());
        }
        println!("CA fingerprint (SHA-256): {}", out.ca_fingerprint);
        return Ok(());
    }
    let mut settings = Settings::load(&cli.config_dir)?;
    if let Some(a) = cli.grpc_listen {
        settings.listen.grpc = a;
    }
    if let Some(a) = cli.api_listen {
        settings.listen.api = a;
    }
    if let Some(i) = cli.interval {
        if i < vigo_server::settings::MIN_INTERVAL_SECS {
            anyhow::bail!("--interval {i} is below the minimum of {}", vigo_server::settings::MIN_INTERVAL_SECS);
        }
        settings.interval_secs = i;
    }
    let url = match settings.storage.backend {
        vigo_server::settings::Backend::Sqlite => state.sqlite_url(),
        vigo_server::settings::Backend::Postgres => settings.storage.url.clone().unwrap_or_default(),
    };
    if !state.ca_dir().exists() {
        anyhow::bail!(
            "{} is not initialised: run `vigosrv init --state-dir {}` first",
            state.root.display(),
            state.root.display()
        );
    }
    let store = vigo_store::Store::open(&url).await?;
    let (server, writer) = vigo_server::server::Server::open(state, cli.config_dir, settings, store).await?;
    vigo_server::serve::serve(server, writer).await
}
