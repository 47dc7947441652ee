//! YAML text → [`Topology`], keeping every node's position and collecting every
//! structural error (unknown fields, wrong types, bad literals) instead of stopping at the first.

use super::model::*;
use crate::diag::{Diagnostic, Pos};
use chrono::NaiveDate;
use ipnet::IpNet;
use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode};
use marked_yaml::{LoaderOptions, Node};
use std::net::IpAddr;

/// Largest topology file accepted, so a hostile file cannot exhaust memory.
pub const MAX_FILE_BYTES: usize = 64 * 1024 * 1024;

/// Parses topology text. Returns the model (when the document had the right overall
/// shape) and every diagnostic found on the way.
pub fn parse(text: &str) -> (Option<Topology>, Vec<Diagnostic>) {
    let mut r = Reader { diags: Vec::new() };
    if text.len() > MAX_FILE_BYTES {
        r.err(
            "syntax",
            Pos { line: 1, col: 1 },
            format!("file is larger than {MAX_FILE_BYTES} bytes"),
        );
        return (None, r.diags);
    }
    // A byte order mark (editors on Windows write one) is not part of the first key.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if let Some(d) = before_yaml(text) {
        r.diags.push(d);
        return (None, r.diags);
    }
    let options = LoaderOptions::default()
        .error_on_duplicate_keys(true)
        .toplevel_mapping();
    let root = match marked_yaml::parse_yaml_with_options(0, text, options) {
        Ok(root) => root,
        Err(e) => {
            r.diags.push(load_error(&e));
            return (None, r.diags);
        }
    };
    // marked-yaml reads the first document of a stream and ignores the rest unread.
    if let Some(pos) = second_document(text) {
        r.err(
            "syntax",
            pos,
            "a second YAML document starts here; a topology file holds exactly one, and the rest would be ignored",
        );
    }
    let topo = r.topology(&root);
    (topo, r.diags)
}

/// Deepest indentation, counting compact `- `/`? ` indicators, that the YAML parser is
/// given. Its parser recurses once per block level (flow levels it limits itself), so a
/// small hostile file of `- - - - …` would otherwise overflow the stack.
pub const MAX_INDENT: usize = 64;

/// What must be refused before the YAML parser sees the text: characters YAML forbids
/// (the parser stops at a NUL and silently drops the rest of the file; control characters
/// would reach names and terminals) and nesting deep enough to exhaust the stack.
fn before_yaml(text: &str) -> Option<Diagnostic> {
    for (i, line) in text.split('\n').enumerate() {
        let pos = |col: usize| Pos {
            line: i as u32 + 1,
            col: col as u32 + 1,
        };
        if let Some((col, c)) = line.chars().enumerate().find(|&(_, c)| !yaml_printable(c)) {
            return Some(Diagnostic::error(
                "syntax",
                pos(col),
                format!(
                    "control character U+{:04X} is not allowed in a topology file",
                    c as u32
                ),
            ));
        }
        let depth = indentation(line);
        if depth > MAX_INDENT {
            return Some(Diagnostic::error(
                "syntax",
                pos(0),
                format!("nesting is too deep: indentation reaches column {depth}; at most {MAX_INDENT} is accepted"),
            ));
        }
    }
    None
}

