//! The nftables dataplane (`tiernet::dataplane::nft`) against the real kernel and the real
//! `nft` CLI as a witness. Everything runs inside network namespaces these tests create
//! and always delete (anonymous ones die with their thread, named ones with a guard), never
//! in the host's ruleset. Needs root and nftables.

use chrono::NaiveDate;
use serde_json::Value as Json;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tiernet::compile::ranges::AddrRange;
use tiernet::dataplane::nft::{watch_nft, NftSession};
use tiernet::nftables::ir::*;
use tiernet::nftables::text::render_table;

fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 6, 1).expect("valid date")
}

fn compiled_table(topology: &str, gateway: &str) -> Table {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("topologies")
        .join(topology);
    let loaded = tiernet::topology::load::load(&path, today()).expect("readable topology");
    let compiled = loaded
        .compile(today())
        .unwrap_or_else(|e| panic!("{topology} does not compile:\n{e}"));
    compiled
        .gateway(gateway)
        .unwrap_or_else(|| panic!("no gateway {gateway} in {topology}"))
        .table
        .clone()
}

fn reference_tables() -> Vec<(String, Table)> {
    [
        ("clinical-research.yaml", "gw-core"),
        ("clinical-research.yaml", "gw-his"),
        ("dual-stack.yaml", "gw-edge"),
        ("dual-stack.yaml", "gw-inner"),
        ("single-gateway.yaml", "gw"),
    ]
    .iter()
    .map(|(t, g)| (format!("{t} {g}"), compiled_table(t, g)))
    .collect()
}

fn addr(s: &str) -> Value {
    Value::Addr(s.parse::<AddrRange>().unwrap_or_else(|e| panic!("{e}")))
}

fn elem(key: Vec<Value>, verdict: Option<Verdict>) -> Element {
    Element { key, verdict }
}

fn set(name: &str, key: Vec<Field>, is_map: bool, elements: Vec<Element>) -> Set {
    Set {
        name: name.into(),
        key,
        is_map,
        elements,
    }
}

fn rule(matches: Vec<Match>, verdict: Option<Verdict>) -> Rule {
    Rule::new(matches, verdict)
}

fn lookup(key: Vec<Field>, set: &str, negate: bool) -> Match {
    Match::Lookup {
        key,
        set: set.into(),
        negate,
    }
}

