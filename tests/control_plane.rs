//! The control plane end to end against real kernels: a controller and the reference
//! topology's two agents, each gateway in a network namespace this test creates (and
//! always deletes), joined to the controller's namespace by a management bridge. Mutual
//! TLS with certificates from `tiernet pki`; every step through the `tiernet` CLI.
//! Gateway state is read back with `nft` and `ip` as independent witnesses.

#[path = "common/kernel.rs"]
mod kernel;

use kernel::{expected_ruleset, ok, untagged, wait_for, Ns, TODAY};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::Duration;

/// The management network lives only inside this test's namespaces.
const CONTROLLER_IP: &str = "192.0.2.1";

fn reference() -> String {
    untagged(
        &std::fs::read_to_string("topologies/clinical-research.yaml").expect("reference topology"),
    )
}

/// Without the thin-client flow: gw-core's table changes, gw-his's does not.
fn changed() -> String {
    let flow = "  - name: thin-client\n    from: office-lan\n    to: vdi-gateway\n";
    assert!(reference().contains(flow));
    reference().replace(flow, "")
}

/// The reference plus a gw-his segment on a port gw-his does not have: gw-core can apply
/// it, gw-his cannot.
fn his_cannot_apply() -> String {
    let anchor = "    gateway: gw-his\n\nservices:";
    assert!(reference().contains(anchor));
    reference().replace(
        anchor,
        "    gateway: gw-his\n  - name: his-lab\n    tier: hospital\n    interface: seg420\n    subnet: 10.4.20.0/24\n    gateway: gw-his\n\nservices:",
    )
}

struct Gateway {
    name: &'static str,
    ns: Ns,
    agent: Option<Child>,
    state: PathBuf,
    log: PathBuf,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut a) = self.agent.take() {
            let _ = a.kill();
            let _ = a.wait();
        }
    }
}

struct Lab {
    dir: tempfile::TempDir,
    ctl_ns: Ns,
    controller: Option<Child>,
    gateways: Vec<Gateway>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.kill_controller();
    }
}

impl Lab {
    fn new() -> Lab {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = dir.path().join("pki");
        let tn = env!("CARGO_BIN_EXE_tiernet");
        let pki_s = pki.to_str().unwrap_or_default();
        ok(&[tn, "pki", "init", "--dir", pki_s, "--host", CONTROLLER_IP]);
        for (role, name) in [
            ("agent", "gw-core"),
            ("agent", "gw-his"),
            ("admin", "alice"),
        ] {
            ok(&[tn, "pki", "issue", "--dir", pki_s, "--role", role, name]);
        }
        let ctl_ns = Ns::new("tncp", "ctl");
        ctl_ns.ip(&["link", "add", "mgmt", "type", "bridge"]);
        ctl_ns.ip(&["addr", "add", &format!("{CONTROLLER_IP}/24"), "dev", "mgmt"]);
        ctl_ns.ip(&["link", "set", "mgmt", "up"]);
        let ports: [(&str, &[&str]); 2] = [
            (
                "gw-core",
                &[
                    "seg110", "seg210", "seg310", "seg320", "eth3", "tr900", "eth0",
                ],
            ),
            ("gw-his", &["seg410", "tr900"]),
        ];
        let mut gateways = Vec::new();
        for (i, (name, ports)) in ports.into_iter().enumerate() {
            let ns = Ns::new("tncp", &name[3..]);
            let host_end = format!("m-{}", &name[3..]);
            ns.ip(&[
                "link", "add", "mgmt0", "type", "veth", "peer", "name", &host_end, "netns",
                &ctl_ns.0,
            ]);
            ns.ip(&[
                "addr",
                "add",
                &format!("192.0.2.{}/24", 10 + i),
                "dev",
                "mgmt0",
            ]);
            ns.ip(&["link", "set", "mgmt0", "up"]);
            ctl_ns.ip(&["link", "set", &host_end, "master", "mgmt", "up"]);
            for (p, port) in ports.iter().enumerate() {
                let peer = format!("peer{p}");
                ns.ip(&["link", "add", port, "type", "veth", "peer", "name", &peer]);
                ns.ip(&["link", "set", &peer, "up"]);
            }
            let state = dir.path().join(format!("state-{name}"));
            let log = dir.path().join(format!("{name}.log"));
            gateways.push(Gateway {
                name,
                ns,
                agent: None,
                state,
                log,
            });
        }
        let mut lab = Lab {
            dir,
            ctl_ns,
            controller: None,
            gateways,
        };
        lab.start_controller();
        for i in 0..lab.gateways.len() {
            lab.start_agent(i);
        }
        lab
    }

    fn pki(&self, file: &str) -> String {
        self.dir
            .path()
            .join("pki")
            .join(file)
            .to_string_lossy()
            .into_owned()
    }

    fn url(&self) -> String {
        format!("https://{CONTROLLER_IP}:7443")
    }