/// YAML 1.2's printable set (c-printable), with '\r' allowed as part of a line end.
fn yaml_printable(c: char) -> bool {
    matches!(c, '\t' | '\r' | ' '..='~' | '\u{85}' | '\u{a0}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..)
}

/// The column where a line's content starts, after spaces and compact block indicators.
fn indentation(line: &str) -> usize {
    let b = line.as_bytes();
    let mut i = 0;
    loop {
        while i < b.len() && b[i] == b' ' {
            i += 1;
        }
        let indicator = i < b.len() && matches!(b[i], b'-' | b'?' | b':');
        if indicator && (i + 1 == b.len() || matches!(b[i + 1], b' ' | b'\t' | b'\r')) {
            i += 1;
            continue;
        }
        return i;
    }
}

/// Where a second document starts: a `---` after content, or anything but comments after
/// a `...`. Document markers are only markers in column 1, where no scalar may continue.
fn second_document(text: &str) -> Option<Pos> {
    let (mut content, mut ended) = (false, false);
    for (i, line) in text.split('\n').enumerate() {
        let marker = |m: &str| {
            line.strip_prefix(m)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r']))
        };
        let blank = line.trim().is_empty() || line.trim_start().starts_with('#');
        let pos = Pos {
            line: i as u32 + 1,
            col: 1,
        };
        if marker("---") {
            if content || ended {
                return Some(pos);
            }
            content = true;
        } else if marker("...") {
            ended = true;
        } else if ended && !blank {
            return Some(pos);
        } else if !blank && (!line.starts_with('%') || content) {
            content = true;
        }
    }
    None
}

fn marker_pos(m: &marked_yaml::Marker) -> Pos {
    Pos {
        line: m.line() as u32,
        col: m.column() as u32,
    }
}

fn node_pos(node: &Node) -> Pos {
    let pos = node.span().start().map(marker_pos).unwrap_or_default();
    match node.as_mapping().and_then(|m| m.keys().next()) {
        // A block mapping's own mark lies on its first ':'; its first key is where it
        // starts. (A flow mapping's lies on its '{'.)
        Some(key) if scalar_pos(key) < pos => scalar_pos(key),
        _ => pos,
    }
}

fn scalar_pos(node: &MarkedScalarNode) -> Pos {
    node.span().start().map(marker_pos).unwrap_or_default()
}

fn load_error(e: &marked_yaml::LoadError) -> Diagnostic {
    use marked_yaml::LoadError::*;
    match e {
        TopLevelMustBeMapping(m) => Diagnostic::error(
            "syntax",
            marker_pos(m),
            "the top level of a topology must be a mapping",
        ),
        TopLevelMustBeSequence(m) => Diagnostic::error(
            "syntax",
            marker_pos(m),
            "unexpected sequence at the top level",
        ),
        UnexpectedAnchor(m) => Diagnostic::error(
            "syntax",
            marker_pos(m),
            "YAML anchors and aliases are not supported in topologies",
        ),
        MappingKeyMustBeScalar(m) => {
            Diagnostic::error("syntax", marker_pos(m), "mapping keys must be plain names")
        }
        UnexpectedTag(m) => Diagnostic::error(
            "syntax",
            marker_pos(m),
            "YAML tags are not supported in topologies",
        ),
        ScanError(m, e) => Diagnostic::error(
            "syntax",
            marker_pos(m),
            format!("invalid YAML: {}", e.info()),
        ),
        DuplicateKey(inner) => Diagnostic::error(
            "duplicate-key",
            scalar_pos(&inner.key),
            format!(
                "key '{}' appears twice in this mapping (first at {})",
                inner.key.as_str(),
                scalar_pos(&inner.prev_key)
            ),
        ),
    }
}

struct Reader {
    diags: Vec<Diagnostic>,
}

/// The fields of one mapping, with the ones that were looked at ticked off.
struct Fields<'n> {
    map: &'n MarkedMappingNode,
    pos: Pos,
    what: &'static str,
}

impl<'n> Fields<'n> {
    fn get(&self, key: &str) -> Option<&'n Node> {
        self.map.get_node(key)
    }

    /// Where a value is: an empty one (`name:`) has no text of its own, and the parser marks
    /// it at whatever follows, often the next line; its key is where it is missing.
    fn value_pos(&self, key: &str, value: &MarkedScalarNode) -> Pos {
        match self.map.keys().find(|k| k.as_str() == key) {
            Some(k) if value.as_str().is_empty() => scalar_pos(k),
            _ => scalar_pos(value),
        }
    }
}

impl Reader {
    fn err(&mut self, rule: &'static str, pos: Pos, msg: impl Into<String>) {
        self.diags.push(Diagnostic::error(rule, pos, msg));
    }

