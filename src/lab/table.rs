//! Printing the probe matrix for a network administrator: a numbered column legend
//! grouped by destination, one row per source, the disagreements spelled out below.

use super::plan::LabPlan;
use super::probe::{summary, Matrix};
use crate::compile::ranges::Family;
use std::collections::HashMap;
use std::fmt::Write;

const RED: &str = "\x1b[31;1m";
const DIM: &str = "\x1b[2m";
const RESET: &str = "\x1b[0m";

fn paint(s: &str, color: &str, tty: bool) -> String {
    if tty {
        format!("{color}{s}{RESET}")
    } else {
        s.to_string()
    }
}

/// Whether the table mixes address families (then each group names its family).
fn dual_stack(m: &Matrix) -> bool {
    m.columns.iter().any(|c| c.family() == Family::V6)
        && m.columns.iter().any(|c| c.family() == Family::V4)
}

pub fn render(plan: &LabPlan, m: &Matrix, tty: bool) -> String {
    let mut out = String::new();
    let both = dual_stack(m);
    // Legend: destination (and family) -> its numbered columns.
    let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
    for (i, c) in m.columns.iter().enumerate() {
        let mut name = plan.hosts[c.host].name.clone();
        if both {
            name += if c.family() == Family::V6 {
                " (IPv6)"
            } else {
                " (IPv4)"
            };
        }
        match groups.last_mut() {
            Some((n, cols)) if *n == name => cols.push(i),
            _ => groups.push((name, vec![i])),
        }
    }
    let name_w = groups.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    let port_w = m
        .columns
        .iter()
        .map(|c| c.port.to_string().len())
        .max()
        .unwrap_or(0);
    let _ = writeln!(out, "destinations (column, port):");
    for (name, cols) in &groups {
        let ports: Vec<String> = cols
            .iter()
            .map(|&i| format!("{:>2} {:<port_w$}", i + 1, m.columns[i].port.to_string()))
            .collect();
        let _ = writeln!(out, "  {name:<name_w$}  {}", ports.join("  ").trim_end());
    }
    let _ = writeln!(out);

    let labels: Vec<String> = m.rows.iter().map(|&r| plan.hosts[r].label()).collect();
    let label_w = labels
        .iter()
        .map(String::len)
        .max()
        .unwrap_or(0)
        .max("source".len());
    let mut header = format!("{:<label_w$} ", "source");
    for i in 0..m.columns.len() {
        let _ = write!(header, "{:>3}", i + 1);
    }
    let _ = writeln!(out, "{}", header.trim_end());
    let by_pos: HashMap<(usize, usize), usize> = m
        .cells
        .iter()
        .enumerate()
        .map(|(i, c)| ((c.row, c.column), i))
        .collect();
    for (ri, &row) in m.rows.iter().enumerate() {
        let mut line = format!("{:<label_w$} ", labels[ri]);
        for ci in 0..m.columns.len() {
            let cell = match by_pos.get(&(row, ci)) {
                None => paint("  ·", DIM, tty),
                Some(&i) => {
                    let c = &m.cells[i];
                    let mark = if c.observed { "✓" } else { "✗" };
                    if c.mismatch {
                        paint(&format!(" {mark}!"), RED, tty)
                    } else {
                        format!("  {mark}")
                    }
                }
            };
            line.push_str(&cell);
        }
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(out, "\n✓ got through   ✗ blocked   · not probed (itself, or no address of that family)   ! the lab disagrees with the topology");

    let mismatches: Vec<_> = m.cells.iter().filter(|c| c.mismatch).collect();
    if !mismatches.is_empty() {
        let _ = writeln!(out, "\n{}", paint("mismatches:", RED, tty));
        for c in mismatches {
            let _ = writeln!(
                out,
                "  {} ({}) -> {} ({}) {}: topology says {} ({}), lab saw {}",
                c.source,
                c.source_address,
                c.destination,
                c.destination_address,
                c.port,
                if c.expected { "allow" } else { "deny" },
                c.reason,
                c.observation.describe()
            );
        }
    }
    let _ = writeln!(out, "{}", summary(m));
    out
}
