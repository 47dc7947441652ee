//! tiernet-agent against a real kernel, in a network namespace each test creates and
//! always removes. State is read back with `ip` and `nft` as independent witnesses.

#[path = "common/kernel.rs"]
mod kernel;

use kernel::{
    expected_ruleset, normalize, ok, run, untagged_reference, wait_for, CORE_PORTS, TODAY,
};
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// A named network namespace with the gateway's ports, deleted on drop (also on panic).
struct Gateway {
    ns: String,
    dir: tempfile::TempDir,
    agent: Option<Child>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut a) = self.agent.take() {
            let _ = a.kill();
            let _ = a.wait();
        }
        let _ = run(&["ip", "netns", "del", &self.ns]);
    }
}

impl Gateway {
    fn new(tag: &str) -> Gateway {
        let ns = format!("tnagent-{tag}-{}", std::process::id());
        let _ = run(&["ip", "netns", "del", &ns]);
        ok(&["ip", "netns", "add", &ns]);
        let gw = Gateway {
            ns,
            dir: tempfile::tempdir().expect("tempdir"),
            agent: None,
        };
        for (i, port) in CORE_PORTS.iter().enumerate() {
            let peer = format!("peer{i}");
            gw.ip(&["link", "add", port, "type", "veth", "peer", "name", &peer]);
            gw.ip(&["link", "set", &peer, "up"]);
        }
        std::fs::write(gw.topology(), untagged_reference()).expect("write topology");
        gw
    }

    fn topology(&self) -> PathBuf {
        self.dir.path().join("clinical.yaml")
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["ip", "-n", &self.ns];
        full.extend_from_slice(args);
        ok(&full)
    }

    fn exec(&self, args: &[&str]) -> Output {
        let mut full = vec!["ip", "netns", "exec", &self.ns];
        full.extend_from_slice(args);
        run(&full)
    }

    fn agent_cmd(&self, extra: &[&str]) -> Command {
        let mut c = Command::new("ip");
        let topo = self.topology();
        let state = self.state_dir();
        c.args([
            "netns",
            "exec",
            &self.ns,
            env!("CARGO_BIN_EXE_tiernet-agent"),
            "--gateway",
            "gw-core",
        ]);
        c.args([
            "--state-dir",
            state.to_str().unwrap_or_default(),
            "--today",
            TODAY,
        ]);
        if !extra.contains(&"--no-topology") {
            c.args(["--topology", topo.to_str().unwrap_or_default()]);
        }
        c.args(extra.iter().filter(|a| **a != "--no-topology"));
        c
    }