/// Every form the IR can express that `render_table` renders as valid nft: single-field
/// interval sets of each type (open-ended, adjacent and empty ones too), concatenations,
/// verdict maps with every verdict, each match kind and protocol-context case.
fn kitchen_sink() -> Table {
    use Field::*;
    let jump = |c: &str| Some(Verdict::Jump(c.into()));
    let sets = vec![
        set(
            "s_ipv4",
            vec![Saddr4],
            false,
            vec![elem(vec![addr("0.0.0.0/0")], None)],
        ),
        set(
            "s_ipv4b",
            vec![Daddr4],
            false,
            vec![
                elem(vec![addr("10.0.0.10-10.0.0.20")], None),
                elem(vec![addr("10.0.0.0-10.0.0.9")], None),
                elem(vec![addr("11.0.0.0-255.255.255.255")], None),
            ],
        ),
        set(
            "s_port",
            vec![Dport],
            false,
            vec![
                elem(vec![Value::Ports(22, 22)], None),
                elem(vec![Value::Ports(8000, 8010)], None),
                elem(vec![Value::Ports(65535, 65535)], None),
            ],
        ),
        set(
            "s_proto",
            vec![L4Proto],
            false,
            vec![
                elem(vec![Value::Proto(6)], None),
                elem(vec![Value::Proto(17)], None),
            ],
        ),
        set(
            "s_if",
            vec![Iifname],
            false,
            vec![
                elem(vec![Value::Ifname("eth0".into())], None),
                elem(vec![Value::Ifname("lo".into())], None),
            ],
        ),
        set("s_empty", vec![Saddr4], false, vec![]),
        set(
            "s_v6",
            vec![Saddr6],
            false,
            vec![elem(vec![addr("::/0")], None)],
        ),
        set(
            "m_v4",
            vec![Daddr4],
            true,
            vec![
                elem(vec![addr("0.0.0.0-9.255.255.255")], Some(Verdict::Accept)),
                elem(vec![addr("10.0.0.0/8")], Some(Verdict::Drop)),
                elem(vec![addr("11.0.0.0-255.255.255.255")], jump("c1")),
            ],
        ),
        set(
            "m_cat",
            vec![Iifname, Saddr4, Dport],
            true,
            vec![
                elem(
                    vec![
                        Value::Ifname("eth0".into()),
                        addr("10.0.0.0/8"),
                        Value::Ports(1, 1024),
                    ],
                    Some(Verdict::Accept),
                ),
                elem(
                    vec![
                        Value::Ifname("eth1".into()),
                        addr("0.0.0.0/0"),
                        Value::Ports(0, 65535),
                    ],
                    Some(Verdict::Drop),
                ),
            ],
        ),
        set(
            "s_pp",
            vec![L4Proto, Dport],
            false,
            vec![
                elem(vec![Value::Proto(6), Value::Ports(22, 22)], None),
                elem(vec![Value::Proto(17), Value::Ports(53, 54)], None),
            ],
        ),
        set(
            "m_oif",
            vec![Oifname, Daddr4],
            true,
            vec![elem(
                vec![Value::Ifname("eth2".into()), addr("192.168.0.0/16")],
                Some(Verdict::Accept),
            )],
        ),
        set(
            "m_v6cat",
            vec![Saddr6, Daddr6, L4Proto, Dport],
            true,
            vec![elem(
                vec![
                    addr("fd00::/64"),
                    addr("fd00:1::1"),
                    Value::Proto(6),
                    Value::Ports(443, 443),
                ],
                jump("c1"),
            )],
        ),
    ];
    let mut logged = rule(
        vec![Match::CtState(vec![CtState::New, CtState::Established])],
        None,
    );
    logged.log = Some(Log {
        prefix: "x y".into(),
        group: 3,
    });
    let mut quoted = rule(vec![Match::Iifname("eth0".into())], Some(Verdict::Accept))
        .counted()
        .comment("say \"hi\"\\");
    quoted.log = Some(Log {
        prefix: "a \"b\" ".into(),
        group: 5,
    });
    let all_icmpv6 = vec![
        IcmpKind::EchoRequest,
        IcmpKind::NeighborSolicit,
        IcmpKind::NeighborAdvert,
        IcmpKind::RouterSolicit,
        IcmpKind::RouterAdvert,
    ];
    let base_in = Chain {
        name: "base_in".into(),
        base: Some(BaseChain {
            hook: Hook::Input,
            priority: -150,
            policy_drop: false,
        }),
        rules: vec![
            rule(vec![Match::L4Proto(vec![6])], Some(Verdict::Accept)),
            rule(
                vec![
                    Match::L4Proto(vec![1]),
                    Match::Icmp {
                        v6: false,
                        types: vec![IcmpKind::EchoRequest],
                    },
                ],
                Some(Verdict::Accept),
            ),
            rule(
                vec![Match::Icmp {
                    v6: false,
                    types: vec![IcmpKind::EchoRequest],
                }],
                Some(Verdict::Accept),
            ),
            rule(
                vec![Match::Icmp {
                    v6: true,
                    types: vec![IcmpKind::NeighborSolicit],
                }],
                Some(Verdict::Accept),
            ),
            logged,
            rule(vec![Match::CtState(vec![CtState::New])], None).counted(),
            rule(
                vec![lookup(vec![Dport], "s_port", false)],
                Some(Verdict::Accept),
            ),
            rule(
                vec![lookup(vec![L4Proto], "s_proto", false)],
                Some(Verdict::Accept),
            ),
            rule(
                vec![lookup(vec![Iifname], "s_if", false)],
                Some(Verdict::Accept),
            ),
            rule(
                vec![lookup(vec![Saddr4], "s_empty", true)],
                Some(Verdict::Drop),
            ),
            rule(vec![lookup(vec![Saddr6], "s_v6", false)], jump("c1")),
            rule(
                vec![lookup(vec![L4Proto, Dport], "s_pp", false)],
                Some(Verdict::Accept),
            ),
            rule(
                vec![],
                Some(Verdict::Vmap {
                    key: vec![Daddr4],
                    map: "m_v4".into(),
                }),
            ),
            rule(
                vec![],
                Some(Verdict::Vmap {
                    key: vec![Iifname, Saddr4, Dport],
                    map: "m_cat".into(),
                }),
            ),
            rule(
                vec![
                    lookup(vec![Saddr4], "s_ipv4", false),
                    lookup(vec![Daddr4], "s_ipv4b", false),
                ],
                Some(Verdict::Accept),
            ),
            rule(
                vec![
                    Match::L4Proto(vec![6, 17]),
                    lookup(vec![Dport], "s_port", false),
                ],
                Some(Verdict::Accept),
            ),
            rule(
                vec![
                    lookup(vec![Saddr6], "s_v6", false),
                    Match::Icmp {
                        v6: true,
                        types: vec![IcmpKind::EchoRequest],
                    },
                ],
                Some(Verdict::Accept),
            ),
            quoted,
            rule(
                vec![],
                Some(Verdict::Vmap {
                    key: vec![Saddr6, Daddr6, L4Proto, Dport],
                    map: "m_v6cat".into(),
                }),
            ),
            rule(
                vec![Match::Icmp {
                    v6: true,
                    types: all_icmpv6,
                }],
                Some(Verdict::Accept),
            )
            .counted(),
        ],
    };
    let fw2 = Chain {
        name: "fw2".into(),
        base: Some(BaseChain {
            hook: Hook::Forward,
            priority: 10,
            policy_drop: true,
        }),
        rules: vec![
            rule(
                vec![],
                Some(Verdict::Vmap {
                    key: vec![Oifname, Daddr4],
                    map: "m_oif".into(),
                }),
            ),
            rule(vec![Match::L4Proto(vec![17, 6])], jump("c1")).comment("udp or tcp"),
        ],
    };
    let c1 = Chain {
        name: "c1".into(),
        base: None,
        rules: vec![],
    };
    Table {
        name: "ks".into(),
        sets,
        chains: vec![base_in, c1, fw2],
    }
}

