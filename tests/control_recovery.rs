//! Recovery of the control plane from a controller SIGKILLed in the middle of a rollout:
//! the controller runs as a real process (certificates from `tiernet pki`), the agents are
//! no-op agents in this process (real link, real mutual TLS, no dataplane), one of them slow
//! to apply so that the kill lands while the rollout is half done.
//!
//! The rule under test: a revision not recorded as applied is rolled back when the
//! controller starts again. Every gateway ends on the last applied revision (or on its
//! pre-controller state, revision 0, when there was none), `status` agrees, and history,
//! events and the audit log say what happened.

mod control_util;

use control_util::{
    changed_reference, collect, states, status, wait_connected, wait_until, REFERENCE,
};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tiernet::agent::noop::{link_config, NoopAgent, Seen};
use tiernet::controller::tls::{connect, TlsFiles};
use tiernet::proto::v1::admin_client::AdminClient;
use tiernet::proto::v1::*;
use tonic::transport::Channel;

const TODAY: &str = "2026-06-01";

struct Lab {
    dir: tempfile::TempDir,
    controller: Option<Child>,
    addr: Option<std::net::SocketAddr>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.kill();
    }
}

fn tiernet(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_tiernet"))
        .args(args)
        .output()
        .expect("tiernet runs");
    assert!(
        out.status.success(),
        "tiernet {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Lab {
    fn new() -> Lab {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = dir.path().join("pki");
        let pki = pki.to_str().expect("utf-8 path");
        tiernet(&["pki", "init", "--dir", pki]);
        for (role, name) in [
            ("agent", "gw-core"),
            ("agent", "gw-his"),
            ("admin", "alice"),
        ] {
            tiernet(&["pki", "issue", "--dir", pki, "--role", role, name]);
        }
        Lab {
            dir,
            controller: None,
            addr: None,
        }
    }

    fn files(&self, name: &str) -> TlsFiles {
        let d = self.dir.path().join("pki");
        TlsFiles {
            ca: d.join("ca.pem"),
            cert: d.join(format!("{name}.pem")),
            key: d.join(format!("{name}.key")),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn store(&self) -> PathBuf {
        self.path("controller.db")
    }

    /// Starts the controller process (on the same port as before after a restart).
    async fn start(&mut self) {
        let ready = self.path("controller.addr");
        let _ = std::fs::remove_file(&ready);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("controller.log"))
            .expect("log");
        let listen = self
            .addr
            .map_or("127.0.0.1:0".to_string(), |a| a.to_string());
        let p = |n: &str| self.path("pki").join(n).to_string_lossy().into_owned();
        let child = Command::new(env!("CARGO_BIN_EXE_tiernet-controller"))
            .args(["--listen", &listen, "--today", TODAY])
            .args(["--connect-grace", "3", "--apply-timeout", "20"])
            .args(["--store", &self.store().to_string_lossy()])
            .args(["--ca", &p("ca.pem")])
            .args(["--cert", &p("controller.pem")])
            .args(["--key", &p("controller.key")])
            .args(["--ready-file", &ready.to_string_lossy()])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("controller starts");
        self.controller = Some(child);
        let start = Instant::now();
        let addr = loop {
            if let Ok(a) = std::fs::read_to_string(&ready) {
                break a.parse().expect("address");
            }
            if let Some(c) = self.controller.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    panic!("controller exited: {st}\n{}", self.log());
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "controller did not start\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        self.addr = Some(addr);
    }

    /// SIGKILL: no shutdown code runs.
    fn kill(&mut self) {
        if let Some(mut c) = self.controller.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("controller.log")).unwrap_or_default()
    }

    fn url(&self) -> String {
        format!("https://{}", self.addr.expect("started"))
    }

    fn agent(&self, gateway: &str, start: Seen) -> NoopAgent {
        NoopAgent::start(
            link_config(&self.url(), gateway, Some(self.files(gateway))),
            start,
        )
    }

    async fn admin(&self) -> AdminClient<Channel> {
        AdminClient::new(
            connect(&self.url(), Some(&self.files("alice")))
                .await
                .expect("admin connects"),
        )
    }
}

fn apply_request(topology: &str) -> ApplyRequest {
    ApplyRequest {
        name: "clinical.yaml".into(),
        topology: topology.into(),
        expect_revision: None,
        canary: String::new(),
    }
}

/// Starts a rollout and returns once `fast` has applied it: the kill lands mid-rollout.
async fn start_rollout_and_wait_for(
    alice: &mut AdminClient<Channel>,
    topology: &str,
    fast: &NoopAgent,
    revision: u64,
) -> tonic::Streaming<Progress> {
    let stream = alice
        .apply(apply_request(topology))
        .await
        .expect("rollout starts")
        .into_inner();
    wait_until(
        Duration::from_secs(10),
        "the fast gateway to apply",
        async || fast.seen().revision == Some(revision),
    )
    .await;
    stream
}

async fn audit_kinds(alice: &mut AdminClient<Channel>) -> Vec<(String, u64, String)> {
    alice
        .audit(AuditRequest { after: 0 })
        .await
        .expect("audit")
        .into_inner()
        .records
        .into_iter()
        .map(|r| (r.kind, r.revision, r.detail_json))
        .collect()
}

fn assert_store_exists(p: &Path) {
    assert!(p.exists(), "store {} exists", p.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_killed_mid_rollout_rolls_back_to_the_last_applied_revision_on_restart() {
    let mut lab = Lab::new();
    lab.start().await;
    let core = lab.agent("gw-core", Seen::default());
    let his = lab.agent("gw-his", Seen::default());
    let mut alice = lab.admin().await;
    wait_connected(&mut alice, 2).await;
    collect(
        alice
            .apply(apply_request(REFERENCE))
            .await
            .expect("apply")
            .into_inner(),
    )
    .await
    .expect("revision 1 applies");
    let rev1_core = core.seen().state.expect("gw-core state");

    // Revision 2: gw-core applies at once, gw-his takes 4 s; the controller dies between.
    his.set_delay(Duration::from_secs(4));
    let _progress = start_rollout_and_wait_for(&mut alice, &changed_reference(), &core, 2).await;
    assert_eq!(his.seen().revision, Some(1), "gw-his is still applying");
    lab.kill();
    his.set_delay(Duration::ZERO);
    assert_store_exists(&lab.store());

    // The restarted controller rolls revision 2 back: gw-core is put back on revision 1
    // when it reconnects; gw-his, whose late apply of revision 2 lands after it reconnected
    // (it says hello on revision 1, then reports 2), is put back when it reports.
    lab.start().await;
    let mut alice = lab.admin().await;
    wait_until(
        Duration::from_secs(20),
        "every gateway back on revision 1, gw-his after its late apply of revision 2",
        async || {
            let s = status(&mut alice).await;
            s.current_revision == 1
                && states(&s)
                    == [
                        ("gw-core".into(), "IN_SYNC".into()),
                        ("gw-his".into(), "IN_SYNC".into()),
                    ]
                && s.gateways.iter().all(|g| g.applied_revision == 1)
                && his.seen().received.contains(&2)
                && his.seen().revision == Some(1)
                && core.seen().revision == Some(1)
        },
    )
    .await;
    // Nothing moves afterwards.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        core.seen().received,
        vec![1, 2, 1],
        "gw-core: 1, 2, back to 1"
    );
    assert_eq!(
        his.seen().received,
        vec![1, 2, 1],
        "gw-his: 1, late 2, back to 1"
    );
    assert_eq!(core.seen().state.as_ref(), Some(&rev1_core));
    let s = status(&mut alice).await;
    assert_eq!(s.current_revision, 1);
    assert!(s
        .gateways
        .iter()
        .all(|g| g.applied_revision == 1 && g.state == "IN_SYNC"));

    // History: revision 2 failed, saying why and where the gateways went.
    let h = alice
        .history(HistoryRequest { limit: 10 })
        .await
        .expect("history")
        .into_inner();
    assert_eq!(h.current_revision, 1);
    let r2 = h.revisions.iter().find(|r| r.id == 2).expect("revision 2");
    assert_eq!(r2.status, "failed");
    assert!(
        r2.message.contains("controller stopped during the rollout")
            && r2.message.contains("revision 1"),
        "{}",
        r2.message
    );
    let r1 = h.revisions.iter().find(|r| r.id == 1).expect("revision 1");
    assert_eq!(r1.status, "applied");
    // The audit log records the recovery, and its chain holds.
    let audit = audit_kinds(&mut alice).await;
    let rec: Vec<_> = audit.iter().filter(|(k, _, _)| k == "recovery").collect();
    assert_eq!(rec.len(), 1, "{audit:?}");
    assert_eq!(rec[0].1, 2);
    assert!(rec[0].2.contains("\"back_to\":1"), "{}", rec[0].2);
    let verify = Command::new(env!("CARGO_BIN_EXE_tiernet"))
        .args(["audit", "verify", "--store", &lab.store().to_string_lossy()])
        .output()
        .expect("audit verify");
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    // Events say it too: the interrupted rollout, and each gateway's way back.
    let events: Vec<Event> = {
        let mut s = alice
            .events(EventsRequest {
                after: 0,
                limit: 200,
                follow: false,
            })
            .await
            .expect("events")
            .into_inner();
        let mut v = Vec::new();
        while let Some(e) = s.message().await.expect("event") {
            v.push(e);
        }
        v
    };
    assert!(
        events
            .iter()
            .any(|e| e.kind == "rollout" && e.summary.contains("revision 2 was interrupted")),
        "{events:?}"
    );
    for gw in ["gw-core", "gw-his"] {
        assert!(
            events.iter().any(|e| e.gateway == gw
                && e.kind == "apply"
                && e.summary.starts_with("revision 1 applied on reconnect")),
            "{gw}: {events:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_killed_during_the_first_rollout_puts_gateways_back_on_their_pre_controller_state(
) {
    let mut lab = Lab::new();
    lab.start().await;
    // gw-core ran standalone before it joined: that state is its baseline. gw-his had none.
    let mut standalone = tiernet::compile::firewall::closed_state("gw-core");
    standalone.sysctls.clear();
    standalone.table.chains.truncate(1);
    let core = lab.agent(
        "gw-core",
        Seen {
            received: Vec::new(),
            revision: None,
            state: Some(standalone.clone()),
        },
    );
    let his = lab.agent("gw-his", Seen::default());
    let mut alice = lab.admin().await;
    wait_connected(&mut alice, 2).await;
    his.set_delay(Duration::from_secs(4));
    let _progress = start_rollout_and_wait_for(&mut alice, REFERENCE, &core, 1).await;
    lab.kill();
    his.set_delay(Duration::ZERO);

    lab.start().await;
    let mut alice = lab.admin().await;
    wait_until(
        Duration::from_secs(20),
        "both gateways back on revision 0",
        async || {
            let s = status(&mut alice).await;
            s.current_revision == 0
                && s.gateways.len() == 2
                && s.gateways
                    .iter()
                    .all(|g| g.connected && g.applied_revision == 0)
                && his.seen().received.contains(&1)
                && his.seen().revision == Some(0)
                && core.seen().revision == Some(0)
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        core.seen().state.as_ref(),
        Some(&standalone),
        "gw-core is back on exactly what it enforced before the controller"
    );
    assert_eq!(
        his.seen().state.as_ref(),
        Some(&tiernet::compile::firewall::closed_state("gw-his")),
        "gw-his, which sent no baseline, is closed"
    );
    assert_eq!(core.seen().received, vec![1, 0]);
    assert_eq!(his.seen().received, vec![1, 0]);
    let h = alice
        .history(HistoryRequest { limit: 10 })
        .await
        .expect("history")
        .into_inner();
    assert_eq!(h.current_revision, 0);
    assert_eq!(h.revisions.len(), 1);
    assert_eq!(h.revisions[0].status, "failed");
    assert!(
        h.revisions[0].message.contains("revision 0"),
        "{}",
        h.revisions[0].message
    );
    for g in status(&mut alice).await.gateways {
        assert_eq!(
            (g.state.as_str(), g.applied_revision),
            ("PENDING", 0),
            "{g:?}"
        );
        assert!(
            g.detail.contains("pre-controller state (revision 0)"),
            "{g:?}"
        );
    }
}
