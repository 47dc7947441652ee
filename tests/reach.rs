//! The spec's intent for the reference topology, asked of the compiled gateways: through
//! the `tiernet reach` command (exit code and output) and through the library directly.

use chrono::NaiveDate;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Command;
use tiernet::compile::{compile, Compiled};
use tiernet::nftables::eval::{eval, Packet};
use tiernet::nftables::ir::{CtState, Hook, PROTO_TCP};
use tiernet::reach::{address_of, parse_traffic, reach};
use tiernet::topology::Topology;

/// Before the reference's `reviewed-download` flow expires (2027-03-31).
const BEFORE_EXPIRY: &str = "2026-06-01";
const AFTER_EXPIRY: &str = "2027-04-01";

fn topology_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("topologies")
        .join(name)
}

struct Run {
    code: i32,
    stdout: String,
}

fn cli_on(file: &str, today: &str, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_tiernet"))
        .args(["--today", today, "reach"])
        .arg(topology_path(file))
        .args(args)
        .output()
        .expect("run tiernet reach");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let code = out.status.code().expect("exit code");
    assert!(
        code == 0 || code == 1,
        "reach {args:?} exited {code}: {stderr}"
    );
    Run { code, stdout }
}

fn cli(today: &str, args: &[&str]) -> Run {
    cli_on("clinical-research.yaml", today, args)
}

fn assert_allowed(run: &Run, what: &str) {
    assert_eq!(run.code, 0, "{what} should be allowed:\n{}", run.stdout);
    assert!(
        run.stdout
            .lines()
            .filter(|l| !l.starts_with(' '))
            .all(|l| l.starts_with("allow ")),
        "{what}:\n{}",
        run.stdout
    );
}

fn assert_denied(run: &Run, what: &str) {
    assert_eq!(run.code, 1, "{what} should be denied:\n{}", run.stdout);
    assert!(run.stdout.starts_with("deny "), "{what}:\n{}", run.stdout);
}

#[test]
fn office_pc_reaches_the_thin_client_gateway() {
    let run = cli(
        BEFORE_EXPIRY,
        &[
            "--from",
            "office-lan",
            "--to",
            "vdi-gateway",
            "--port",
            "tcp/3389",
        ],
    );
    assert_allowed(&run, "office-lan -> vdi-gateway tcp/3389");
    assert!(run.stdout.contains("flow 'thin-client'"), "{}", run.stdout);
}

#[test]
fn office_cannot_reach_the_research_database() {
    let run = cli(
        BEFORE_EXPIRY,
        &[
            "--from",
            "office-lan",
            "--to",
            "research-db",
            "--port",
            "tcp/5432",
        ],
    );
    assert_denied(&run, "office-lan -> research-db");
    assert!(
        run.stdout.contains("by rule 'default deny'"),
        "{}",
        run.stdout
    );
}

#[test]
fn internet_cannot_reach_the_ehr() {
    assert_denied(
        &cli(BEFORE_EXPIRY, &["--from", "internet", "--to", "ehr"]),
        "internet -> ehr",
    );
}

#[test]
fn dwh_reaches_the_ehr_through_both_gateways() {
    let run = cli(
        BEFORE_EXPIRY,
        &["--from", "dwh", "--to", "ehr", "--port", "tcp/443"],
    );
    assert_allowed(&run, "dwh -> ehr");
    // One hop line per gateway, both accepting under the flow's rule.
    let hops: Vec<&str> = run.stdout.lines().filter(|l| l.starts_with("  ")).collect();
    assert_eq!(hops.len(), 2, "{}", run.stdout);
    assert!(
        hops[0].contains("gw-core") && hops[1].contains("gw-his"),
        "{}",
        run.stdout
    );
    assert!(
        hops.iter()
            .all(|h| h.contains(": accept in chain flow_ehr-secondary-use")),
        "{}",
        run.stdout
    );
}

