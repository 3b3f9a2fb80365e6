//! Running the server: gRPC for agents and the REST API, both over TLS, until SIGTERM.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::grpc::{AgentService, tls_incoming};
use crate::server::Server;

/// Serves until SIGTERM or Ctrl-C, then stops accepting, flushes the writer and returns.
pub async fn serve(server: Server, writer: crate::writer::WriterHandle) -> anyhow::Result<()> {
    let s = &server.state;
    let read = |p: std::path::PathBuf| std::fs::read_to_string(&p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()));
    let (cert, key) = (read(s.server_cert())?, read(s.server_key())?);
    let ca = server.ca.cert_pem().to_string();
    // The chain carries the CA so an agent holding only its fingerprint can verify us.
    let chain = format!("{}\n{ca}", cert.trim_end());
    let grpc_tls = vigo_pki::server_config(&ca, &chain, &key, server.revoked.clone(), true)?;
    let mut api_tls = vigo_pki::server_config(&ca, &chain, &key, server.revoked.clone(), true)?;
    api_tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];

    let grpc_addr = server.settings.listen.grpc;
    let api_addr = server.settings.listen.api;
    let grpc_listener =
        TcpListener::bind(grpc_addr).await.map_err(|e| anyhow::anyhow!("gRPC listen {grpc_addr}: {e}"))?;
    let api_listener = TcpListener::bind(api_addr).await.map_err(|e| anyhow::anyhow!("API listen {api_addr}: {e}"))?;
    tracing::info!(grpc = %grpc_addr, api = %api_addr, "vigosrv listening");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let incoming = tls_incoming(grpc_listener, TlsAcceptor::from(Arc::new(grpc_tls)));
    let service = AgentService { server: server.clone() }.into_service();
    let mut grpc_stop = stop_rx.clone();
    let grpc = tokio::spawn(tonic::transport::Server::builder().add_service(service).serve_with_incoming_shutdown(
        incoming,
        async move {
            let _ = grpc_stop.changed().await;
        },
    ));
    let router = crate::rest::router(server.clone());
    let api = tokio::spawn(serve_api(api_listener, TlsAcceptor::from(Arc::new(api_tls)), router, stop_rx));
    let pruning = tokio::spawn(prune_reports(server.clone()));

    shutdown_signal().await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    // Open `Events` streams would hold the graceful shutdown open forever.
    server.events.close();
    pruning.abort();
    let _ = grpc.await;
    let _ = api.await;
    drop(server);
    if tokio::time::timeout(std::time::Duration::from_secs(30), writer.close()).await.is_err() {
        tracing::error!("the database did not take the last check-in updates within 30 s");
    }
    Ok(())
}

async fn serve_api(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    router: axum::Router,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::service::TowerToHyperService;
    loop {
        let (tcp, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => { tracing::warn!(error = %e, "API accept failed"); continue; }
            },
            _ = stop.changed() => return,
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp)).await {
                Ok(Ok(t)) => t,
                Ok(Err(e)) => return tracing::debug!(peer = %addr, reason = %e, "API TLS handshake failed"),
                Err(_) => return,
            };
            let service = TowerToHyperService::new(router);
            let conn = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(e) = conn.serve_connection(TokioIo::new(tls), service).await {
                tracing::debug!(peer = %addr, error = %e, "API connection ended");
            }
        });
    }
}

/// How often reports past their retention are deleted, and how many per statement.
const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);
const PRUNE_CHUNK: i64 = 10_000;

/// Deletes reports older than `report_retention_days`, hourly (first a minute after
/// start), in chunks so that no statement holds the database for long.
async fn prune_reports(server: Server) {
    let days = server.settings.report_retention_days;
    if days == 0 {
        return;
    }
    let mut tick =
        tokio::time::interval_at(tokio::time::Instant::now() + std::time::Duration::from_secs(60), PRUNE_EVERY);
    loop {
        tick.tick().await;
        let before = crate::now() - i64::from(days) * 86_400;
        let mut pruned = 0;
        loop {
            match server.store.prune_reports(before, PRUNE_CHUNK).await {
                Ok(0) => break,
                Ok(n) => pruned += n,
                Err(e) => {
                    tracing::warn!(error = %e, "pruning old reports failed; trying again in an hour");
                    break;
                }
            }
        }
        if pruned > 0 {
            tracing::info!(pruned, days, "old reports pruned");
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}
