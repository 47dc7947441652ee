//! `cargo bench --bench compile`: parse, validate and compile a large generated topology
//! (4 tiers, 1,000 segments, 5,000 services, 20,000 flows, 4 gateways) and report each
//! phase (best of 3) and the peak resident memory. Target: under 1 s and 200 MB.

use chrono::NaiveDate;
use std::time::{Duration, Instant};
use tiernet::compile::{firewall, flows, network, GatewayState};
use tiernet::topology::generate::{Params, Plan};
use tiernet::topology::{parse, Index, Topology};

const RUNS: usize = 3;

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
    let before = peak_mb();

    let (t_parse, (topo, diags)) = best(|| parse(&yaml));
    let topo = topo.unwrap_or_else(|| panic!("generated topology does not parse: {diags:?}"));
    let mb_parse = peak_mb();
    let (t_validate, found) = best(|| tiernet::validate::validate(&topo, today));
    if let Some(e) = found.iter().find(|d| d.is_error()) {
        panic!("generated topology is invalid: {}", e.render("bench.yaml"));
    }
    let (t_build, (t_expand, t_tables, states)) = best(|| build(&topo, today));
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
    println!(
        "  peak memory (VmHWM)        {:8.1} MB  (target < 200 MB)",
        peak_mb()
    );
    println!(
        "    before parse {before:.1} MB, after parse {mb_parse:.1} MB, after build {mb_build:.1} MB"
    );
}