    /// Checks that `node` is a mapping whose keys are all in `allowed`.
    fn fields<'n>(
        &mut self,
        node: &'n Node,
        what: &'static str,
        allowed: &[&str],
    ) -> Option<Fields<'n>> {
        let pos = node_pos(node);
        let Some(map) = node.as_mapping() else {
            self.err("type", pos, format!("{what} must be a mapping"));
            return None;
        };
        for key in map.keys() {
            if !allowed.contains(&key.as_str()) {
                let hint = crate::diag::closest(key.as_str(), allowed.iter().copied())
                    .map(|s| format!("; did you mean '{s}'?"))
                    .unwrap_or_default();
                self.err(
                    "unknown-field",
                    scalar_pos(key),
                    format!(
                        "unknown field '{}' in {what}{hint} (known fields: {})",
                        key.as_str(),
                        allowed.join(", ")
                    ),
                );
            }
        }
        Some(Fields { map, pos, what })
    }

    fn scalar<'n>(&mut self, node: &'n Node, what: &str) -> Option<&'n MarkedScalarNode> {
        match node.as_scalar() {
            Some(s) => Some(s),
            None => {
                self.err(
                    "type",
                    node_pos(node),
                    format!("{what} must be a single value"),
                );
                None
            }
        }
    }

    fn opt_str(&mut self, f: &Fields, key: &str) -> Option<Sp<String>> {
        let node = f.get(key)?;
        let s = self.scalar(node, &format!("'{key}' of {}", f.what))?;
        Some(Sp::new(s.as_str().to_string(), f.value_pos(key, s)))
    }

    fn req_str(&mut self, f: &Fields, key: &str) -> Option<Sp<String>> {
        if f.get(key).is_none() {
            self.err(
                "missing-field",
                f.pos,
                format!("{} needs a '{key}' field", f.what),
            );
            return None;
        }
        let v = self.opt_str(f, key)?;
        if v.v.trim().is_empty() {
            self.err(
                "type",
                v.pos,
                format!("'{key}' of {} must not be empty", f.what),
            );
            return None;
        }
        Some(v)
    }

    /// A field parsed from its text; a bad literal is reported with `rule`.
    fn opt_parsed<T>(
        &mut self,
        f: &Fields,
        key: &str,
        rule: &'static str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Option<Sp<T>> {
        let s = self.opt_str(f, key)?;
        match parse(s.v.trim()) {
            Ok(v) => Some(Sp::new(v, s.pos)),
            Err(msg) => {
                self.err(rule, s.pos, format!("'{key}' of {}: {msg}", f.what));
                None
            }
        }
    }

    fn opt_bool(&mut self, f: &Fields, key: &str) -> Option<Sp<bool>> {
        self.opt_parsed(f, key, "type", |s| match s {
            "true" => Ok(true),
            "false" => Ok(false),
            other => Err(format!("expected true or false, found '{other}'")),
        })
    }

    fn opt_u32(&mut self, f: &Fields, key: &str) -> Option<Sp<u32>> {
        self.opt_parsed(f, key, "type", |s| {
            s.parse::<u32>()
                .map_err(|_| format!("expected a whole number, found '{s}'"))
        })
    }

    /// A field that may hold one value or a list of them, under a singular or a plural key
    /// (`subnet`/`subnets`); each element parsed from its text.
    fn one_or_many<T>(
        &mut self,
        f: &Fields,
        singular: &str,
        plural: &str,
        rule: &'static str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Option<Vec<Sp<T>>> {
        let key = if f.get(singular).is_some() {
            singular
        } else {
            plural
        };
        let node = match (f.get(singular), f.get(plural)) {
            // `from`, `to`, `ports`: one key serves as both forms.
            (Some(_), Some(n)) if singular != plural => {
                self.err(
                    "type",
                    node_pos(n),
                    format!("{} has both '{singular}' and '{plural}'; use one", f.what),
                );
                return None;
            }
            (Some(n), _) | (None, Some(n)) => n,
            (None, None) => return None,
        };
        let items: Vec<&Node> = match node {
            Node::Sequence(seq) => seq.iter().collect(),
            other => vec![other],
        };
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let Some(s) = self.scalar(item, &format!("an element of '{plural}' in {}", f.what))
            else {
                continue;
            };
            let pos = f.value_pos(key, s);
            match parse(s.as_str().trim()) {
                Ok(v) => out.push(Sp::new(v, pos)),
                Err(msg) => self.err(rule, pos, format!("{} in {}: {msg}", s.as_str(), f.what)),
            }
        }
        Some(out)
    }

    /// A list of names: a single name or a sequence of them.
    fn names(&mut self, f: &Fields, key: &str) -> Option<Vec<Sp<String>>> {
        self.one_or_many(f, key, key, "type", |s| {
            if s.is_empty() {
                Err("empty name".into())
            } else {
                Ok(s.to_string())
            }
        })
    }

    fn section<'n>(&mut self, root: &Fields<'n>, key: &str) -> Vec<&'n Node> {
        match root.get(key) {
            None => Vec::new(),
            Some(Node::Sequence(seq)) => seq.iter().collect(),
            Some(Node::Scalar(s)) if s.as_str().is_empty() => Vec::new(),
            Some(other) => {
                self.err("type", node_pos(other), format!("'{key}' must be a list"));
                Vec::new()
            }
        }
    }

    fn topology(&mut self, root: &Node) -> Option<Topology> {
        let f = self.fields(
            root,
            "the topology",
            &[
                "version",
                "name",
                "description",
                "tiers",
                "gateways",
                "transit",
                "segments",
                "services",
                "flows",
            ],
        )?;
        let version = self.opt_u32(&f, "version");
        match &version {
            None => self.err("version", f.pos, "the topology needs 'version: 1'"),
            Some(v) if v.v != 1 => self.err(
                "version",
                v.pos,
                format!(
                    "unsupported format version {}; this tiernet reads version 1",
                    v.v
                ),
            ),
            _ => {}
        }
        let mut topo = Topology {
            pos: f.pos,
            version,
            name: self.req_str(&f, "name"),
            description: self.opt_str(&f, "description").map(|d| d.v),
            ..Topology::default()
        };
        for n in self.section(&f, "tiers") {
            topo.tiers.extend(self.tier(n));
        }
        for n in self.section(&f, "gateways") {
            topo.gateways.extend(self.gateway(n));
        }
        for n in self.section(&f, "transit") {
            topo.transit.extend(self.transit(n));
        }
        for n in self.section(&f, "segments") {
            topo.segments.extend(self.segment(n));
        }
        for n in self.section(&f, "services") {
            topo.services.extend(self.service(n));
        }
        for n in self.section(&f, "flows") {
            topo.flows.extend(self.flow(n));
        }
        Some(topo)
    }

    fn tier(&mut self, node: &Node) -> Option<Tier> {
        let f = self.fields(
            node,
            "a tier",
            &[
                "name",
                "level",
                "description",
                "internet",
                "inbound_roles",
                "requires_approval",
                "same_policy_as",
                "availability",
            ],
        )?;
        let name = self.req_str(&f, "name");
        let level = self.opt_u32(&f, "level");
        if level.is_none() && f.get("level").is_none() {
            self.err(
                "missing-field",
                f.pos,
                "a tier needs a 'level' field (1 = least confidential)",
            );
        }
        let internet = self.opt_parsed(&f, "internet", "type", |s| match s {
            "none" => Ok(Internet::None),
            "inbound" => Ok(Internet::Inbound),
            "outbound" => Ok(Internet::Outbound),
            "both" => Ok(Internet::Both),
            other => Err(format!(
                "expected none, inbound, outbound or both, found '{other}'"
            )),
        });
        let availability = self.opt_parsed(&f, "availability", "type", |s| match s {
            "normal" | "high" | "critical" => Ok(s.to_string()),
            other => Err(format!(
                "expected normal, high or critical, found '{other}'"
            )),
        });
        Some(Tier {
            pos: f.pos,
            name: name?,
            level: level?,
            description: self.opt_str(&f, "description").map(|d| d.v),
            internet,
            inbound_roles: self.names(&f, "inbound_roles"),
            requires_approval: self.opt_bool(&f, "requires_approval"),
            same_policy_as: self.opt_str(&f, "same_policy_as"),
            availability,
        })
    }

    fn gateway(&mut self, node: &Node) -> Option<Gateway> {
        let f = self.fields(
            node,
            "a gateway",
            &["name", "trunk", "uplink", "description"],
        )?;
        let uplink = match f.get("uplink") {
            Some(n) => self.uplink(n),
            None => None,
        };
        Some(Gateway {
            pos: f.pos,
            name: self.req_str(&f, "name")?,
            trunk: self.opt_str(&f, "trunk"),
            uplink,
        })
    }

    fn uplink(&mut self, node: &Node) -> Option<Uplink> {
        let f = self.fields(
            node,
            "an uplink",
            &["interface", "address", "addresses", "next_hop", "next_hops"],
        )?;
        let addresses = self.one_or_many(
            &f,
            "address",
            "addresses",
            "address",
            parse_interface_address,
        );
        let next_hops = self.one_or_many(&f, "next_hop", "next_hops", "address", parse_addr);
        if addresses.is_none() && f.get("address").is_none() && f.get("addresses").is_none() {
            self.err(
                "missing-field",
                f.pos,
                "an uplink needs an 'address' (with its prefix length)",
            );
        }
        Some(Uplink {
            pos: f.pos,
            interface: self.req_str(&f, "interface")?,
            addresses: addresses.unwrap_or_default(),
            next_hops: next_hops.unwrap_or_default(),
        })
    }

    fn transit(&mut self, node: &Node) -> Option<Transit> {
        let f = self.fields(
            node,
            "a transit link",
            &[
                "name",
                "vlan",
                "interface",
                "subnet",
                "subnets",
                "gateways",
                "description",
            ],
        )?;
        let subnets = self.subnets(&f);
        let gateways = self.names(&f, "gateways");
        if gateways.is_none() {
            self.err(
                "missing-field",
                f.pos,
                "a transit link needs 'gateways: [A, B]'",
            );
        }
        Some(Transit {
            pos: f.pos,
            name: self.req_str(&f, "name")?,
            vlan: self.opt_u32(&f, "vlan"),
            interface: self.opt_str(&f, "interface"),
            subnets: subnets?,
            gateways: gateways?,
        })
    }

    fn subnets(&mut self, f: &Fields) -> Option<Vec<Sp<IpNet>>> {
        let subnets = self.one_or_many(f, "subnet", "subnets", "address", parse_subnet);
        if subnets.is_none() && f.get("subnet").is_none() && f.get("subnets").is_none() {
            self.err(
                "missing-field",
                f.pos,
                format!("{} needs a 'subnet' (or 'subnets')", f.what),
            );
        }
        subnets
    }

    fn segment(&mut self, node: &Node) -> Option<Segment> {
        let f = self.fields(
            node,
            "a segment",
            &[
                "name",
                "tier",
                "description",
                "vlan",
                "interface",
                "subnet",
                "subnets",
                "gateway",
                "router_address",
                "router_addresses",
            ],
        )?;
        let name = self.req_str(&f, "name");
        let tier = self.req_str(&f, "tier");
        let subnets = self.subnets(&f);
        let gateway = self.req_str(&f, "gateway");
        let router_addresses = self.one_or_many(
            &f,
            "router_address",
            "router_addresses",
            "address",
            parse_addr,
        );
        Some(Segment {
            pos: f.pos,
            name: name?,
            tier: tier?,
            description: self.opt_str(&f, "description").map(|d| d.v),
            vlan: self.opt_u32(&f, "vlan"),
            interface: self.opt_str(&f, "interface"),
            subnets: subnets?,
            gateway: gateway?,
            router_addresses: router_addresses.unwrap_or_default(),
        })
    }

    fn service(&mut self, node: &Node) -> Option<Service> {
        let f = self.fields(
            node,
            "a service",
            &[
                "name",
                "segment",
                "description",
                "address",
                "addresses",
                "ports",
                "exposed",
                "role",
            ],
        )?;
        let name = self.req_str(&f, "name");
        let segment = self.req_str(&f, "segment");
        let addresses =
            self.one_or_many(&f, "address", "addresses", "address", parse_host_or_prefix);
        if addresses.is_none() && f.get("address").is_none() && f.get("addresses").is_none() {
            self.err(
                "missing-field",
                f.pos,
                "a service needs an 'address' (or 'addresses')",
            );
        }
        let ports = self.one_or_many(&f, "ports", "ports", "ports", parse_port);
        if ports.is_none() {
            self.err(
                "missing-field",
                f.pos,
                "a service needs 'ports' (e.g. [tcp/443])",
            );
        }
        let role = self.opt_parsed(&f, "role", "type", parse_word);
        Some(Service {
            pos: f.pos,
            name: name?,
            segment: segment?,
            description: self.opt_str(&f, "description").map(|d| d.v),
            addresses: addresses?,
            ports: ports?,
            exposed: self.opt_bool(&f, "exposed"),
            role,
        })
    }

    fn flow(&mut self, node: &Node) -> Option<Flow> {
        let f = self.fields(
            node,
            "a flow",
            &[
                "name",
                "description",
                "from",
                "to",
                "ports",
                "approval",
                "expires",
            ],
        )?;
        let name = self.req_str(&f, "name");
        let from = self.names(&f, "from");
        let to = self.names(&f, "to");
        for (key, v) in [("from", &from), ("to", &to)] {
            if v.is_none() {
                self.err(
                    "missing-field",
                    f.pos,
                    format!("a flow needs a '{key}' field"),
                );
            }
        }
        let ports = self.one_or_many(&f, "ports", "ports", "ports", parse_port);
        let expires = self.opt_parsed(&f, "expires", "type", |s| {
            NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .map_err(|_| format!("expected a date YYYY-MM-DD, found '{s}'"))
        });
        Some(Flow {
            pos: f.pos,
            name: name?,
            description: self.opt_str(&f, "description").map(|d| d.v),
            from: from?,
            to: to?,
            ports,
            approval: self.opt_str(&f, "approval"),
            expires,
        })
    }
}

