//! While the gateway's table is replaced 500 times, alternating between two policies, a
//! prober sending real connections through it never gets through on a port neither
//! policy allows: a replace is one transaction, never a moment of an open gateway.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tiernet::dataplane::nft::NftSession;

const REPLACES: usize = 500;

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip runs");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

fn topology(port: u16) -> String {
    format!(
        "version: 1
name: atomic
tiers:
  - {{ name: office, level: 2 }}
  - {{ name: research, level: 3, inbound_roles: [thin-client] }}
gateways:
  - {{ name: gw, trunk: eth9 }}
segments:
  - {{ name: clients, tier: office, interface: c0, subnet: 10.0.1.0/24, gateway: gw }}
  - {{ name: servers, tier: research, interface: s0, subnet: 10.0.2.0/24, gateway: gw }}
services:
  - {{ name: vdi, segment: servers, address: 10.0.2.10, ports: [tcp/{port}], role: thin-client }}
flows:
  - {{ name: work, from: clients, to: vdi }}
"
    )
}

fn table(text: &str) -> tiernet::nftables::ir::Table {
    let today = chrono::NaiveDate::from_ymd_opt(2026, 11, 26).expect("date");
    let (topo, diags) = tiernet::topology::parse(text);
    assert!(diags.is_empty(), "{diags:?}");
    let compiled = tiernet::compile::compile(&topo.expect("topology"), today).expect("compiles");
    compiled.gateway("gw").expect("gw").table.clone()
}

#[test]
fn replacing_the_table_never_opens_the_gateway() {
    let tag = std::process::id();
    let (client, gw, server) = (
        format!("tnat-c-{tag}"),
        format!("tnat-gw-{tag}"),
        format!("tnat-s-{tag}"),
    );
    let _guard = Namespaces(vec![client.clone(), gw.clone(), server.clone()]);
    for ns in [&client, &gw, &server] {
        ip(&["netns", "add", ns]);
        ip(&["-n", ns, "link", "set", "lo", "up"]);
    }
    ip(&[
        "-n", &gw, "link", "add", "c0", "type", "veth", "peer", "name", "eth0", "netns", &client,
    ]);
    ip(&[
        "-n", &gw, "link", "add", "s0", "type", "veth", "peer", "name", "eth0", "netns", &server,
    ]);
    for (ns, addr, via) in [
        (&client, "10.0.1.100/24", "10.0.1.1"),
        (&server, "10.0.2.10/24", "10.0.2.1"),
    ] {
        ip(&["-n", ns, "addr", "add", addr, "dev", "eth0"]);
        ip(&["-n", ns, "link", "set", "eth0", "up"]);
        ip(&["-n", ns, "route", "add", "default", "via", via]);
    }
    // The agent programs the gateway (addresses, forwarding, the table allowing tcp/1000).
    let dir = tempfile::tempdir().expect("tempdir");
    let (a_text, b_text) = (topology(1000), topology(2000));
    let topo_file = dir.path().join("a.yaml");
    std::fs::write(&topo_file, &a_text).expect("write");
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &gw,
            env!("CARGO_BIN_EXE_tiernet-agent"),
            "--gateway",
            "gw",
            "--once",
            "--today",
            "2026-11-26",
        ])
        .arg("--topology")
        .arg(&topo_file)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .output()
        .expect("agent");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Listeners on both policies' ports and on one neither allows.
    let listeners = tiernet::netns::run_in(&server, || {
        Ok([1000u16, 2000, 3000].map(|p| TcpListener::bind(("10.0.2.10", p)).expect("bind")))
    })
    .expect("listeners");
    for l in listeners {
        std::thread::spawn(move || {
            for conn in l.incoming() {
                drop(conn);
            }
        });
    }

    let stop = AtomicBool::new(false);
    let (opened, forbidden) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let (a, b) = (table(&a_text), table(&b_text));
    std::thread::scope(|s| {
        s.spawn(|| {
            tiernet::netns::run_in(&client, || {
                let mut port = [1000u16, 2000, 3000].iter().cycle();
                while !stop.load(Ordering::Relaxed) {
                    let p = *port.next().expect("cycle");
                    let addr = SocketAddr::from(([10, 0, 2, 10], p));
                    if TcpStream::connect_timeout(&addr, Duration::from_millis(20)).is_ok() {
                        if p == 3000 {
                            forbidden.fetch_add(1, Ordering::Relaxed);
                        } else {
                            opened.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Ok(())
            })
            .expect("prober");
        });
        let replaced = tiernet::netns::run_in(&gw, || {
            let mut session = NftSession::open(true)?;
            for i in 0..REPLACES {
                session.replace(if i % 2 == 0 { &b } else { &a })?;
                std::thread::sleep(Duration::from_millis(2));
            }
            Ok(())
        });
        stop.store(true, Ordering::Relaxed);
        replaced.expect("500 replaces");
    });
    assert_eq!(
        forbidden.load(Ordering::Relaxed),
        0,
        "a port neither policy allows got through"
    );
    assert!(
        opened.load(Ordering::Relaxed) > 10,
        "the prober saw allowed traffic pass, so it was live"
    );
}
