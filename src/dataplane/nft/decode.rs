//! nf_tables messages → the canonical lines of one table.
//!
//! The same decoder reads the kernel's dump (`observe`) and the batch our encoder builds
//! (`canonical`), so the two can only differ where the kernel holds something else. Every
//! attribute is shown except what is bookkeeping: handles, use counts, ids, counter values,
//! padding, element expirations, a set's backend and element count (newer kernels dump
//! them), the base-chain flag, and the owner/persist table flags (a property of the
//! session, not of the content). Unknown attributes are shown raw, so nothing slips by; a
//! kernel that starts dumping a new bookkeeping attribute therefore shows as drift until
//! it is added to the lists here (the kernel tests catch that).
//!
//! Elements are shown per key field in hex (an interface name quoted), ranges as `lo-hi`;
//! an rbtree interval set's start/end elements are put back together into ranges, and an
//! anonymous set is shown inline in the rule that uses it, by its contents (the kernel
//! names it `__setN`, a batch `__set%d`).
//!
//! Messages are applied in order like a transaction: DELTABLE drops what came before,
//! which is how the replace batch's leading NEWTABLE/DELTABLE pair reads.

use super::encode::{
    NFT_SET_ELEM_INTERVAL_END, NFT_TABLE_F_DORMANT, NFT_TABLE_F_OWNER, NFT_TABLE_F_PERSIST,
};
use super::wire::{self, attr, be32, hex, msg, strz, Attrs, Msg};
use anyhow::{anyhow, Context, Result};
use std::collections::{BTreeMap, HashMap};

type Raw = Vec<(u16, Vec<u8>)>;

fn owned(a: &Attrs) -> Raw {
    a.list.iter().map(|(t, d)| (*t, d.to_vec())).collect()
}

/// Attributes being rendered: known ones are taken out, the rest is shown raw.
struct Take<'a>(Vec<(u16, &'a [u8])>);

impl<'a> Take<'a> {
    fn of(raw: &'a Raw) -> Take<'a> {
        Take(raw.iter().map(|(t, d)| (*t, d.as_slice())).collect())
    }

    fn parsed(a: &Attrs<'a>) -> Take<'a> {
        Take(a.list.clone())
    }

    fn take(&mut self, ty: u16) -> Option<&'a [u8]> {
        let i = self.0.iter().position(|(t, _)| *t == ty)?;
        Some(self.0.remove(i).1)
    }

    fn u32(&mut self, ty: u16) -> Option<u32> {
        self.take(ty).and_then(be32)
    }

    fn str(&mut self, ty: u16) -> Option<String> {
        self.take(ty).map(strz)
    }

    fn owned(self) -> Raw {
        self.0.into_iter().map(|(t, d)| (t, d.to_vec())).collect()
    }

    fn drop_all(&mut self, tys: &[u16]) {
        self.0.retain(|(t, _)| !tys.contains(t));
    }

    /// What is left, as ` attrN=hex` words.
    fn rest(&self) -> String {
        self.0
            .iter()
            .map(|(t, d)| format!(" attr{t}={}", hex(d)))
            .collect()
    }
}

#[derive(Default)]
struct TableObj {
    flags: u32,
    userdata: Option<Vec<u8>>,
    other: Raw,
}

struct ChainObj {
    attrs: Raw,
}

struct SetObj {
    name: String,
    attrs: Raw,
    flags: u32,
    key_type: u32,
    key_len: u32,
    fields: Vec<u32>,
    elems: Vec<ElemObj>,
}

#[derive(Clone)]
struct ElemObj {
    key: Vec<u8>,
    key_end: Option<Vec<u8>>,
    flags: u32,
    data: Option<Vec<u8>>,
    udata: Option<Vec<u8>>,
    other: Raw,
}

struct RuleObj {
    chain: String,
    exprs: Vec<(String, Raw)>,
    attrs: Raw,
}

/// Accumulates the messages of one table (`inet <name>`) and renders its canonical lines.
pub struct Decoder {
    name: String,
    table: Option<TableObj>,
    chains: BTreeMap<String, ChainObj>,
    sets: HashMap<String, SetObj>,
    rules: Vec<RuleObj>,
}

/// Sets created in a batch are named `__set%d` and told apart by their id; in a dump the
/// kernel has named them `__setN`.
fn set_key(name: &str, id: Option<u32>) -> String {
    if name.contains('%') {
        format!("{name}#{}", id.unwrap_or(0))
    } else {
        name.to_string()
    }
}

impl Decoder {
    pub fn new(table: &str) -> Decoder {
        Decoder {
            name: table.to_string(),
            table: None,
            chains: BTreeMap::new(),
            sets: HashMap::new(),
            rules: Vec::new(),
        }
    }

