//! Every shipped topology renders, for every gateway, a script that the real `nft`
//! accepts (checked in a throwaway network namespace, never the host's ruleset), and the
//! JSON render has the structure the spec promises.

use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A fixed day, so the expiry of flows does not depend on when the tests run.
const TODAY: &str = "2026-06-01";

fn topologies() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("topologies/ exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 3,
        "expected the shipped topologies in {}",
        dir.display()
    );
    files
}

fn topology(path: &Path) -> tiernet::topology::Topology {
    let text = std::fs::read_to_string(path).expect("readable topology");
    let (topo, diags) = tiernet::topology::parse(&text);
    topo.unwrap_or_else(|| panic!("{} does not parse: {diags:?}", path.display()))
}

fn gateways(path: &Path) -> Vec<String> {
    topology(path)
        .gateways
        .iter()
        .map(|g| g.name.v.clone())
        .collect()
}

fn render(path: &Path, gateway: &str, format: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tiernet"))
        .args(["--today", TODAY, "render"])
        .arg(path)
        .args(["--gateway", gateway, "--format", format])
        .output()
        .expect("run tiernet render");
    assert!(
        out.status.success(),
        "render {} --gateway {gateway} failed: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 render")
}

fn render_json(path: &Path, gateway: &str) -> Value {
    serde_json::from_str(&render(path, gateway, "json")).expect("render --format json is JSON")
}

fn require_nft() {
    let found = Command::new("nft")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "the `nft` command is missing: these tests check rendered rulesets with `nft -c`. \
         Install nftables (apt-get install nftables) and run the tests as root."
    );
}

