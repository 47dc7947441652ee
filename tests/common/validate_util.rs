//! Shared helpers for the validation tests: parse + validate text, render the findings.

#![allow(dead_code)] // each test crate uses its own subset

use chrono::NaiveDate;
use tiernet::diag::Diagnostic;

/// The reference topology, the spec's complete example.
pub const REFERENCE: &str = include_str!("../../topologies/clinical-research.yaml");

/// A day before every `expires` of the reference topology.
pub fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 6, 1).expect("a valid date")
}

/// Everything the reader and the validator find in `text`, sorted by position.
pub fn check_at(text: &str, today: NaiveDate) -> Vec<Diagnostic> {
    let (topo, mut diags) = tiernet::topology::parse(text);
    if let Some(topo) = topo {
        diags.extend(tiernet::validate::validate(&topo, today));
    }
    tiernet::diag::sort(&mut diags);
    diags
}

pub fn check(text: &str) -> Vec<Diagnostic> {
    check_at(text, today())
}

/// The findings as the CLI prints them, for a file called `clinical.yaml`.
pub fn render(text: &str) -> Vec<String> {
    check(text)
        .iter()
        .map(|d| d.render("clinical.yaml"))
        .collect()
}

/// The reference topology with each `(old, new)` applied; `old` must occur exactly once,
/// so a drifting reference file fails loudly instead of silently testing nothing.
pub fn mutate(edits: &[(&str, &str)]) -> String {
    let mut text = REFERENCE.to_string();
    for (old, new) in edits {
        let n = text.matches(old).count();
        assert_eq!(n, 1, "{old:?} occurs {n} times in the reference topology");
        text = text.replacen(old, new, 1);
    }
    text
}

/// The reference topology with `extra` appended (e.g. more flows at the end of `flows:`).
pub fn append(extra: &str) -> String {
    format!("{REFERENCE}{extra}")
}
