//! The IR as one nf_tables batch: exactly the objects, set elements and expressions
//! `nft -f` builds from `nftables::text::render_table` of the same table (nft 1.0.6; see
//! the prototype's NOTES.md and the equivalence test in tests/nft_dataplane.rs).
//!
//! A replace is `NEWTABLE (no flags)`, `DELTABLE`, `NEWTABLE (flags)` and then the table's
//! contents, all between BATCH_BEGIN and BATCH_END: the first message makes the delete valid
//! when the table is absent without touching an existing table's flags (changing OWNER or
//! PERSIST on an existing table is EOPNOTSUPP), the delete drops whatever the table held
//! (including an orphaned persistent table, which the new one re-adopts).

use super::wire::{self, attr, msg, nft_type, Writer, NFPROTO_INET, NFPROTO_IPV4, NFPROTO_IPV6};
use crate::compile::ranges::Family;
use crate::nftables::ir::*;
use crate::nftables::text;
use anyhow::{anyhow, bail, Result};

pub const NFT_TABLE_F_DORMANT: u32 = 0x1;
pub const NFT_TABLE_F_OWNER: u32 = 0x2;
pub const NFT_TABLE_F_PERSIST: u32 = 0x4;

pub const NFT_SET_ANONYMOUS: u32 = 0x1;
pub const NFT_SET_CONSTANT: u32 = 0x2;
pub const NFT_SET_INTERVAL: u32 = 0x4;
pub const NFT_SET_MAP: u32 = 0x8;
pub const NFT_SET_CONCAT: u32 = 0x80;
pub const NFT_SET_ELEM_INTERVAL_END: u32 = 0x1;
pub const NFT_DATA_VERDICT: u32 = 0xffff_ff00;

pub const NF_DROP: i32 = 0;
pub const NF_ACCEPT: i32 = 1;
pub const NFT_JUMP: i32 = -3;

pub const NFT_REG_VERDICT: u32 = 0;
pub const NFT_REG_1: u32 = 1;
pub const NFT_REG32_00: u32 = 8;

const NFT_META_IIFNAME: u32 = 6;
const NFT_META_OIFNAME: u32 = 7;
const NFT_META_NFPROTO: u32 = 15;
const NFT_META_L4PROTO: u32 = 16;
const NFT_CT_STATE: u32 = 0;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
const NFT_CMP_EQ: u32 = 0;
const NFT_CMP_NEQ: u32 = 1;
const NFT_BYTEORDER_HTON: u32 = 1;
const NFT_LOOKUP_F_INV: u32 = 1;
const NF_INET_LOCAL_IN: u32 = 1;
const NF_INET_FORWARD: u32 = 2;

/// nftables' datatype ids (`include/datatype.h`), sent as the set key type.
const TYPE_IPADDR: u32 = 7;
const TYPE_IP6ADDR: u32 = 8;
const TYPE_INET_PROTOCOL: u32 = 12;
const TYPE_INET_SERVICE: u32 = 13;
const TYPE_ICMP_TYPE: u32 = 14;
const TYPE_ICMP6_TYPE: u32 = 29;
const TYPE_IFNAME: u32 = 41;
const TYPE_BITS: u32 = 6;
const IFNAMSIZ: usize = 16;
/// `NFTNL_UDATA_COMMENT_MAXLEN` / `NF_LOG_PREFIXLEN - 1`: what nft accepts.
const COMMENT_MAX: usize = 128;
const LOG_PREFIX_MAX: usize = 127;
/// Keep each NEWSETELEM's element nest well under the u16 attribute length.
const ELEMS_PER_MSG_BYTES: usize = 60_000;

/// What a message of the batch is, to say which one the kernel refused.
#[derive(Debug, Clone)]
pub enum Label {
    Begin,
    End,
    EnsureTable,
    DelTable,
    NewTable,
    Chain(usize),
    Set(usize),
    /// Element messages of set `set`; `elems` maps byte offsets in the message to elements.
    Elems {
        set: usize,
        elems: Vec<(u32, usize)>,
    },
    AnonSet {
        chain: usize,
        rule: usize,
    },
    AnonElems {
        chain: usize,
        rule: usize,
    },
    Rule {
        chain: usize,
        rule: usize,
    },
}

/// A finished batch: the bytes and, per sequence number, what each message is.
pub struct Batch {
    pub bytes: Vec<u8>,
    pub first_seq: u32,
    pub labels: Vec<Label>,
    /// Offset of each message in `bytes` (same index as `labels`).
    pub offsets: Vec<usize>,
}

impl Batch {
    pub fn seqs(&self) -> std::ops::Range<u32> {
        self.first_seq..self.first_seq.wrapping_add(self.labels.len() as u32)
    }

    pub fn index_of(&self, seq: u32) -> Option<usize> {
        let i = seq.wrapping_sub(self.first_seq) as usize;
        (i < self.labels.len()).then_some(i)
    }

    /// The label of the table NEWTABLE carrying the flags (to recognise unsupported flags).
    pub fn is_flagged_newtable(&self, seq: u32) -> bool {
        matches!(
            self.index_of(seq).and_then(|i| self.labels.get(i)),
            Some(Label::NewTable)
        )
    }

    /// Human words for the message with sequence number `seq` (and the element or
    /// expression at `offset` in it, when the kernel pointed at one).
    pub fn describe(&self, seq: u32, offset: Option<u32>, t: &Table) -> String {
        let Some(i) = self.index_of(seq) else {
            return format!("message seq {seq} (not part of this batch)");
        };
        let what = describe_label(&self.labels[i], offset, t);
        let extra = offset
            .and_then(|o| self.attr_at(i, o))
            .map(|a| format!(" [{a}]"))
            .unwrap_or_default();
        format!("message {} of {}: {what}{extra}", i + 1, self.labels.len())
    }

