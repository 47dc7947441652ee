//! `cargo bench --bench fanout`: one revision fanned out to 100 agents over real gRPC with
//! mutual TLS on loopback. The controller is the real `tiernet-controller` process; the
//! agents are no-op agents (the real controller link, no dataplane) in this process.
//! Prints the time from the apply request to every gateway applied (target: under 2 s)
//! and the controller's resident memory. Under `cargo test` it runs with 10 agents.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tiernet::agent::noop::{link_config, NoopAgent, Seen};
use tiernet::controller::tls::{connect, TlsFiles};
use tiernet::pki::Role;
use tiernet::proto::v1::admin_client::AdminClient;
use tiernet::proto::v1::{ApplyRequest, StatusRequest};

/// `n` gateways, one office segment each, one flow: every gateway gets its own table.
fn topology(n: usize, with_flow: bool) -> String {
    let mut t = String::from("version: 1\nname: fanout\ntiers:\n  - name: office\n    level: 2\n    internet: outbound\ngateways:\n");
    for i in 0..n {
        t.push_str(&format!("  - name: gw-{i:03}\n    trunk: eth1\n"));
    }
    t.push_str("segments:\n");
    for i in 0..n {
        t.push_str(&format!(
            "  - name: lan-{i:03}\n    tier: office\n    interface: port0\n    subnet: 10.{}.{}.0/24\n    gateway: gw-{i:03}\n",
            i / 250,
            i % 250
        ));
    }
    t.push_str("services:\n  - name: web\n    segment: lan-000\n    address: 10.0.0.10\n    ports: [tcp/443]\n");
    if with_flow {
        t.push_str("flows:\n  - name: office-web\n    from: office\n    to: web\n");
    }
    t
}

fn rss_kb(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

struct Kill(std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn apply(admin: &mut AdminClient<tonic::transport::Channel>, topology: String) -> Duration {
    let start = Instant::now();
    let req = ApplyRequest {
        name: "fanout.yaml".into(),
        topology,
        expect_revision: None,
        canary: String::new(),
    };
    let mut stream = admin.apply(req).await.expect("apply accepted").into_inner();
    let mut done = false;
    while let Some(p) = stream.message().await.expect("rollout succeeds") {
        done |= p.phase == "done";
    }
    assert!(done, "rollout completed");
    start.elapsed()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n = if full { 100 } else { 10 };
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = dir.path();
    tiernet::pki::init(pki, &[]).expect("pki init");
    tiernet::pki::issue(pki, Role::Admin, "bench", &[]).expect("admin cert");
    let names: Vec<String> = (0..n).map(|i| format!("gw-{i:03}")).collect();
    for name in &names {
        tiernet::pki::issue(pki, Role::Agent, name, &[]).expect("agent cert");
    }
    let files = |name: &str| TlsFiles {
        ca: pki.join("ca.pem"),
        cert: pki.join(format!("{name}.pem")),
        key: pki.join(format!("{name}.key")),
    };

    let ready = dir.path().join("addr");
    let controller = Command::new(env!("CARGO_BIN_EXE_tiernet-controller"))
        .args(["--listen", "127.0.0.1:0", "--store"])
        .arg(dir.path().join("store.db"))
        .arg("--ready-file")
        .arg(&ready)
        .arg("--ca")
        .arg(pki.join("ca.pem"))
        .arg("--cert")
        .arg(pki.join("controller.pem"))
        .arg("--key")
        .arg(pki.join("controller.key"))
        .env("RUST_LOG", "warn")
        .stderr(Stdio::null())
        .spawn()
        .expect("controller starts");
    let controller = Kill(controller);
    let start = Instant::now();
    while !ready.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "controller did not start"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let url = format!(
        "https://{}",
        std::fs::read_to_string(&ready).expect("address")
    );
    let (idle_rss, _) = rss_kb(controller.0.id());

    let connecting = Instant::now();
    let agents: Vec<NoopAgent> = names
        .iter()
        .map(|name| NoopAgent::start(link_config(&url, name, Some(files(name))), Seen::default()))
        .collect();
    let mut admin = AdminClient::new(
        connect(&url, Some(&files("bench")))
            .await
            .expect("admin connects"),
    );
    loop {
        let s = admin
            .status(StatusRequest {})
            .await
            .expect("status")
            .into_inner();
        if s.gateways.iter().filter(|g| g.connected).count() == n {
            break;
        }
        assert!(
            connecting.elapsed() < Duration::from_secs(30),
            "agents did not connect"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let connected_in = connecting.elapsed();

    let first = apply(&mut admin, topology(n, false)).await;
    let second = apply(&mut admin, topology(n, true)).await;
    let (rss, hwm) = rss_kb(controller.0.id());
    for a in &agents {
        assert_eq!(
            a.seen().received,
            vec![1, 2],
            "each agent applied both revisions"
        );
    }
    println!("fanout: {n} agents over mutual TLS on loopback");
    println!(
        "  all connected in        {:>8.1} ms",
        connected_in.as_secs_f64() * 1e3
    );
    println!(
        "  revision 1 all-applied  {:>8.1} ms",
        first.as_secs_f64() * 1e3
    );
    println!(
        "  revision 2 all-applied  {:>8.1} ms   (target < 2000 ms)",
        second.as_secs_f64() * 1e3
    );
    println!(
        "  controller memory       {:>8.1} MiB resident, {:.1} MiB peak ({:.1} MiB idle)",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0,
        idle_rss as f64 / 1024.0
    );
    if full {
        assert!(
            second < Duration::from_secs(2),
            "fan-out took {second:?}, over the 2 s target"
        );
    }
}