    /// Applies one message; messages of other tables, families and subsystems are skipped.
    pub fn feed(&mut self, m: &Msg) -> Result<()> {
        if !m.is_nftables() || m.family() != wire::NFPROTO_INET {
            return Ok(());
        }
        let kind = m.nft_msg();
        let a = m
            .attrs()
            .with_context(|| format!("parsing {}", msg::name(kind)))?;
        match kind {
            msg::NEWTABLE | msg::DELTABLE => {
                if a.str(attr::TABLE_NAME).as_deref() != Some(self.name.as_str()) {
                    return Ok(());
                }
                if kind == msg::DELTABLE {
                    self.table = None;
                    self.chains.clear();
                    self.sets.clear();
                    self.rules.clear();
                    return Ok(());
                }
                let t = self.table.get_or_insert_with(TableObj::default);
                let mut x = Take::parsed(&a);
                x.drop_all(&[
                    attr::TABLE_NAME,
                    attr::TABLE_USE,
                    attr::TABLE_HANDLE,
                    attr::TABLE_PAD,
                    attr::TABLE_OWNER,
                ]);
                if let Some(f) = x.u32(attr::TABLE_FLAGS) {
                    t.flags = f;
                }
                if let Some(u) = x.take(attr::TABLE_USERDATA) {
                    t.userdata = Some(u.to_vec());
                }
                t.other = x.owned();
            }
            msg::NEWCHAIN => {
                if !self.ours(&a, attr::CHAIN_TABLE) {
                    return Ok(());
                }
                let name = a
                    .str(attr::CHAIN_NAME)
                    .ok_or_else(|| anyhow!("NEWCHAIN without a name"))?;
                self.chains.insert(name, ChainObj { attrs: owned(&a) });
            }
            msg::NEWSET => {
                if !self.ours(&a, attr::SET_TABLE) {
                    return Ok(());
                }
                let name = a
                    .str(attr::SET_NAME)
                    .ok_or_else(|| anyhow!("NEWSET without a name"))?;
                let mut fields = Vec::new();
                if let Some(desc) = a.nested(attr::SET_DESC)? {
                    if let Some(list) = desc.nested(attr::SET_DESC_CONCAT)? {
                        for (_, e) in &list.list {
                            let f = Attrs::parse(e)?
                                .u32(attr::SET_FIELD_LEN)
                                .ok_or_else(|| anyhow!("concat field without a length"))?;
                            fields.push(f);
                        }
                    }
                }
                let set = SetObj {
                    name: name.clone(),
                    attrs: owned(&a),
                    flags: a.u32(attr::SET_FLAGS).unwrap_or(0),
                    key_type: a.u32(attr::SET_KEY_TYPE).unwrap_or(0),
                    key_len: a.u32(attr::SET_KEY_LEN).unwrap_or(0),
                    fields,
                    elems: Vec::new(),
                };
                self.sets.insert(set_key(&name, a.u32(attr::SET_ID)), set);
            }
            msg::NEWSETELEM => {
                if !self.ours(&a, attr::SET_ELEM_LIST_TABLE) {
                    return Ok(());
                }
                let name = a
                    .str(attr::SET_ELEM_LIST_SET)
                    .ok_or_else(|| anyhow!("NEWSETELEM without a set name"))?;
                let key = set_key(&name, a.u32(attr::SET_ELEM_LIST_SET_ID));
                let set = self
                    .sets
                    .get_mut(&key)
                    .ok_or_else(|| anyhow!("elements for unknown set {name}"))?;
                if let Some(list) = a.nested(attr::SET_ELEM_LIST_ELEMENTS)? {
                    for (_, e) in &list.list {
                        set.elems
                            .push(parse_elem(e).with_context(|| format!("element of set {name}"))?);
                    }
                }
            }
            msg::NEWRULE => {
                if !self.ours(&a, attr::RULE_TABLE) {
                    return Ok(());
                }
                let chain = a
                    .str(attr::RULE_CHAIN)
                    .ok_or_else(|| anyhow!("NEWRULE without a chain"))?;
                let mut exprs = Vec::new();
                if let Some(list) = a.nested(attr::RULE_EXPRESSIONS)? {
                    for (_, e) in &list.list {
                        let e = Attrs::parse(e)?;
                        let name = e.str(attr::EXPR_NAME).unwrap_or_default();
                        let data = match e.nested(attr::EXPR_DATA)? {
                            Some(d) => owned(&d),
                            None => Vec::new(),
                        };
                        exprs.push((name, data));
                    }
                }
                self.rules.push(RuleObj {
                    chain,
                    exprs,
                    attrs: owned(&a),
                });
            }
            _ => {}
        }
        Ok(())
    }