    /// Which rule expression a kernel extack offset points into.
    fn attr_at(&self, i: usize, offset: u32) -> Option<String> {
        let start = *self.offsets.get(i)?;
        let m = wire::messages(self.bytes.get(start..)?)
            .ok()?
            .into_iter()
            .next()?;
        if m.nft_msg() != msg::NEWRULE {
            return None;
        }
        let base = m.raw.as_ptr() as usize;
        let exprs = m.attrs().ok()?.get(attr::RULE_EXPRESSIONS)?;
        let list = wire::Attrs::parse(exprs).ok()?;
        for (k, (_, e)) in list.list.iter().enumerate() {
            let from = e.as_ptr() as usize - base;
            if (from.saturating_sub(4)..from + e.len()).contains(&(offset as usize)) {
                let name = wire::Attrs::parse(e).ok()?.str(attr::EXPR_NAME)?;
                return Some(format!("expression {} ({name})", k + 1));
            }
        }
        None
    }
}

fn describe_label(l: &Label, offset: Option<u32>, t: &Table) -> String {
    let chain = |c: usize| t.chains.get(c).map(|c| c.name.as_str()).unwrap_or("?");
    let rule = |c: usize, r: usize| {
        t.chains
            .get(c)
            .and_then(|c| c.rules.get(r))
            .map(text::rule_text)
            .unwrap_or_default()
    };
    match l {
        Label::Begin => "batch begin".into(),
        Label::End => "batch end (commit)".into(),
        Label::EnsureTable => format!("NEWTABLE inet {} (create if absent, no flags)", t.name),
        Label::DelTable => format!("DELTABLE inet {}", t.name),
        Label::NewTable => format!("NEWTABLE inet {} (with flags)", t.name),
        Label::Chain(c) => format!("NEWCHAIN {}", chain(*c)),
        Label::Set(s) => format!(
            "NEWSET {}",
            t.sets.get(*s).map(|s| s.name.as_str()).unwrap_or("?")
        ),
        Label::Elems { set, elems } => {
            let s = t.sets.get(*set);
            let name = s.map(|s| s.name.as_str()).unwrap_or("?");
            let (first, last) = (
                elems.first().map(|e| e.1 + 1).unwrap_or(0),
                elems.last().map(|e| e.1 + 1).unwrap_or(0),
            );
            let mut d = format!(
                "NEWSETELEM {name} (elements {first}-{last} of {})",
                s.map(|s| s.elements.len()).unwrap_or(0)
            );
            let hit = offset.and_then(|o| elems.iter().rev().find(|(at, _)| *at <= o));
            if let (Some((_, i)), Some(s)) = (hit, s) {
                if let Some(e) = s.elements.get(*i) {
                    d += &format!(", element {}: {}", i + 1, element_text(e));
                }
            }
            d
        }
        Label::AnonSet { chain: c, rule: r } => format!(
            "NEWSET anonymous set of rule {} #{}: {}",
            chain(*c),
            r + 1,
            rule(*c, *r)
        ),
        Label::AnonElems { chain: c, rule: r } => {
            format!(
                "NEWSETELEM anonymous set of rule {} #{}: {}",
                chain(*c),
                r + 1,
                rule(*c, *r)
            )
        }
        Label::Rule { chain: c, rule: r } => {
            format!("NEWRULE {} #{}: {}", chain(*c), r + 1, rule(*c, *r))
        }
    }
}

/// The text a set element has in `render_table`.
fn element_text(e: &Element) -> String {
    let key: Vec<String> = e
        .key
        .iter()
        .map(|v| match v {
            Value::Ifname(n) => text::quoted(n),
            Value::Addr(r) => r.to_string(),
            Value::Proto(p) => text::proto_name(*p),
            Value::Ports(lo, hi) if lo == hi => lo.to_string(),
            Value::Ports(lo, hi) => format!("{lo}-{hi}"),
        })
        .collect();
    match &e.verdict {
        Some(v) => format!("{} : {}", key.join(" . "), text::verdict_text(v)),
        None => key.join(" . "),
    }
}

/// What `render_table` writes between quotes: `quoted` drops quotes, backslashes and control
/// characters, and nft stores what it parsed.
fn unquoted(s: &str) -> String {
    let q = text::quoted(s);
    q[1..q.len() - 1].to_string()
}

/// Builds a batch message by message, keeping labels and sequence numbers in step.
struct Builder {
    w: Writer,
    seq: u32,
    first_seq: u32,
    labels: Vec<Label>,
    offsets: Vec<usize>,
    table: String,
    next_set_id: u32,
}

impl Builder {
    fn new(table: &str, first_seq: u32) -> Builder {
        let mut b = Builder {
            w: Writer::new(),
            seq: first_seq,
            first_seq,
            labels: Vec::new(),
            offsets: Vec::new(),
            table: table.to_string(),
            next_set_id: 0,
        };
        // BATCH_BEGIN: res_id names the subsystem. No ack asked: errors come anyway.
        b.begin(
            wire::NFNL_MSG_BATCH_BEGIN,
            0,
            0,
            wire::NFNL_SUBSYS_NFTABLES,
            Label::Begin,
        );
        b
    }

    fn begin(&mut self, ty: u16, flags: u16, family: u8, res_id: u16, label: Label) -> usize {
        let at = self
            .w
            .begin(ty, wire::NLM_F_REQUEST | flags, self.seq, family, res_id);
        self.seq = self.seq.wrapping_add(1);
        self.labels.push(label);
        self.offsets.push(at);
        at
    }

    fn obj(&mut self, m: u16, flags: u16, label: Label) -> usize {
        self.begin(nft_type(m), flags, NFPROTO_INET, 0, label)
    }

    fn set_id(&mut self) -> u32 {
        self.next_set_id += 1;
        self.next_set_id
    }