#[test]
fn office_browses_the_internet_but_research_does_not() {
    assert_allowed(
        &cli(BEFORE_EXPIRY, &["--from", "office", "--to", "internet"]),
        "office -> internet",
    );
    assert_denied(
        &cli(BEFORE_EXPIRY, &["--from", "research", "--to", "internet"]),
        "research -> internet",
    );
    assert_denied(
        &cli(
            BEFORE_EXPIRY,
            &["--from", "research-servers", "--to", "internet"],
        ),
        "research-servers -> internet",
    );
    assert_denied(
        &cli(BEFORE_EXPIRY, &["--from", "hospital", "--to", "internet"]),
        "hospital -> internet",
    );
}

#[test]
fn internet_reaches_only_the_exposed_port_of_edc() {
    assert_allowed(
        &cli(
            BEFORE_EXPIRY,
            &["--from", "internet", "--to", "edc", "--port", "tcp/443"],
        ),
        "internet -> edc tcp/443",
    );
    assert_denied(
        &cli(
            BEFORE_EXPIRY,
            &["--from", "internet", "--to", "edc", "--port", "tcp/22"],
        ),
        "internet -> edc tcp/22",
    );
    // edc-export is in the same DMZ but not exposed.
    assert_denied(
        &cli(BEFORE_EXPIRY, &["--from", "internet", "--to", "edc-export"]),
        "internet -> edc-export",
    );
}

#[test]
fn reviewed_download_stops_after_its_expiry_day() {
    let before = cli(
        BEFORE_EXPIRY,
        &["--from", "office-lan", "--to", "file-transfer"],
    );
    assert_allowed(&before, "office-lan -> file-transfer before expiry");
    assert!(
        before.stdout.contains("audit_reviewed-download"),
        "{}",
        before.stdout
    );
    // The last day itself still counts.
    assert_allowed(
        &cli(
            "2027-03-31",
            &["--from", "office-lan", "--to", "file-transfer"],
        ),
        "on the expiry day",
    );
    assert_denied(
        &cli(
            AFTER_EXPIRY,
            &["--from", "office-lan", "--to", "file-transfer"],
        ),
        "after expiry",
    );
    // Other flows are unaffected by the expiry.
    assert_allowed(
        &cli(
            AFTER_EXPIRY,
            &["--from", "office-lan", "--to", "vdi-gateway"],
        ),
        "thin-client after expiry",
    );
}

#[test]
fn an_address_in_no_segment_is_the_internet() {
    // 10.9.9.9 lies in no segment: it arrives over the uplink like any internet host.
    let run = cli(
        BEFORE_EXPIRY,
        &["--from", "10.9.9.9", "--to", "edc", "--port", "tcp/443"],
    );
    assert_allowed(&run, "10.9.9.9 -> edc");
    assert!(
        run.stdout.contains("gw-core eth0 -> eth1.110"),
        "{}",
        run.stdout
    );
    assert_denied(
        &cli(
            BEFORE_EXPIRY,
            &["--from", "10.9.9.9", "--to", "vdi-gateway"],
        ),
        "10.9.9.9 -> vdi-gateway",
    );
}

#[test]
fn json_output_reports_every_hop() {
    let run = cli(
        BEFORE_EXPIRY,
        &[
            "--from", "dwh", "--to", "ehr", "--port", "tcp/443", "--output", "json",
        ],
    );
    assert_eq!(run.code, 0);
    let answers: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(answers[0]["allowed"], true);
    assert_eq!(answers[0]["hops"].as_array().map(Vec::len), Some(2));
}

#[test]
fn dual_stack_enforces_ipv6_like_ipv4() {
    let v6 = |args: &[&str]| cli_on("dual-stack.yaml", BEFORE_EXPIRY, args);
    let office = "fd00:2:10::99";
    let run = v6(&[
        "--from",
        office,
        "--to",
        "fd00:3:10::10",
        "--port",
        "tcp/3389",
    ]);
    assert_allowed(&run, "office v6 -> vdi-gateway v6");
    assert!(
        run.stdout.contains("gw-edge") && run.stdout.contains("gw-inner"),
        "{}",
        run.stdout
    );
    assert_denied(
        &v6(&["--from", office, "--to", "research-db"]),
        "office v6 -> research-db",
    );
    assert_allowed(
        &v6(&[
            "--from",
            "2001:db8:ffff::10",
            "--to",
            "fd00:1:10::10",
            "--port",
            "tcp/443",
        ]),
        "internet v6 -> edc",
    );
    assert_denied(
        &v6(&[
            "--from",
            "2001:db8:ffff::10",
            "--to",
            "fd00:4:10::10",
            "--port",
            "tcp/443",
        ]),
        "internet v6 -> ehr",
    );
    assert_allowed(
        &v6(&["--from", office, "--to", "2001:db8:ffff::10"]),
        "office v6 -> internet",
    );
    assert_denied(
        &v6(&["--from", "fd00:3:20::99", "--to", "2001:db8:ffff::10"]),
        "research v6 -> internet",
    );
}

