//! The truth table: for every source host and every destination port, what the compiled
//! topology says (`reach`) next to what a real packet in the lab does.

use super::listeners::{self, Listeners};
use super::observe::{self, Observed};
use super::plan::{Host, HostKind, LabPlan};
use crate::compile::ranges::Family;
use crate::compile::Compiled;
use crate::netns;
use crate::topology::{PortSpec, Proto, Topology};
use anyhow::{anyhow, Context, Result};
use serde::Serialize;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Probes in flight at once; each worker thread sits in its source's namespace.
pub const WORKERS: usize = 32;

/// One destination column: a host, one of its addresses, one port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub host: usize,
    pub address: IpAddr,
    pub port: PortSpec,
}

impl Column {
    pub fn family(&self) -> Family {
        Family::of(&self.address)
    }
}

/// One probed pair.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    pub source: String,
    pub source_address: IpAddr,
    pub destination: String,
    pub destination_address: IpAddr,
    pub port: String,
    pub expected: bool,
    pub observed: bool,
    pub observation: Observed,
    /// What `reach` says decided: the flow that allows it, or what drops it.
    pub reason: String,
    pub mismatch: bool,
    #[serde(skip)]
    pub row: usize,
    #[serde(skip)]
    pub column: usize,
}

pub struct Matrix {
    pub rows: Vec<usize>,
    pub columns: Vec<Column>,
    pub cells: Vec<Cell>,
}

/// Ports probed per service: the first and last of each range, and ICMP echo.
fn service_ports(topo: &Topology, service: &str) -> Vec<PortSpec> {
    let mut out = Vec::new();
    for p in topo
        .services
        .iter()
        .filter(|s| s.name.v == service)
        .flat_map(|s| &s.ports)
    {
        for port in [p.v.lo, p.v.hi] {
            let single = PortSpec {
                proto: p.v.proto,
                lo: port,
                hi: port,
            };
            if p.v.proto != Proto::Icmp && !out.contains(&single) {
                out.push(single);
            }
        }
    }
    out.push(PortSpec::icmp());
    out
}

const INTERNET_PORT: PortSpec = PortSpec {
    proto: Proto::Tcp,
    lo: 443,
    hi: 443,
};

/// Every destination column, services first in topology order, then the internet.
pub fn columns(plan: &LabPlan, topo: &Topology) -> Vec<Column> {
    let mut out = Vec::new();
    for (i, h) in plan.hosts.iter().enumerate() {
        let ports = match h.kind {
            HostKind::Service { .. } => service_ports(topo, &h.name),
            HostKind::Internet => vec![INTERNET_PORT],
            HostKind::Client { .. } => continue,
        };
        for address in &h.probe_addresses {
            if h.kind == HostKind::Internet && !topo_has(plan, Family::of(address)) {
                continue;
            }
            out.extend(ports.iter().map(|&port| Column {
                host: i,
                address: *address,
                port,
            }));
        }
    }
    out
}

/// Whether any non-internet host has an address of `family`.
fn topo_has(plan: &LabPlan, family: Family) -> bool {
    plan.hosts
        .iter()
        .filter(|h| h.kind != HostKind::Internet)
        .any(|h| h.address(family).is_some())
}

/// What each host listens on: service ports (both ends of a range), and on the internet
/// host the usual web and DNS ports.
pub fn listen_spec(plan: &LabPlan, topo: &Topology) -> Vec<(String, Vec<(Proto, u16)>)> {
    let mut out = Vec::new();
    for h in &plan.hosts {
        let ports: Vec<(Proto, u16)> = match h.kind {
            HostKind::Service { .. } => service_ports(topo, &h.name)
                .into_iter()
                .filter(|p| p.proto != Proto::Icmp)
                .map(|p| (p.proto, p.lo))
                .collect(),
            HostKind::Internet => vec![(Proto::Tcp, 443), (Proto::Tcp, 80), (Proto::Udp, 53)],
            HostKind::Client { .. } => continue,
        };
        if !ports.is_empty() {
            out.push((h.ns.clone(), ports));
        }
    }
    out
}

pub fn start_listeners(plan: &LabPlan, topo: &Topology) -> Result<Listeners> {
    listeners::start(&listen_spec(plan, topo))
}