    fn finish(mut self) -> Result<Batch> {
        // BATCH_END with an ack request: kernels >= 6.10 confirm the commit with it.
        self.begin(
            wire::NFNL_MSG_BATCH_END,
            wire::NLM_F_ACK,
            0,
            wire::NFNL_SUBSYS_NFTABLES,
            Label::End,
        );
        Ok(Batch {
            bytes: self.w.finish()?,
            first_seq: self.first_seq,
            labels: self.labels,
            offsets: self.offsets,
        })
    }

    fn table_msg(&mut self, m: u16, flags: Option<u32>, label: Label) {
        let create = if m == msg::NEWTABLE {
            wire::NLM_F_CREATE
        } else {
            0
        };
        self.obj(m, create, label);
        let name = self.table.clone();
        self.w.put_str(attr::TABLE_NAME, &name);
        if let Some(f) = flags {
            self.w.put_u32(attr::TABLE_FLAGS, f);
        }
    }
}

/// Deletes `inet <name>` if it exists (NEWTABLE without flags makes the delete valid).
pub fn delete(name: &str, first_seq: u32) -> Result<Batch> {
    let mut b = Builder::new(name, first_seq);
    b.table_msg(msg::NEWTABLE, None, Label::EnsureTable);
    b.table_msg(msg::DELTABLE, None, Label::DelTable);
    b.finish()
}

/// The whole table as one replace transaction; `flags` are the table's (OWNER, PERSIST).
pub fn replace(t: &Table, flags: u32, first_seq: u32) -> Result<Batch> {
    check_name("table", &t.name)?;
    let mut b = Builder::new(&t.name, first_seq);
    b.table_msg(msg::NEWTABLE, None, Label::EnsureTable);
    b.table_msg(msg::DELTABLE, None, Label::DelTable);
    b.table_msg(msg::NEWTABLE, Some(flags), Label::NewTable);

    // nft creates chains first (rules and verdict elements refer to them), then sets with
    // their elements, then rules, with each rule's anonymous sets right before it.
    for (i, c) in t.chains.iter().enumerate() {
        encode_chain(&mut b, i, c)?;
    }
    let mut ids = std::collections::HashMap::new();
    for (i, s) in t.sets.iter().enumerate() {
        let id = b.set_id();
        ids.insert(s.name.as_str(), id);
        encode_set(&mut b, i, s, id).map_err(|e| anyhow!("set {}: {e:#}", s.name))?;
    }
    for (ci, c) in t.chains.iter().enumerate() {
        for (ri, r) in c.rules.iter().enumerate() {
            encode_rule(&mut b, t, &ids, ci, ri, r)
                .map_err(|e| anyhow!("rule {} #{}: {e:#}", c.name, ri + 1))?;
        }
    }
    b.finish()
}

fn check_name(what: &str, n: &str) -> Result<()> {
    if n.is_empty() || n.len() > 255 || n.contains('\0') {
        bail!("invalid {what} name {n:?}");
    }
    Ok(())
}

fn encode_chain(b: &mut Builder, i: usize, c: &Chain) -> Result<()> {
    check_name("chain", &c.name)?;
    b.obj(msg::NEWCHAIN, wire::NLM_F_CREATE, Label::Chain(i));
    let table = b.table.clone();
    b.w.put_str(attr::CHAIN_TABLE, &table);
    b.w.put_str(attr::CHAIN_NAME, &c.name);
    if let Some(base) = &c.base {
        b.w.put_str(attr::CHAIN_TYPE, "filter");
        b.w.put_u32(
            attr::CHAIN_POLICY,
            if base.policy_drop { NF_DROP } else { NF_ACCEPT } as u32,
        );
        let n = b.w.nest_start(attr::CHAIN_HOOK);
        let hook = match base.hook {
            Hook::Forward => NF_INET_FORWARD,
            Hook::Input => NF_INET_LOCAL_IN,
        };
        b.w.put_u32(attr::HOOK_HOOKNUM, hook);
        b.w.put_u32(attr::HOOK_PRIORITY, base.priority as u32);
        b.w.nest_end(n);
    }
    Ok(())
}

/// A key field's datatype id, length in bytes (unpadded) and the key byte order nft records
/// in a single-field set's userdata (`BYTEORDER_*`: 0 invalid, 1 host, 2 big endian).
fn field_info(f: Field) -> (u32, usize, u32) {
    match f {
        Field::Iifname | Field::Oifname => (TYPE_IFNAME, IFNAMSIZ, 1),
        Field::Saddr4 | Field::Daddr4 => (TYPE_IPADDR, 4, 2),
        Field::Saddr6 | Field::Daddr6 => (TYPE_IP6ADDR, 16, 2),
        Field::L4Proto => (TYPE_INET_PROTOCOL, 1, 0),
        Field::Dport => (TYPE_INET_SERVICE, 2, 2),
    }
}

fn pad4(n: usize) -> usize {
    (n + 3) & !3
}

/// nftables userdata TLVs: u8 type, u8 length, value.
fn udata(entries: &[(u8, &[u8])]) -> Vec<u8> {
    let mut v = Vec::new();
    for (t, d) in entries {
        v.push(*t);
        v.push(d.len() as u8);
        v.extend_from_slice(d);
    }
    v
}

const UDATA_KEYBYTEORDER: u8 = 0;
const UDATA_DATABYTEORDER: u8 = 1;
const UDATA_KEY_TYPEOF: u8 = 3;
const UDATA_DATA_INTERVAL: u8 = 6;
/// The typeof record nft 1.0.6 writes for a concatenated key declared with `type`.
const TYPEOF_CONCAT: [u8; 8] = [0, 4, 13, 0, 0, 0, 1, 0];
/// Element userdata: flags (type 1) = NFTNL_SET_ELEM_F_INTERVAL_OPEN, for a range that
/// runs to the end of the key space (no end element).
fn open_interval_udata() -> Vec<u8> {
    udata(&[(1, &1u32.to_ne_bytes())])
}