/// Runs `f` on a thread of its own inside a fresh anonymous network namespace, which
/// disappears with the thread.
fn in_fresh_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        // SAFETY: unshare(2) only changes this thread's namespace membership.
        let r = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            r,
            0,
            "unshare(CLONE_NEWNET): {} (run the tests as root)",
            std::io::Error::last_os_error()
        );
        f()
    })
    .join()
    .unwrap_or_else(|p| std::panic::resume_unwind(p))
}

/// A named network namespace (`ip netns add`), so the `nft` CLI can act in it as a
/// witness; deleted on drop, also when a test panics.
struct NamedNs {
    name: String,
}

static NS_COUNTER: AtomicUsize = AtomicUsize::new(0);

impl NamedNs {
    fn new() -> NamedNs {
        let name = format!(
            "tn-nft-{}-{}",
            std::process::id(),
            NS_COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .expect("run ip netns add");
        assert!(
            out.status.success(),
            "ip netns add {name}: {} (run the tests as root)",
            String::from_utf8_lossy(&out.stderr)
        );
        NamedNs { name }
    }

    /// `nft ARGS` inside the namespace.
    fn nft(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name, "nft"])
            .args(args)
            .output()
            .expect("run nft (is nftables installed?)")
    }

    fn nft_ok(&self, args: &[&str]) -> String {
        let out = self.nft(args);
        assert!(
            out.status.success(),
            "nft {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn nft_file(&self, script: &str) {
        self.nft_stdin(&["-f", "-"], script)
    }

    fn nft_json(&self, script: &str) {
        self.nft_stdin(&["-j", "-f", "-"], script)
    }

    fn nft_stdin(&self, args: &[&str], script: &str) {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.name, "nft"])
            .args(args)
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run nft -f");
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(script.as_bytes())
            .expect("write script");
        let out = child.wait_with_output().expect("nft -f finishes");
        assert!(
            out.status.success(),
            "nft {args:?} failed: {}\n{script}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `nft -j list ruleset` without handles.
    fn ruleset_json(&self) -> Json {
        let mut j: Json = serde_json::from_str(&self.nft_ok(&["-j", "list", "ruleset"]))
            .expect("nft -j prints JSON");
        strip_handles(&mut j);
        j
    }

    /// Runs `f` on a thread that entered this namespace.
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            enter(&path);
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    }
}

impl Drop for NamedNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Moves the calling thread into the named namespace at `path`.
fn enter(path: &str) {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    // SAFETY: setns(2) with a valid namespace fd only changes this thread's membership.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "setns {path}: {}", std::io::Error::last_os_error());
}

