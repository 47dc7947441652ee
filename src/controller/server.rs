//! Serving the controller: the store, both services and gRPC reflection on one port.

use super::admin::AdminService;
use super::agents::AgentService;
use super::store::Store;
use super::tls::{check_insecure_listen, TlsFiles};
use super::{expiry, Controller, Settings};
use crate::proto::v1::admin_server::AdminServer;
use crate::proto::v1::agent_link_server::AgentLinkServer;
use anyhow::{Context, Result};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;

const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// The largest request message accepted (a topology, an agent's message). Larger ones are
/// refused with OUT_OF_RANGE naming the size and the limit, before they are decoded.
pub const MAX_MESSAGE: usize = 16 << 20;

#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub store: PathBuf,
    /// None: plaintext (`--insecure`, loopback only).
    pub tls: Option<TlsFiles>,
    pub settings: Settings,
    /// Written with the bound address once the controller accepts connections.
    pub ready_file: Option<PathBuf>,
    pub expiry_check: Duration,
}

/// Runs until `shutdown` completes.
pub async fn serve(cfg: ServeConfig, shutdown: impl Future<Output = ()>) -> Result<()> {
    if cfg.tls.is_none() {
        check_insecure_listen(&cfg.listen)?;
    }
    let store = Store::open(&cfg.store)?;
    let ctl = Arc::new(Controller::new(store, cfg.settings.clone())?);
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("building the reflection service")?;
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("binding {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    let mut server = Server::builder()
        // Dead agents (a gateway powered off) are noticed without waiting for TCP.
        .http2_keepalive_interval(Some(Duration::from_secs(5)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)));
    if let Some(t) = &cfg.tls {
        server = server
            .tls_config(t.server_config()?)
            .context("TLS configuration")?;
    }
    tokio::spawn(expiry::run(ctl.clone(), cfg.expiry_check));
    if let Some(path) = &cfg.ready_file {
        // Written whole, then renamed: a reader never sees half an address.
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, addr.to_string())
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    }
    tracing::info!(%addr, store = %cfg.store.display(), tls = cfg.tls.is_some(), revision = ctl.current_id(), "controller listening");
    let (stopping_tx, mut stopping) = tokio::sync::watch::channel(false);
    let serving = server
        .add_service(
            AgentLinkServer::new(AgentService { ctl: ctl.clone() })
                .max_decoding_message_size(MAX_MESSAGE),
        )
        .add_service(
            AdminServer::new(AdminService { ctl: ctl.clone() })
                .max_decoding_message_size(MAX_MESSAGE),
        )
        .add_service(reflection)
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            async move {
                shutdown.await;
                // Agent streams never end by themselves; ending them lets shutdown finish and
                // sends the agents to reconnect.
                ctl.hub.close_all();
                let _ = stopping_tx.send(true);
            },
        );
    // `events --follow` streams would hold a graceful shutdown forever: cut them after a while.
    let deadline = async {
        let _ = stopping.wait_for(|s| *s).await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        r = serving => r.context("serving")?,
        _ = deadline => tracing::warn!("clients still connected {}s after shutdown; stopping anyway", SHUTDOWN_GRACE.as_secs()),
    }
    tracing::info!("controller stopped");
    Ok(())
}