fn encode_set(b: &mut Builder, si: usize, s: &Set, id: u32) -> Result<()> {
    check_name("set", &s.name)?;
    if s.key.is_empty() {
        bail!("a set needs at least one key field");
    }
    let infos: Vec<(u32, usize, u32)> = s.key.iter().map(|f| field_info(*f)).collect();
    let concat = s.key.len() > 1;
    let key_len: usize = if concat {
        infos.iter().map(|i| pad4(i.1)).sum()
    } else {
        infos[0].1
    };
    let key_type = infos.iter().fold(0u32, |acc, i| (acc << TYPE_BITS) | i.0);
    let mut flags = NFT_SET_INTERVAL;
    if s.is_map {
        flags |= NFT_SET_MAP;
    }
    if concat {
        flags |= NFT_SET_CONCAT;
    }
    let zero = 0u32.to_ne_bytes();
    let key_order = if concat { 0 } else { infos[0].2 }.to_ne_bytes();
    let mut ud: Vec<(u8, &[u8])> = vec![(UDATA_KEYBYTEORDER, &key_order)];
    if s.is_map {
        ud.push((UDATA_DATABYTEORDER, &zero));
    }
    if concat {
        ud.push((UDATA_KEY_TYPEOF, &TYPEOF_CONCAT));
    }
    if s.is_map {
        ud.push((UDATA_DATA_INTERVAL, &zero));
    }

    b.obj(msg::NEWSET, wire::NLM_F_CREATE, Label::Set(si));
    let table = b.table.clone();
    b.w.put_str(attr::SET_TABLE, &table);
    b.w.put_str(attr::SET_NAME, &s.name);
    b.w.put_u32(attr::SET_FLAGS, flags);
    b.w.put_u32(attr::SET_KEY_TYPE, key_type);
    b.w.put_u32(attr::SET_KEY_LEN, key_len as u32);
    if s.is_map {
        b.w.put_u32(attr::SET_DATA_TYPE, NFT_DATA_VERDICT);
        b.w.put_u32(attr::SET_DATA_LEN, 16);
    }
    b.w.put_u32(attr::SET_ID, id);
    if concat {
        let d = b.w.nest_start(attr::SET_DESC);
        let c = b.w.nest_start(attr::SET_DESC_CONCAT);
        for i in &infos {
            let e = b.w.nest_start(attr::LIST_ELEM);
            b.w.put_u32(attr::SET_FIELD_LEN, i.1 as u32);
            b.w.nest_end(e);
        }
        b.w.nest_end(c);
        b.w.nest_end(d);
    }
    b.w.put(attr::SET_USERDATA, &udata(&ud));

    // The element stream, each with the IR element it comes from.
    let mut stream: Vec<(Elem, usize)> = Vec::new();
    if concat {
        for (i, e) in s.elements.iter().enumerate() {
            let (lo, hi) =
                element_key(s, e, true).map_err(|err| anyhow!("element {}: {err}", i + 1))?;
            let verdict =
                element_verdict(s, e).map_err(|err| anyhow!("element {}: {err}", i + 1))?;
            stream.push((
                Elem {
                    key: lo,
                    key_end: Some(hi),
                    end_flag: false,
                    verdict,
                    udata: None,
                },
                i,
            ));
        }
    } else {
        // rbtree: start elements and exclusive end elements flagged INTERVAL_END, sorted;
        // nft sends a leading end element at zero unless a range starts there, and no end
        // for a range that reaches the top of the key space (marked open instead).
        let mut ranges = Vec::with_capacity(s.elements.len());
        for (i, e) in s.elements.iter().enumerate() {
            let (lo, hi) =
                element_key(s, e, false).map_err(|err| anyhow!("element {}: {err}", i + 1))?;
            let verdict =
                element_verdict(s, e).map_err(|err| anyhow!("element {}: {err}", i + 1))?;
            ranges.push((lo, hi, verdict, i));
        }
        ranges.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some(first) = ranges.first() {
            if first.0.iter().any(|x| *x != 0) {
                let zero = vec![0u8; key_len];
                stream.push((
                    Elem {
                        key: zero,
                        key_end: None,
                        end_flag: true,
                        verdict: None,
                        udata: None,
                    },
                    first.3,
                ));
            }
        }
        for (lo, hi, verdict, i) in ranges {
            match increment(&hi) {
                Some(end) => {
                    stream.push((
                        Elem {
                            key: lo,
                            key_end: None,
                            end_flag: false,
                            verdict,
                            udata: None,
                        },
                        i,
                    ));
                    stream.push((
                        Elem {
                            key: end,
                            key_end: None,
                            end_flag: true,
                            verdict: None,
                            udata: None,
                        },
                        i,
                    ));
                }
                None => {
                    let open = Some(open_interval_udata());
                    stream.push((
                        Elem {
                            key: lo,
                            key_end: None,
                            end_flag: false,
                            verdict,
                            udata: open,
                        },
                        i,
                    ));
                }
            }
        }
    }
    write_elems(b, &s.name, id, &stream, |elems| Label::Elems {
        set: si,
        elems,
    });
    Ok(())
}

struct Elem {
    key: Vec<u8>,
    key_end: Option<Vec<u8>>,
    end_flag: bool,
    verdict: Option<(i32, Option<String>)>,
    udata: Option<Vec<u8>>,
}

