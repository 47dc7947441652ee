//! `cargo bench --bench nft_apply` (root, nftables installed): loading a 10,000-flow table
//! through `NftSession::replace` versus `nft -f` of the same rendered text, each into a fresh
//! network namespace (never the host's), plus `observe` and the canonical comparison.
//!
//! The table comes from the real pipeline: a generated topology with 10,000 flows on one
//! gateway, parsed, validated and compiled.

use chrono::NaiveDate;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tiernet::dataplane::nft::NftSession;
use tiernet::nftables::ir::Table;
use tiernet::nftables::text::render_table;
use tiernet::topology::generate::{Params, Plan};

const RUNS: usize = 5;

fn table_with_flows(flows: usize) -> Table {
    let today = NaiveDate::from_ymd_opt(2026, 6, 1).expect("date");
    let params = Params {
        seed: 2026,
        gateways: 1,
        segments: 400,
        services: 2_000,
        flows,
        dual_stack: false,
        tier_ref_percent: 0,
        today,
    };
    let yaml = Plan::generate(&params).to_yaml();
    let (topo, diags) = tiernet::topology::parse(&yaml);
    let topo = topo.unwrap_or_else(|| panic!("generated topology does not parse: {diags:?}"));
    let mut compiled = tiernet::compile::compile(&topo, today).unwrap_or_else(|d| {
        panic!(
            "generated topology does not compile: {}",
            d[0].render("generated.yaml")
        )
    });
    compiled.gateways.remove(0).table
}

/// Runs `f` on a thread inside a fresh network namespace that dies with the thread.
fn in_fresh_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        // SAFETY: unshare(2) only changes this thread's namespace membership.
        let r = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            r,
            0,
            "unshare(CLONE_NEWNET): {} (run as root)",
            std::io::Error::last_os_error()
        );
        f()
    })
    .join()
    .unwrap_or_else(|p| std::panic::resume_unwind(p))
}

/// `nft -f -` of `script` in a fresh namespace: the wall time of the nft process alone.
fn nft_f(script: &str) -> Duration {
    let script = script.to_string();
    in_fresh_netns(move || {
        let start = Instant::now();
        let mut child = Command::new("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run nft (is nftables installed?)");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(script.as_bytes())
            .expect("feed nft");
        let out = child.wait_with_output().expect("nft finishes");
        let took = start.elapsed();
        assert!(
            out.status.success(),
            "nft -f failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        took
    })
}

struct Ours {
    first: Duration,
    again: Duration,
    observe: Duration,
    canonical: Duration,
    messages: usize,
    bytes: usize,
}

fn ours(table: &Table) -> Ours {
    let table = table.clone();
    in_fresh_netns(move || {
        let mut s = NftSession::open(true).expect("open session");
        let first = s.replace(&table).expect("replace");
        let start = Instant::now();
        s.replace(&table).expect("second replace");
        let again = start.elapsed();
        let start = Instant::now();
        let seen = s.observe(&table.name).expect("observe");
        let observe = start.elapsed();
        let start = Instant::now();
        let want = NftSession::canonical(&table).expect("canonical");
        let equal = seen.table.as_ref() == Some(&want);
        let canonical = start.elapsed();
        assert!(equal, "observe() must equal canonical() after replace");
        Ours {
            first: first.elapsed,
            again,
            observe,
            canonical,
            messages: first.messages,
            bytes: first.bytes,
        }
    })
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:7.1} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let start = Instant::now();
    let table = table_with_flows(10_000);
    let text = render_table(&table);
    let rules: usize = table.chains.iter().map(|c| c.rules.len()).sum();
    println!("nftables apply benchmark (median of {RUNS}, each into a fresh network namespace)");
    println!(
        "  table: {} sets, {} elements, {} chains, {} rules; {:.1} MB of nft text (generated + compiled in {:.1} s)",
        table.sets.len(),
        table.element_count(),
        table.chains.len(),
        rules,
        text.len() as f64 / 1e6,
        start.elapsed().as_secs_f64()
    );

    let runs: Vec<Ours> = (0..RUNS).map(|_| ours(&table)).collect();
    let nft: Vec<Duration> = (0..RUNS).map(|_| nft_f(&text)).collect();
    let m = |f: fn(&Ours) -> Duration| median(runs.iter().map(f).collect());
    let (first, again, observe, canonical) = (
        m(|o| o.first),
        m(|o| o.again),
        m(|o| o.observe),
        m(|o| o.canonical),
    );
    let nft = median(nft);
    println!(
        "  batch: {} netlink messages, {:.2} MB in one sendmsg",
        runs[0].messages,
        runs[0].bytes as f64 / 1e6
    );
    println!("  NftSession::replace (empty namespace)  {}", ms(first));
    println!("  NftSession::replace (over the table)   {}", ms(again));
    println!("  nft -f (empty namespace)               {}", ms(nft));
    println!(
        "  ratio nft -f / replace                 {:7.1} x",
        nft.as_secs_f64() / first.as_secs_f64()
    );
    println!("  observe()                              {}", ms(observe));
    println!("  canonical() + compare                  {}", ms(canonical));
    println!(
        "  observe + compare (the agent's check)  {}",
        ms(observe + canonical)
    );
}
