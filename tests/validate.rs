//! Validation of topology files against the tier rules of the spec.
//!
//! Three layers: the corpus in `topologies/invalid/` (one violation per file, expected
//! rule and position in its first line), exact diagnostics for single edits of the
//! reference topology (one or more per rule, so dropping a check fails a test), and the
//! behaviours around them (all errors in one run, expiry).

#[path = "common/validate_util.rs"]
mod util;

use chrono::NaiveDate;
use std::path::{Path, PathBuf};
use tiernet::diag::Severity;
use util::*;

fn assert_lines(text: &str, expected: &[&str]) {
    assert_eq!(render(text), expected, "diagnostics differ");
}

// ---------------------------------------------------------------- the reference and corpus

#[test]
fn reference_topology_is_clean() {
    assert_lines(REFERENCE, &[]);
}

#[test]
fn every_shipped_topology_has_no_errors() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/topologies");
    for entry in std::fs::read_dir(dir).expect("topologies exists") {
        let path = entry.expect("readable directory entry").path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path).expect("readable topology");
            let errors: Vec<String> = check(&text)
                .iter()
                .filter(|d| d.is_error())
                .map(|d| d.render(&path.display().to_string()))
                .collect();
            assert_eq!(errors, Vec::<String>::new());
        }
    }
}

/// `# expect: RULE LINE:COL` on the first line of a corpus file.
fn expectation(path: &Path, text: &str) -> (String, String) {
    let first = text.lines().next().unwrap_or_default();
    let rest = first.strip_prefix("# expect: ").unwrap_or_else(|| {
        panic!(
            "{}: first line must be '# expect: RULE LINE:COL'",
            path.display()
        )
    });
    let (rule, pos) = rest
        .trim()
        .split_once(' ')
        .unwrap_or_else(|| panic!("{}: malformed expectation {first:?}", path.display()));
    (rule.to_string(), pos.to_string())
}