/// NEWSETELEM messages for `stream`, split so every element nest stays under 64 KiB.
fn write_elems(
    b: &mut Builder,
    set: &str,
    id: u32,
    stream: &[(Elem, usize)],
    label: impl Fn(Vec<(u32, usize)>) -> Label,
) {
    let table = b.table.clone();
    let mut i = 0;
    while i < stream.len() {
        let start = b.obj(msg::NEWSETELEM, wire::NLM_F_CREATE, Label::Begin);
        b.w.put_str(attr::SET_ELEM_LIST_TABLE, &table);
        b.w.put_str(attr::SET_ELEM_LIST_SET, set);
        b.w.put_u32(attr::SET_ELEM_LIST_SET_ID, id);
        let nest = b.w.nest_start(attr::SET_ELEM_LIST_ELEMENTS);
        let mut offs = Vec::new();
        while i < stream.len() && b.w.since(nest) < ELEMS_PER_MSG_BYTES {
            let (e, src) = &stream[i];
            offs.push(((b.w.pos() - start) as u32, *src));
            let n = b.w.nest_start(attr::LIST_ELEM);
            if e.end_flag {
                b.w.put_u32(attr::SET_ELEM_FLAGS, NFT_SET_ELEM_INTERVAL_END);
            }
            let k = b.w.nest_start(attr::SET_ELEM_KEY);
            b.w.put(attr::DATA_VALUE, &e.key);
            b.w.nest_end(k);
            if let Some(end) = &e.key_end {
                let k = b.w.nest_start(attr::SET_ELEM_KEY_END);
                b.w.put(attr::DATA_VALUE, end);
                b.w.nest_end(k);
            }
            if let Some((code, chain)) = &e.verdict {
                let d = b.w.nest_start(attr::SET_ELEM_DATA);
                put_verdict(&mut b.w, *code, chain.as_deref());
                b.w.nest_end(d);
            }
            if let Some(u) = &e.udata {
                b.w.put(attr::SET_ELEM_USERDATA, u);
            }
            b.w.nest_end(n);
            i += 1;
        }
        b.w.nest_end(nest);
        if let Some(l) = b.labels.last_mut() {
            *l = label(offs);
        }
    }
}

fn put_verdict(w: &mut Writer, code: i32, chain: Option<&str>) {
    let v = w.nest_start(attr::DATA_VERDICT);
    w.put_u32(attr::VERDICT_CODE, code as u32);
    if let Some(c) = chain {
        w.put_str(attr::VERDICT_CHAIN, c);
    }
    w.nest_end(v);
}

fn verdict_code(v: &Verdict) -> Result<(i32, Option<String>)> {
    Ok(match v {
        Verdict::Accept => (NF_ACCEPT, None),
        Verdict::Drop => (NF_DROP, None),
        Verdict::Jump(c) => {
            check_name("chain", c)?;
            (NFT_JUMP, Some(c.clone()))
        }
        Verdict::Vmap { .. } => bail!("a verdict map lookup cannot be an element's verdict"),
    })
}

fn element_verdict(s: &Set, e: &Element) -> Result<Option<(i32, Option<String>)>> {
    match (&e.verdict, s.is_map) {
        (Some(v), true) => Ok(Some(verdict_code(v)?)),
        (None, true) => bail!("an element of map {} has no verdict", s.name),
        (Some(_), false) => bail!("an element of set {} has a verdict", s.name),
        (None, false) => Ok(None),
    }
}

/// The element's key as (first, last) byte strings: fields padded to 32-bit registers in a
/// concatenation, exactly the field's length in a single-field set.
fn element_key(s: &Set, e: &Element, concat: bool) -> Result<(Vec<u8>, Vec<u8>)> {
    if e.key.len() != s.key.len() {
        bail!("{} values for a key of {} fields", e.key.len(), s.key.len());
    }
    let (mut lo, mut hi) = (Vec::new(), Vec::new());
    for (f, v) in s.key.iter().zip(&e.key) {
        let (a, b) = value_bytes(*f, v)?;
        let width = if concat { pad4(a.len()) } else { a.len() };
        lo.extend_from_slice(&a);
        lo.resize(lo.len() + width - a.len(), 0);
        hi.extend_from_slice(&b);
        hi.resize(hi.len() + width - b.len(), 0);
    }
    Ok((lo, hi))
}

fn ifname_bytes(n: &str) -> Result<[u8; IFNAMSIZ]> {
    let clean = unquoted(n);
    if clean.is_empty() || clean.len() >= IFNAMSIZ {
        bail!("interface name {n:?} must be 1 to {} bytes", IFNAMSIZ - 1);
    }
    if clean.contains('*') {
        bail!("wildcard interface name {n:?} is not supported");
    }
    let mut b = [0u8; IFNAMSIZ];
    b[..clean.len()].copy_from_slice(clean.as_bytes());
    Ok(b)
}

/// A value's lowest and highest key bytes, in network order, unpadded.
fn value_bytes(f: Field, v: &Value) -> Result<(Vec<u8>, Vec<u8>)> {
    let family = |want: Family| -> Result<()> {
        match v {
            Value::Addr(r) if r.family == want => Ok(()),
            _ => bail!("{v:?} is not a value for {}", text::field_type(f)),
        }
    };
    Ok(match (f, v) {
        (Field::Iifname | Field::Oifname, Value::Ifname(n)) => {
            let b = ifname_bytes(n)?.to_vec();
            (b.clone(), b)
        }
        (Field::Saddr4 | Field::Daddr4, Value::Addr(r)) => {
            family(Family::V4)?;
            (
                (r.lo as u32).to_be_bytes().to_vec(),
                (r.hi as u32).to_be_bytes().to_vec(),
            )
        }
        (Field::Saddr6 | Field::Daddr6, Value::Addr(r)) => {
            family(Family::V6)?;
            (r.lo.to_be_bytes().to_vec(), r.hi.to_be_bytes().to_vec())
        }
        (Field::L4Proto, Value::Proto(p)) => (vec![*p], vec![*p]),
        (Field::Dport, Value::Ports(lo, hi)) if lo <= hi => {
            (lo.to_be_bytes().to_vec(), hi.to_be_bytes().to_vec())
        }
        _ => bail!("{v:?} is not a value for {}", text::field_type(f)),
    })
}