fn strip_handles(j: &mut Json) {
    match j {
        Json::Object(m) => {
            m.remove("handle");
            m.values_mut().for_each(strip_handles);
        }
        Json::Array(a) => a.iter_mut().for_each(strip_handles),
        _ => {}
    }
}

fn show_diff(want: &[String], got: &[String]) -> String {
    let mut d = String::new();
    for l in want.iter().filter(|l| !got.contains(l)) {
        d += &format!("- {l}\n");
    }
    for l in got.iter().filter(|l| !want.contains(l)) {
        d += &format!("+ {l}\n");
    }
    d
}

fn assert_observed(got: &Option<Vec<String>>, want: &[String], what: &str) {
    match got {
        Some(g) if g == want => {}
        Some(g) => panic!(
            "{what}: observed differs from canonical:\n{}",
            show_diff(want, g)
        ),
        None => panic!("{what}: table absent"),
    }
}

/// Our batch and `nft -f` of the rendered text leave the kernel in the same state: the
/// `nft` CLI lists the same JSON (handles aside) and our decoder reads the same lines.
#[test]
fn replace_builds_exactly_what_nft_f_builds() {
    let mut tables = reference_tables();
    tables.push(("kitchen sink".into(), kitchen_sink()));
    for (what, table) in tables {
        let ours = NamedNs::new();
        let theirs = NamedNs::new();
        let t = table.clone();
        let ours_obs = ours.run(move || {
            let mut s = NftSession::open(false).expect("open session");
            let stats = s.replace(&t).unwrap_or_else(|e| panic!("replace: {e:#}"));
            assert!(!stats.owner && !stats.persist);
            s.observe(&t.name).expect("observe")
        });
        theirs.nft_file(&render_table(&table));
        let name = table.name.clone();
        let theirs_obs = theirs.run(move || {
            NftSession::open(false)
                .expect("open session")
                .observe(&name)
                .expect("observe")
        });

        let (a, b) = (ours.ruleset_json(), theirs.ruleset_json());
        assert_eq!(
            a,
            b,
            "{what}: nft -j list ruleset differs\nours:   {}\ntheirs: {}",
            serde_json::to_string(&a).unwrap_or_default(),
            serde_json::to_string(&b).unwrap_or_default()
        );
        let canon = NftSession::canonical(&table).expect("canonical");
        assert_observed(
            &theirs_obs.table,
            &canon,
            &format!("{what} loaded by nft -f"),
        );
        assert_observed(
            &ours_obs.table,
            &canon,
            &format!("{what} loaded by replace"),
        );
        assert!(
            ours_obs.foreign_chains.is_empty(),
            "{what}: {:?}",
            ours_obs.foreign_chains
        );
    }
}

#[test]
fn observe_equals_canonical_across_replaces_and_delete() {
    let core = compiled_table("clinical-research.yaml", "gw-core");
    let his = compiled_table("clinical-research.yaml", "gw-his");
    in_fresh_netns(move || {
        let mut s = NftSession::open(true).expect("open session");
        assert_eq!(
            s.observe(&core.name).expect("observe").table,
            None,
            "a fresh namespace has no table"
        );
        let canon = NftSession::canonical(&core).expect("canonical");
        let stats = s.replace(&core).expect("replace");
        assert!(stats.owner && stats.persist, "{stats:?}");
        assert!(stats.messages > 10 && stats.bytes > 1000, "{stats:?}");
        assert_observed(
            &s.observe(&core.name).expect("observe").table,
            &canon,
            "after replace",
        );
        s.replace(&core).expect("second replace");
        assert_observed(
            &s.observe(&core.name).expect("observe").table,
            &canon,
            "after a second replace",
        );

        let canon_his = NftSession::canonical(&his).expect("canonical");
        assert_ne!(canon, canon_his);
        s.replace(&his).expect("replace with another table");
        assert_observed(
            &s.observe(&his.name).expect("observe").table,
            &canon_his,
            "after replacing with gw-his",
        );

        s.delete(&his.name).expect("delete");
        assert_eq!(
            s.observe(&his.name).expect("observe").table,
            None,
            "deleted"
        );
        s.delete(&his.name)
            .expect("deleting an absent table is fine");
    });
}

