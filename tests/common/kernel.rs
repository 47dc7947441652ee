//! Shared by the tests that touch a real kernel: commands, a network namespace that is
//! always removed (also on panic), waiting, and reading nftables back with `nft -j` as an
//! independent witness, normalised so two loads of one ruleset compare equal.

#![allow(dead_code)] // each test crate uses its own subset

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The day the reference topology is compiled for in these tests.
pub const TODAY: &str = "2026-11-26";

/// The ports of gw-core in the untagged reference topology.
pub const CORE_PORTS: &[&str] = &[
    "seg110", "seg210", "seg310", "seg320", "eth3", "tr900", "eth0",
];

/// Runs a command; panics only when it cannot be started.
pub fn run(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("running {args:?}: {e}"))
}

/// Runs a command that must succeed and returns its stdout.
pub fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `done` until it holds; panics with `context()` after `limit`.
pub fn wait_for(limit: Duration, mut done: impl FnMut() -> bool, context: impl Fn() -> String) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?}\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A named network namespace, unique per process and test (`PREFIX-TAG-PID-N`), with `lo`
/// up, deleted on drop.
pub struct Ns(pub String);

impl Ns {
    pub fn new(prefix: &str, tag: &str) -> Ns {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        Ns::named(format!("{prefix}-{tag}-{}-{n}", std::process::id()))
    }

    /// A namespace of exactly this name (a stale one is deleted first).
    pub fn named(name: String) -> Ns {
        let _ = run(&["ip", "netns", "del", &name]);
        ok(&["ip", "netns", "add", &name]);
        let ns = Ns(name);
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n NS ARGS`, which must succeed.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["ip", "-n", &self.0];
        full.extend_from_slice(args);
        ok(&full)
    }

    /// `ip netns exec NS ARGS`.
    pub fn exec(&self, args: &[&str]) -> Output {
        let mut full = vec!["ip", "netns", "exec", &self.0];
        full.extend_from_slice(args);
        run(&full)
    }

    /// A command to run `program` inside the namespace.
    pub fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0, program]);
        c
    }

    /// Runs `f` on a thread inside the namespace (sockets it makes stay there).
    pub fn within<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        tiernet::netns::run_in(&self.0, || Ok(f())).expect("entering the namespace")
    }

    /// Each port as one end of a veth pair whose other end (`peerN`) is up.
    pub fn add_ports(&self, ports: &[&str]) {
        for (i, port) in ports.iter().enumerate() {
            let peer = format!("peer{i}");
            self.ip(&["link", "add", port, "type", "veth", "peer", "name", &peer]);
            self.ip(&["link", "set", &peer, "up"]);
        }
    }

    /// The whole ruleset, normalised.
    pub fn ruleset(&self) -> Value {
        let out = self.exec(&["nft", "-j", "list", "ruleset"]);
        assert!(
            out.status.success(),
            "nft list: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        normalize(serde_json::from_slice(&out.stdout).expect("nft json"))
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = run(&["ip", "netns", "del", &self.0]);
    }
}

/// Drops what differs between two loads of the same ruleset: handles, counters, the
/// metainfo block and table flags (owner/persist only exist on the agent's table).
pub fn normalize(mut v: Value) -> Value {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(m) => {
                m.remove("handle");
                m.remove("flags");
                if let Some(c) = m.get_mut("counter") {
                    *c = Value::Null;
                }
                m.values_mut().for_each(strip);
            }
            Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    if let Some(items) = v["nftables"].as_array_mut() {
        items.retain(|i| i.get("metainfo").is_none());
    }
    strip(&mut v);
    v
}

/// The reference topology with untagged ports instead of VLANs (no 802.1Q on this
/// kernel), rewritten the way the namespace lab does it: `segN` for segments, `trN` for
/// transit links.
pub fn untagged_reference() -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/topologies/clinical-research.yaml"
    );
    untagged(&std::fs::read_to_string(path).expect("reference topology"))
}

/// `text` with its VLANs rewritten to untagged ports, as the lab does.
pub fn untagged(text: &str) -> String {
    let (topo, diags) = tiernet::topology::parse(text);
    assert!(diags.is_empty(), "{diags:?}");
    tiernet::lab::rewrite::untag(text, &topo.expect("parsed"))
        .expect("untag")
        .0
}

/// The ruleset `nft -f` makes of `tiernet render` of `gateway`, in a scratch namespace.
pub fn expected_ruleset(topology: &Path, gateway: &str) -> Value {
    let render = ok(&[
        env!("CARGO_BIN_EXE_tiernet"),
        "render",
        topology.to_str().unwrap_or_default(),
        "--gateway",
        gateway,
        "--today",
        TODAY,
    ]);
    let scratch = Ns::new("tnref", gateway);
    let script = std::env::temp_dir().join(format!("{}.nft", scratch.0));
    std::fs::write(&script, render).expect("script");
    let load = scratch.exec(&["nft", "-f", script.to_str().unwrap_or_default()]);
    let _ = std::fs::remove_file(&script);
    assert!(
        load.status.success(),
        "nft -f: {}",
        String::from_utf8_lossy(&load.stderr)
    );
    scratch.ruleset()
}