/// Big-endian `x + 1`; None when it overflows (the range is open-ended).
fn increment(x: &[u8]) -> Option<Vec<u8>> {
    let mut v = x.to_vec();
    for b in v.iter_mut().rev() {
        if *b == 0xff {
            *b = 0;
        } else {
            *b += 1;
            return Some(v);
        }
    }
    None
}

/// Rule encoding state: what nft's protocol context already knows, so a dependency
/// (`meta nfproto`, `meta l4proto`) is emitted once per rule, where nft emits it.
#[derive(Default)]
struct Ctx {
    nfproto: Option<u8>,
    l4proto: Option<u8>,
}

/// Expressions of one rule under construction.
struct Exprs<'a> {
    w: &'a mut Writer,
}

impl Exprs<'_> {
    fn expr(&mut self, name: &str, body: impl FnOnce(&mut Writer)) {
        let e = self.w.nest_start(attr::LIST_ELEM);
        self.w.put_str(attr::EXPR_NAME, name);
        let d = self.w.nest_start(attr::EXPR_DATA);
        body(self.w);
        self.w.nest_end(d);
        self.w.nest_end(e);
    }

    fn meta(&mut self, key: u32, dreg: u32) {
        self.expr("meta", |w| {
            w.put_u32(2, key); // NFTA_META_KEY
            w.put_u32(1, dreg); // NFTA_META_DREG
        });
    }

    fn ct(&mut self, key: u32, dreg: u32) {
        self.expr("ct", |w| {
            w.put_u32(2, key); // NFTA_CT_KEY
            w.put_u32(1, dreg); // NFTA_CT_DREG
        });
    }

    fn payload(&mut self, base: u32, offset: u32, len: u32, dreg: u32) {
        self.expr("payload", |w| {
            w.put_u32(1, dreg); // NFTA_PAYLOAD_DREG
            w.put_u32(2, base); // NFTA_PAYLOAD_BASE
            w.put_u32(3, offset); // NFTA_PAYLOAD_OFFSET
            w.put_u32(4, len); // NFTA_PAYLOAD_LEN
        });
    }

    fn cmp(&mut self, op: u32, sreg: u32, data: &[u8]) {
        self.expr("cmp", |w| {
            w.put_u32(1, sreg); // NFTA_CMP_SREG
            w.put_u32(2, op); // NFTA_CMP_OP
            let n = w.nest_start(3); // NFTA_CMP_DATA
            w.put(attr::DATA_VALUE, data);
            w.nest_end(n);
        });
    }

    fn bitwise(&mut self, reg: u32, mask: &[u8], xor: &[u8]) {
        self.expr("bitwise", |w| {
            w.put_u32(1, reg); // NFTA_BITWISE_SREG
            w.put_u32(2, reg); // NFTA_BITWISE_DREG
            w.put_u32(3, mask.len() as u32); // NFTA_BITWISE_LEN
            let n = w.nest_start(4); // NFTA_BITWISE_MASK
            w.put(attr::DATA_VALUE, mask);
            w.nest_end(n);
            let n = w.nest_start(5); // NFTA_BITWISE_XOR
            w.put(attr::DATA_VALUE, xor);
            w.nest_end(n);
        });
    }

    fn byteorder_hton(&mut self, reg: u32, len: u32, size: u32) {
        self.expr("byteorder", |w| {
            w.put_u32(1, reg); // NFTA_BYTEORDER_SREG
            w.put_u32(2, reg); // NFTA_BYTEORDER_DREG
            w.put_u32(3, NFT_BYTEORDER_HTON); // NFTA_BYTEORDER_OP
            w.put_u32(4, len); // NFTA_BYTEORDER_LEN
            w.put_u32(5, size); // NFTA_BYTEORDER_SIZE
        });
    }

    fn lookup(&mut self, set: &str, id: u32, dreg: Option<u32>, inv: bool) {
        self.expr("lookup", |w| {
            w.put_u32(2, NFT_REG_1); // NFTA_LOOKUP_SREG
            w.put_str(1, set); // NFTA_LOOKUP_SET
            w.put_u32(4, id); // NFTA_LOOKUP_SET_ID
            if let Some(d) = dreg {
                w.put_u32(3, d); // NFTA_LOOKUP_DREG
            }
            if inv {
                w.put_u32(5, NFT_LOOKUP_F_INV); // NFTA_LOOKUP_FLAGS
            }
        });
    }

    fn verdict(&mut self, code: i32, chain: Option<&str>) {
        self.expr("immediate", |w| {
            w.put_u32(1, NFT_REG_VERDICT); // NFTA_IMMEDIATE_DREG
            let n = w.nest_start(2); // NFTA_IMMEDIATE_DATA
            put_verdict(w, code, chain);
            w.nest_end(n);
        });
    }
}

/// The 32-bit register a concatenation field at word `idx` goes to, the way nft names it:
/// a 128-bit register where the word is aligned to one, else the 32-bit register.
fn concat_reg(idx: usize) -> u32 {
    if idx % 4 == 0 {
        NFT_REG_1 + (idx / 4) as u32
    } else {
        NFT_REG32_00 + idx as u32
    }
}

fn field_family(f: Field) -> Option<u8> {
    match f {
        Field::Saddr4 | Field::Daddr4 => Some(NFPROTO_IPV4),
        Field::Saddr6 | Field::Daddr6 => Some(NFPROTO_IPV6),
        _ => None,
    }
}

/// `meta nfproto` guard before the first network-header load of a family in the rule.
fn need_nfproto(x: &mut Exprs, ctx: &mut Ctx, family: u8) {
    if ctx.nfproto != Some(family) {
        x.meta(NFT_META_NFPROTO, NFT_REG_1);
        x.cmp(NFT_CMP_EQ, NFT_REG_1, &[family]);
        ctx.nfproto = Some(family);
    }
}