    fn start_controller(&mut self) {
        let ready = self.dir.path().join("controller.addr");
        let _ = std::fs::remove_file(&ready);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("controller.log"))
            .expect("log");
        let child = self
            .ctl_ns
            .cmd(env!("CARGO_BIN_EXE_tiernet-controller"))
            .args([
                "--listen",
                &format!("{CONTROLLER_IP}:7443"),
                "--today",
                TODAY,
                "--connect-grace",
                "5",
            ])
            .args([
                "--store",
                &self.dir.path().join("controller.db").to_string_lossy(),
            ])
            .args([
                "--ca",
                &self.pki("ca.pem"),
                "--cert",
                &self.pki("controller.pem"),
                "--key",
                &self.pki("controller.key"),
            ])
            .args(["--ready-file", &ready.to_string_lossy()])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("controller starts");
        self.controller = Some(child);
        wait_for(Duration::from_secs(10), || ready.exists(), || self.logs());
    }

    fn kill_controller(&mut self) {
        if let Some(mut c) = self.controller.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn start_agent(&mut self, i: usize) {
        let (ca, url) = (self.pki("ca.pem"), self.url());
        let g = &mut self.gateways[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&g.log)
            .expect("log");
        let cert = self.dir.path().join("pki").join(format!("{}.pem", g.name));
        let key = self.dir.path().join("pki").join(format!("{}.key", g.name));
        let child =
            g.ns.cmd(env!("CARGO_BIN_EXE_tiernet-agent"))
                .args([
                    "--gateway",
                    g.name,
                    "--controller",
                    &url,
                    "--ca",
                    &ca,
                    "--no-owner",
                ])
                .args([
                    "--cert",
                    &cert.to_string_lossy(),
                    "--key",
                    &key.to_string_lossy(),
                ])
                .args(["--state-dir", &g.state.to_string_lossy()])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("agent starts");
        g.agent = Some(child);
    }

    fn logs(&self) -> String {
        let mut s = String::new();
        for f in ["controller.log", "gw-core.log", "gw-his.log"] {
            let text = std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            s.push_str(&format!(
                "--- {f}\n{}\n",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ));
        }
        s
    }

    /// Runs `tiernet ARGS --controller URL --ca --cert --key` in the controller's namespace.
    fn cli(&self, args: &[&str]) -> Output {
        self.ctl_ns
            .cmd(env!("CARGO_BIN_EXE_tiernet"))
            .args(args)
            .args([
                "--controller",
                &self.url(),
                "--ca",
                &self.pki("ca.pem"),
                "--cert",
                &self.pki("alice.pem"),
                "--key",
                &self.pki("alice.key"),
            ])
            .output()
            .expect("tiernet runs")
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).expect("write topology");
        p
    }

    fn apply(&self, file: &Path) -> Output {
        self.cli(&["apply", file.to_str().unwrap_or_default()])
    }

    fn gw(&self, name: &str) -> &Gateway {
        self.gateways
            .iter()
            .find(|g| g.name == name)
            .expect("gateway")
    }

    /// Both gateways hold exactly what `topology` compiles to.
    fn assert_enforces(&self, topology: &Path, what: &str) {
        for g in &self.gateways {
            assert_eq!(
                g.ns.ruleset(),
                expected_ruleset(topology, g.name),
                "{what}: {} ruleset\n{}",
                g.name,
                self.logs()
            );
        }
    }

    fn status_ok(&self) -> bool {
        self.cli(&["status"]).status.success()
    }

    fn applied_count(&self) -> usize {
        self.gateways
            .iter()
            .map(|g| {
                std::fs::read_to_string(&g.log)
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| l.contains("\"message\":\"applied\""))
                    .count()
            })
            .sum()
    }
}

