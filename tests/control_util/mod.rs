//! Shared by the control-plane tests: a PKI in a temp dir, an in-process controller, admin
//! clients and no-op agents (real link and TLS, no dataplane).

#![allow(dead_code)] // each test crate uses its own subset

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tiernet::agent::noop::{link_config, NoopAgent, Seen};
use tiernet::controller::server::{serve, ServeConfig};
use tiernet::controller::tls::{connect, TlsFiles};
use tiernet::controller::Settings;
use tiernet::pki::Role;
use tiernet::proto::v1::admin_client::AdminClient;
use tiernet::proto::v1::*;
use tonic::transport::Channel;

pub const REFERENCE: &str = include_str!("../../topologies/clinical-research.yaml");

/// A day before every `expires` of the reference topology.
pub fn today() -> chrono::NaiveDate {
    chrono::NaiveDate::from_ymd_opt(2026, 6, 1).expect("date")
}

/// The reference topology without its `thin-client` flow: a visible change on gw-core.
pub fn changed_reference() -> String {
    let flow = "  - name: thin-client\n    from: office-lan\n    to: vdi-gateway\n";
    assert!(REFERENCE.contains(flow), "reference topology changed shape");
    REFERENCE.replace(flow, "")
}

pub struct Pki {
    pub dir: tempfile::TempDir,
}

impl Pki {
    /// A CA with the controller, both reference gateways, an admin and a viewer.
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        tiernet::pki::init(dir.path(), &[]).expect("pki init");
        let p = Pki { dir };
        for (role, name) in [
            (Role::Agent, "gw-core"),
            (Role::Agent, "gw-his"),
            (Role::Admin, "alice"),
            (Role::Viewer, "victor"),
        ] {
            p.issue(role, name);
        }
        p
    }

    pub fn issue(&self, role: Role, name: &str) {
        tiernet::pki::issue(self.dir.path(), role, name, &[]).expect("pki issue");
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn files(&self, name: &str) -> TlsFiles {
        let d = self.dir.path();
        TlsFiles {
            ca: d.join("ca.pem"),
            cert: d.join(format!("{name}.pem")),
            key: d.join(format!("{name}.key")),
        }
    }
}

/// An in-process controller; stops when dropped.
pub struct Controller {
    pub url: String,
    pub addr: std::net::SocketAddr,
    pub store: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

pub fn settings(insecure: bool) -> Settings {
    Settings {
        insecure,
        today: Some(today()),
        apply_timeout: Duration::from_secs(10),
        connect_grace: Duration::from_secs(3),
    }
}

impl Controller {
    pub async fn start(pki: &Pki, store: &Path) -> Controller {
        Self::start_at(pki, store, "127.0.0.1:0".parse().expect("addr")).await
    }

    pub async fn start_at(pki: &Pki, store: &Path, listen: std::net::SocketAddr) -> Controller {
        Self::start_with(
            pki,
            store,
            listen,
            settings(false),
            Duration::from_secs(3600),
        )
        .await
    }

    pub async fn start_with(
        pki: &Pki,
        store: &Path,
        listen: std::net::SocketAddr,
        settings: Settings,
        expiry_check: Duration,
    ) -> Controller {
        let ready = store.with_extension("addr");
        let _ = std::fs::remove_file(&ready);
        let cfg = ServeConfig {
            listen,
            store: store.to_path_buf(),
            tls: Some(pki.files("controller")),
            settings,
            ready_file: Some(ready.clone()),
            expiry_check,
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            if let Err(e) = serve(cfg, async move {
                let _ = rx.await;
            })
            .await
            {
                panic!("controller failed: {e:#}");
            }
        });
        let start = Instant::now();
        let addr = loop {
            if let Ok(a) = std::fs::read_to_string(&ready) {
                break a.parse::<std::net::SocketAddr>().expect("address");
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "controller did not start"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        Controller {
            url: format!("https://{addr}"),
            addr,
            store: store.to_path_buf(),
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Stops serving and waits until the port is closed.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), t)
                .await
                .expect("controller stops")
                .expect("controller task");
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

pub async fn admin(ctl: &Controller, pki: &Pki, name: &str) -> AdminClient<Channel> {
    AdminClient::new(
        connect(&ctl.url, Some(&pki.files(name)))
            .await
            .expect("admin connects"),
    )
}

pub fn agent(ctl: &Controller, pki: &Pki, gateway: &str) -> NoopAgent {
    NoopAgent::start(
        link_config(&ctl.url, gateway, Some(pki.files(gateway))),
        Seen::default(),
    )
}

/// Applies and collects the progress; Err with the final status if the rollout failed.
pub async fn apply(
    c: &mut AdminClient<Channel>,
    topology: &str,
    expect: Option<u64>,
) -> Result<Vec<Progress>, tonic::Status> {
    let req = ApplyRequest {
        name: "clinical.yaml".into(),
        topology: topology.into(),
        expect_revision: expect,
        canary: String::new(),
    };
    collect(c.apply(req).await?.into_inner()).await
}

pub async fn collect(mut s: tonic::Streaming<Progress>) -> Result<Vec<Progress>, tonic::Status> {
    let mut out = Vec::new();
    while let Some(p) = s.message().await? {
        out.push(p);
    }
    Ok(out)
}

pub async fn status(c: &mut AdminClient<Channel>) -> StatusReply {
    c.status(StatusRequest {})
        .await
        .expect("status")
        .into_inner()
}

pub fn states(s: &StatusReply) -> Vec<(String, String)> {
    s.gateways
        .iter()
        .map(|g| (g.gateway.clone(), g.state.clone()))
        .collect()
}

/// Polls `done` every 20 ms up to `limit`.
pub async fn wait_until(limit: Duration, what: &str, mut done: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !done().await {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until both reference gateways are connected.
pub async fn wait_connected(c: &mut AdminClient<Channel>, n: usize) {
    wait_until(Duration::from_secs(10), "agents to connect", async || {
        status(c)
            .await
            .gateways
            .iter()
            .filter(|g| g.connected)
            .count()
            == n
    })
    .await;
}