    fn ours(&self, a: &Attrs, table_attr: u16) -> bool {
        self.table.is_some() && a.str(table_attr).as_deref() == Some(self.name.as_str())
    }

    /// The canonical lines; None when the table does not exist.
    pub fn lines(&self) -> Option<Vec<String>> {
        let t = self.table.as_ref()?;
        let mut out = Vec::new();
        let mut line = format!("table inet {}", self.name);
        let flags = t.flags & !(NFT_TABLE_F_OWNER | NFT_TABLE_F_PERSIST);
        if flags & NFT_TABLE_F_DORMANT != 0 {
            line += " dormant";
        }
        if flags & !NFT_TABLE_F_DORMANT != 0 {
            line += &format!(" flags 0x{:x}", flags & !NFT_TABLE_F_DORMANT);
        }
        if let Some(u) = &t.userdata {
            line += &format!(" udata {}", hex(u));
        }
        line += &Take::of(&t.other).rest();
        out.push(line);

        let mut named: Vec<&SetObj> = self.sets.values().filter(|s| s.flags & 0x1 == 0).collect();
        named.sort_by(|a, b| a.name.cmp(&b.name));
        for s in named {
            out.push(set_line(s));
            let mut elems: Vec<String> = set_elements(s)
                .into_iter()
                .map(|e| format!("element {}: {e}", s.name))
                .collect();
            elems.sort();
            out.extend(elems);
        }

        let mut by_chain: BTreeMap<&str, Vec<&RuleObj>> = BTreeMap::new();
        for r in &self.rules {
            by_chain.entry(r.chain.as_str()).or_default().push(r);
        }
        let names: std::collections::BTreeSet<&str> = self
            .chains
            .keys()
            .map(|k| k.as_str())
            .chain(by_chain.keys().copied())
            .collect();
        for name in names {
            match self.chains.get(name) {
                Some(c) => out.push(chain_line(name, c)),
                None => out.push(format!(
                    "chain {name}: (rules of a chain that does not exist)"
                )),
            }
            for (i, r) in by_chain
                .get(name)
                .map(|v| v.as_slice())
                .unwrap_or(&[])
                .iter()
                .enumerate()
            {
                out.push(format!("rule {name} #{}: {}", i + 1, self.rule_text(r)));
            }
        }
        Some(out)
    }

    fn rule_text(&self, r: &RuleObj) -> String {
        let exprs: Vec<String> = r
            .exprs
            .iter()
            .map(|(n, a)| format!("[{}]", self.expr_text(n, a)))
            .collect();
        let mut s = exprs.join(" ");
        let mut x = Take::of(&r.attrs);
        x.drop_all(&[
            attr::RULE_TABLE,
            attr::RULE_CHAIN,
            attr::RULE_HANDLE,
            attr::RULE_EXPRESSIONS,
            attr::RULE_POSITION,
            attr::RULE_PAD,
            attr::RULE_ID,
            attr::RULE_POSITION_ID,
            attr::RULE_CHAIN_ID,
        ]);
        if let Some(u) = x.take(attr::RULE_USERDATA) {
            for (t, v) in udata_tlvs(u) {
                if t == 0 {
                    s += &format!(" comment {:?}", strz(v));
                } else {
                    s += &format!(" udata{t}={}", hex(v));
                }
            }
        }
        s + &x.rest()
    }

