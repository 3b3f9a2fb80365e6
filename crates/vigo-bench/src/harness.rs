//! A real `vigosrv` in a temporary directory: state, configuration, free ports,
//! the REST calls a benchmark needs, and enrollment of simulated envoys.
//!
//! The server runs as its own process so that its CPU time and memory can be
//! read from `/proc` apart from the load generator's.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{Value, json};
use vigo_agent::enroll::{CaTrust, EnrollArgs};
use vigo_agent::paths::AgentPaths;
use vigo_pki::{PublicKey, SigningKey};

/// The module every simulated envoy is assigned; small, like most real ones.
const MODULE: &str = "name: bench
resources:
  - name: motd
    type: file
    target_path: /srv/vigo-bench/motd
    content: \"managed by vigo\\n\"
    mode: \"0644\"
";

const ASSIGNMENTS: &str = "assignments:
  - hosts: \"bench-*\"
    modules: [bench]
";

/// The server's check-in interval: the shortest allowed, as in the target fleet.
const SERVER_INTERVAL_SECS: &str = "15";
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(15);

/// A binary built into the same target directory as this executable (or, for a
/// test executable in `deps/`, the directory above it).
pub fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot locate the current executable")?;
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    if !path.exists() {
        anyhow::bail!(
            "{} does not exist: build it with the same profile (`cargo build [--profile P] -p vigo-server`) or pass --vigosrv",
            path.display()
        );
    }
    Ok(path)
}

/// A running `vigosrv` and what a client needs to talk to it.
pub struct Server {
    pub dir: tempfile::TempDir,
    child: tokio::process::Child,
    pub pid: u32,
    pub grpc_port: u16,
    pub ca_pem: String,
    api_base: String,
    admin_token: String,
    http: reqwest::Client,
    log: PathBuf,
}

impl Server {
    /// Initialises a state directory, writes a configuration and starts the server.
    pub async fn start(vigosrv: &Path) -> anyhow::Result<Self> {
        let dir =
            tempfile::Builder::new().prefix("vigo-bench-").tempdir().context("cannot create a temporary directory")?;
        let state = dir.path().join("state");
        let config = dir.path().join("config");
        write_config(&config)?;
        let init = tokio::process::Command::new(vigosrv)
            .arg("init")
            .arg("--state-dir")
            .arg(&state)
            .output()
            .await
            .with_context(|| format!("cannot run {}", vigosrv.display()))?;
        if !init.status.success() {
            anyhow::bail!("`vigosrv init` failed ({}): {}", init.status, String::from_utf8_lossy(&init.stderr).trim());
        }
        let (grpc_port, api_port) = (free_port()?, free_port()?);
        let log = dir.path().join("vigosrv.log");
        let log_file = std::fs::File::create(&log).with_context(|| format!("{}: cannot create", log.display()))?;
        let child = tokio::process::Command::new(vigosrv)
            .arg("--state-dir")
            .arg(&state)
            .arg("--config-dir")
            .arg(&config)
            .arg("--grpc-listen")
            .arg(format!("127.0.0.1:{grpc_port}"))
            .arg("--api-listen")
            .arg(format!("127.0.0.1:{api_port}"))
            .arg("--interval")
            .arg(SERVER_INTERVAL_SECS)
            // `VIGO_BENCH_SERVER_LOG=warn,vigo_server::writer=debug` shows every batch written.
            .env("RUST_LOG", std::env::var("VIGO_BENCH_SERVER_LOG").unwrap_or_else(|_| "warn".into()))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", vigosrv.display()))?;
        let pid = child.id().context("vigosrv exited at once")?;
        let read = |p: PathBuf| std::fs::read_to_string(&p).with_context(|| format!("{}: cannot read", p.display()));
        let ca_pem = read(state.join("ca").join(vigo_pki::ca::CA_CERT_FILE))?;
        let admin_token = read(state.join("admin.token"))?.trim().to_string();
        let tls = vigo_pki::server_client_config(&ca_pem, None).context("the fleet CA is not usable")?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(Duration::from_secs(60))
            .build()
            .context("cannot build the HTTP client")?;
        let mut server = Self {
            dir,
            child,
            pid,
            grpc_port,
            ca_pem,
            api_base: format!("https://127.0.0.1:{api_port}/api/v1"),
            admin_token,
            http,
            log,
        };
        server.wait_ready(&[grpc_port, api_port]).await?;
        Ok(server)
    }

