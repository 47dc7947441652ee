//! The namespace lab, checked with iproute2 as an independent witness. Needs root; each
//! test uses a lab name of its own and takes the lab down again even when it fails.

use chrono::NaiveDate;
use ipnet::IpNet;
use serde_json::Value;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, Output};
use tiernet::lab::plan::{self, HostKind, LabPlan};

const TIERNET: &str = env!("CARGO_BIN_EXE_tiernet");
const AGENT: &str = env!("CARGO_BIN_EXE_tiernet-agent");
const REFERENCE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/topologies/clinical-research.yaml"
);

fn is_root() -> bool {
    // SAFETY: plain syscall.
    unsafe { libc::geteuid() == 0 }
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program} {args:?}: {e}"))
}

fn tiernet(args: &[&str]) -> Output {
    run(TIERNET, args)
}

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Takes the lab down when the test ends, however it ends.
struct Lab {
    name: String,
}

impl Lab {
    fn up(tag: &str, extra: &[&str]) -> Lab {
        let lab = Lab {
            name: format!("{tag}{}", std::process::id()),
        };
        let mut args = vec!["lab", "up", REFERENCE, "--name", lab.name.as_str()];
        args.extend_from_slice(extra);
        ok(&tiernet(&args), "lab up");
        lab
    }