/// With OWNER, nothing else may touch the table, not even another socket of this process;
/// the table outlives the session (PERSIST) and a new session adopts it.
#[test]
fn owner_flag_locks_the_table_and_a_new_session_adopts_it() {
    let ns = NamedNs::new();
    let core = compiled_table("clinical-research.yaml", "gw-core");
    let canon = NftSession::canonical(&core).expect("canonical");
    let (tx_go, rx_go) = std::sync::mpsc::channel::<()>();
    let (tx_ready, rx_ready) = std::sync::mpsc::channel::<()>();
    let t = core.clone();
    let path = format!("/run/netns/{}", ns.name);
    let holder = std::thread::spawn(move || {
        enter(&path);
        let mut s = NftSession::open(true).expect("open session");
        s.replace(&t).expect("replace");
        // Another socket of this very process is refused too.
        let mut other = NftSession::open(true).expect("open a second session");
        let err = other
            .replace(&t)
            .expect_err("a second socket may not replace an owned table");
        let msg = format!("{err:#}");
        assert!(
            msg.contains("Operation not permitted")
                && msg.contains("owned by another netlink socket"),
            "{msg}"
        );
        tx_ready.send(()).expect("signal");
        rx_go.recv().expect("wait");
        s.observe(&t.name).expect("observe")
    });
    rx_ready.recv().expect("the holder is ready");
    for args in [
        &["add", "rule", "inet", "tiernet", "forward", "accept"][..],
        &["flush", "table", "inet", "tiernet"][..],
        &["delete", "table", "inet", "tiernet"][..],
        &["add", "chain", "inet", "tiernet", "sneaky"][..],
    ] {
        let out = ns.nft(args);
        assert!(
            !out.status.success(),
            "nft {args:?} must fail while the owner is alive"
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Operation not permitted"),
            "nft {args:?}: {out:?}"
        );
    }
    tx_go.send(()).expect("release the holder");
    let seen = holder
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p));
    assert_observed(
        &seen.table,
        &canon,
        "owned table after the witness's attempts",
    );

    // The owner is gone: the persistent table survives, orphaned and unprotected...
    let c = canon.clone();
    let name = core.name.clone();
    ns.run(move || {
        assert_observed(
            &NftSession::open(false)
                .expect("open")
                .observe(&name)
                .expect("observe")
                .table,
            &c,
            "orphan",
        )
    });
    // ...until a new session replaces (and so adopts) it.
    let (tx_go, rx_go) = std::sync::mpsc::channel::<()>();
    let (tx_ready, rx_ready) = std::sync::mpsc::channel::<()>();
    let t = core.clone();
    let path = format!("/run/netns/{}", ns.name);
    let holder = std::thread::spawn(move || {
        enter(&path);
        let mut s = NftSession::open(true).expect("open session");
        s.replace(&t).expect("replace adopts the orphan");
        tx_ready.send(()).expect("signal");
        rx_go.recv().expect("wait");
        s.delete(&t.name).expect("the owner may delete");
    });
    rx_ready.recv().expect("the new holder is ready");
    assert!(
        !ns.nft(&["add", "rule", "inet", "tiernet", "forward", "accept"])
            .status
            .success(),
        "adopted table is protected"
    );
    tx_go.send(()).expect("release");
    holder
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p));
    assert!(
        !ns.nft_ok(&["list", "tables"]).contains("tiernet"),
        "deleted by its owner"
    );
}