fn success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn apply_change_refused_rollout_and_rollback_through_the_controller() {
    let lab = Lab::new();
    wait_for(
        Duration::from_secs(20),
        || {
            String::from_utf8_lossy(&lab.cli(&["status"]).stdout)
                .matches("PENDING")
                .count()
                == 2
        },
        || lab.logs(),
    );

    let v1 = lab.write("v1.yaml", &reference());
    let out = lab.apply(&v1);
    success(&out, "apply v1");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("gw-his"),
        "per-gateway progress"
    );
    lab.assert_enforces(&v1, "revision 1");
    let routes = lab.gw("gw-core").ns.ip(&["route", "show", "proto", "201"]);
    assert!(
        routes.contains("10.4.10.0/24 via 10.255.0.2 dev tr900"),
        "{routes}"
    );
    wait_for(Duration::from_secs(10), || lab.status_ok(), || lab.logs());

    let v2 = lab.write("v2.yaml", &changed());
    success(&lab.apply(&v2), "apply v2");
    lab.assert_enforces(&v2, "revision 2");

    let v3 = lab.write("v3.yaml", &his_cannot_apply());
    let out = lab.apply(&v3);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a failed rollout exits non-zero: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("seg420"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    lab.assert_enforces(
        &v2,
        "after the refused revision 3 every gateway is back on revision 2",
    );

    let out = lab.cli(&["rollback", "1"]);
    success(&out, "rollback 1");
    lab.assert_enforces(&v1, "rollback to revision 1");

    let hist = lab.cli(&["history", "--output", "json"]);
    success(&hist, "history");
    let h: Value = serde_json::from_slice(&hist.stdout).expect("history json");
    let statuses: Vec<&str> = h["revisions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["status"].as_str())
        .collect();
    assert_eq!(
        statuses,
        ["applied", "failed", "applied", "applied"],
        "newest first: {h}"
    );
    assert_eq!(h["current_revision"], 4);
}

#[test]
fn agents_enforce_without_the_controller_and_need_no_reapply_after_its_restart() {
    let mut lab = Lab::new();
    let v1 = lab.write("v1.yaml", &reference());
    wait_for(
        Duration::from_secs(20),
        || {
            String::from_utf8_lossy(&lab.cli(&["status"]).stdout)
                .matches("PENDING")
                .count()
                == 2
        },
        || lab.logs(),
    );
    success(&lab.apply(&v1), "apply v1");
    wait_for(Duration::from_secs(10), || lab.status_ok(), || lab.logs());
    let applied = lab.applied_count();

    lab.kill_controller();
    let core = lab.gw("gw-core");
    let before = core.ns.ruleset();
    let out = core.ns.exec(&[
        "nft", "insert", "rule", "inet", "tiernet", "forward", "accept",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(
        Duration::from_secs(5),
        || core.ns.ruleset() == before,
        || format!("drift not reverted without the controller\n{}", lab.logs()),
    );
    let out = core.ns.exec(&["ip", "route", "del", "10.4.10.0/24"]);
    assert!(out.status.success());
    wait_for(
        Duration::from_secs(5),
        || {
            core.ns
                .ip(&["route", "show", "proto", "201"])
                .contains("10.4.10.0/24")
        },
        || format!("route not restored\n{}", lab.logs()),
    );
    lab.assert_enforces(&v1, "controller down");
    let out = lab.cli(&["status"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "no controller: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    lab.start_controller();
    wait_for(
        Duration::from_secs(20),
        || lab.status_ok(),
        || format!("agents did not come back in sync\n{}", lab.logs()),
    );
    let out = lab.cli(&["status", "--output", "json"]);
    let s: Value = serde_json::from_slice(&out.stdout).expect("status json");
    let states: Vec<&str> = s["gateways"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|g| g["state"].as_str())
        .collect();
    assert_eq!(states, ["IN_SYNC", "IN_SYNC"]);
    assert_eq!(
        lab.applied_count(),
        applied,
        "reconnecting agents were not re-applied\n{}",
        lab.logs()
    );

    // With the controller back, drift is reported to it as an event.
    let out = core_exec(
        &lab,
        &[
            "nft", "insert", "rule", "inet", "tiernet", "forward", "accept",
        ],
    );
    assert!(out.status.success());
    wait_for(
        Duration::from_secs(10),
        || {
            String::from_utf8_lossy(&lab.cli(&["events", "--limit", "100"]).stdout)
                .lines()
                .any(|l| l.contains("gw-core") && l.contains("drift") && l.contains("reverted"))
        },
        || lab.logs(),
    );
    // A connection logged to the audit NFLOG group reaches the controller's audit log (a
    // local stand-in for an audited flow: an output-hook rule with tiernet's audit prefix).
    let rule = "add table inet probe; add chain inet probe out { type filter hook output priority 0; }; \
                add rule inet probe out tcp dport 9 log prefix \"tiernet audit flow=probe \" group 2711";
    assert!(core_exec(&lab, &["nft", rule]).status.success());
    let _ = core_exec(&lab, &["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9"]);
    wait_for(
        Duration::from_secs(10),
        || {
            String::from_utf8_lossy(&lab.cli(&["events", "--limit", "100"]).stdout)
                .contains("flow-audit  probe 127.0.0.1 -> 127.0.0.1 tcp/9")
        },
        || lab.logs(),
    );
    // An agent gone is UNREACHABLE and status says so in its exit code.
    if let Some(mut a) = lab.gateways[1].agent.take() {
        let _ = a.kill();
        let _ = a.wait();
    }
    wait_for(
        Duration::from_secs(10),
        || lab.cli(&["status"]).status.code() == Some(1),
        || lab.logs(),
    );
    assert!(String::from_utf8_lossy(&lab.cli(&["status"]).stdout).contains("UNREACHABLE"));
}

fn core_exec(lab: &Lab, args: &[&str]) -> Output {
    lab.gw("gw-core").ns.exec(args)
}