    /// The plan of the topology the lab actually runs (rewritten for this kernel).
    fn plan(&self) -> LabPlan {
        let day = NaiveDate::from_ymd_opt(2026, 6, 1).expect("date");
        let path = Path::new("/run/tiernet-lab")
            .join(&self.name)
            .join("topology.yaml");
        let loaded = tiernet::topology::load::load(&path, day).expect("lab topology readable");
        let compiled = loaded.compile(day).expect("lab topology compiles");
        plan::plan(
            &self.name,
            loaded.topology.as_ref().expect("topology"),
            &compiled,
        )
        .expect("plan")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let out = tiernet(&["lab", "down", "--name", &self.name]);
        if !out.status.success() {
            eprintln!(
                "lab down {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

fn ip_json(ns: &str, args: &[&str]) -> Vec<Value> {
    let mut full = vec!["-n", ns, "-j"];
    full.extend_from_slice(args);
    let text = ok(&run("ip", &full), &format!("ip {full:?}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("ip {full:?}: {e}: {text}"))
}

/// Global addresses on `dev` in `ns`, as `addr/len`.
fn addresses(ns: &str, dev: &str) -> BTreeSet<IpNet> {
    let links = ip_json(ns, &["addr", "show", "dev", dev]);
    links
        .iter()
        .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
        .filter(|a| a["scope"] == "global" || (dev == "lo" && a["scope"] == "host"))
        .filter_map(|a| {
            format!("{}/{}", a["local"].as_str()?, a["prefixlen"].as_u64()?)
                .parse()
                .ok()
        })
        .collect()
}

/// Default routes in `ns` (both families): their next hops.
fn default_gateways(ns: &str) -> BTreeSet<IpAddr> {
    let mut out = BTreeSet::new();
    for family in ["-4", "-6"] {
        let full = ["-n", ns, "-j", family, "route", "show", "default"];
        let text = ok(&run("ip", &full), "ip route");
        let routes: Vec<Value> = serde_json::from_str(&text).unwrap_or_default();
        out.extend(
            routes
                .iter()
                .filter_map(|r| r["gateway"].as_str()?.parse::<IpAddr>().ok()),
        );
    }
    out
}

fn link_names(ns: &str) -> BTreeSet<String> {
    ip_json(ns, &["link"])
        .iter()
        .filter_map(|l| l["ifname"].as_str().map(String::from))
        .collect()
}

/// A TCP connection to a closed port of `addr`: "Connection refused" proves that the
/// packet got there and back (no ping binary needed).
fn answers(ns: &str, addr: IpAddr) -> bool {
    let target = match addr {
        IpAddr::V4(a) => format!("/dev/tcp/{a}/9"),
        IpAddr::V6(a) => format!("/dev/tcp/{a}/9"),
    };
    let script = format!("exec 3<>{target}");
    let out = run(
        "ip",
        &["netns", "exec", ns, "timeout", "2", "bash", "-c", &script],
    );
    String::from_utf8_lossy(&out.stderr).contains("Connection refused")
}

#[test]
fn wiring_without_agents_matches_the_plan() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let lab = Lab::up("lw", &["--no-agent"]);
    let p = lab.plan();
    let existing: BTreeSet<String> = ok(&run("ip", &["netns", "list"]), "ip netns list")
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect();
    for ns in p.namespaces() {
        assert!(existing.contains(&ns), "namespace {ns} missing");
    }

    // Host side: exactly the planned addresses and default routes.
    for host in &p.hosts {
        for end in p.ends_in(&host.ns) {
            let planned: BTreeSet<IpNet> = end.addresses.iter().copied().collect();
            assert_eq!(
                addresses(&host.ns, &end.ifname),
                planned,
                "{} {}",
                host.ns,
                end.ifname
            );
        }
        let planned: BTreeSet<IpAddr> = host
            .routes
            .iter()
            .filter(|r| r.destination.prefix_len() == 0)
            .map(|r| r.via)
            .collect();
        assert_eq!(
            default_gateways(&host.ns),
            planned,
            "default routes of {}",
            host.ns
        );
        if host.kind == HostKind::Internet {
            let lo = addresses(&host.ns, "lo");
            for a in &host.loopback {
                assert!(lo.contains(a), "internet stand-in {a} on lo: {lo:?}");
            }
            let routes = ip_json(&host.ns, &["route"]);
            assert!(
                routes
                    .iter()
                    .any(|r| r["dst"] == "10.4.10.0/24" && r["gateway"] == "198.51.100.2"),
                "{routes:?}"
            );
        }
    }
    // Gateway side: the compiled link names exist and carry no address (the agent's job).
    for gw in &p.gateways {
        let names = link_names(&gw.ns);
        for end in p.ends_in(&gw.ns) {
            assert!(
                names.contains(&end.ifname),
                "{} lacks {}: {names:?}",
                gw.ns,
                end.ifname
            );
            assert!(
                addresses(&gw.ns, &end.ifname).is_empty(),
                "{} {} must stay bare",
                gw.ns,
                end.ifname
            );
        }
    }
    let core = link_names(&format!("{}-gw-core", lab.name));
    for port in [
        "seg110", "seg210", "seg310", "seg320", "eth3", "tr900", "eth0",
    ] {
        assert!(core.contains(port), "gw-core lacks {port}: {core:?}");
    }
    // Switch side: every bridge port sits in its segment's bridge.
    for end in p.ends_in(&p.switch_ns) {
        let link = ip_json(&p.switch_ns, &["link", "show", "dev", &end.ifname]);
        assert_eq!(
            link[0]["master"].as_str(),
            end.bridge.as_deref(),
            "{}",
            end.ifname
        );
    }

    // Reachability of the wiring: give each gateway its router, transit and uplink
    // addresses by hand, then every host must reach its router, and each gateway its peer.
    let day = NaiveDate::from_ymd_opt(2026, 6, 1).expect("date");
    let path = Path::new("/run/tiernet-lab")
        .join(&lab.name)
        .join("topology.yaml");
    let compiled = tiernet::topology::load::load(&path, day)
        .expect("load")
        .compile(day)
        .expect("compile");
    for gw in &compiled.gateways {
        let ns = p.gateway_ns(&gw.gateway).expect("gateway ns");
        for link in &gw.links {
            for a in &link.addresses {
                ok(
                    &run(
                        "ip",
                        &["-n", ns, "addr", "add", &a.to_string(), "dev", &link.name],
                    ),
                    "ip addr add",
                );
            }
        }
    }
    for host in p.hosts.iter().filter(|h| h.kind != HostKind::Internet) {
        for r in &host.routes {
            assert!(
                answers(&host.ns, r.via),
                "{} cannot reach its router {}",
                host.label(),
                r.via
            );
        }
    }
    let core_ns = p.gateway_ns("gw-core").expect("gw-core");
    assert!(
        answers(core_ns, "10.255.0.2".parse().expect("addr")),
        "gw-core cannot reach gw-his over tr900"
    );
    assert!(
        answers(core_ns, "198.51.100.1".parse().expect("addr")),
        "gw-core cannot reach the internet host"
    );
    // Without forwarding nothing crosses a gateway: a client does not reach another segment.
    let dmz = p.host("dmz").expect("dmz client");
    assert!(
        !answers(&dmz.ns, "10.4.10.10".parse().expect("addr")),
        "dmz reached ehr through a bare gateway"
    );

    // Down removes everything and is idempotent.
    let name = lab.name.clone();
    drop(lab);
    let left = ok(&run("ip", &["netns", "list"]), "ip netns list");
    assert!(
        !left.lines().any(|l| l.starts_with(&format!("{name}-"))),
        "namespaces left: {left}"
    );
    assert!(!Path::new("/run/tiernet-lab").join(&name).exists());
    let again = ok(
        &tiernet(&["lab", "down", "--name", &name]),
        "second lab down",
    );
    assert!(again.contains("nothing to remove"), "{again}");
}

/// Whether the agent next to the test binaries takes the lab's command line.
fn agent_works() -> Result<(), String> {
    let help = run(AGENT, &["--help"]);
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in ["--gateway", "--topology", "--state-dir"] {
        if !text.contains(flag) {
            return Err(format!("tiernet-agent does not take {flag}"));
        }
    }
    Ok(())
}

fn cell<'a>(cells: &'a [Value], source: &str, destination: &str, port: &str) -> &'a Value {
    cells
        .iter()
        .find(|c| c["source"] == source && c["destination"] == destination && c["port"] == port)
        .unwrap_or_else(|| panic!("no probe {source} -> {destination} {port}"))
}

#[test]
fn full_lab_with_agents_matches_the_topology() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    if let Err(why) = agent_works() {
        eprintln!("skipped: {why}");
        return;
    }
    let name = format!("lf{}", std::process::id());
    let up = tiernet(&["lab", "up", REFERENCE, "--name", &name]);
    let _lab = Lab { name: name.clone() };
    let up_text = format!(
        "{}{}",
        String::from_utf8_lossy(&up.stdout),
        String::from_utf8_lossy(&up.stderr)
    );
    assert!(up.status.success(), "lab up:\n{up_text}");

    let cells = probe_cells(&name);

    let allowed = |c: &Value| c["observed"] == true && c["expected"] == true;
    let denied = |c: &Value| c["observed"] == false && c["expected"] == false;
    assert!(allowed(cell(
        &cells,
        "office-lan client",
        "vdi-gateway",
        "tcp/3389"
    )));
    assert!(denied(cell(
        &cells,
        "office-lan client",
        "research-db",
        "tcp/5432"
    )));
    assert!(allowed(cell(&cells, "internet", "edc", "tcp/443")));
    assert!(denied(cell(&cells, "internet", "ehr", "tcp/443")));
    assert!(allowed(cell(&cells, "dwh", "ehr", "tcp/443")));
    assert!(allowed(cell(
        &cells,
        "office-lan client",
        "internet",
        "tcp/443"
    )));
    assert!(denied(cell(
        &cells,
        "research-servers client",
        "internet",
        "tcp/443"
    )));
    assert!(denied(cell(&cells, "vdi client", "internet", "tcp/443")));
}

#[test]
fn demo_reverts_drift_and_leaves_nothing_behind() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    if let Err(why) = agent_works() {
        eprintln!("skipped: {why}");
        return;
    }
    let name = format!("ld{}", std::process::id());
    let _lab = Lab { name: name.clone() };
    let out = tiernet(&["lab", "demo", REFERENCE, "--name", &name]);
    let text = ok(&out, "lab demo");
    // Three drifts with the controller up, one with it killed.
    assert_eq!(
        text.matches("reverted by the agent after").count(),
        4,
        "{text}"
    );
    // Every probe: two before the revisions, then after revisions 2, 3 (failed), the
    // rollback, and with the controller killed.
    assert_eq!(text.matches(", 0 mismatches").count(), 6, "{text}");
    assert!(!text.contains("FAILED"), "{text}");
    for step in [
        "ok: the probe table changed as declared",
        "ok: every gateway is back on revision 2",
        "ok: the probe table is revision 1's again",
        "ok: drift reverted without a controller",
        "ok: every gateway IN_SYNC",
        "ok: no new revision (nothing re-applied)",
    ] {
        assert!(text.contains(step), "missing '{step}':\n{text}");
    }
    assert!(text.contains(&format!("lab {name} is down")), "{text}");
    let left = ok(&run("ip", &["netns", "list"]), "ip netns list");
    assert!(
        !left.lines().any(|l| l.starts_with(&format!("{name}-"))),
        "namespaces left: {left}"
    );
    assert!(!Path::new("/run/tiernet-lab").join(&name).exists());
}

/// Rule comments in a namespace's ruleset, read with `nft -j` (an independent witness).
fn rule_comments(ns: &str) -> BTreeSet<String> {
    let out = ok(
        &run("ip", &["netns", "exec", ns, "nft", "-j", "list", "ruleset"]),
        "nft list ruleset",
    );
    let v: Value = serde_json::from_str(&out).expect("nft json");
    v["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["rule"]["comment"].as_str().map(String::from))
        .collect()
}

fn probe_cells(name: &str) -> Vec<Value> {
    let out = tiernet(&["lab", "probe", "--name", name, "--json"]);
    let cells: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "probe --json: {e}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let mismatches: Vec<&Value> = cells.iter().filter(|c| c["mismatch"] == true).collect();
    assert!(
        mismatches.is_empty(),
        "{} mismatches: {mismatches:#?}",
        mismatches.len()
    );
    assert!(out.status.success(), "probe exit {}", out.status);
    cells
}

fn lab_status(name: &str) -> Value {
    let out = ok(
        &tiernet(&[
            "lab", "ctl", "--name", name, "--", "status", "--output", "json",
        ]),
        "lab ctl status",
    );
    serde_json::from_str(&out).expect("status json")
}

#[test]
fn lab_controller_rolls_revisions_out_and_back() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    if let Err(why) = agent_works() {
        eprintln!("skipped: {why}");
        return;
    }
    let lab = Lab::up("lr", &[]);
    let name = lab.name.as_str();
    let core = format!("{name}-gw-core");
    let status = lab_status(name);
    assert_eq!(status["current_revision"], 1, "{status}");
    for g in status["gateways"].as_array().expect("gateways") {
        assert_eq!(g["state"], "IN_SYNC", "{status}");
    }
    assert!(rule_comments(&core).contains("thin-client"));
    let thin = |cells: &[Value]| {
        cell(cells, "office-lan client", "vdi-gateway", "tcp/3389")["observed"] == true
    };
    assert!(thin(&probe_cells(name)));

    // Revision 2 without the thin-client flow: gone from gw-core's kernel table and from
    // the wire.
    let flow = "  - name: thin-client\n    from: office-lan\n    to: vdi-gateway\n";
    let reference = std::fs::read_to_string(REFERENCE).expect("reference");
    assert!(reference.contains(flow));
    let dir = tempfile::tempdir().expect("tempdir");
    let changed = dir.path().join("changed.yaml");
    std::fs::write(&changed, reference.replace(flow, "")).expect("write");
    let changed_s = changed.to_string_lossy();
    ok(
        &tiernet(&["lab", "apply", &changed_s, "--name", name]),
        "lab apply",
    );
    assert!(!rule_comments(&core).contains("thin-client"));
    assert!(!thin(&probe_cells(name)));
    assert_eq!(lab_status(name)["current_revision"], 2);

    // Back to revision 1.
    ok(
        &tiernet(&["lab", "ctl", "--name", name, "--", "rollback", "1"]),
        "rollback",
    );
    assert!(rule_comments(&core).contains("thin-client"));
    assert!(thin(&probe_cells(name)));

    // A topology that needs hosts the lab was not built with is refused before the
    // controller sees it.
    let bigger = dir.path().join("bigger.yaml");
    let anchor = "    gateway: gw-his\n\nservices:";
    assert!(reference.contains(anchor));
    std::fs::write(
        &bigger,
        reference.replace(
            anchor,
            "    gateway: gw-his\n  - name: his-lab\n    tier: hospital\n    vlan: 420\n    subnet: 10.4.20.0/24\n    gateway: gw-his\n\nservices:",
        ),
    )
    .expect("write");
    let out = tiernet(&["lab", "apply", &bigger.to_string_lossy(), "--name", name]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("needs namespace {name}-c-his-lab")),
        "{err}"
    );
    let history = ok(
        &tiernet(&[
            "lab", "ctl", "--name", name, "--", "history", "--output", "json",
        ]),
        "history",
    );
    let history: Value = serde_json::from_str(&history).expect("history json");
    assert_eq!(history["revisions"].as_array().map(Vec::len), Some(3));
}