// ---- the library, without the command line ----

fn day(s: &str) -> NaiveDate {
    s.parse().expect("date")
}

fn reference() -> Topology {
    let text = std::fs::read_to_string(topology_path("clinical-research.yaml"))
        .expect("reference topology");
    let (topo, diags) = tiernet::topology::parse(&text);
    topo.unwrap_or_else(|| panic!("reference does not parse: {diags:?}"))
}

fn compiled(topo: &Topology, today: &str) -> Compiled {
    compile(topo, day(today)).unwrap_or_else(|d| panic!("reference does not compile: {d:?}"))
}

/// Whether `from` may open `port` to `to` (names or addresses, as on the command line).
fn allowed(topo: &Topology, c: &Compiled, from: &str, to: &str, port: &str) -> bool {
    let dst = address_of(topo, to, None).expect("destination");
    let src =
        address_of(topo, from, Some(tiernet::compile::ranges::Family::of(&dst))).expect("source");
    reach(c, src, dst, parse_traffic(port).expect("port")).allowed
}

#[test]
fn library_reach_matches_the_spec_intent() {
    let topo = reference();
    let c = compiled(&topo, BEFORE_EXPIRY);
    let cases = [
        ("office-lan", "vdi-gateway", "tcp/3389", true),
        ("office-lan", "vdi-gateway", "udp/3389", true),
        ("office-lan", "vdi-gateway", "icmp", true),
        ("office-lan", "vdi-gateway", "tcp/22", false),
        ("office-lan", "research-db", "tcp/5432", false),
        ("office-lan", "file-transfer", "tcp/22", true),
        ("internet", "ehr", "tcp/443", false),
        ("internet", "edc", "tcp/443", true),
        ("internet", "edc", "tcp/22", false),
        ("internet", "randomisation-mail", "tcp/25", true),
        ("dwh", "ehr", "tcp/443", true),
        ("research-db", "ehr", "tcp/443", false),
        ("ehr", "dwh", "tcp/5432", false),
        ("office", "internet", "tcp/443", true),
        ("research", "internet", "tcp/443", false),
        ("vdi", "dwh", "tcp/8005", true),
        ("vdi", "dwh", "tcp/8011", false),
        ("research-servers", "edc-export", "tcp/22", true),
        ("dmz", "office-lan", "tcp/443", false),
    ];
    for (from, to, port, want) in cases {
        assert_eq!(
            allowed(&topo, &c, from, to, port),
            want,
            "{from} -> {to} {port}"
        );
    }
    let later = compiled(&topo, AFTER_EXPIRY);
    assert!(
        !allowed(&topo, &later, "office-lan", "file-transfer", "tcp/22"),
        "expired flow still compiled"
    );
}