/// `nft -c -f -` in a fresh network namespace: checks the script against the kernel
/// without touching the host's ruleset.
fn nft_check(script: &str) -> Result<(), String> {
    let mut child = Command::new("unshare")
        .args(["-n", "nft", "-c", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run `unshare -n nft` (root needed): {e}"))?;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn every_gateway_of_every_topology_passes_nft_check() {
    require_nft();
    let mut checked = 0;
    for path in topologies() {
        for gw in gateways(&path) {
            let script = render(&path, &gw, "nft");
            assert!(
                script.contains("table inet tiernet {"),
                "{}/{gw}: no table in:\n{script}",
                path.display()
            );
            if let Err(e) = nft_check(&script) {
                panic!(
                    "{} gateway {gw}: nft -c rejects the script:\n{e}\n--- script ---\n{script}",
                    path.display()
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 5, "only {checked} gateways checked");
}

#[test]
fn nft_check_does_reject_a_broken_script() {
    // Guards the guard: if `nft -c` accepted anything, the test above would prove nothing.
    require_nft();
    assert!(nft_check("table inet tiernet { chain forward { bogus } }\n").is_err());
}

fn chains(state: &Value) -> &Vec<Value> {
    state["table"]["chains"].as_array().expect("table.chains")
}

fn chain<'v>(state: &'v Value, name: &str) -> Option<&'v Value> {
    chains(state).iter().find(|c| c["name"] == name)
}

fn rules(chain: &Value) -> &Vec<Value> {
    chain["rules"].as_array().expect("rules")
}

#[test]
fn forward_chain_drops_by_default_and_accepts_established_first() {
    for path in topologies() {
        for gw in gateways(&path) {
            let state = render_json(&path, &gw);
            let fwd = chain(&state, "forward").expect("forward chain");
            assert_eq!(fwd["base"]["hook"], "forward");
            assert_eq!(fwd["base"]["policy_drop"], true, "{}/{gw}", path.display());
            let first = &rules(fwd)[0];
            assert_eq!(
                first["matches"][0]["ct_state"],
                serde_json::json!(["established", "related"])
            );
            assert_eq!(first["verdict"], "accept");
            let input = chain(&state, "input").expect("input chain");
            assert_eq!(
                input["base"]["policy_drop"],
                true,
                "{}/{gw}: input chain",
                path.display()
            );
        }
    }
}

/// Comments of every rule of every gateway of a topology.
fn comments(path: &Path) -> Vec<String> {
    gateways(path)
        .iter()
        .flat_map(|gw| {
            let state = render_json(path, gw);
            chains(&state)
                .iter()
                .flat_map(|c| {
                    rules(c)
                        .iter()
                        .filter_map(|r| r["comment"].as_str().map(String::from))
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn every_flow_is_named_in_a_rule_comment() {
    for path in topologies() {
        let topo = topology(&path);
        let comments = comments(&path);
        for flow in &topo.flows {
            let name = &flow.name.v;
            // With an approval the comment reads `NAME approval=REF`.
            let named = comments
                .iter()
                .any(|c| c == name || c.starts_with(&format!("{name} ")));
            assert!(
                named,
                "{}: flow '{name}' has no rule comment; comments: {comments:?}",
                path.display()
            );
        }
    }
}

#[test]
fn flows_to_transfer_services_log_new_connections() {
    for path in topologies() {
        let topo = topology(&path);
        let transfer: Vec<&str> = topo
            .services
            .iter()
            .filter(|s| s.role() == Some(tiernet::topology::TRANSFER_ROLE))
            .map(|s| s.name.v.as_str())
            .collect();
        let states: Vec<Value> = gateways(&path)
            .iter()
            .map(|g| render_json(&path, g))
            .collect();
        for flow in topo
            .flows
            .iter()
            .filter(|f| f.to.iter().any(|t| transfer.contains(&t.v.as_str())))
        {
            let name = &flow.name.v;
            let logged = states.iter().flat_map(chains).flat_map(rules).any(|r| {
                r["log"]["prefix"]
                    .as_str()
                    .is_some_and(|p| p.contains(&format!("flow={name} ")))
                    && r["comment"]
                        .as_str()
                        .is_some_and(|c| c.starts_with(name.as_str()))
            });
            assert!(
                logged,
                "{}: audited flow '{name}' has no logging rule",
                path.display()
            );
        }
    }
}

fn reference() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies/clinical-research.yaml")
}

fn link<'v>(state: &'v Value, name: &str) -> &'v Value {
    state["links"]
        .as_array()
        .expect("links")
        .iter()
        .find(|l| l["name"] == name)
        .unwrap_or_else(|| panic!("no link {name} in {}", state["links"]))
}

fn has_route(state: &Value, destination: &str, via: &str, dev: &str) -> bool {
    let want = serde_json::json!({ "destination": destination, "via": via, "dev": dev });
    state["routes"].as_array().expect("routes").contains(&want)
}

#[test]
fn reference_gw_core_links_and_routes() {
    let core = render_json(&reference(), "gw-core");
    for (name, vid, addr) in [
        ("eth1.110", 110, "10.1.10.1/24"),
        ("eth1.210", 210, "10.2.10.1/24"),
        ("eth1.310", 310, "10.3.10.1/24"),
        ("eth1.320", 320, "10.3.20.1/24"),
        ("eth1.900", 900, "10.255.0.1/30"),
    ] {
        let l = link(&core, name);
        assert_eq!(
            l["kind"],
            serde_json::json!({ "type": "vlan", "parent": "eth1", "id": vid }),
            "{name}"
        );
        assert_eq!(l["addresses"], serde_json::json!([addr]), "{name}");
    }
    // The untagged biobank port with its explicit router address.
    let biobank = link(&core, "eth3");
    assert_eq!(biobank["kind"]["type"], "port");
    assert_eq!(biobank["addresses"], serde_json::json!(["10.3.30.254/24"]));
    assert_eq!(link(&core, "eth0")["zone"]["type"], "uplink");
    assert!(
        has_route(&core, "10.4.10.0/24", "10.255.0.2", "eth1.900"),
        "routes: {}",
        core["routes"]
    );
    assert!(
        has_route(&core, "0.0.0.0/0", "198.51.100.1", "eth0"),
        "routes: {}",
        core["routes"]
    );
}

#[test]
fn reference_gw_his_defaults_through_gw_core() {
    let his = render_json(&reference(), "gw-his");
    assert_eq!(
        link(&his, "eth1.410")["addresses"],
        serde_json::json!(["10.4.10.1/24"])
    );
    assert_eq!(
        link(&his, "eth1.900")["addresses"],
        serde_json::json!(["10.255.0.2/30"])
    );
    assert!(
        has_route(&his, "0.0.0.0/0", "10.255.0.1", "eth1.900"),
        "routes: {}",
        his["routes"]
    );
    assert!(
        has_route(&his, "10.2.10.0/24", "10.255.0.1", "eth1.900"),
        "routes: {}",
        his["routes"]
    );
    assert!(his["links"]
        .as_array()
        .expect("links")
        .iter()
        .all(|l| l["zone"]["type"] != "uplink"));
}

#[test]
fn dual_stack_routes_and_addresses_cover_both_families() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies/dual-stack.yaml");
    let edge = render_json(&path, "gw-edge");
    assert_eq!(
        link(&edge, "eth0")["addresses"],
        serde_json::json!(["198.51.100.2/30", "2001:db8:100::2/64"])
    );
    assert!(
        has_route(&edge, "::/0", "2001:db8:100::1", "eth0"),
        "routes: {}",
        edge["routes"]
    );
    assert!(
        has_route(&edge, "fd00:3:10::/64", "fd00:255::2", "eth1.900"),
        "routes: {}",
        edge["routes"]
    );
    let inner = render_json(&path, "gw-inner");
    assert_eq!(
        link(&inner, "ens4.320")["addresses"],
        serde_json::json!(["10.3.20.254/24", "fd00:3:20::fe/64"])
    );
    assert!(
        has_route(&inner, "::/0", "fd00:255::1", "ens4.900"),
        "routes: {}",
        inner["routes"]
    );
    assert!(
        has_route(&inner, "0.0.0.0/0", "10.255.0.1", "ens4.900"),
        "routes: {}",
        inner["routes"]
    );
    let maps: Vec<&str> = inner["table"]["sets"]
        .as_array()
        .expect("sets")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert!(
        maps.contains(&"fwd_v6_ports") && maps.contains(&"fwd_v4_ports"),
        "maps: {maps:?}"
    );
}
