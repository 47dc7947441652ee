//! Fuzzing the loader with proptest: arbitrary input and damaged versions of real
//! topologies must come back as diagnostics, never as a panic, and whatever still
//! validates must compile and render.

use chrono::NaiveDate;
use proptest::prelude::*;
use tiernet::topology::generate::{Params, Plan};
use tiernet::topology::load::check;

fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 6, 1).expect("date")
}

const REFERENCE: &str = include_str!("../topologies/clinical-research.yaml");
const DUAL_STACK: &str = include_str!("../topologies/dual-stack.yaml");

/// Parse, validate and, when valid, compile and render every gateway. Panics propagate.
fn exercise(text: &str) {
    let loaded = check("fuzz.yaml", text, today());
    let _ = loaded.report();
    if loaded.has_errors() {
        return;
    }
    if let Ok(compiled) = loaded.compile(today()) {
        for g in &compiled.gateways {
            let _ = tiernet::nftables::text::render_replace(&g.table);
            let _ = serde_json::to_string(g).expect("state serializes");
        }
    }
}

/// One damage to a text; positions are taken modulo the text's length.
#[derive(Debug, Clone)]
enum Mutation {
    /// Replace the byte at a position with one that matters to YAML or to the topology.
    Flip(usize, u8),
    Truncate(usize),
    DeleteLine(usize),
    DuplicateLine(usize),
    SwapLines(usize, usize),
    /// Insert a meaningful token at a position.
    Insert(usize, &'static str),
}

const BYTES: &[u8] = b":-[]{}#\"'\n \t,0123456789./abz&*!|>%@`\\";
const TOKENS: &[&str] = &[
    "- ",
    ": ",
    "\n  - name: x\n",
    "internet",
    "office",
    "transfer",
    "[",
    "]",
    "&a ",
    "*a",
    "!!str ",
    "999999999999999999999",
    "tcp/0",
    "udp/65535-1",
    "10.0.0.0/8",
    "::/0",
    "fd00::/200",
    "2027-02-30",
    "\u{feff}",
    "é",
    "\t",
    "~",
    "null",
    "? ",
    "{}",
    "vlan: 4095\n",
    "same_policy_as: hospital\n",
];

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), prop::sample::select(BYTES)).prop_map(|(i, b)| Mutation::Flip(i, b)),
        any::<usize>().prop_map(Mutation::Truncate),
        any::<usize>().prop_map(Mutation::DeleteLine),
        any::<usize>().prop_map(Mutation::DuplicateLine),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        (any::<usize>(), prop::sample::select(TOKENS)).prop_map(|(i, t)| Mutation::Insert(i, t)),
    ]
}

fn apply(text: &str, m: &Mutation) -> String {
    let mut bytes = text.as_bytes().to_vec();
    let mut lines: Vec<&str> = text.split_inclusive('\n').collect();
    let n = bytes.len().max(1);
    let l = lines.len().max(1);
    match m {
        Mutation::Flip(i, b) => {
            if !bytes.is_empty() {
                bytes[i % n] = *b;
            }
        }
        Mutation::Truncate(i) => bytes.truncate(i % n),
        Mutation::Insert(i, t) => {
            let at = i % n;
            bytes.splice(at..at, t.bytes());
        }
        Mutation::DeleteLine(i) => {
            if !lines.is_empty() {
                lines.remove(i % l);
            }
            return lines.concat();
        }
        Mutation::DuplicateLine(i) => {
            if !lines.is_empty() {
                lines.insert(i % l, lines[i % l]);
            }
            return lines.concat();
        }
        Mutation::SwapLines(a, b) => {
            if !lines.is_empty() {
                lines.swap(a % l, b % l);
            }
            return lines.concat();
        }
    }
    // A flip or cut may split a UTF-8 sequence; the loader takes text, as read_text does.
    String::from_utf8_lossy(&bytes).into_owned()
}

fn mutated(base: &str, ms: &[Mutation]) -> String {
    ms.iter().fold(base.to_string(), |t, m| apply(&t, m))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        exercise(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn arbitrary_yamlish_text_never_panics(text in "([a-z_]{1,8}: ?|- |  |\\[|\\]|\\{|\\}|, |[0-9./:]{1,12}|#|\n|\"|')*") {
        exercise(&text);
    }

    #[test]
    fn damaged_reference_never_panics(ms in prop::collection::vec(mutation(), 1..6)) {
        exercise(&mutated(REFERENCE, &ms));
    }

    #[test]
    fn damaged_dual_stack_never_panics(ms in prop::collection::vec(mutation(), 1..6)) {
        exercise(&mutated(DUAL_STACK, &ms));
    }

    #[test]
    fn damaged_generated_topologies_never_panic(seed in any::<u64>(), ms in prop::collection::vec(mutation(), 1..8)) {
        let plan = Plan::generate(&Params { segments: 6, services: 8, flows: 8, dual_stack: seed % 2 == 0, ..Params::small(seed, today()) });
        exercise(&mutated(&plan.to_yaml(), &ms));
    }
}

#[test]
fn the_undamaged_inputs_are_valid() {
    // Otherwise the mutations above would start from an error and prove little.
    for text in [REFERENCE, DUAL_STACK] {
        let loaded = check("t.yaml", text, today());
        assert!(!loaded.has_errors(), "{}", loaded.report());
    }
}

#[test]
fn known_nasty_inputs_never_panic() {
    let deep = "[".repeat(10_000);
    let wide = format!(
        "version: 1\nname: x\nflows:\n{}",
        "  - name: f\n    from: internet\n    to: internet\n".repeat(2000)
    );
    for text in [
        "",
        "\0",
        "---\n...\n",
        "version: 1",
        "version: 1\nname: x\ntiers: 7\n",
        "version: 1\nname: x\ntiers:\n  - name: a\n    level: 1\n    same_policy_as: a\n",
        "version: 1\nname: x\ntiers:\n  - {name: a, level: 0}\n  - {name: b, level: 1, same_policy_as: c}\n  - {name: c, level: 1, same_policy_as: b}\n",
        "version: 1\nname: x\nsegments:\n  - {name: s, tier: t, subnet: ::/0, gateway: g}\n",
        "version: 1\nname: x\nservices:\n  - {name: s, segment: s, address: 255.255.255.255/0, ports: [tcp/65535-65535]}\n",
        deep.as_str(),
        wide.as_str(),
    ] {
        exercise(text);
    }
}