#[test]
fn a_crossing_flow_is_accepted_on_both_gateways() {
    let topo = reference();
    let c = compiled(&topo, BEFORE_EXPIRY);
    let a = reach(
        &c,
        ip("10.3.20.40"),
        ip("10.4.10.10"),
        parse_traffic("tcp/443").unwrap(),
    );
    let hops: Vec<(&str, bool)> = a
        .hops
        .iter()
        .map(|h| (h.gateway.as_str(), h.accepted))
        .collect();
    assert_eq!(hops, [("gw-core", true), ("gw-his", true)]);
    // Another research-servers host is not the dwh: dropped at the first gateway.
    let b = reach(
        &c,
        ip("10.3.20.41"),
        ip("10.4.10.10"),
        parse_traffic("tcp/443").unwrap(),
    );
    assert!(!b.allowed);
    assert_eq!(b.hops.len(), 1);
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

fn forward(
    c: &Compiled,
    gw: &str,
    iif: &str,
    oif: &str,
    src: &str,
    dst: &str,
    dport: u16,
) -> (bool, Option<String>) {
    let table = &c.gateway(gw).expect("gateway").table;
    let p = Packet {
        iif: iif.into(),
        oif: oif.into(),
        src: ip(src),
        dst: ip(dst),
        proto: PROTO_TCP,
        dport,
        echo: false,
        ct: CtState::New,
    };
    let out = eval(table, Hook::Forward, &p);
    (out.accepted, out.comment)
}

#[test]
fn spoofed_sources_are_dropped() {
    let c = compiled(&reference(), BEFORE_EXPIRY);
    // The genuine packet passes...
    assert_eq!(
        forward(
            &c,
            "gw-core",
            "eth1.210",
            "eth1.310",
            "10.2.10.5",
            "10.3.10.10",
            3389
        ),
        (true, Some("thin-client".into()))
    );
    // ...but an office-lan address arriving from the internet or from the DMZ does not.
    let spoof = (false, Some("anti-spoofing".to_string()));
    assert_eq!(
        forward(
            &c,
            "gw-core",
            "eth0",
            "eth1.310",
            "10.2.10.5",
            "10.3.10.10",
            3389
        ),
        spoof
    );
    assert_eq!(
        forward(
            &c,
            "gw-core",
            "eth1.110",
            "eth1.310",
            "10.2.10.5",
            "10.3.10.10",
            3389
        ),
        spoof
    );
    // The dwh's address may only arrive at gw-his over the transit link.
    assert!(
        forward(
            &c,
            "gw-his",
            "eth1.900",
            "eth1.410",
            "10.3.20.40",
            "10.4.10.10",
            443
        )
        .0
    );
    assert_eq!(
        forward(
            &c,
            "gw-his",
            "eth1.410",
            "eth1.900",
            "10.3.20.40",
            "10.4.10.10",
            443
        ),
        spoof
    );
    // An internal address can never come in over the uplink claiming to be the internet.
    assert_eq!(
        forward(
            &c,
            "gw-core",
            "eth0",
            "eth1.110",
            "10.4.10.10",
            "10.1.10.10",
            443
        ),
        spoof
    );
}

#[test]
fn replies_ride_on_conntrack_and_invalid_is_dropped() {
    let c = compiled(&reference(), BEFORE_EXPIRY);
    let table = &c.gateway("gw-core").unwrap().table;
    let mut p = Packet {
        iif: "eth1.320".into(),
        oif: "eth1.210".into(),
        src: ip("10.3.20.30"),
        dst: ip("10.2.10.5"),
        proto: PROTO_TCP,
        dport: 40000,
        echo: false,
        ct: CtState::New,
    };
    assert!(
        !eval(table, Hook::Forward, &p).accepted,
        "a new connection down is dropped"
    );
    p.ct = CtState::Established;
    assert!(
        eval(table, Hook::Forward, &p).accepted,
        "a reply is accepted"
    );
    p.ct = CtState::Invalid;
    assert!(
        !eval(table, Hook::Forward, &p).accepted,
        "invalid is dropped"
    );
}

/// Four gateways in a ring of transit links, one office segment on each, every office
/// segment allowed to reach every other.
fn ring_topology() -> String {
    let mut y = String::from(
        "version: 1\nname: ring\ntiers:\n  - {name: office, level: 2, internet: outbound}\ngateways:\n",
    );
    for g in 0..4 {
        y += &format!("  - {{name: gw{g}, trunk: eth1}}\n");
    }
    y += "transit:\n";
    for t in 0..4 {
        y += &format!(
            "  - {{name: tr{t}, vlan: {}, subnet: 10.255.0.{}/30, gateways: [gw{t}, gw{}]}}\n",
            900 + t,
            4 * t,
            (t + 1) % 4
        );
    }
    y += "segments:\n";
    for g in 0..4 {
        y += &format!(
            "  - {{name: s{g}, tier: office, vlan: {}, subnet: 10.0.{g}.0/24, gateway: gw{g}}}\n",
            100 + g
        );
    }
    y + "flows:\n  - {name: mesh, from: office, to: office}\n"
}

#[test]
fn a_ring_of_transit_links_carries_every_declared_flow() {
    let (topo, diags) = tiernet::topology::parse(&ring_topology());
    let topo = topo.unwrap_or_else(|| panic!("{diags:?}"));
    let c = compiled(&topo, BEFORE_EXPIRY);
    for a in 0..4 {
        for b in (0..4).filter(|&b| b != a) {
            let answer = reach(
                &c,
                ip(&format!("10.0.{a}.10")),
                ip(&format!("10.0.{b}.10")),
                parse_traffic("tcp/22").unwrap(),
            );
            // Routes must be symmetric: were s1 -> s3 to go gw1 -> gw0 -> gw3 while gw3
            // routes s1 back via gw2, gw3's anti-spoofing would drop it.
            assert!(answer.allowed, "s{a} -> s{b}: {}", answer.reason);
        }
    }
}

#[test]
fn internet_traffic_enters_at_the_uplink_nearest_its_destination() {
    let yaml = "version: 1\nname: two-uplinks\ntiers:\n  - {name: buffer, level: 1, internet: inbound}\n\
        gateways:\n  - {name: gw-a, trunk: eth1, uplink: {interface: eth0, address: 198.51.100.2/30, next_hop: 198.51.100.1}}\n\
        \x20 - {name: gw-b, trunk: eth1, uplink: {interface: eth0, address: 192.0.2.2/30, next_hop: 192.0.2.1}}\n\
        transit:\n  - {name: ab, vlan: 900, subnet: 10.255.0.0/30, gateways: [gw-a, gw-b]}\n\
        segments:\n  - {name: dmz-b, tier: buffer, vlan: 110, subnet: 10.1.10.0/24, gateway: gw-b}\n\
        services:\n  - {name: web, segment: dmz-b, address: 10.1.10.10, ports: [tcp/443], exposed: true}\n\
        flows:\n  - {name: web-in, from: internet, to: web}\n";
    let (topo, diags) = tiernet::topology::parse(yaml);
    let topo = topo.unwrap_or_else(|| panic!("{diags:?}"));
    let c = compiled(&topo, BEFORE_EXPIRY);
    // The compiler puts `web-in` on gw-b only (the uplink nearest dmz-b, where its replies
    // leave): the packet must be walked in there, not through gw-a's uplink.
    let answer = reach(
        &c,
        ip("203.0.113.10"),
        ip("10.1.10.10"),
        parse_traffic("tcp/443").unwrap(),
    );
    assert!(answer.allowed, "{}", answer.reason);
}

#[test]
fn a_flow_to_a_whole_segment_is_audited_where_it_lands_on_a_transfer_service() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("segment-flow.yaml");
    let text = std::fs::read_to_string(topology_path("clinical-research.yaml")).expect("read");
    // biobank may ssh into every research server, file-transfer among them.
    let flow = "  - name: biobank-admin\n    from: biobank\n    to: research-servers\n    ports: [tcp/22]\n";
    std::fs::write(&path, format!("{text}{flow}")).expect("write");
    let file = path.to_string_lossy();
    let to_transfer = cli_on(
        &file,
        BEFORE_EXPIRY,
        &[
            "--from",
            "biobank",
            "--to",
            "file-transfer",
            "--port",
            "tcp/22",
        ],
    );
    assert_allowed(&to_transfer, "biobank -> file-transfer");
    assert!(
        to_transfer.stdout.contains("audit_biobank-admin"),
        "{}",
        to_transfer.stdout
    );
    let to_db = cli_on(
        &file,
        BEFORE_EXPIRY,
        &[
            "--from",
            "biobank",
            "--to",
            "research-db",
            "--port",
            "tcp/22",
        ],
    );
    assert_allowed(&to_db, "biobank -> research-db");
    assert!(
        to_db.stdout.contains("flow_biobank-admin"),
        "{}",
        to_db.stdout
    );
}