#[test]
fn every_invalid_topology_is_rejected_for_its_rule_at_its_position() {
    let mut paths: Vec<PathBuf> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/topologies/invalid"))
            .expect("topologies/invalid exists")
            .map(|e| e.expect("readable directory entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
    paths.sort();
    assert!(
        paths.len() >= 20,
        "the corpus has only {} files",
        paths.len()
    );
    for path in &paths {
        let text = std::fs::read_to_string(path).expect("readable corpus file");
        let (rule, pos) = expectation(path, &text);
        let found: Vec<(String, String)> = check(&text)
            .iter()
            .map(|d| (d.rule.to_string(), d.pos.to_string()))
            .collect();
        // Exactly one finding: the file breaks one rule and nothing else.
        assert_eq!(found, [(rule, pos)], "{}", path.display());
        assert!(check(&text)[0].is_error(), "{}", path.display());
    }
}

#[test]
fn the_corpus_covers_every_rule() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/topologies/invalid");
    for name in [
        "syntax",
        "version",
        "unknown-field",
        "missing-field",
        "duplicate-key",
        "duplicate-name",
        "reference",
        "tier-level",
        "same-policy",
        "vlan-range",
        "vlan-conflict",
        "attachment",
        "overlap",
        "address",
        "ports",
        "ports-range",
        "internet-in",
        "internet-out",
        "up",
        "up-role",
        "down",
        "approval",
    ] {
        let path = PathBuf::from(format!("{dir}/{name}.yaml"));
        assert!(path.exists(), "missing corpus file {}", path.display());
    }
}

// ---------------------------------------------------------------- the spec's own example

#[test]
fn the_spec_example_of_a_flow_up_to_a_whole_segment() {
    let text = append("  - name: office-to-db\n    from: office\n    to: research-servers\n");
    assert_lines(&text, &[
        "clinical.yaml:147:9: error[up]: flow 'office-to-db' lets tier 'office' (level 2) reach segment 'research-servers' in tier 'research' (level 3); a flow up must end at a service with role thin-client or transfer",
    ]);
}

#[test]
fn all_errors_are_reported_in_one_run() {
    let text = mutate(&[
        ("    level: 1\n", "    level: 0\n"),
        ("    vlan: 110\n", "    vlan: 5000\n"),
    ]);
    let text = format!("{text}  - name: office-to-db\n    from: office\n    to: research-db\n");
    assert_lines(&text, &[
        "clinical.yaml:6:12: error[tier-level]: tier 'buffer' has level 0; levels start at 1 (the least confidential tier)",
        "clinical.yaml:43:11: error[vlan-range]: vlan 5000 of segment 'dmz' is outside 1-4094; pick a VLAN ID from 1 to 4094",
        "clinical.yaml:147:9: error[up]: flow 'office-to-db' lets tier 'office' (level 2) reach service 'research-db' in tier 'research' (level 3); a flow up must end at a service with role thin-client or transfer",
    ]);
}

// ---------------------------------------------------------------- reader rules

#[test]
fn syntax() {
    assert_lines(&mutate(&[("ports: [tcp/22]\n", "ports: [tcp/22}\n")]), &[
        "clinical.yaml:87:19: error[syntax]: invalid YAML: while parsing a flow sequence, expected ',' or ']'",
    ]);
}

#[test]
fn version() {
    assert_lines(&mutate(&[("version: 1\n", "version: 2\n")]), &[
        "clinical.yaml:1:10: error[version]: unsupported format version 2; this tiernet reads version 1",
    ]);
}

#[test]
fn unknown_field() {
    assert_lines(&mutate(&[("    vlan: 110\n", "    vlan: 110\n    colour: red\n")]), &[
        "clinical.yaml:44:5: error[unknown-field]: unknown field 'colour' in a segment (known fields: name, tier, description, vlan, interface, subnet, subnets, gateway, router_address, router_addresses)",
    ]);
}

#[test]
fn missing_field_points_at_the_mapping() {
    assert_lines(
        &mutate(&[("    to: edc-export\n", "")]),
        &["clinical.yaml:137:5: error[missing-field]: a flow needs a 'to' field"],
    );
}

#[test]
fn duplicate_key() {
    assert_lines(&mutate(&[("    vlan: 110\n", "    vlan: 110\n    vlan: 111\n")]), &[
        "clinical.yaml:44:5: error[duplicate-key]: key 'vlan' appears twice in this mapping (first at 43:5)",
    ]);
}

#[test]
fn ports_literal_out_of_range() {
    assert_lines(&mutate(&[("ports: [tcp/5432]\n", "ports: [tcp/5432, tcp/70000]\n")]), &[
        "clinical.yaml:102:23: error[ports]: tcp/70000 in a service: port 70000 is outside 1-65535",
    ]);
}

// ---------------------------------------------------------------- names and references

#[test]
fn duplicate_name() {
    assert_lines(&mutate(&[("  - name: ping-gateways\n", "  - name: thin-client\n")]), &[
        "clinical.yaml:141:11: error[duplicate-name]: flow 'thin-client' is defined twice (first at line 123); give each flow a unique name",
    ]);
}

#[test]
fn reference_segment_tier() {
    assert_lines(&mutate(&[("    tier: buffer\n", "    tier: bufer\n")]), &[
        "clinical.yaml:42:11: error[reference]: segment 'dmz' refers to tier 'bufer', which is not defined (did you mean 'buffer'?); define it under 'tiers' or fix the name",
    ]);
}

#[test]
fn reference_segment_gateway() {
    assert_lines(&mutate(&[("    gateway: gw-his\n", "    gateway: gw-hiss\n")]), &[
        "clinical.yaml:71:14: error[reference]: segment 'his' refers to gateway 'gw-hiss', which is not defined (did you mean 'gw-his'?); define it under 'gateways' or fix the name",
    ]);
}

#[test]
fn reference_service_segment() {
    assert_lines(&mutate(&[("    segment: his\n", "    segment: hiss\n")]), &[
        "clinical.yaml:112:14: error[reference]: service 'ehr' refers to segment 'hiss', which is not defined (did you mean 'his'?); define it under 'segments' or fix the name",
    ]);
}

#[test]
fn reference_transit_gateways() {
    assert_lines(&mutate(&[("[gw-core, gw-his]", "[gw-core, gw-core]")]), &[
        "clinical.yaml:38:25: error[reference]: transit link 'core-his' names gateway 'gw-core' twice; a transit link joins two different gateways",
    ]);
    assert_lines(&mutate(&[("[gw-core, gw-his]", "[gw-core]")]), &[
        "clinical.yaml:38:16: error[reference]: transit link 'core-his' names 1 gateway; it needs exactly two: 'gateways: [A, B]'",
    ]);
    assert_lines(&mutate(&[("[gw-core, gw-his]", "[gw-core, gw-hospital]")]), &[
        "clinical.yaml:38:25: error[reference]: transit link 'core-his' refers to gateway 'gw-hospital', which is not defined; define it under 'gateways' or fix the name",
    ]);
}

#[test]
fn reference_same_policy_as() {
    assert_lines(&mutate(&[("same_policy_as: research", "same_policy_as: reserch")]), &[
        "clinical.yaml:21:21: error[reference]: tier 'hospital' refers to tier 'reserch', which is not defined (did you mean 'research'?); define it under 'tiers' or fix the name",
    ]);
    assert_lines(&mutate(&[("same_policy_as: research", "same_policy_as: hospital")]), &[
        "clinical.yaml:21:21: error[reference]: tier 'hospital' takes its policy from itself (same_policy_as); name another tier or remove 'same_policy_as'",
    ]);
    let cycle = "    availability: critical\n  - name: a\n    level: 5\n    same_policy_as: b\n  - name: b\n    level: 5\n    same_policy_as: a\n";
    assert_lines(&mutate(&[("    availability: critical\n", cycle)]), &[
        "clinical.yaml:25:21: error[reference]: tier 'a' takes its policy from 'b', which leads back to 'a' (a same_policy_as cycle); one tier of the chain must define the policy itself",
        "clinical.yaml:28:21: error[reference]: tier 'b' takes its policy from 'a', which leads back to 'b' (a same_policy_as cycle); one tier of the chain must define the policy itself",
    ]);
}

#[test]
fn reference_flow_endpoints() {
    assert_lines(&mutate(&[("    from: dwh\n", "    from: dwhh\n")]), &[
        "clinical.yaml:135:11: error[reference]: flow 'ehr-secondary-use': 'dwhh' is not a tier, segment, service or 'internet'; fix the name or define it",
    ]);
    assert_lines(&mutate(&[("    from: dwh\n", "    from: []\n")]), &[
        "clinical.yaml:134:5: error[reference]: flow 'ehr-secondary-use' has an empty 'from' list; name a tier, segment, service or 'internet'",
    ]);
}

#[test]
fn reference_ambiguous_endpoint() {
    // A service named like a segment: `from: vdi` could mean either.
    let svc = "  - name: vdi\n    segment: vdi\n    address: 10.3.10.11\n    ports: [tcp/22]\n  - name: ehr\n";
    assert_lines(&mutate(&[("  - name: ehr\n", svc)]), &[
        "clinical.yaml:136:11: error[reference]: flow 'research-work': 'vdi' is ambiguous: it names a segment and a service; rename one of them",
    ]);
}

// ---------------------------------------------------------------- tiers

#[test]
fn tier_level() {
    assert_lines(&mutate(&[("    level: 1\n", "    level: 0\n")]), &[
        "clinical.yaml:6:12: error[tier-level]: tier 'buffer' has level 0; levels start at 1 (the least confidential tier)",
    ]);
}

#[test]
fn same_policy() {
    let own =
        "same_policy_as: research       # same security policy; differs only in availability\n";
    let text = mutate(&[(own, "same_policy_as: research\n    internet: outbound\n    inbound_roles: [transfer]\n    requires_approval: false\n")]);
    assert_lines(&text, &[
        "clinical.yaml:22:15: error[same-policy]: tier 'hospital' takes its policy from 'research' (same_policy_as) and must not set 'internet'",
        "clinical.yaml:23:21: error[same-policy]: tier 'hospital' takes its policy from 'research' (same_policy_as) and must not set 'inbound_roles'",
        "clinical.yaml:24:24: error[same-policy]: tier 'hospital' takes its policy from 'research' (same_policy_as) and must not set 'requires_approval'",
    ]);
}

// ---------------------------------------------------------------- attachment and VLANs

#[test]
fn vlan_range() {
    assert_lines(&mutate(&[("    vlan: 110\n", "    vlan: 5000\n")]), &[
        "clinical.yaml:43:11: error[vlan-range]: vlan 5000 of segment 'dmz' is outside 1-4094; pick a VLAN ID from 1 to 4094",
    ]);
    assert_lines(&mutate(&[("    vlan: 900\n", "    vlan: 0\n")]), &[
        "clinical.yaml:36:11: error[vlan-range]: vlan 0 of transit link 'core-his' is outside 1-4094; pick a VLAN ID from 1 to 4094",
    ]);
}

#[test]
fn vlan_conflict_between_segments() {
    assert_lines(&mutate(&[("    vlan: 320\n", "    vlan: 310\n")]), &[
        "clinical.yaml:58:11: error[vlan-conflict]: vlan 310 of segment 'research-servers' is already used on trunk 'eth1' of gateway 'gw-core' by segment 'vdi' (line 53); VLAN IDs must be unique per trunk",
    ]);
}

#[test]
fn vlan_conflict_with_a_transit_link_on_either_gateway() {
    assert_lines(&mutate(&[("    vlan: 410\n", "    vlan: 900\n")]), &[
        "clinical.yaml:69:11: error[vlan-conflict]: vlan 900 of segment 'his' is already used on trunk 'eth1' of gateway 'gw-his' by transit link 'core-his' (line 36); VLAN IDs must be unique per trunk",
    ]);
}

#[test]
fn the_same_vlan_on_different_gateways_is_fine() {
    assert_lines(&mutate(&[("    vlan: 410\n", "    vlan: 110\n")]), &[]);
}

#[test]
fn vlan_conflict_on_an_untagged_port() {
    assert_lines(&mutate(&[("    vlan: 320\n", "    interface: eth3\n")]), &[
        "clinical.yaml:63:16: error[vlan-conflict]: interface 'eth3' of segment 'biobank' is already used on gateway 'gw-core' by segment 'research-servers' (line 58); an untagged port carries one segment",
    ]);
}

#[test]
fn attachment_vlan_or_interface() {
    assert_lines(&mutate(&[("    vlan: 110\n", "    vlan: 110\n    interface: eth5\n")]), &[
        "clinical.yaml:44:16: error[attachment]: segment 'dmz' needs either 'vlan' (on the gateway's trunk) or 'interface' (an untagged port), not both",
    ]);
    assert_lines(&mutate(&[("    vlan: 210\n", "")]), &[
        "clinical.yaml:46:5: error[attachment]: segment 'office-lan' needs either 'vlan' (on the gateway's trunk) or 'interface' (an untagged port)",
    ]);
}

#[test]
fn attachment_vlan_needs_a_trunk() {
    assert_lines(&mutate(&[("  - name: gw-his\n    trunk: eth1\n", "  - name: gw-his\n")]), &[
        "clinical.yaml:35:11: error[attachment]: transit link 'core-his' has vlan 900 but gateway 'gw-his' has no 'trunk'; add 'trunk:' to the gateway or attach by 'interface'",
        "clinical.yaml:68:11: error[attachment]: segment 'his' has vlan 410 but gateway 'gw-his' has no 'trunk'; add 'trunk:' to the gateway or attach by 'interface'",
    ]);
}

#[test]
fn attachment_ports_of_the_gateway_itself() {
    assert_lines(&mutate(&[("    interface: eth3 ", "    interface: eth0 ")]), &[
        "clinical.yaml:63:16: error[attachment]: segment 'biobank' uses interface 'eth0', which is the uplink of gateway 'gw-core'; give it a port of its own (or a 'vlan' on the trunk)",
    ]);
    assert_lines(&mutate(&[("    interface: eth3 ", "    interface: eth1 ")]), &[
        "clinical.yaml:63:16: error[attachment]: segment 'biobank' uses interface 'eth1', which is the trunk of gateway 'gw-core'; give it a port of its own (or a 'vlan' on the trunk)",
    ]);
    assert_lines(&mutate(&[("    trunk: eth1                    # parent", "    trunk: eth0  # parent")]), &[
        "clinical.yaml:28:18: error[attachment]: gateway 'gw-core' uses interface 'eth0' as both its trunk and its uplink; the uplink needs a port of its own",
    ]);
}

// ---------------------------------------------------------------- addresses

#[test]
fn overlap_segment_and_transit() {
    assert_lines(&mutate(&[("subnet: 10.255.0.0/30", "subnet: 10.1.10.0/30")]), &[
        "clinical.yaml:44:13: error[overlap]: subnet 10.1.10.0/24 of segment 'dmz' overlaps 10.1.10.0/30 of transit link 'core-his' (line 37); give each its own address range",
    ]);
}

#[test]
fn overlap_segment_and_uplink() {
    let text = mutate(&[
        ("address: 198.51.100.2/30", "address: 10.2.10.2/30"),
        ("next_hop: 198.51.100.1", "next_hop: 10.2.10.1"),
    ]);
    assert_lines(&text, &[
        "clinical.yaml:49:13: error[overlap]: subnet 10.2.10.0/24 of segment 'office-lan' overlaps 10.2.10.0/30 of the uplink of gateway 'gw-core' (line 29); give each its own address range",
    ]);
}

#[test]
fn overlap_ipv6() {
    let text = mutate(&[
        (
            "    subnet: 10.1.10.0/24           # or subnets: [10.1.10.0/24, fd00:1:10::/64]\n",
            "    subnets: [10.1.10.0/24, fd00:1::/32]\n",
        ),
        (
            "    subnet: 10.2.10.0/24\n",
            "    subnets: [10.2.10.0/24, fd00:1:10::/64]\n",
        ),
    ]);
    assert_lines(&text, &[
        "clinical.yaml:49:29: error[overlap]: subnet fd00:1:10::/64 of segment 'office-lan' overlaps fd00:1::/32 of segment 'dmz' (line 44); give each its own address range",
    ]);
}

#[test]
fn address_of_a_service_outside_its_segment() {
    assert_lines(&mutate(&[("address: 10.1.10.10 ", "address: 10.1.11.10 ")]), &[
        "clinical.yaml:76:14: error[address]: address 10.1.11.10 of service 'edc' lies outside segment 'dmz' (10.1.10.0/24); use an address of the segment's subnet, or put the service in the segment it belongs to",
    ]);
}

#[test]
fn address_network_and_broadcast() {
    assert_lines(&mutate(&[("address: 10.1.10.10 ", "address: 10.1.10.0 ")]), &[
        "clinical.yaml:76:14: error[address]: address 10.1.10.0 of service 'edc' is the network address of 10.1.10.0/24; use a host address",
    ]);
    assert_lines(&mutate(&[("address: 10.1.10.10 ", "address: 10.1.10.255 ")]), &[
        "clinical.yaml:76:14: error[address]: address 10.1.10.255 of service 'edc' is the broadcast address of 10.1.10.0/24; use a host address",
    ]);
}

#[test]
fn address_collides_with_the_router() {
    assert_lines(&mutate(&[("address: 10.1.10.10 ", "address: 10.1.10.1 ")]), &[
        "clinical.yaml:76:14: error[address]: address 10.1.10.1 of service 'edc' collides with the router address 10.1.10.1 of segment 'dmz' (the first host of 10.1.10.0/24); give each service addresses of its own, apart from the router's",
    ]);
    assert_lines(&mutate(&[("address: 10.3.30.10\n", "address: 10.3.30.254\n")]), &[
        "clinical.yaml:109:14: error[address]: address 10.3.30.254 of service 'biobank-lims' collides with the router address 10.3.30.254 of segment 'biobank' (line 66); give each service addresses of its own, apart from the router's",
    ]);
}

#[test]
fn address_collides_with_another_service() {
    assert_lines(&mutate(&[("address: 10.1.10.25\n", "address: 10.1.10.10\n")]), &[
        "clinical.yaml:81:14: error[address]: address 10.1.10.10 of service 'randomisation-mail' collides with 10.1.10.10 of service 'edc' (line 76); give each service addresses of its own, apart from the router's",
    ]);
    assert_lines(&mutate(&[("address: 10.1.10.11\n", "address: 10.1.10.8/29\n")]), &[
        "clinical.yaml:86:14: error[address]: address 10.1.10.8/29 of service 'edc-export' collides with 10.1.10.10 of service 'edc' (line 76); give each service addresses of its own, apart from the router's",
    ]);
}

#[test]
fn address_of_the_router() {
    assert_lines(&mutate(&[("router_address: 10.3.30.254", "router_address: 10.3.31.254")]), &[
        "clinical.yaml:66:21: error[address]: router address 10.3.31.254 of segment 'biobank' lies outside its subnets (10.3.30.0/24); use a host address of the segment's subnet",
    ]);
    assert_lines(&mutate(&[("router_address: 10.3.30.254", "router_addresses: [10.3.30.254, 10.3.30.253]")]), &[
        "clinical.yaml:66:37: error[address]: segment 'biobank' has a second router address 10.3.30.253 in 10.3.30.0/24 (first at line 66); give at most one per subnet",
    ]);
}

#[test]
fn address_transit_needs_two_hosts() {
    assert_lines(&mutate(&[("10.255.0.0/30", "10.255.0.0/31")]), &[
        "clinical.yaml:37:13: error[address]: subnet 10.255.0.0/31 of transit link 'core-his' has room for fewer than 2 host addresses; a transit link needs one per gateway (e.g. a /30)",
    ]);
}

#[test]
fn address_uplink_next_hop() {
    assert_lines(&mutate(&[("next_hop: 198.51.100.1", "next_hop: 198.51.100.5")]), &[
        "clinical.yaml:30:17: error[address]: next hop 198.51.100.5 of gateway 'gw-core' lies outside the uplink's network (198.51.100.0/30); the next hop is the upstream router on the uplink's network",
    ]);
}

#[test]
fn address_missing_altogether() {
    assert_lines(&mutate(&[("    subnet: 10.2.10.0/24\n", "    subnets: []\n")]), &[
        "clinical.yaml:46:5: error[address]: segment 'office-lan' has no subnet; give it a 'subnet' (or 'subnets')",
    ]);
    assert_lines(&mutate(&[("    subnet: 10.255.0.0/30\n", "    subnets: []\n")]), &[
        "clinical.yaml:35:5: error[address]: transit link 'core-his' has no subnet; give it a 'subnet' (or 'subnets')",
    ]);
    assert_lines(&mutate(&[("    address: 10.1.10.10 ", "    addresses: [] ")]), &[
        "clinical.yaml:74:5: error[address]: service 'edc' has no address; give it an 'address' (or 'addresses')",
    ]);
}

#[test]
fn address_router_must_be_a_host() {
    assert_lines(&mutate(&[("router_address: 10.3.30.254", "router_address: 10.3.30.255")]), &[
        "clinical.yaml:66:21: error[address]: router address 10.3.30.255 of segment 'biobank' is the broadcast address of 10.3.30.0/24; use a host address",
    ]);
    assert_lines(&mutate(&[("    subnet: 10.2.10.0/24\n", "    subnet: 10.2.10.0/32\n")]), &[
        "clinical.yaml:49:13: error[address]: subnet 10.2.10.0/32 of segment 'office-lan' has no first host for the router address; use a larger subnet or set 'router_address'",
    ]);
}

#[test]
fn address_of_the_uplink() {
    assert_lines(&mutate(&[("address: 198.51.100.2/30", "address: 198.51.100.3/30")]), &[
        "clinical.yaml:29:16: error[address]: uplink address 198.51.100.3/30 of gateway 'gw-core' is the broadcast address of 198.51.100.0/30; use a host address",
    ]);
    assert_lines(&mutate(&[("next_hop: 198.51.100.1", "next_hop: 198.51.100.2")]), &[
        "clinical.yaml:30:17: error[address]: next hop 198.51.100.2 of gateway 'gw-core' is the uplink's own address; the next hop is the upstream router on the uplink's network",
    ]);
    assert_lines(&mutate(&[("next_hop: 198.51.100.1", "next_hop: 198.51.100.0")]), &[
        "clinical.yaml:30:17: error[address]: next hop 198.51.100.0 of gateway 'gw-core' is the network address of 198.51.100.0/30; the next hop is the upstream router on the uplink's network",
    ]);
}

#[test]
fn address_two_gateways_on_one_upstream_network() {
    let his = "  - name: gw-his\n    trunk: eth1\n";
    let uplink =
        |addr: &str| format!("{his}    uplink:\n      interface: eth0\n      address: {addr}\n");
    assert_lines(&mutate(&[("address: 198.51.100.2/30", "address: 198.51.100.2/29"), (his, &uplink("198.51.100.2/29"))]), &[
        "clinical.yaml:35:16: error[address]: uplink address 198.51.100.2 of gateway 'gw-his' is already the uplink address of gateway 'gw-core' (line 29); give each gateway its own",
    ]);
    // Sharing the network itself is fine: both sit on the same upstream LAN.
    assert_lines(
        &mutate(&[
            ("address: 198.51.100.2/30", "address: 198.51.100.2/29"),
            (his, &uplink("198.51.100.3/29")),
        ]),
        &[],
    );
}

// ---------------------------------------------------------------- ports

#[test]
fn ports_of_a_flow_are_a_subset_of_the_service() {
    assert_lines(&mutate(&[("    ports: [icmp]  ", "    ports: [icmp, tcp/22]  ")]), &[
        "clinical.yaml:144:19: error[ports]: flow 'ping-gateways' allows tcp/22, which service 'vdi-gateway' does not offer (it offers tcp/443, tcp/3389, udp/3389); a flow's ports must be a subset of its service's",
    ]);
    let flow = |ports: &str| {
        append(&format!(
            "  - name: dwh-api\n    from: vdi\n    to: dwh\n    ports: [{ports}]\n"
        ))
    };
    assert_lines(&flow("tcp/8005-8011"), &[
        "clinical.yaml:148:13: error[ports]: flow 'dwh-api' allows tcp/8005-8011, which service 'dwh' does not offer (it offers tcp/5432, tcp/8000-8010); a flow's ports must be a subset of its service's",
    ]);
    assert_lines(&flow("tcp/8001-8009, tcp/5432, icmp"), &[]);
}

#[test]
fn ports_a_flow_lists_none() {
    assert_lines(&mutate(&[("    ports: [icmp]  ", "    ports: []  ")]), &[
        "clinical.yaml:141:5: error[ports]: flow 'ping-gateways' lists no ports; list some, or drop 'ports' to allow all of the destination's",
    ]);
}

#[test]
fn ports_toward_a_segment_are_not_narrowed() {
    assert_lines(
        &append(
            "  - name: admin\n    from: vdi\n    to: research-servers\n    ports: [tcp/9999]\n",
        ),
        &[],
    );
}

#[test]
fn ports_a_service_offers_none() {
    assert_lines(&mutate(&[("    ports: [tcp/25]\n", "    ports: []\n")]), &[
        "clinical.yaml:79:5: error[ports]: service 'randomisation-mail' lists no ports; list what it serves, e.g. [tcp/443]",
    ]);
}

// ---------------------------------------------------------------- the internet (rules 2, 3)

#[test]
fn internet_in_only_to_exposed_services() {
    assert_lines(&mutate(&[("    to: [edc, randomisation-mail]\n", "    to: [edc, edc-export]\n")]), &[
        "clinical.yaml:119:15: error[internet-in]: flow 'edc-from-internet' lets the internet reach service 'edc-export', which is not exposed; only services with 'exposed: true' (in a tier with internet 'inbound' or 'both') may be reached from the internet",
    ]);
    assert_lines(&mutate(&[("    to: [edc, randomisation-mail]\n", "    to: [edc, dmz]\n")]), &[
        "clinical.yaml:119:15: error[internet-in]: flow 'edc-from-internet' lets the internet reach segment 'dmz', but the internet may reach only services with 'exposed: true', never a whole segment or tier",
    ]);
    assert_lines(&append("  - name: loop\n    from: internet\n    to: internet\n"), &[
        "clinical.yaml:147:9: error[internet-in]: flow 'loop' leads from the internet to the internet; a flow must start or end inside the topology",
    ]);
}

#[test]
fn internet_in_exposed_only_where_the_tier_lets_it_in() {
    assert_lines(&mutate(&[("    ports: [tcp/5432]\n", "    ports: [tcp/5432]\n    exposed: true\n")]), &[
        "clinical.yaml:103:14: error[internet-in]: service 'research-db' is exposed, but its tier 'research' has internet 'none'; set 'internet: inbound' (or 'both') on tier 'research', or remove 'exposed'",
    ]);
    // The hospital takes its internet setting from research.
    let ehr = "    address: 10.4.10.10\n    ports: [tcp/443]\n";
    assert_lines(&mutate(&[(ehr, &format!("{ehr}    exposed: true\n"))]), &[
        "clinical.yaml:115:14: error[internet-in]: service 'ehr' is exposed, but its tier 'hospital' has internet 'none'; set 'internet: inbound' (or 'both') on tier 'research', or remove 'exposed'",
    ]);
}

#[test]
fn internet_out() {
    assert_lines(&append("  - name: vdi-out\n    from: [office-lan, vdi]\n    to: internet\n"), &[
        "clinical.yaml:146:24: error[internet-out]: flow 'vdi-out' lets segment 'vdi' in tier 'research' (level 3) reach the internet, but tier 'research' has internet 'none'; only tiers with internet 'outbound' or 'both' may open connections to the internet",
    ]);
    assert_lines(&append("  - name: his-out\n    from: his\n    to: internet\n"), &[
        "clinical.yaml:146:11: error[internet-out]: flow 'his-out' lets segment 'his' in tier 'hospital' (level 3) reach the internet, but tier 'hospital' has internet 'none'; only tiers with internet 'outbound' or 'both' may open connections to the internet",
    ]);
}

// ---------------------------------------------------------------- up and down (rules 4, 5)

#[test]
fn up_to_a_service_without_an_inbound_role() {
    assert_lines(&append("  - name: office-to-db\n    from: office\n    to: research-db\n"), &[
        "clinical.yaml:147:9: error[up]: flow 'office-to-db' lets tier 'office' (level 2) reach service 'research-db' in tier 'research' (level 3); a flow up must end at a service with role thin-client or transfer",
    ]);
    // The hospital takes research's confidentiality and inbound roles.
    assert_lines(&append("  - name: office-to-ehr\n    from: office-lan\n    to: ehr\n"), &[
        "clinical.yaml:147:9: error[up]: flow 'office-to-ehr' lets segment 'office-lan' in tier 'office' (level 2) reach service 'ehr' in tier 'hospital' (level 3); a flow up must end at a service with role thin-client or transfer",
    ]);
}

#[test]
fn up_names_every_inbound_role() {
    let text = mutate(&[(
        "inbound_roles: [thin-client, transfer]",
        "inbound_roles: [thin-client, transfer, audit]",
    )]);
    assert_lines(&format!("{text}  - name: office-to-db\n    from: office\n    to: research-db\n"), &[
        "clinical.yaml:147:9: error[up]: flow 'office-to-db' lets tier 'office' (level 2) reach service 'research-db' in tier 'research' (level 3); a flow up must end at a service with role thin-client, transfer or audit",
    ]);
}

#[test]
fn up_to_a_whole_tier() {
    assert_lines(&append("  - name: office-to-research\n    from: office-lan\n    to: research\n"), &[
        "clinical.yaml:147:9: error[up]: flow 'office-to-research' lets segment 'office-lan' in tier 'office' (level 2) reach tier 'research' (level 3); a flow up must end at a service with role thin-client or transfer",
    ]);
}

#[test]
fn up_into_a_tier_without_inbound_roles() {
    assert_lines(&append("  - name: dmz-to-office\n    from: dmz\n    to: office-lan\n"), &[
        "clinical.yaml:147:9: error[up]: flow 'dmz-to-office' lets segment 'dmz' in tier 'buffer' (level 1) reach segment 'office-lan' in tier 'office' (level 2); a flow up must end at a service",
    ]);
    // Any service will do there.
    assert_lines(
        &append("  - name: dmz-to-vdi\n    from: dmz\n    to: vdi-gateway\n"),
        &[],
    );
}

#[test]
fn up_into_a_tier_with_empty_inbound_roles() {
    let must = "a flow up must end at a service with a role from the tier's inbound_roles, and tier 'research' lists none";
    assert_lines(&mutate(&[("inbound_roles: [thin-client, transfer]", "inbound_roles: []")]), &[
        &format!("clinical.yaml:125:9: error[up]: flow 'thin-client' lets segment 'office-lan' in tier 'office' (level 2) reach service 'vdi-gateway' in tier 'research' (level 3); {must}"),
        &format!("clinical.yaml:128:9: error[up]: flow 'reviewed-download' lets segment 'office-lan' in tier 'office' (level 2) reach service 'file-transfer' in tier 'research' (level 3); {must}"),
        &format!("clinical.yaml:143:9: error[up]: flow 'ping-gateways' lets segment 'office-lan' in tier 'office' (level 2) reach service 'vdi-gateway' in tier 'research' (level 3); {must}"),
    ]);
}

#[test]
fn down_must_end_at_a_transfer_service() {
    assert_lines(&append("  - name: leak\n    from: research-servers\n    to: office-lan\n"), &[
        "clinical.yaml:147:9: error[down]: flow 'leak' lets segment 'research-servers' in tier 'research' (level 3) reach segment 'office-lan' in tier 'office' (level 2); a flow down must end at a service with role transfer",
    ]);
    assert_lines(&append("  - name: leak\n    from: research\n    to: [edc-export, edc]\n    approval: ERB-1\n"), &[
        "clinical.yaml:147:22: error[down]: flow 'leak' lets tier 'research' (level 3) reach service 'edc' in tier 'buffer' (level 1); a flow down must end at a service with role transfer",
    ]);
}

#[test]
fn tiers_of_the_same_confidentiality_are_unrestricted() {
    // research (3) and hospital (4, same policy as research) share confidentiality 3.
    let text = append("  - name: his-to-servers\n    from: his\n    to: research-servers\n  - name: same\n    from: vdi\n    to: vdi\n");
    assert_lines(&text, &[]);
}

// ---------------------------------------------------------------- approval (rule 6)

#[test]
fn approval_for_a_transfer_down() {
    assert_lines(&mutate(&[("    approval: ERB-2026-003\n", "")]), &[
        "clinical.yaml:139:9: error[approval]: flow 'collect-edc-data' is a cross-tier transfer from segment 'research-servers' in tier 'research' (level 3) to service 'edc-export' in tier 'buffer' (level 1), and tier 'research' requires approval; add 'approval:' with the ethics review or application reference",
    ]);
}

#[test]
fn approval_for_a_transfer_up() {
    let line = "    approval: ERB-2026-017         # the ethics review / application reference\n";
    assert_lines(&mutate(&[(line, "")]), &[
        "clinical.yaml:128:9: error[approval]: flow 'reviewed-download' is a cross-tier transfer from segment 'office-lan' in tier 'office' (level 2) to service 'file-transfer' in tier 'research' (level 3), and tier 'research' requires approval; add 'approval:' with the ethics review or application reference",
    ]);
    assert_lines(&mutate(&[(line, "    approval: \"\"\n")]), &[
        "clinical.yaml:128:9: error[approval]: flow 'reviewed-download' is a cross-tier transfer from segment 'office-lan' in tier 'office' (level 2) to service 'file-transfer' in tier 'research' (level 3), and tier 'research' requires approval; add 'approval:' with the ethics review or application reference",
    ]);
}

#[test]
fn no_approval_where_neither_tier_requires_it() {
    assert_lines(
        &append("  - name: office-drop\n    from: office-lan\n    to: edc-export\n"),
        &[],
    );
}

// ---------------------------------------------------------------- expiry and warnings

#[test]
fn an_expired_flow_is_a_warning() {
    let day_after = NaiveDate::from_ymd_opt(2027, 4, 1).expect("a valid date");
    let diags = check_at(REFERENCE, day_after);
    let lines: Vec<String> = diags.iter().map(|d| d.render("clinical.yaml")).collect();
    assert_eq!(lines, [
        "clinical.yaml:130:14: warning[expired]: flow 'reviewed-download' expired on 2027-03-31 and is not compiled",
    ]);
    assert_eq!(diags[0].severity, Severity::Warning);
}

#[test]
fn a_flow_expiring_today_is_still_valid() {
    let expiry_day = NaiveDate::from_ymd_opt(2027, 3, 31).expect("a valid date");
    assert!(check_at(REFERENCE, expiry_day).is_empty());
}

#[test]
fn unused_gateway_is_a_warning() {
    let text = mutate(&[(
        "  - name: gw-his\n    trunk: eth1\n",
        "  - name: gw-his\n    trunk: eth1\n  - name: gw-spare\n    trunk: eth1\n",
    )]);
    assert_lines(&text, &[
        "clinical.yaml:33:11: warning[unused]: gateway 'gw-spare' routes no segment and no transit link; attach segments to it or remove it",
    ]);
}