/// Loads a (possibly concatenated) key into registers from NFT_REG_1 on.
fn load_key(x: &mut Exprs, ctx: &mut Ctx, key: &[Field]) -> Result<()> {
    if key.is_empty() {
        bail!("a lookup needs at least one key field");
    }
    let families: Vec<u8> = key.iter().filter_map(|f| field_family(*f)).collect();
    if let Some(f) = families.first() {
        if families.iter().any(|g| g != f) {
            bail!("a key mixes IPv4 and IPv6 fields");
        }
        need_nfproto(x, ctx, *f);
    }
    let concat = key.len() > 1;
    let mut idx = 0;
    for f in key {
        let reg = if concat { concat_reg(idx) } else { NFT_REG_1 };
        match f {
            Field::Iifname => x.meta(NFT_META_IIFNAME, reg),
            Field::Oifname => x.meta(NFT_META_OIFNAME, reg),
            Field::Saddr4 => x.payload(NFT_PAYLOAD_NETWORK_HEADER, 12, 4, reg),
            Field::Daddr4 => x.payload(NFT_PAYLOAD_NETWORK_HEADER, 16, 4, reg),
            Field::Saddr6 => x.payload(NFT_PAYLOAD_NETWORK_HEADER, 8, 16, reg),
            Field::Daddr6 => x.payload(NFT_PAYLOAD_NETWORK_HEADER, 24, 16, reg),
            Field::L4Proto => {
                x.meta(NFT_META_L4PROTO, reg);
                if concat {
                    // nft converts the host-order protocol to network order inside a
                    // concatenation (a no-op for one byte, but part of the rule).
                    x.byteorder_hton(reg, 1, 2);
                }
            }
            Field::Dport => x.payload(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2, reg),
        }
        idx += pad4(field_info(*f).1) / 4;
    }
    Ok(())
}

fn ct_bits(s: CtState) -> u32 {
    match s {
        CtState::Invalid => 1,
        CtState::Established => 2,
        CtState::Related => 4,
        CtState::New => 8,
    }
}

fn icmp_type(v6: bool, k: IcmpKind) -> Result<u8> {
    Ok(match (v6, k) {
        (false, IcmpKind::EchoRequest) => 8,
        (true, IcmpKind::EchoRequest) => 128,
        (true, IcmpKind::RouterSolicit) => 133,
        (true, IcmpKind::RouterAdvert) => 134,
        (true, IcmpKind::NeighborSolicit) => 135,
        (true, IcmpKind::NeighborAdvert) => 136,
        (false, other) => bail!("{other:?} is not an ICMP (v4) type"),
    })
}

/// An anonymous constant set (`{ a, b }` in a rule) nft creates for the rule.
struct Anon {
    key_type: u32,
    udata: Vec<u8>,
    elems: Vec<u8>,
}