/// Without OWNER the witness can change the table; every kind of change shows in
/// `observe`, and `replace` puts the table back.
#[test]
fn drift_without_owner_is_observed_and_replace_repairs_it() {
    let ns = NamedNs::new();
    let core = compiled_table("clinical-research.yaml", "gw-core");
    let canon = NftSession::canonical(&core).expect("canonical");
    let (tx_cmd, rx_cmd) = std::sync::mpsc::channel::<&'static str>();
    let (tx_obs, rx_obs) = std::sync::mpsc::channel::<Option<Vec<String>>>();
    let t = core.clone();
    let path = format!("/run/netns/{}", ns.name);
    let session = std::thread::spawn(move || {
        enter(&path);
        let mut s = NftSession::open(false).expect("open session");
        s.replace(&t).expect("replace");
        while let Ok(cmd) = rx_cmd.recv() {
            match cmd {
                "observe" => tx_obs
                    .send(s.observe(&t.name).expect("observe").table)
                    .expect("send"),
                "replace" => {
                    s.replace(&t).expect("replace");
                    tx_obs
                        .send(s.observe(&t.name).expect("observe").table)
                        .expect("send");
                }
                _ => break,
            }
        }
    });
    let observe = |cmd: &'static str| {
        tx_cmd.send(cmd).expect("send");
        rx_obs.recv().expect("observation")
    };
    assert_observed(&observe("observe"), &canon, "initial");
    let drifts: [(&str, &[&str]); 7] = [
        (
            "hand-added rule",
            &["add", "rule", "inet", "tiernet", "forward", "accept"],
        ),
        (
            "flushed chain",
            &["flush", "chain", "inet", "tiernet", "input"],
        ),
        (
            "removed element",
            &[
                "delete",
                "element",
                "inet",
                "tiernet",
                "internal_v4",
                "{",
                "10.1.10.0/24",
                "}",
            ],
        ),
        (
            "changed policy",
            &[
                "chain", "inet", "tiernet", "forward", "{", "policy", "accept", ";", "}",
            ],
        ),
        (
            "added element",
            &[
                "add",
                "element",
                "inet",
                "tiernet",
                "out_v4_any",
                "{",
                "10.9.0.0/16",
                ":",
                "accept",
                "}",
            ],
        ),
        ("flushed table", &["flush", "table", "inet", "tiernet"]),
        ("deleted table", &["delete", "table", "inet", "tiernet"]),
    ];
    for (what, args) in drifts {
        ns.nft_ok(args);
        let seen = observe("observe");
        match &seen {
            None => assert_eq!(what, "deleted table", "only deleting the table removes it"),
            Some(lines) => {
                assert_ne!(lines, &canon, "{what} must show in observe()");
                println!("{what}:\n{}", show_diff(&canon, lines));
            }
        }
        assert_observed(
            &observe("replace"),
            &canon,
            &format!("replace after {what}"),
        );
    }
    tx_cmd.send("quit").expect("send");
    session
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p));
}

#[test]
fn foreign_base_chains_on_forward_and_input_are_reported() {
    let ns = NamedNs::new();
    // nft 1.0.6's grammar takes `fwd` for its keyword; its JSON input names it fine.
    ns.nft_json(
        r#"{"nftables": [
            {"add": {"table": {"family": "inet", "name": "foreign"}}},
            {"add": {"chain": {"family": "inet", "table": "foreign", "name": "fwd",
                               "type": "filter", "hook": "forward", "prio": -10, "policy": "accept"}}},
            {"add": {"chain": {"family": "inet", "table": "foreign", "name": "helper"}}}
        ]}"#,
    );
    ns.nft_file(
        "table ip filt {\n\tchain in {\n\t\ttype filter hook input priority 0; policy accept;\n\t}\n}\n\
         table ip6 pre {\n\tchain pr {\n\t\ttype filter hook prerouting priority 0; policy accept;\n\t}\n}\n\
         table bridge br {\n\tchain f {\n\t\ttype filter hook forward priority 0; policy accept;\n\t}\n}\n",
    );
    let core = compiled_table("clinical-research.yaml", "gw-core");
    let seen = ns.run(move || {
        let mut s = NftSession::open(true).expect("open");
        s.replace(&core).expect("replace");
        s.observe(&core.name).expect("observe")
    });
    let got: Vec<(String, String, String, String)> = seen
        .foreign_chains
        .iter()
        .map(|c| {
            (
                c.family.clone(),
                c.table.clone(),
                c.chain.clone(),
                c.hook.clone(),
            )
        })
        .collect();
    let want = [
        ("bridge", "br", "f", "forward"),
        ("inet", "foreign", "fwd", "forward"),
        ("ip", "filt", "in", "input"),
    ];
    let want: Vec<(String, String, String, String)> = want
        .iter()
        .map(|(a, b, c, d)| (a.to_string(), b.to_string(), c.to_string(), d.to_string()))
        .collect();
    assert_eq!(got, want);
    assert!(seen.table.is_some());
}