    fn expr_text(&self, name: &str, attrs: &Raw) -> String {
        let mut x = Take::of(attrs);
        let reg = |r: Option<u32>| r.map(|r| r.to_string()).unwrap_or_else(|| "?".into());
        let text = match name {
            "meta" => {
                let key = x.u32(2).map(meta_key).unwrap_or_else(|| "?".into());
                match (x.u32(1), x.u32(3)) {
                    (Some(d), _) => format!("meta load {key} => reg {d}"),
                    (None, Some(s)) => format!("meta set {key} with reg {s}"),
                    (None, None) => format!("meta {key}"),
                }
            }
            "ct" => {
                let key = x.u32(2).map(ct_key).unwrap_or_else(|| "?".into());
                let dir = x
                    .take(3)
                    .and_then(|d| d.first().copied())
                    .map(|d| format!(" dir {d}"))
                    .unwrap_or_default();
                match (x.u32(1), x.u32(4)) {
                    (Some(d), _) => format!("ct load {key}{dir} => reg {d}"),
                    (None, Some(s)) => format!("ct set {key}{dir} with reg {s}"),
                    (None, None) => format!("ct {key}{dir}"),
                }
            }
            "payload" => {
                let base = match x.u32(2) {
                    Some(0) => "link".to_string(),
                    Some(1) => "network".to_string(),
                    Some(2) => "transport".to_string(),
                    Some(3) => "inner".to_string(),
                    other => format!("base{}", reg(other)),
                };
                let (off, len) = (reg(x.u32(3)), reg(x.u32(4)));
                match (x.u32(1), x.u32(5)) {
                    (Some(d), _) => {
                        format!("payload load {len}b @ {base} header + {off} => reg {d}")
                    }
                    (None, s) => format!(
                        "payload write reg {} => {len}b @ {base} header + {off}",
                        reg(s)
                    ),
                }
            }
            "cmp" => {
                let sreg = reg(x.u32(1));
                let op = match x.u32(2) {
                    Some(0) => "eq".to_string(),
                    Some(1) => "neq".to_string(),
                    Some(2) => "lt".to_string(),
                    Some(3) => "lte".to_string(),
                    Some(4) => "gt".to_string(),
                    Some(5) => "gte".to_string(),
                    other => format!("op{}", reg(other)),
                };
                format!("cmp {op} reg {sreg} {}", data_text(x.take(3)))
            }
            "bitwise" => {
                let (s, d) = (reg(x.u32(1)), reg(x.u32(2)));
                let len = x.u32(3);
                let op = x.u32(6).unwrap_or(0);
                match op {
                    0 => {
                        let mask = x.take(4);
                        let mask_len = mask
                            .as_ref()
                            .and_then(|m| data_value(m))
                            .map(|v| v.len() as u32);
                        let t = format!(
                            "bitwise reg {d} = (reg {s} & {}) ^ {}",
                            data_text(mask),
                            data_text(x.take(5))
                        );
                        if len.is_some() && len != mask_len {
                            format!("{t} len {}", reg(len))
                        } else {
                            t
                        }
                    }
                    1 | 2 => format!(
                        "bitwise reg {d} = (reg {s} {} {}) len {}",
                        if op == 1 { "<<" } else { ">>" },
                        data_text(x.take(7)),
                        reg(len)
                    ),
                    other => format!("bitwise op{other} reg {d} = reg {s} len {}", reg(len)),
                }
            }
            "byteorder" => {
                let (s, d) = (reg(x.u32(1)), reg(x.u32(2)));
                let op = match x.u32(3) {
                    Some(0) => "ntoh".to_string(),
                    Some(1) => "hton".to_string(),
                    other => format!("op{}", reg(other)),
                };
                format!(
                    "byteorder reg {d} = {op}(reg {s}, {}, {})",
                    reg(x.u32(5)),
                    reg(x.u32(4))
                )
            }
            "lookup" => {
                let set = x.str(1).unwrap_or_default();
                let id = x.u32(4);
                let sreg = reg(x.u32(2));
                let mut t = format!("lookup reg {sreg} set {}", self.set_ref(&set, id));
                if let Some(d) = x.u32(3) {
                    t += &format!(" dreg {d}");
                }
                let flags = x.u32(5).unwrap_or(0);
                if flags & 1 != 0 {
                    t += " inv";
                }
                if flags & !1 != 0 {
                    t += &format!(" flags 0x{:x}", flags & !1);
                }
                t
            }
            "counter" => {
                x.drop_all(&[1, 2, 3]); // bytes, packets, pad: values are not state
                "counter".into()
            }
            "log" => {
                let mut t = "log".to_string();
                if let Some(p) = x.str(2) {
                    t += &format!(" prefix {p:?}");
                }
                if let Some(g) = x.take(1).and_then(wire::be16) {
                    t += &format!(" group {g}");
                }
                if let Some(v) = x.u32(3) {
                    t += &format!(" snaplen {v}");
                }
                if let Some(v) = x.take(4).and_then(wire::be16) {
                    t += &format!(" qthreshold {v}");
                }
                if let Some(v) = x.u32(5) {
                    t += &format!(" level {v}");
                }
                if let Some(v) = x.u32(6) {
                    t += &format!(" flags 0x{v:x}");
                }
                t
            }
            "immediate" => {
                let dreg = x.u32(1);
                match (dreg, x.take(2)) {
                    (Some(0), Some(d)) => format!("immediate {}", data_text(Some(d))),
                    (d, data) => format!("immediate reg {} {}", reg(d), data_text(data)),
                }
            }
            other => other.to_string(),
        };
        text + &x.rest()
    }