/// Every (source, destination) pair of a family both have, with the expected answer.
pub fn matrix(plan: &LabPlan, topo: &Topology, compiled: &Compiled) -> Matrix {
    let columns = columns(plan, topo);
    let rows: Vec<usize> = (0..plan.hosts.len()).collect();
    let mut cells = Vec::new();
    for &row in &rows {
        let src: &Host = &plan.hosts[row];
        for (ci, col) in columns.iter().enumerate() {
            if col.host == row {
                continue;
            }
            let Some(source_address) = src.address(col.family()) else {
                continue;
            };
            let answer = crate::reach::reach(compiled, source_address, col.address, col.port);
            cells.push(Cell {
                source: src.label(),
                source_address,
                destination: plan.hosts[col.host].name.clone(),
                destination_address: col.address,
                port: col.port.to_string(),
                expected: answer.allowed,
                observed: false,
                observation: Observed::Error("not probed".into()),
                reason: answer.reason,
                mismatch: false,
                row,
                column: ci,
            });
        }
    }
    Matrix {
        rows,
        columns,
        cells,
    }
}

/// One probe to send: source namespace, source and destination address, port.
type Job<'a> = (&'a str, IpAddr, IpAddr, PortSpec);

/// Sends `jobs`, `WORKERS` at a time, each from its source's namespace (a worker
/// thread enters the namespace of each job before making its socket).
fn send_all(plan: &LabPlan, jobs: &[Job], timeout: Duration) -> Result<Vec<Observed>> {
    let mut namespaces = HashMap::new();
    for h in &plan.hosts {
        namespaces.insert(h.ns.as_str(), netns::open(&h.ns)?);
    }
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, Observed)>> = Mutex::new(Vec::with_capacity(jobs.len()));
    let poisoned = || anyhow!("probe results poisoned");
    std::thread::scope(|s| -> Result<()> {
        let mut workers = Vec::new();
        for _ in 0..WORKERS.min(jobs.len()) {
            workers.push(s.spawn(|| -> Result<()> {
                let mut current: Option<&str> = None;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(ns, src, dst, port)) = jobs.get(i) else {
                        return Ok(());
                    };
                    if current != Some(ns) {
                        let handle = namespaces.get(ns).context("namespace handle")?;
                        netns::enter(handle).with_context(|| format!("entering {ns}"))?;
                        current = Some(ns);
                    }
                    let observed = observe::probe(src, dst, port, timeout);
                    results.lock().map_err(|_| poisoned())?.push((i, observed));
                }
            }));
        }
        for w in workers {
            w.join().map_err(|_| anyhow!("a probe thread panicked"))??;
        }
        Ok(())
    })?;
    let mut out = vec![Observed::Error("not probed".into()); jobs.len()];
    for (i, observed) in results.into_inner().map_err(|_| poisoned())? {
        out[i] = observed;
    }
    Ok(out)
}

/// Probes every cell of the matrix (the listeners must be running). A path that should
/// be open but stayed silent gets a second, patient probe before it counts as a
/// mismatch, so a loaded machine does not pass for a firewall.
pub fn run(plan: &LabPlan, m: &mut Matrix) -> Result<()> {
    let job = |c: &Cell| {
        (
            plan.hosts[c.row].ns.as_str(),
            c.source_address,
            c.destination_address,
            m.columns[c.column].port,
        )
    };
    let jobs: Vec<Job> = m.cells.iter().map(job).collect();
    let first = send_all(plan, &jobs, observe::TIMEOUT)?;
    let retry: Vec<usize> = (0..jobs.len())
        .filter(|&i| m.cells[i].expected && !first[i].passed())
        .collect();
    let retry_jobs: Vec<Job> = retry.iter().map(|&i| jobs[i]).collect();
    let second = if retry_jobs.is_empty() {
        Vec::new()
    } else {
        send_all(plan, &retry_jobs, observe::CONFIRM_TIMEOUT)?
    };
    let mut observed = first;
    for (k, i) in retry.into_iter().enumerate() {
        observed[i] = second[k].clone();
    }
    for (cell, o) in m.cells.iter_mut().zip(observed) {
        cell.observed = o.passed();
        // A probe that could not be sent proves nothing either way: it counts as a mismatch.
        cell.mismatch = cell.observed != cell.expected || matches!(o, Observed::Error(_));
        cell.observation = o;
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub pairs: usize,
    pub allowed: usize,
    pub denied: usize,
    pub mismatches: usize,
}

pub fn summary(m: &Matrix) -> Summary {
    let allowed = m.cells.iter().filter(|c| c.observed).count();
    Summary {
        pairs: m.cells.len(),
        allowed,
        denied: m.cells.len() - allowed,
        mismatches: m.cells.iter().filter(|c| c.mismatch).count(),
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "probe: {} pairs, {} allowed, {} denied, {} mismatches",
            self.pairs, self.allowed, self.denied, self.mismatches
        )
    }
}