    async fn wait_ready(&mut self, ports: &[u16]) -> anyhow::Result<()> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        for port in ports {
            loop {
                if let Some(status) = self.child.try_wait()? {
                    anyhow::bail!("vigosrv exited during startup ({status}):\n{}", self.log_tail());
                }
                if tokio::net::TcpStream::connect(("127.0.0.1", *port)).await.is_ok() {
                    break;
                }
                if Instant::now() > deadline {
                    anyhow::bail!(
                        "vigosrv did not listen on port {port} within {STARTUP_TIMEOUT:?}:\n{}",
                        self.log_tail()
                    );
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    /// One authenticated REST call; any non-success answer is an error with the server's message.
    async fn api(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.api_base);
        let resp = self
            .http
            .post(&url)
            .bearer_auth(&self.admin_token)
            .json(body)
            .send()
            .await
            .with_context(|| format!("POST {url}"))?;
        let status = resp.status();
        let text = resp.text().await.with_context(|| format!("POST {url}: reading the answer"))?;
        if !status.is_success() {
            anyhow::bail!("POST {url} answered {status}: {text}");
        }
        serde_json::from_str(&text).with_context(|| format!("POST {url}: the answer is not JSON: {text}"))
    }

    /// Publishes the configuration written by [`Server::start`].
    pub async fn publish(&self) -> anyhow::Result<()> {
        self.api("/publish", &json!({"message": "vigo-bench"})).await.map(drop)
    }

    /// A one-time enrollment token for exactly `host`.
    pub async fn create_token(&self, host: &str) -> anyhow::Result<String> {
        let reply = self.api("/tokens", &json!({"hosts": host, "ttl_secs": 3600})).await?;
        reply
            .get("token")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| anyhow::anyhow!("token answer has no `token`: {reply}"))
    }

    /// The last lines the server logged, for error messages.
    pub fn log_tail(&self) -> String {
        tail(&self.log)
    }

    /// Sends SIGTERM and waits for a clean exit (the server flushes its writer first).
    /// Returns the server's directory (the state directory is `state/` in it) for a
    /// look at what it stored.
    pub async fn stop(self) -> anyhow::Result<tempfile::TempDir> {
        // Closing the admin connection first: the server waits for open connections
        // before it flushes its writer.
        let Self { mut child, pid, http, log, dir, .. } = self;
        drop(http);
        let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).context("vigosrv pid out of range")?);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).context("cannot signal vigosrv")?;
        match tokio::time::timeout(SHUTDOWN_TIMEOUT, child.wait()).await {
            Ok(Ok(status)) if status.success() => Ok(dir),
            Ok(Ok(status)) => anyhow::bail!("vigosrv exited with {status}:\n{}", tail(&log)),
            Ok(Err(e)) => Err(e).context("cannot wait for vigosrv"),
            Err(_) => {
                let _ = child.kill().await;
                anyhow::bail!("vigosrv did not stop within {SHUTDOWN_TIMEOUT:?} of SIGTERM")
            }
        }
    }
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

fn write_config(config: &Path) -> anyhow::Result<()> {
    let modules = config.join("modules");
    std::fs::create_dir_all(&modules).with_context(|| format!("{}: cannot create", modules.display()))?;
    let write =
        |p: PathBuf, text: &str| std::fs::write(&p, text).with_context(|| format!("{}: cannot write", p.display()));
    write(modules.join("bench.yaml"), MODULE)?;
    write(config.join("assignments.yaml"), ASSIGNMENTS)
}

/// A port nobody listens on right now. Another process could take it before the
/// server binds it; on a benchmark machine that is unlikely enough.
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(listener.local_addr()?.port())
}

/// What a simulated envoy holds after enrolling: the same files a real agent
/// keeps, loaded once.
pub struct Envoy {
    pub name: String,
    pub tls: rustls::ClientConfig,
    pub signing: SigningKey,
    pub bundle_key: PublicKey,
}

/// The name of the `index`-th simulated envoy (from 1).
pub fn envoy_name(index: usize) -> String {
    format!("bench-{index:05}")
}

/// Enrolls `count` envoys, `concurrency` at a time, each with its own token.
pub async fn enroll_all(server: &Arc<Server>, count: usize, concurrency: usize) -> anyhow::Result<Vec<Envoy>> {
    let next = Arc::new(AtomicUsize::new(1));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.min(count) {
        let (server, next) = (server.clone(), next.clone());
        workers.spawn(async move {
            let mut enrolled = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index > count {
                    return Ok::<_, anyhow::Error>(enrolled);
                }
                enrolled.push(enroll_one(&server, &envoy_name(index)).await?);
            }
        });
    }
    let mut all = Vec::with_capacity(count);
    while let Some(joined) = workers.join_next().await {
        all.extend(joined.context("an enrollment worker panicked")??);
    }
    all.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(all)
}

async fn enroll_one(server: &Server, name: &str) -> anyhow::Result<Envoy> {
    let token = server.create_token(name).await?;
    let home = server.dir.path().join("envoys").join(name);
    let paths = AgentPaths { etc: home.clone(), state: home };
    let args = EnrollArgs {
        server: "127.0.0.1".to_string(),
        grpc_port: server.grpc_port,
        token,
        name: name.to_string(),
        trust: CaTrust::Pem(server.ca_pem.clone()),
    };
    vigo_agent::enroll::enroll(&paths, args).await.with_context(|| format!("enrolling {name}"))?;
    load_envoy(&paths, name)
}

/// Reads an enrolled envoy's files the way the agent does before a check-in.
fn load_envoy(paths: &AgentPaths, name: &str) -> anyhow::Result<Envoy> {
    let read = |p: PathBuf| std::fs::read_to_string(&p).with_context(|| format!("{}: cannot read", p.display()));
    let (ca, cert) = (read(paths.ca())?, read(paths.tls_cert())?);
    let key = vigo_pki::EnvoyTlsKey::load(&paths.tls_key())?.private_key_pem();
    let tls = vigo_pki::server_client_config(&ca, Some((&cert, &key)))?;
    let signing = SigningKey::load(&paths.signing_key())?;
    let bundle_key = PublicKey::from_b64(read(paths.bundle_pub())?.trim())?;
    Ok(Envoy { name: name.to_string(), tls, signing, bundle_key })
}