    /// A named set by name; an anonymous one by its contents.
    fn set_ref(&self, name: &str, id: Option<u32>) -> String {
        let key = set_key(name, id);
        match self.sets.get(&key) {
            Some(s) if s.flags & 0x1 != 0 => {
                let mut elems = set_elements(s);
                elems.sort();
                format!(
                    "{{ {} }} ({})",
                    elems.join(", "),
                    type_names(s.key_type, s.fields.len().max(1))
                )
            }
            Some(_) => name.to_string(),
            None if name.starts_with("__set") => format!("{name} (missing)"),
            None => name.to_string(),
        }
    }
}

fn parse_elem(e: &[u8]) -> Result<ElemObj> {
    let a = Attrs::parse(e)?;
    let value = |ty: u16| -> Result<Option<Vec<u8>>> {
        match a.nested(ty)? {
            Some(n) => Ok(Some(
                n.get(attr::DATA_VALUE)
                    .ok_or_else(|| anyhow!("key without a value"))?
                    .to_vec(),
            )),
            None => Ok(None),
        }
    };
    let key = value(attr::SET_ELEM_KEY)?.unwrap_or_default();
    let key_end = value(attr::SET_ELEM_KEY_END)?;
    let mut x = Take::parsed(&a);
    x.drop_all(&[
        attr::SET_ELEM_KEY,
        attr::SET_ELEM_KEY_END,
        attr::SET_ELEM_PAD,
        attr::SET_ELEM_EXPIRATION,
    ]);
    Ok(ElemObj {
        key,
        key_end,
        flags: x.u32(attr::SET_ELEM_FLAGS).unwrap_or(0),
        data: x.take(attr::SET_ELEM_DATA).map(<[u8]>::to_vec),
        udata: x.take(attr::SET_ELEM_USERDATA).map(<[u8]>::to_vec),
        other: x.owned(),
    })
}

fn udata_tlvs(d: &[u8]) -> Vec<(u8, &[u8])> {
    let mut v = Vec::new();
    let mut i = 0;
    while i + 2 <= d.len() {
        let (t, l) = (d[i], d[i + 1] as usize);
        match d.get(i + 2..i + 2 + l) {
            Some(val) => v.push((t, val)),
            None => {
                v.push((0xff, &d[i..]));
                break;
            }
        }
        i += 2 + l;
    }
    v
}

/// NFTA_DATA_VALUE's bytes.
fn data_value(d: &[u8]) -> Option<Vec<u8>> {
    Attrs::parse(d)
        .ok()?
        .get(attr::DATA_VALUE)
        .map(|v| v.to_vec())
}

/// An `nft_data` nest: a value or a verdict.
fn data_text(d: Option<&[u8]>) -> String {
    let Some(d) = d else {
        return "?".into();
    };
    let Ok(a) = Attrs::parse(d) else {
        return format!("raw {}", hex(d));
    };
    if let Some(v) = a.get(attr::DATA_VALUE) {
        return value_text(v);
    }
    if let Some(v) = a.get(attr::DATA_VERDICT) {
        return match Attrs::parse(v) {
            Ok(v) => verdict_text(
                v.u32(attr::VERDICT_CODE).map(|c| c as i32),
                v.str(attr::VERDICT_CHAIN),
            ),
            Err(_) => format!("verdict raw {}", hex(v)),
        };
    }
    format!("raw {}", hex(d))
}

fn verdict_text(code: Option<i32>, chain: Option<String>) -> String {
    let chain = chain.unwrap_or_else(|| "?".into());
    match code {
        Some(0) => "drop".into(),
        Some(1) => "accept".into(),
        Some(-1) => "continue".into(),
        Some(-2) => "break".into(),
        Some(-3) => format!("jump {chain}"),
        Some(-4) => format!("goto {chain}"),
        Some(-5) => "return".into(),
        Some(c) => format!("verdict {c}"),
        None => "verdict ?".into(),
    }
}

/// Bytes of a compared value: an interface name when it looks like one, else hex.
fn value_text(v: &[u8]) -> String {
    ifname_text(v).unwrap_or_else(|| hex(v))
}

fn ifname_text(v: &[u8]) -> Option<String> {
    if v.len() != 16 {
        return None;
    }
    let end = v.iter().position(|b| *b == 0)?;
    let (name, pad) = v.split_at(end);
    if name.is_empty() || !name.iter().all(|b| b.is_ascii_graphic()) || pad.iter().any(|b| *b != 0)
    {
        return None;
    }
    Some(format!("{:?}", String::from_utf8_lossy(name)))
}

fn meta_key(k: u32) -> String {
    const KEYS: [&str; 36] = [
        "len",
        "protocol",
        "priority",
        "mark",
        "iif",
        "oif",
        "iifname",
        "oifname",
        "iiftype",
        "oiftype",
        "skuid",
        "skgid",
        "nftrace",
        "rtclassid",
        "secmark",
        "nfproto",
        "l4proto",
        "bri_iifname",
        "bri_oifname",
        "pkttype",
        "cpu",
        "iifgroup",
        "oifgroup",
        "cgroup",
        "prandom",
        "secpath",
        "iifkind",
        "oifkind",
        "bri_iifpvid",
        "bri_iifvproto",
        "time_ns",
        "time_day",
        "time_hour",
        "sdif",
        "sdifname",
        "bri_broute",
    ];
    KEYS.get(k as usize)
        .map(|s| s.to_string())
        .unwrap_or_else(|| format!("key{k}"))
}

fn ct_key(k: u32) -> String {
    const KEYS: [&str; 24] = [
        "state",
        "direction",
        "status",
        "mark",
        "secmark",
        "expiration",
        "helper",
        "l3protocol",
        "src",
        "dst",
        "protocol",
        "proto_src",
        "proto_dst",
        "labels",
        "pkts",
        "bytes",
        "avgpkt",
        "zone",
        "eventmask",
        "src_ip",
        "dst_ip",
        "src_ip6",
        "dst_ip6",
        "id",
    ];
    KEYS.get(k as usize)
        .map(|s| s.to_string())
        .unwrap_or_else(|| format!("key{k}"))
}

fn type_name(t: u32) -> String {
    match t {
        1 => "verdict".into(),
        7 => "ipv4_addr".into(),
        8 => "ipv6_addr".into(),
        12 => "inet_proto".into(),
        13 => "inet_service".into(),
        14 => "icmp_type".into(),
        29 => "icmpv6_type".into(),
        41 => "ifname".into(),
        other => format!("type{other}"),
    }
}

/// A (concatenated) key type split into its `n` fields of 6 bits each.
fn split_types(key_type: u32, n: usize) -> Vec<u32> {
    if n <= 1 || n * 6 > 32 {
        return vec![key_type];
    }
    (0..n).rev().map(|i| (key_type >> (6 * i)) & 0x3f).collect()
}

fn type_names(key_type: u32, n: usize) -> String {
    split_types(key_type, n)
        .into_iter()
        .map(type_name)
        .collect::<Vec<_>>()
        .join(" . ")
}

fn set_line(s: &SetObj) -> String {
    let mut x = Take::of(&s.attrs);
    x.drop_all(&[
        attr::SET_TABLE,
        attr::SET_NAME,
        attr::SET_FLAGS,
        attr::SET_KEY_TYPE,
        attr::SET_KEY_LEN,
        attr::SET_ID,
        attr::SET_PAD,
        attr::SET_HANDLE,
        attr::SET_TYPE,
        attr::SET_COUNT,
    ]);
    let mut t = format!(
        "set {}: type {}",
        s.name,
        type_names(s.key_type, s.fields.len().max(1))
    );
    let data_type = x.u32(attr::SET_DATA_TYPE);
    match data_type {
        Some(0xffff_ff00) => t += " : verdict",
        Some(d) => t += &format!(" : {}", type_name(d)),
        None => {}
    }
    const FLAGS: [&str; 9] = [
        "anonymous",
        "constant",
        "interval",
        "map",
        "timeout",
        "eval",
        "object",
        "concat",
        "expr",
    ];
    let names: Vec<String> = (0..32)
        .filter(|b| s.flags & (1 << b) != 0)
        .map(|b| {
            FLAGS
                .get(b)
                .map(|n| n.to_string())
                .unwrap_or_else(|| format!("0x{:x}", 1u32 << b))
        })
        .collect();
    t += &format!(
        " flags {} keylen {}",
        if names.is_empty() {
            "none".into()
        } else {
            names.join(",")
        },
        s.key_len
    );
    if let Some(l) = x.u32(attr::SET_DATA_LEN) {
        t += &format!(" datalen {l}");
    }
    if !s.fields.is_empty() {
        t += &format!(
            " fields {}",
            s.fields
                .iter()
                .map(|f| f.to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
    }
    if let Some(desc) = x.take(attr::SET_DESC) {
        if let Ok(d) = Attrs::parse(desc) {
            let mut d = Take::parsed(&d);
            d.drop_all(&[attr::SET_DESC_CONCAT]);
            if let Some(size) = d.u32(attr::SET_DESC_SIZE) {
                t += &format!(" size {size}");
            }
            t += &d.rest();
        }
    }
    if let Some(p) = x.u32(attr::SET_POLICY) {
        t += &format!(" policy {p}");
    }
    if let Some(u) = x.take(attr::SET_USERDATA) {
        t += &format!(" udata {}", hex(u));
    }
    t + &x.rest()
}

fn chain_line(name: &str, c: &ChainObj) -> String {
    let mut x = Take::of(&c.attrs);
    x.drop_all(&[
        attr::CHAIN_TABLE,
        attr::CHAIN_NAME,
        attr::CHAIN_HANDLE,
        attr::CHAIN_USE,
        attr::CHAIN_COUNTERS,
        attr::CHAIN_PAD,
        attr::CHAIN_ID,
    ]);
    let mut t = format!("chain {name}");
    if let Some(h) = x.take(attr::CHAIN_HOOK) {
        let ty = x.str(attr::CHAIN_TYPE).unwrap_or_else(|| "?".into());
        t += &format!(": type {ty}");
        match Attrs::parse(h) {
            Ok(h) => {
                let mut h = Take::parsed(&h);
                let hook = h
                    .u32(attr::HOOK_HOOKNUM)
                    .map(|n| wire::hook_name(wire::NFPROTO_INET, n));
                let prio = h.u32(attr::HOOK_PRIORITY).map(|p| p as i32);
                t += &format!(
                    " hook {} priority {}",
                    hook.unwrap_or_else(|| "?".into()),
                    prio.map(|p| p.to_string()).unwrap_or_else(|| "?".into())
                );
                if let Some(d) = h.str(attr::HOOK_DEV) {
                    t += &format!(" device {d:?}");
                }
                t += &h.rest();
            }
            Err(_) => t += &format!(" hook raw {}", hex(h)),
        }
        let policy = x
            .u32(attr::CHAIN_POLICY)
            .map(|p| verdict_text(Some(p as i32), None));
        t += &format!(" policy {}", policy.unwrap_or_else(|| "accept".into()));
    }
    if let Some(ty) = x.str(attr::CHAIN_TYPE) {
        t += &format!(" type {ty}");
    }
    if let Some(p) = x.u32(attr::CHAIN_POLICY) {
        t += &format!(" policy {}", verdict_text(Some(p as i32), None));
    }
    // NFT_CHAIN_BASE is the kernel's note that a hook exists, shown above.
    let flags = x.u32(attr::CHAIN_FLAGS).unwrap_or(0) & !1;
    if flags != 0 {
        t += &format!(" flags 0x{flags:x}");
    }
    if let Some(u) = x.take(attr::CHAIN_USERDATA) {
        t += &format!(" udata {}", hex(u));
    }
    t + &x.rest()
}

/// Field layout of a set's key: (type, length, slot width).
fn layout(s: &SetObj) -> Vec<(u32, usize, usize)> {
    if s.fields.len() > 1 {
        let types = split_types(s.key_type, s.fields.len());
        s.fields
            .iter()
            .enumerate()
            .map(|(i, l)| {
                (
                    types.get(i).copied().unwrap_or(0),
                    *l as usize,
                    (*l as usize + 3) & !3,
                )
            })
            .collect()
    } else {
        vec![(s.key_type, s.key_len as usize, s.key_len as usize)]
    }
}

fn field_text(ty: u32, v: &[u8], len: usize) -> String {
    let (val, pad) = v.split_at(len.min(v.len()));
    if pad.iter().any(|b| *b != 0) {
        return hex(v);
    }
    if ty == 41 {
        if let Some(n) = ifname_text(val) {
            return n;
        }
    }
    hex(val)
}

/// `lo[-hi] . lo[-hi] ...` per field of the key.
fn key_text(s: &SetObj, lo: &[u8], hi: &[u8]) -> String {
    let lay = layout(s);
    let total: usize = lay.iter().map(|f| f.2).sum();
    if total != lo.len() || total != hi.len() {
        return if lo == hi {
            hex(lo)
        } else {
            format!("{}-{}", hex(lo), hex(hi))
        };
    }
    let mut at = 0;
    let mut parts = Vec::new();
    for (ty, len, width) in lay {
        let (a, b) = (&lo[at..at + width], &hi[at..at + width]);
        let (ta, tb) = (field_text(ty, a, len), field_text(ty, b, len));
        parts.push(if a == b { ta } else { format!("{ta}-{tb}") });
        at += width;
    }
    parts.join(" . ")
}

fn decrement(x: &[u8]) -> Vec<u8> {
    let mut v = x.to_vec();
    for b in v.iter_mut().rev() {
        if *b == 0 {
            *b = 0xff;
        } else {
            *b -= 1;
            break;
        }
    }
    v
}

/// One display string per element (ranges of an interval set put back together).
fn set_elements(s: &SetObj) -> Vec<String> {
    let interval = s.flags & 0x4 != 0;
    let mut out = Vec::new();
    let mut singles: Vec<&ElemObj> = Vec::new();
    for e in &s.elems {
        match &e.key_end {
            Some(end) => out.push(elem_text(s, e, &e.key, end)),
            None if interval => singles.push(e),
            None => out.push(elem_text(s, e, &e.key, &e.key)),
        }
    }
    // rbtree: sorted starts and exclusive ends (end first at equal keys); a start without
    // an end runs to the top of the key space.
    singles.sort_by(|a, b| {
        let end = |e: &ElemObj| e.flags & NFT_SET_ELEM_INTERVAL_END == 0;
        a.key.cmp(&b.key).then(end(a).cmp(&end(b)))
    });
    let mut open: Option<&ElemObj> = None;
    for e in singles {
        let is_end = e.flags & NFT_SET_ELEM_INTERVAL_END != 0;
        if let Some(st) = open.take() {
            out.push(elem_text(s, st, &st.key, &decrement(&e.key)));
        }
        if !is_end {
            open = Some(e);
        }
    }
    if let Some(st) = open {
        let top = vec![0xff; st.key.len()];
        out.push(elem_text(s, st, &st.key, &top));
    }
    out
}

fn elem_text(s: &SetObj, e: &ElemObj, lo: &[u8], hi: &[u8]) -> String {
    let mut t = key_text(s, lo, hi);
    if let Some(d) = &e.data {
        t += &format!(" : {}", data_text(Some(d)));
    }
    let flags = e.flags & !NFT_SET_ELEM_INTERVAL_END;
    if flags != 0 {
        t += &format!(" flags 0x{flags:x}");
    }
    if let Some(u) = &e.udata {
        // flags record (1) = NFTNL_SET_ELEM_F_INTERVAL_OPEN: nft's note of an open range
        if u.as_slice() == [1, 4, 1, 0, 0, 0] || u.as_slice() == [1, 4, 0, 0, 0, 1] {
            t += " open";
        } else {
            t += &format!(" udata {}", hex(u));
        }
    }
    t + &Take::of(&e.other).rest()
}

/// Decodes every message of `bytes` (a batch or a dump) for table `name`.
pub fn decode_all(name: &str, bytes: &[u8]) -> Result<Option<Vec<String>>> {
    let mut d = Decoder::new(name);
    for m in wire::messages(bytes)? {
        d.feed(&m)
            .with_context(|| format!("decoding {} (seq {})", msg::name(m.nft_msg()), m.seq))?;
    }
    Ok(d.lines())
}