fn encode_rule(
    b: &mut Builder,
    t: &Table,
    ids: &std::collections::HashMap<&str, u32>,
    ci: usize,
    ri: usize,
    r: &Rule,
) -> Result<()> {
    let chain = &t.chains[ci].name;
    let set_id = |name: &str| {
        ids.get(name)
            .copied()
            .ok_or_else(|| anyhow!("no set named {name}"))
    };

    // Anonymous sets first: they go in the batch before the rule that uses them.
    let mut anon_ids = Vec::new();
    for m in &r.matches {
        let anon = match m {
            Match::L4Proto(ps) if ps.len() > 1 => Some(Anon {
                key_type: TYPE_INET_PROTOCOL,
                // key byteorder host; typeof `meta l4proto` (EXPR_META 9, key 16)
                udata: udata(&[
                    (0, &1u32.to_ne_bytes()),
                    (3, &[0, 4, 9, 0, 0, 0, 1, 6, 0, 4, 16, 0, 0, 0]),
                ]),
                elems: dedup(ps),
            }),
            Match::Icmp { v6, types } if types.len() > 1 => {
                let codes = types
                    .iter()
                    .map(|k| icmp_type(*v6, *k))
                    .collect::<Result<Vec<u8>>>()?;
                // key byteorder big endian; typeof `icmp[v6] type` (EXPR_PAYLOAD 7,
                // protocol ICMP 4 / ICMPV6 14, field 1)
                let desc = if *v6 { 14 } else { 4 };
                Some(Anon {
                    key_type: if *v6 { TYPE_ICMP6_TYPE } else { TYPE_ICMP_TYPE },
                    udata: udata(&[
                        (0, &2u32.to_ne_bytes()),
                        (
                            3,
                            &[
                                0, 4, 7, 0, 0, 0, 1, 12, 0, 4, desc, 0, 0, 0, 1, 4, 1, 0, 0, 0,
                            ],
                        ),
                    ]),
                    elems: dedup(&codes),
                })
            }
            _ => None,
        };
        if let Some(a) = anon {
            let id = b.set_id();
            anon_ids.push(id);
            b.obj(
                msg::NEWSET,
                wire::NLM_F_CREATE,
                Label::AnonSet {
                    chain: ci,
                    rule: ri,
                },
            );
            let table = b.table.clone();
            b.w.put_str(attr::SET_TABLE, &table);
            b.w.put_str(attr::SET_NAME, "__set%d");
            b.w.put_u32(attr::SET_FLAGS, NFT_SET_ANONYMOUS | NFT_SET_CONSTANT);
            b.w.put_u32(attr::SET_KEY_TYPE, a.key_type);
            b.w.put_u32(attr::SET_KEY_LEN, 1);
            b.w.put_u32(attr::SET_ID, id);
            let d = b.w.nest_start(attr::SET_DESC);
            b.w.put_u32(attr::SET_DESC_SIZE, a.elems.len() as u32);
            b.w.nest_end(d);
            b.w.put(attr::SET_USERDATA, &a.udata);
            let stream: Vec<(Elem, usize)> = a
                .elems
                .iter()
                .map(|e| {
                    (
                        Elem {
                            key: vec![*e],
                            key_end: None,
                            end_flag: false,
                            verdict: None,
                            udata: None,
                        },
                        0,
                    )
                })
                .collect();
            write_elems(b, "__set%d", id, &stream, |_| Label::AnonElems {
                chain: ci,
                rule: ri,
            });
        }
    }

    b.obj(
        msg::NEWRULE,
        wire::NLM_F_CREATE | wire::NLM_F_APPEND,
        Label::Rule {
            chain: ci,
            rule: ri,
        },
    );
    let table = b.table.clone();
    b.w.put_str(attr::RULE_TABLE, &table);
    b.w.put_str(attr::RULE_CHAIN, chain);
    let list = b.w.nest_start(attr::RULE_EXPRESSIONS);
    let mut x = Exprs { w: &mut b.w };
    let mut ctx = Ctx::default();
    let mut anon = anon_ids.into_iter();
    for m in &r.matches {
        match m {
            Match::CtState(states) => {
                if states.is_empty() {
                    bail!("ct state needs at least one state");
                }
                let bits = states.iter().fold(0, |a, s| a | ct_bits(*s));
                x.ct(NFT_CT_STATE, NFT_REG_1);
                x.bitwise(NFT_REG_1, &bits.to_ne_bytes(), &[0; 4]);
                x.cmp(NFT_CMP_NEQ, NFT_REG_1, &[0; 4]);
            }
            Match::Iifname(n) => {
                x.meta(NFT_META_IIFNAME, NFT_REG_1);
                x.cmp(NFT_CMP_EQ, NFT_REG_1, &ifname_bytes(n)?);
            }
            Match::L4Proto(ps) => match ps.as_slice() {
                [] => bail!("meta l4proto needs at least one protocol"),
                [p] => {
                    x.meta(NFT_META_L4PROTO, NFT_REG_1);
                    x.cmp(NFT_CMP_EQ, NFT_REG_1, &[*p]);
                    ctx.l4proto = Some(*p);
                }
                _ => {
                    x.meta(NFT_META_L4PROTO, NFT_REG_1);
                    let id = anon
                        .next()
                        .ok_or_else(|| anyhow!("anonymous set missing"))?;
                    x.lookup("__set%d", id, None, false);
                }
            },
            Match::Icmp { v6, types } => {
                let (family, proto) = if *v6 {
                    (NFPROTO_IPV6, PROTO_ICMPV6)
                } else {
                    (NFPROTO_IPV4, PROTO_ICMP)
                };
                if ctx.l4proto != Some(proto) {
                    need_nfproto(&mut x, &mut ctx, family);
                    x.meta(NFT_META_L4PROTO, NFT_REG_1);
                    x.cmp(NFT_CMP_EQ, NFT_REG_1, &[proto]);
                    ctx.l4proto = Some(proto);
                }
                x.payload(NFT_PAYLOAD_TRANSPORT_HEADER, 0, 1, NFT_REG_1);
                match types.as_slice() {
                    [] => bail!("icmp type needs at least one type"),
                    [k] => x.cmp(NFT_CMP_EQ, NFT_REG_1, &[icmp_type(*v6, *k)?]),
                    _ => {
                        let id = anon
                            .next()
                            .ok_or_else(|| anyhow!("anonymous set missing"))?;
                        x.lookup("__set%d", id, None, false);
                    }
                }
            }
            Match::Lookup { key, set, negate } => {
                check_key(t, set, key, false)?;
                load_key(&mut x, &mut ctx, key)?;
                x.lookup(set, set_id(set)?, None, *negate);
            }
        }
    }
    if r.counter {
        x.expr("counter", |_| {});
    }
    if let Some(log) = &r.log {
        let prefix = unquoted(&log.prefix);
        if prefix.len() > LOG_PREFIX_MAX {
            bail!("log prefix longer than {LOG_PREFIX_MAX} bytes");
        }
        x.expr("log", |w| {
            w.put_str(2, &prefix); // NFTA_LOG_PREFIX
            w.put_u16(1, log.group); // NFTA_LOG_GROUP
        });
    }
    match &r.verdict {
        None => {}
        Some(Verdict::Vmap { key, map }) => {
            check_key(t, map, key, true)?;
            load_key(&mut x, &mut ctx, key)?;
            x.lookup(map, set_id(map)?, Some(NFT_REG_VERDICT), false);
        }
        Some(v) => {
            let (code, chain) = verdict_code(v)?;
            x.verdict(code, chain.as_deref());
        }
    }
    b.w.nest_end(list);
    if let Some(c) = &r.comment {
        let c = unquoted(c);
        if c.len() > COMMENT_MAX {
            bail!("comment longer than {COMMENT_MAX} bytes");
        }
        let mut text = c.into_bytes();
        text.push(0);
        b.w.put(attr::RULE_USERDATA, &udata(&[(0, &text)])); // NFTNL_UDATA_RULE_COMMENT
    }
    Ok(())
}

/// The set a lookup names exists, is a map exactly when used as one, and has that key.
fn check_key(t: &Table, name: &str, key: &[Field], map: bool) -> Result<()> {
    let s = t.set(name).ok_or_else(|| anyhow!("no set named {name}"))?;
    if s.is_map != map {
        bail!("{name} is {} a map", if s.is_map { "" } else { "not" });
    }
    let types = |k: &[Field]| k.iter().map(|f| field_info(*f).0).collect::<Vec<_>>();
    if types(&s.key) != types(key) {
        bail!(
            "lookup key {:?} does not match the key {:?} of {name}",
            key,
            s.key
        );
    }
    Ok(())
}

fn dedup(v: &[u8]) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::with_capacity(v.len());
    for x in v {
        if !out.contains(x) {
            out.push(*x);
        }
    }
    out
}