fn parse_word(s: &str) -> Result<String, String> {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        Ok(s.to_string())
    } else {
        Err(format!(
            "expected a name of letters, digits, '-' or '_', found '{s}'"
        ))
    }
}

fn parse_addr(s: &str) -> Result<IpAddr, String> {
    s.parse()
        .map_err(|_| format!("expected an IP address, found '{s}'"))
}

/// A subnet must be written as its network address (`10.1.10.0/24`, not `10.1.10.5/24`).
pub fn parse_subnet(s: &str) -> Result<IpNet, String> {
    let net: IpNet = parse_net(s)
        .ok_or_else(|| format!("expected a subnet such as 10.1.10.0/24, found '{s}'"))?;
    if net.network() != net.addr() {
        return Err(format!("host bits set; the subnet is {}", net.trunc()));
    }
    Ok(net)
}

/// An interface address keeps its host part (`198.51.100.2/30`).
fn parse_interface_address(s: &str) -> Result<IpNet, String> {
    parse_net(s).ok_or_else(|| {
        format!("expected an address with prefix length such as 198.51.100.2/30, found '{s}'")
    })
}

/// `ADDRESS/LEN` with the address as strict as a plain address: ipnet alone would read
/// `010.003.030.000/24` as 10.3.30.0/24, where other tools read 010 as octal 8.
fn parse_net(s: &str) -> Option<IpNet> {
    let (addr, _) = s.split_once('/')?;
    addr.parse::<IpAddr>().ok()?;
    s.parse().ok()
}