fn wait_for(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<tiernet::dataplane::monitor::KernelEvent>,
    within: Duration,
    pred: impl Fn(&str) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        match rx.try_recv() {
            Ok(ev) => {
                let hit = pred(&ev.what);
                seen.push(ev.what);
                if hit {
                    return seen;
                }
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    panic!("no matching event within {within:?}; saw {seen:#?}");
}

/// Whatever arrives until nothing has come for `gap`.
fn quiet(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<tiernet::dataplane::monitor::KernelEvent>,
    gap: Duration,
) -> Vec<String> {
    let mut seen = Vec::new();
    let mut last = Instant::now();
    while last.elapsed() < gap {
        match rx.try_recv() {
            Ok(ev) => {
                seen.push(ev.what);
                last = Instant::now();
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    seen
}

#[test]
fn watch_reports_foreign_changes_and_marks_our_own() {
    let ns = NamedNs::new();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (tx_cmd, rx_cmd) = std::sync::mpsc::channel::<&'static str>();
    let (tx_done, rx_done) = std::sync::mpsc::channel::<()>();
    let core = compiled_table("clinical-research.yaml", "gw-core");
    let path = format!("/run/netns/{}", ns.name);
    let worker = std::thread::spawn(move || {
        enter(&path);
        watch_nft(&core.name, tx).expect("watch");
        tx_done.send(()).expect("ready");
        let mut s = NftSession::open(false).expect("open");
        while let Ok(cmd) = rx_cmd.recv() {
            if cmd == "replace" {
                s.replace(&core).expect("replace");
                tx_done.send(()).expect("done");
            } else {
                break;
            }
        }
    });
    rx_done.recv().expect("watching");

    let t0 = Instant::now();
    ns.nft_ok(&["add", "table", "ip", "x"]);
    let seen = wait_for(&mut rx, Duration::from_secs(1), |w| {
        w.contains("NEWTABLE ip x")
    });
    let ev = seen.last().expect("event");
    assert!(!ev.ends_with("(own)") && ev.contains("(nft)"), "{ev}");
    println!("foreign table seen after {:?}: {ev}", t0.elapsed());

    tx_cmd.send("replace").expect("send");
    rx_done.recv().expect("replaced");
    let mut seen = wait_for(&mut rx, Duration::from_secs(1), |w| {
        w.contains("NEWRULE in inet tiernet forward")
    });
    seen.extend(quiet(&mut rx, Duration::from_millis(200)));
    for ev in &seen {
        assert!(
            ev.ends_with("(own)"),
            "our replace must be marked own: {ev}"
        );
    }
    // The replace is one transaction; its elements are coalesced per set.
    assert!(
        seen.iter()
            .any(|w| w
                .starts_with("nft: NEWSETELEM in inet tiernet fwd_v4_ports (13 changes) by pid")),
        "{seen:#?}"
    );

    ns.nft_ok(&["add", "rule", "inet", "tiernet", "forward", "counter"]);
    let seen = wait_for(&mut rx, Duration::from_secs(1), |w| {
        w.contains("NEWRULE in inet tiernet forward") && !w.ends_with("(own)")
    });
    println!(
        "hand-added rule: {}",
        seen.last().map(String::as_str).unwrap_or_default()
    );

    ns.nft_file("table ip y {\n\tchain c {\n\t\ttype filter hook forward priority 5;\n\t}\n}\n");
    wait_for(&mut rx, Duration::from_secs(1), |w| {
        w.contains("NEWCHAIN in ip y c (base chain, hook forward)")
    });

    tx_cmd.send("quit").expect("send");
    worker
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p));
}

/// A refused batch changes nothing and the error names the message and the errno.
#[test]
fn a_refused_replace_names_the_failing_message_and_changes_nothing() {
    let core = compiled_table("clinical-research.yaml", "gw-core");
    let canon = NftSession::canonical(&core).expect("canonical");
    let mut broken = core.clone();
    let fwd = broken
        .chains
        .iter_mut()
        .find(|c| c.name == "forward")
        .expect("forward chain");
    fwd.rules.insert(
        2,
        Rule::new(
            vec![Match::Iifname("eth9".into())],
            Some(Verdict::Jump("no-such-chain".into())),
        ),
    );
    in_fresh_netns(move || {
        let mut s = NftSession::open(true).expect("open");
        let err = format!(
            "{:#}",
            s.replace(&broken).expect_err("jump to a missing chain")
        );
        assert!(
            err.contains("NEWRULE forward #3: iifname \"eth9\" jump no-such-chain"),
            "{err}"
        );
        assert!(err.contains("errno 2"), "{err}");
        assert!(err.contains("nothing was changed"), "{err}");
        println!("{err}");
        assert_eq!(s.observe(&core.name).expect("observe").table, None);

        s.replace(&core).expect("replace");
        s.replace(&broken).expect_err("still broken");
        assert_observed(
            &s.observe(&core.name).expect("observe").table,
            &canon,
            "the old table survives a refused replace",
        );
    });
}

/// Real packets: a client namespace reaches a gateway namespace over a veth pair; the
/// table lets TCP to port 8080 in through its verdict map (counted in the flow chain) and
/// drops TCP to 9090 silently.
#[test]
fn the_table_filters_real_packets() {
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    let gw = NamedNs::new();
    let client = NamedNs::new();
    let ip = |args: &[&str]| {
        let out = Command::new("ip").args(args).output().expect("run ip");
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ip(&[
        "-n",
        &gw.name,
        "link",
        "add",
        "eth0",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        &client.name,
    ]);
    for (ns, a) in [(&gw, "10.9.0.1/24"), (&client, "10.9.0.2/24")] {
        ip(&["-n", &ns.name, "addr", "add", a, "dev", "eth0"]);
        ip(&["-n", &ns.name, "link", "set", "eth0", "up"]);
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
    }

    use Field::*;
    let svc = set(
        "svc",
        vec![Saddr4, L4Proto, Dport],
        true,
        vec![elem(
            vec![
                addr("10.9.0.0/24"),
                Value::Proto(6),
                Value::Ports(8080, 8080),
            ],
            Some(Verdict::Jump("flow_ok".into())),
        )],
    );
    let input = Chain {
        name: "input".into(),
        base: Some(BaseChain {
            hook: Hook::Input,
            priority: 0,
            policy_drop: true,
        }),
        rules: vec![
            rule(
                vec![Match::CtState(vec![CtState::Established, CtState::Related])],
                Some(Verdict::Accept),
            ),
            rule(
                vec![Match::L4Proto(vec![6, 17])],
                Some(Verdict::Vmap {
                    key: svc.key.clone(),
                    map: "svc".into(),
                }),
            ),
            rule(vec![], None).counted().comment("default deny"),
        ],
    };
    let flow_ok = Chain {
        name: "flow_ok".into(),
        base: None,
        rules: vec![rule(vec![], Some(Verdict::Accept)).counted().comment("ok")],
    };
    let table = Table {
        name: "tiernet".into(),
        sets: vec![svc],
        chains: vec![input, flow_ok],
    };

    // The gateway: listeners on both ports and the session that owns the table.
    let stop = Arc::new(AtomicBool::new(false));
    let (tx_ready, rx_ready) = std::sync::mpsc::channel::<()>();
    let (stop2, path) = (stop.clone(), format!("/run/netns/{}", gw.name));
    let gateway = std::thread::spawn(move || {
        enter(&path);
        let mut s = NftSession::open(true).expect("open");
        s.replace(&table).expect("replace");
        let listeners: Vec<TcpListener> = [8080, 9090]
            .iter()
            .map(|p| {
                let l = TcpListener::bind(("0.0.0.0", *p)).expect("bind");
                l.set_nonblocking(true).expect("nonblocking");
                l
            })
            .collect();
        tx_ready.send(()).expect("ready");
        let mut accepted = [0, 0];
        while !stop2.load(Ordering::SeqCst) {
            for (i, l) in listeners.iter().enumerate() {
                if l.accept().is_ok() {
                    accepted[i] += 1;
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        accepted
    });
    rx_ready.recv().expect("gateway ready");

    let reach = |port: u16| {
        let path = format!("/run/netns/{}", client.name);
        std::thread::spawn(move || {
            enter(&path);
            let to: SocketAddr = ([10, 9, 0, 1], port).into();
            TcpStream::connect_timeout(&to, Duration::from_millis(1500)).map_err(|e| e.kind())
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    };
    assert!(reach(8080).is_ok(), "TCP 8080 is in the verdict map");
    assert_eq!(
        reach(9090).err(),
        Some(std::io::ErrorKind::TimedOut),
        "TCP 9090 is dropped by the policy"
    );
    stop.store(true, Ordering::SeqCst);
    let accepted = gateway
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p));
    assert_eq!(accepted, [1, 0]);

    let listing = gw.nft_ok(&["list", "chain", "inet", "tiernet", "flow_ok"]);
    assert!(
        listing.contains("counter packets 1 "),
        "the SYN went through flow_ok:\n{listing}"
    );
}
