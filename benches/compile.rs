//! `cargo bench --bench compile`: parse, validate and compile a large generated topology
//! (4 tiers, 1,000 segments, 5,000 services, 20,000 flows, 4 gateways; 1% of flow
//! endpoints name a whole tier) and report each phase (best of 5) and the peak resident
//! memory of one parse + compile. Target: under 1 s and 200 MB.

use chrono::NaiveDate;
use std::time::{Duration, Instant};
use tiernet::compile::{firewall, flows, network, GatewayState};
use tiernet::topology::generate::{Params, Plan};
use tiernet::topology::{parse, Index, Topology};

const RUNS: usize = 5;

fn best<T>(f: impl Fn() -> T) -> (Duration, T) {
    let mut times = Vec::with_capacity(RUNS);
    let mut last = None;
    for _ in 0..RUNS {
        let start = Instant::now();
        let out = f();
        times.push(start.elapsed());
        last = Some(out);
    }
    (times.into_iter().min().expect("runs"), last.expect("runs"))
}

/// What `compile()` does after validation, timed in its two parts: expanding flows into
/// grants, and building each gateway's links, routes and table.
fn build(topo: &Topology, today: NaiveDate) -> (Duration, Duration, Vec<GatewayState>) {
    let start = Instant::now();
    let index = Index::new(topo);
    let net = network::Network::new(&index);
    let expanded = flows::expand(&index, &net, today);
    let t_expand = start.elapsed();
    let start = Instant::now();
    let states = (0..topo.gateways.len())
        .map(|g| {
            let (links, routes, sysctls) = net.gateway_state(g);
            let table = firewall::table(&index, &net, &expanded, g, &links, &routes);
            GatewayState {
                gateway: topo.gateways[g].name.v.clone(),
                links,
                routes,
                sysctls,
                table,
            }
        })
        .collect();
    (t_expand, start.elapsed(), states)
}

/// Peak resident set size in MB (VmHWM), as the kernel counted it.
fn peak_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(f64::NAN);
    kb / 1024.0
}

/// Forgets the peak so far (Linux: writing 5 to clear_refs resets VmHWM to the current RSS).
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Run as a child process: one parse + compile from a fresh heap, then its peak.
const PEAK_CHILD: &str = "TIERNET_BENCH_PEAK_CHILD";

fn one_pipeline_peak(yaml: &str, today: NaiveDate) {
    reset_peak();
    let (topo, _) = parse(yaml);
    let after_parse = peak_mb();
    let compiled = tiernet::compile::compile(&topo.expect("parses"), today).expect("compiles");
    println!("{after_parse:.1} {:.1}", peak_mb());
    drop(compiled);
}

/// The peak of a single parse + compile (at the end of parsing, and overall), measured
/// in a fresh process so the copies the timing runs keep around do not count.
fn pipeline_peak_mb() -> (f64, f64) {
    let out = std::process::Command::new(std::env::current_exe().expect("own path"))
        .env(PEAK_CHILD, "1")
        .output()
        .expect("run the peak child");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut mb = text
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(f64::NAN));
    (mb.next().unwrap_or(f64::NAN), mb.next().unwrap_or(f64::NAN))
}

fn ms(d: Duration) -> String {
    format!("{:8.1} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let today = NaiveDate::from_ymd_opt(2026, 6, 1).expect("date");
    let params = Params {
        seed: 2026,
        gateways: 4,
        segments: 1_000,
        services: 5_000,
        flows: 20_000,
        dual_stack: false,
        tier_ref_percent: 1,
        today,
    };
    let yaml = Plan::generate(&params).to_yaml();
    if std::env::var_os(PEAK_CHILD).is_some() {
        return one_pipeline_peak(&yaml, today);
    }
    let before = peak_mb();

    let (t_parse, (topo, diags)) = best(|| parse(&yaml));
    let topo = topo.unwrap_or_else(|| panic!("generated topology does not parse: {diags:?}"));
    let mb_parse = peak_mb();
    let (t_validate, found) = best(|| tiernet::validate::validate(&topo, today));
    if let Some(e) = found.iter().find(|d| d.is_error()) {
        panic!("generated topology is invalid: {}", e.render("bench.yaml"));
    }
    let (t_build, (_, _, states)) = best(|| build(&topo, today));
    // The best of each part on its own (the parts of the best whole may differ).
    let (t_expand, t_tables) = (0..RUNS)
        .map(|_| {
            let (e, t, _) = build(&topo, today);
            (e, t)
        })
        .fold((Duration::MAX, Duration::MAX), |(e, t), (e2, t2)| {
            (e.min(e2), t.min(t2))
        });
    let mb_build = peak_mb();
    // The real pipeline: `compile()` validates again before building.
    let (t_compile, compiled) = best(|| tiernet::compile::compile(&topo, today).expect("compiles"));
    assert_eq!(compiled.gateways, states, "build() mirrors compile()");
    let (t_total, _) = best(|| {
        let (t, _) = parse(&yaml);
        tiernet::compile::compile(&t.expect("parses"), today).expect("compiles")
    });

    let elements: usize = states.iter().map(|s| s.table.element_count()).sum();
    let routes: usize = states.iter().map(|s| s.routes.len()).sum();
    println!("tiernet compile benchmark (best of {RUNS}, release)");
    println!(
        "  input: {} tiers, {} segments, {} services, {} flows, {} gateways; {:.1} MB of YAML",
        topo.tiers.len(),
        topo.segments.len(),
        topo.services.len(),
        topo.flows.len(),
        topo.gateways.len(),
        yaml.len() as f64 / 1e6
    );
    println!("  output: {elements} set/map elements, {routes} routes over all gateways");
    println!("  parse                      {}", ms(t_parse));
    println!("  validate                   {}", ms(t_validate));
    println!("  build (expand + tables)    {}", ms(t_build));
    println!("    expand flows to grants   {}", ms(t_expand));
    println!("    links, routes, tables    {}", ms(t_tables));
    println!("  compile() (validate+build) {}", ms(t_compile));
    println!(
        "  total parse + compile()    {}  (target < 1000 ms)",
        ms(t_total)
    );
    let (parse_peak, pipeline_peak) = pipeline_peak_mb();
    println!("  peak memory, one parse + compile() in a fresh process (VmHWM):");
    println!("    after parse                {parse_peak:8.1} MB");
    println!("    overall                    {pipeline_peak:8.1} MB  (target < 200 MB)");
    println!(
        "  (this process, holding several results: {:.1} MB; {before:.1} before parsing, {mb_parse:.1} after, {mb_build:.1} after build)",
        peak_mb()
    );
}