/// A host address becomes a full-length prefix; a prefix must be its network address.
pub fn parse_host_or_prefix(s: &str) -> Result<IpNet, String> {
    if s.contains('/') {
        parse_subnet(s)
    } else {
        parse_addr(s).map(IpNet::from)
    }
}

pub fn parse_port(s: &str) -> Result<PortSpec, String> {
    if s == "icmp" {
        return Ok(PortSpec::icmp());
    }
    let bad = || format!("expected tcp/N, tcp/N-M, udp/N, udp/N-M or icmp, found '{s}'");
    let (proto, range) = s.split_once('/').ok_or_else(bad)?;
    let proto = match proto {
        "tcp" => Proto::Tcp,
        "udp" => Proto::Udp,
        _ => return Err(bad()),
    };
    let port = |p: &str| -> Result<u16, String> {
        match p.parse::<u32>() {
            Ok(n) if (1..=65535).contains(&n) => Ok(n as u16),
            Ok(n) => Err(format!("port {n} is outside 1-65535")),
            Err(_) => Err(bad()),
        }
    };
    let (lo, hi) = match range.split_once('-') {
        Some((a, b)) => (port(a)?, port(b)?),
        None => {
            let p = port(range)?;
            (p, p)
        }
    };
    if lo > hi {
        return Err(format!("range {lo}-{hi} runs backwards; write {hi}-{lo}"));
    }
    Ok(PortSpec { proto, lo, hi })
}
