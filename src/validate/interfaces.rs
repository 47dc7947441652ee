//! Interface names (trunks, uplinks, untagged ports) become kernel link names and parts of
//! `/proc/sys/net/.../conf/NAME/...` paths: each must be a name Linux accepts and that
//! cannot step out of that path.

use crate::compile::network::IFNAME_MAX;
use crate::diag::Diagnostic;
use crate::topology::{Sp, Topology};

pub fn check(topo: &Topology, out: &mut Vec<Diagnostic>) {
    let names = topo
        .gateways
        .iter()
        .flat_map(|g| g.trunk.iter().chain(g.uplink.iter().map(|u| &u.interface)))
        .chain(topo.transit.iter().filter_map(|t| t.interface.as_ref()))
        .chain(topo.segments.iter().filter_map(|s| s.interface.as_ref()));
    for name in names {
        if let Some(why) = invalid(&name.v) {
            out.push(bad(name, why));
        }
    }
}

fn bad(name: &Sp<String>, why: &str) -> Diagnostic {
    Diagnostic::error(
        "interface-name",
        name.pos,
        format!(
            "'{}' is not a usable interface name: {why} (at most {IFNAME_MAX} letters, digits, '-', '_', '.' or '@')",
            name.v.escape_debug()
        ),
    )
}

fn invalid(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("it is empty");
    }
    if name.len() > IFNAME_MAX {
        return Some("Linux limits interface names to 15 bytes");
    }
    if name == "." || name == ".." {
        return Some("it names a directory");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
    {
        return Some("it contains a character that is not allowed");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::invalid;

    #[test]
    fn kernel_names_pass_and_paths_do_not() {
        for ok in [
            "eth0", "eth1.310", "enp3s0f1", "bond0", "br-mgmt", "a@b", "x",
        ] {
            assert_eq!(invalid(ok), None, "{ok}");
        }
        for bad in [
            "",
            "averyveryverylonginterfacename0",
            "..",
            ".",
            "eth 1",
            "eth1/x",
            "eth1:0",
            "ethé",
        ] {
            assert!(invalid(bad).is_some(), "{bad:?}");
        }
    }
}
