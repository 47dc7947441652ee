//! Any bytes through parse + validate, and compile + render when they validate: the
//! loader must answer with diagnostics, never a panic or a hang.
//!
//! Seed the corpus with the shipped topologies, then run (nightly):
//!   mkdir -p fuzz/corpus/loader && cp topologies/*.yaml fuzz/corpus/loader/
//!   cargo +nightly fuzz run loader
#![no_main]

use libfuzzer_sys::fuzz_target;
use tiernet::topology::load::check;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let today = chrono::NaiveDate::from_ymd_opt(2026, 6, 1).expect("date");
    let loaded = check("fuzz.yaml", text, today);
    if loaded.has_errors() {
        return;
    }
    if let Ok(compiled) = loaded.compile(today) {
        for g in &compiled.gateways {
            let _ = tiernet::nftables::text::render_replace(&g.table);
        }
    }
});