    /// Runs the agent once; returns the total of `changes` it logged.
    fn apply_once(&self, extra: &[&str]) -> u64 {
        let mut args = vec!["--once"];
        args.extend_from_slice(extra);
        let out = self.agent_cmd(&args).output().expect("agent runs");
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "agent failed:\n{log}");
        log.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|v| v["fields"]["changes"].as_u64())
            .sum()
    }

    fn start(&mut self, extra: &[&str]) {
        let _ = std::fs::remove_file(self.state_dir().join("ready"));
        let log = std::fs::File::create(self.dir.path().join("agent.log")).expect("log file");
        let child = self
            .agent_cmd(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("agent starts");
        self.agent = Some(child);
        wait_for(
            Duration::from_secs(20),
            || self.state_dir().join("ready").exists(),
            || self.log(),
        );
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    fn routes(&self) -> Vec<String> {
        let v: Value = serde_json::from_str(&self.ip(&["-j", "route", "show", "proto", "201"]))
            .expect("ip -j route");
        let mut r: Vec<String> = v
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                format!(
                    "{} via {} dev {}",
                    r["dst"].as_str().unwrap_or(""),
                    r["gateway"].as_str().unwrap_or(""),
                    r["dev"].as_str().unwrap_or("")
                )
            })
            .collect();
        r.sort();
        r
    }

    fn addresses(&self, dev: &str) -> Vec<String> {
        let v: Value = serde_json::from_str(&self.ip(&["-j", "addr", "show", "dev", dev]))
            .expect("ip -j addr");
        v[0]["addr_info"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["family"] == "inet")
            .map(|a| format!("{}/{}", a["local"].as_str().unwrap_or(""), a["prefixlen"]))
            .collect()
    }

    fn ruleset(&self) -> Value {
        let out = self.exec(&["nft", "-j", "list", "ruleset"]);
        assert!(
            out.status.success(),
            "nft list: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        normalize(serde_json::from_slice(&out.stdout).expect("nft json"))
    }

    fn drift_events(&self) -> Vec<Value> {
        std::fs::read_to_string(self.state_dir().join("drift.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

#[test]
fn apply_reads_back_exactly_and_twice_changes_nothing() {
    let gw = Gateway::new("apply");
    let first = gw.apply_once(&[]);
    assert!(
        first > 10,
        "the first apply programs the gateway ({first} changes)"
    );
    assert_eq!(
        gw.ruleset(),
        expected_ruleset(&gw.topology(), "gw-core"),
        "kernel ruleset == nft -f of the rendered script"
    );
    assert_eq!(
        gw.routes(),
        [
            "10.4.10.0/24 via 10.255.0.2 dev tr900",
            "default via 198.51.100.1 dev eth0"
        ]
    );
    assert_eq!(gw.addresses("seg310"), vec!["10.3.10.1/24"]);
    assert_eq!(
        gw.addresses("eth3"),
        vec!["10.3.30.254/24"],
        "explicit router_address"
    );
    assert_eq!(gw.addresses("eth0"), vec!["198.51.100.2/30"]);
    let fwd = gw.exec(&["cat", "/proc/sys/net/ipv4/ip_forward"]);
    assert_eq!(String::from_utf8_lossy(&fwd.stdout).trim(), "1");
    let rpf = gw.exec(&["cat", "/proc/sys/net/ipv4/conf/seg210/rp_filter"]);
    assert_eq!(String::from_utf8_lossy(&rpf.stdout).trim(), "1");
    assert_eq!(
        gw.apply_once(&[]),
        1,
        "a new agent process re-adopts the persisted table (one replace), nothing else"
    );
    assert_eq!(
        gw.apply_once(&["--no-owner"]),
        0,
        "an apply of what the kernel already holds makes no netlink write"
    );
}

#[test]
fn owned_table_refuses_other_writers() {
    let mut gw = Gateway::new("owner");
    gw.start(&[]);
    let before = gw.ruleset();
    for attempt in [
        vec!["nft", "add", "rule", "inet", "tiernet", "forward", "accept"],
        vec!["nft", "flush", "table", "inet", "tiernet"],
        vec!["nft", "delete", "table", "inet", "tiernet"],
    ] {
        let out = gw.exec(&attempt);
        assert!(
            !out.status.success(),
            "{attempt:?} must be refused while the agent owns the table"
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Operation not permitted"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(gw.ruleset(), before);
}

/// Each change made behind the agent's back, and a check that it was put right.
#[test]
fn drift_is_reverted_from_kernel_events() {
    let mut gw = Gateway::new("drift");
    gw.start(&["--no-owner"]);
    let ruleset = gw.ruleset();
    let routes = gw.routes();
    let cases: Vec<(&str, Vec<&str>)> = vec![
        (
            "nft flush table",
            vec!["nft", "flush", "table", "inet", "tiernet"],
        ),
        (
            "nft delete table",
            vec!["nft", "delete", "table", "inet", "tiernet"],
        ),
        (
            "hand-added accept rule",
            vec![
                "nft", "insert", "rule", "inet", "tiernet", "forward", "accept",
            ],
        ),
        (
            "element removed",
            vec![
                "nft",
                "delete",
                "element",
                "inet",
                "tiernet",
                "out_v4_any",
                "{ 10.2.10.0/24 }",
            ],
        ),
        ("deleted route", vec!["ip", "route", "del", "10.4.10.0/24"]),
        (
            "foreign route via a segment",
            vec![
                "ip",
                "route",
                "add",
                "10.77.0.0/16",
                "via",
                "10.2.10.50",
                "dev",
                "seg210",
            ],
        ),
        (
            "removed address",
            vec!["ip", "addr", "del", "10.3.10.1/24", "dev", "seg310"],
        ),
        ("link down", vec!["ip", "link", "set", "seg320", "down"]),
        (
            "rp_filter loosened",
            vec!["sysctl", "-qw", "net.ipv4.conf.seg110.rp_filter=0"],
        ),
    ];
    for (what, cmd) in cases {
        let before = gw.drift_events().len();
        let out = gw.exec(&cmd);
        assert!(
            out.status.success(),
            "{what}: {cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        wait_for(
            Duration::from_secs(5),
            || {
                gw.ruleset() == ruleset
                    && gw.routes() == routes
                    && gw.addresses("seg310") == ["10.3.10.1/24"]
                    && link_up(&gw, "seg320")
                    && sysctl(&gw, "net/ipv4/conf/seg110/rp_filter") == "1"
            },
            || format!("{what} not reverted\n{}", gw.log()),
        );
        wait_for(
            Duration::from_secs(5),
            || gw.drift_events().len() > before,
            || format!("{what}: no drift event\n{}", gw.log()),
        );
        let events = gw.drift_events();
        assert!(
            events[before..].iter().any(|e| e["action"] == "reverted"),
            "{what}: {:?}",
            &events[before..]
        );
    }
}

fn link_up(gw: &Gateway, dev: &str) -> bool {
    let v: Value =
        serde_json::from_str(&gw.ip(&["-j", "link", "show", "dev", dev])).unwrap_or(Value::Null);
    v[0]["flags"]
        .as_array()
        .is_some_and(|f| f.iter().any(|x| x == "UP"))
}

fn sysctl(gw: &Gateway, key: &str) -> String {
    let out = gw.exec(&["cat", &format!("/proc/sys/{key}")]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn bridge_joining_two_tiers_is_taken_apart() {
    let mut gw = Gateway::new("bridge");
    gw.start(&["--no-owner"]);
    gw.ip(&["link", "add", "br-evil", "type", "bridge"]);
    gw.ip(&["link", "set", "seg210", "master", "br-evil"]);
    gw.ip(&["link", "set", "seg310", "master", "br-evil"]);
    let enslaved = |dev: &str| {
        let v: Value = serde_json::from_str(&gw.ip(&["-j", "link", "show", "dev", dev]))
            .unwrap_or(Value::Null);
        v[0].get("master").is_some()
    };
    wait_for(
        Duration::from_secs(5),
        || !enslaved("seg210") && !enslaved("seg310"),
        || gw.log(),
    );
    assert_eq!(gw.addresses("seg210"), ["10.2.10.1/24"]);
}

#[test]
fn foreign_accept_all_table_is_reported_and_our_drops_hold() {
    let mut gw = Gateway::new("foreign");
    gw.start(&["--no-owner"]);
    let out = gw.exec(&["nft", "add table inet intruder; add chain inet intruder fw { type filter hook forward priority -10; policy accept; }"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(
        Duration::from_secs(5),
        || {
            gw.drift_events().iter().any(|e| {
                e["notices"].as_array().is_some_and(|n| {
                    n.iter()
                        .any(|x| x.as_str().is_some_and(|s| s.contains("intruder")))
                })
            })
        },
        || gw.log(),
    );
    let rs = gw.ruleset();
    assert!(
        rs.to_string().contains("\"policy\":\"drop\""),
        "our forward chain still drops by default"
    );
}

#[test]
fn killed_agent_restores_persisted_state_without_a_topology() {
    let mut gw = Gateway::new("restart");
    gw.start(&["--no-owner"]);
    let ruleset = gw.ruleset();
    let routes = gw.routes();
    if let Some(mut a) = gw.agent.take() {
        a.kill().expect("SIGKILL");
        let _ = a.wait();
    }
    // While no agent runs, the gateway is damaged; a restart with no topology source must repair it.
    gw.ip(&["route", "del", "10.4.10.0/24"]);
    gw.exec(&["nft", "delete", "table", "inet", "tiernet"]);
    gw.start(&["--no-owner", "--no-topology"]);
    assert_eq!(gw.ruleset(), ruleset);
    assert_eq!(gw.routes(), routes);
}

/// Another process fighting over one route makes the agent back off from that route only:
/// the firewall and every other change are still put back at once.
#[test]
fn a_flapping_route_never_exempts_the_firewall() {
    let mut gw = Gateway::new("flap");
    gw.start(&["--no-owner", "--flap-limit", "1"]);
    let ruleset = gw.ruleset();
    let route = "10.4.10.0/24";
    let has_route = |gw: &Gateway| gw.routes().iter().any(|r| r.starts_with(route));
    // Two deletes within the window: the second one is past the limit.
    for _ in 0..2 {
        wait_for(Duration::from_secs(5), || has_route(&gw), || gw.log());
        gw.ip(&["route", "del", route]);
    }
    wait_for(
        Duration::from_secs(5),
        || {
            gw.drift_events().iter().any(|e| {
                e["action"]
                    .as_str()
                    .is_some_and(|a| a.contains("backing off"))
            })
        },
        || format!("no back-off reported\n{}", gw.log()),
    );
    assert!(!has_route(&gw), "the flapping route is left alone for now");
    // The firewall flushed while that route is backed off: put back at once anyway.
    let out = gw.exec(&["nft", "flush", "table", "inet", "tiernet"]);
    assert!(out.status.success());
    gw.ip(&["addr", "del", "10.3.10.1/24", "dev", "seg310"]);
    wait_for(
        Duration::from_secs(5),
        || gw.ruleset() == ruleset && gw.addresses("seg310") == ["10.3.10.1/24"],
        || format!("firewall or address not reverted\n{}", gw.log()),
    );
    assert!(!has_route(&gw), "still backing off from the route");
}
