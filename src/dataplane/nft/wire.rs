//! The nf_tables netlink wire format: message and attribute constants (from
//! `linux/netfilter/nf_tables.h`, `nfnetlink.h`), a writer that appends messages to one
//! batch buffer, and a bounds-checked reader for what the kernel sends back.
//!
//! Everything nf_tables puts in an attribute is big-endian (u16/u32/u64) or a NUL-terminated
//! string; nests carry `NLA_F_NESTED` like libmnl sets it.

use anyhow::{bail, Result};

pub const NFNL_SUBSYS_NFTABLES: u16 = 10;
pub const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
pub const NFNL_MSG_BATCH_END: u16 = 0x11;
pub const NFNETLINK_V0: u8 = 0;

pub const NLMSG_HDRLEN: usize = 16;
pub const NFGENMSG_LEN: usize = 4;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_DUMP_INTR: u16 = 0x10;
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLM_F_CREATE: u16 = 0x400;
pub const NLM_F_APPEND: u16 = 0x800;
/// In an NLMSG_ERROR: extended-ack TLVs follow the (capped) original header.
pub const NLM_F_ACK_TLVS: u16 = 0x200;
pub const NLMSGERR_ATTR_MSG: u16 = 1;
pub const NLMSGERR_ATTR_OFFS: u16 = 2;

const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;

/// `enum nf_tables_msg_types`.
pub mod msg {
    pub const NEWTABLE: u16 = 0;
    pub const GETTABLE: u16 = 1;
    pub const DELTABLE: u16 = 2;
    pub const NEWCHAIN: u16 = 3;
    pub const GETCHAIN: u16 = 4;
    pub const DELCHAIN: u16 = 5;
    pub const NEWRULE: u16 = 6;
    pub const GETRULE: u16 = 7;
    pub const DELRULE: u16 = 8;
    pub const NEWSET: u16 = 9;
    pub const GETSET: u16 = 10;
    pub const DELSET: u16 = 11;
    pub const NEWSETELEM: u16 = 12;
    pub const GETSETELEM: u16 = 13;
    pub const DELSETELEM: u16 = 14;
    pub const NEWGEN: u16 = 15;
    pub const GETGEN: u16 = 16;

    const NAMES: [&str; 34] = [
        "NEWTABLE",
        "GETTABLE",
        "DELTABLE",
        "NEWCHAIN",
        "GETCHAIN",
        "DELCHAIN",
        "NEWRULE",
        "GETRULE",
        "DELRULE",
        "NEWSET",
        "GETSET",
        "DELSET",
        "NEWSETELEM",
        "GETSETELEM",
        "DELSETELEM",
        "NEWGEN",
        "GETGEN",
        "TRACE",
        "NEWOBJ",
        "GETOBJ",
        "DELOBJ",
        "GETOBJ_RESET",
        "NEWFLOWTABLE",
        "GETFLOWTABLE",
        "DELFLOWTABLE",
        "GETRULE_RESET",
        "DESTROYTABLE",
        "DESTROYCHAIN",
        "DESTROYRULE",
        "DESTROYSET",
        "DESTROYSETELEM",
        "DESTROYOBJ",
        "DESTROYFLOWTABLE",
        "GETSETELEM_RESET",
    ];

    pub fn name(m: u16) -> String {
        NAMES
            .get(m as usize)
            .map(|n| n.to_string())
            .unwrap_or_else(|| format!("MSG#{m}"))
    }
}

/// Attribute numbers, per object.
pub mod attr {
    pub const TABLE_NAME: u16 = 1;
    pub const TABLE_FLAGS: u16 = 2;
    pub const TABLE_USE: u16 = 3;
    pub const TABLE_HANDLE: u16 = 4;
    pub const TABLE_PAD: u16 = 5;
    pub const TABLE_USERDATA: u16 = 6;
    pub const TABLE_OWNER: u16 = 7;

    pub const CHAIN_TABLE: u16 = 1;
    pub const CHAIN_HANDLE: u16 = 2;
    pub const CHAIN_NAME: u16 = 3;
    pub const CHAIN_HOOK: u16 = 4;
    pub const CHAIN_POLICY: u16 = 5;
    pub const CHAIN_USE: u16 = 6;
    pub const CHAIN_TYPE: u16 = 7;
    pub const CHAIN_COUNTERS: u16 = 8;
    pub const CHAIN_PAD: u16 = 9;
    pub const CHAIN_FLAGS: u16 = 10;
    pub const CHAIN_ID: u16 = 11;
    pub const CHAIN_USERDATA: u16 = 12;
    pub const HOOK_HOOKNUM: u16 = 1;
    pub const HOOK_PRIORITY: u16 = 2;
    pub const HOOK_DEV: u16 = 3;

    pub const RULE_TABLE: u16 = 1;
    pub const RULE_CHAIN: u16 = 2;
    pub const RULE_HANDLE: u16 = 3;
    pub const RULE_EXPRESSIONS: u16 = 4;
    pub const RULE_POSITION: u16 = 6;
    pub const RULE_USERDATA: u16 = 7;
    pub const RULE_PAD: u16 = 8;
    pub const RULE_ID: u16 = 9;
    pub const RULE_POSITION_ID: u16 = 10;
    pub const RULE_CHAIN_ID: u16 = 11;

    pub const LIST_ELEM: u16 = 1;
    pub const EXPR_NAME: u16 = 1;
    pub const EXPR_DATA: u16 = 2;

    pub const SET_TABLE: u16 = 1;
    pub const SET_NAME: u16 = 2;
    pub const SET_FLAGS: u16 = 3;
    pub const SET_KEY_TYPE: u16 = 4;
    pub const SET_KEY_LEN: u16 = 5;
    pub const SET_DATA_TYPE: u16 = 6;
    pub const SET_DATA_LEN: u16 = 7;
    pub const SET_POLICY: u16 = 8;
    pub const SET_DESC: u16 = 9;
    pub const SET_ID: u16 = 10;
    pub const SET_USERDATA: u16 = 13;
    pub const SET_PAD: u16 = 14;
    pub const SET_HANDLE: u16 = 16;
    /// Kernel bookkeeping in dumps (6.x): the set backend and the element count.
    pub const SET_TYPE: u16 = 19;
    pub const SET_COUNT: u16 = 20;
    pub const SET_DESC_SIZE: u16 = 1;
    pub const SET_DESC_CONCAT: u16 = 2;
    pub const SET_FIELD_LEN: u16 = 1;

    pub const SET_ELEM_LIST_TABLE: u16 = 1;
    pub const SET_ELEM_LIST_SET: u16 = 2;
    pub const SET_ELEM_LIST_ELEMENTS: u16 = 3;
    pub const SET_ELEM_LIST_SET_ID: u16 = 4;
    pub const SET_ELEM_KEY: u16 = 1;
    pub const SET_ELEM_DATA: u16 = 2;
    pub const SET_ELEM_FLAGS: u16 = 3;
    pub const SET_ELEM_EXPIRATION: u16 = 5;
    pub const SET_ELEM_USERDATA: u16 = 6;
    pub const SET_ELEM_PAD: u16 = 8;
    pub const SET_ELEM_KEY_END: u16 = 10;

    pub const DATA_VALUE: u16 = 1;
    pub const DATA_VERDICT: u16 = 2;
    pub const VERDICT_CODE: u16 = 1;
    pub const VERDICT_CHAIN: u16 = 2;

    pub const GEN_ID: u16 = 1;
    pub const GEN_PROC_PID: u16 = 2;
    pub const GEN_PROC_NAME: u16 = 3;
}

pub const NFPROTO_INET: u8 = 1;
pub const NFPROTO_IPV4: u8 = 2;
pub const NFPROTO_IPV6: u8 = 10;

pub fn family_name(f: u8) -> String {
    match f {
        1 => "inet".into(),
        2 => "ip".into(),
        3 => "arp".into(),
        5 => "netdev".into(),
        7 => "bridge".into(),
        10 => "ip6".into(),
        other => format!("family{other}"),
    }
}

/// Hook name for a family's hook number (`nft`'s names).
pub fn hook_name(family: u8, hook: u32) -> String {
    let named = match family {
        3 => ["input", "output", "forward", "", "", ""]
            .get(hook as usize)
            .copied(),
        5 => ["ingress", "egress", "", "", "", ""]
            .get(hook as usize)
            .copied(),
        _ => [
            "prerouting",
            "input",
            "forward",
            "output",
            "postrouting",
            "ingress",
        ]
        .get(hook as usize)
        .copied(),
    };
    match named {
        Some(n) if !n.is_empty() => n.into(),
        _ => format!("hook{hook}"),
    }
}

pub fn nft_type(m: u16) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | m
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Appends netlink messages to one buffer (a batch or a single request).
#[derive(Default)]
pub struct Writer {
    buf: Vec<u8>,
    /// Start of the message being written.
    msg: Option<usize>,
    /// Set when a length did not fit its u16/u32 field; `finish` reports it.
    overflow: Option<String>,
}

impl Writer {
    pub fn new() -> Writer {
        Writer::default()
    }

    /// Bytes written so far.
    pub fn pos(&self) -> usize {
        self.buf.len()
    }

    /// Starts a message: netlink header + nfgenmsg. Returns its offset in the buffer.
    pub fn begin(&mut self, ty: u16, flags: u16, seq: u32, family: u8, res_id: u16) -> usize {
        self.end();
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // length, patched by end()
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // portid: the kernel
        self.buf.push(family);
        self.buf.push(NFNETLINK_V0);
        self.buf.extend_from_slice(&res_id.to_be_bytes());
        self.msg = Some(start);
        start
    }

    /// Closes the current message (also done by the next `begin` and by `finish`).
    pub fn end(&mut self) {
        if let Some(start) = self.msg.take() {
            let len = self.buf.len() - start;
            match u32::try_from(len) {
                Ok(l) => self.buf[start..start + 4].copy_from_slice(&l.to_ne_bytes()),
                Err(_) => self.overflow = Some(format!("message of {len} bytes")),
            }
        }
    }

    pub fn finish(mut self) -> Result<Vec<u8>> {
        self.end();
        if let Some(what) = self.overflow {
            bail!("netlink encoding overflow: {what} does not fit its length field");
        }
        Ok(self.buf)
    }

    fn put_header(&mut self, ty: u16, len: usize) -> usize {
        let at = self.buf.len();
        let l = u16::try_from(len).unwrap_or_else(|_| {
            self.overflow = Some(format!("attribute {ty} of {len} bytes"));
            0
        });
        self.buf.extend_from_slice(&l.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        at
    }

    fn pad(&mut self) {
        let n = align4(self.buf.len()) - self.buf.len();
        self.buf.extend(std::iter::repeat_n(0u8, n));
    }

    pub fn put(&mut self, ty: u16, data: &[u8]) {
        self.put_header(ty, 4 + data.len());
        self.buf.extend_from_slice(data);
        self.pad();
    }

    pub fn put_u32(&mut self, ty: u16, v: u32) {
        self.put(ty, &v.to_be_bytes());
    }

    pub fn put_u16(&mut self, ty: u16, v: u16) {
        self.put(ty, &v.to_be_bytes());
    }

    /// A NUL-terminated string.
    pub fn put_str(&mut self, ty: u16, s: &str) {
        self.put_header(ty, 4 + s.len() + 1);
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.push(0);
        self.pad();
    }

    pub fn nest_start(&mut self, ty: u16) -> usize {
        self.put_header(ty | NLA_F_NESTED, 4)
    }

    pub fn nest_end(&mut self, at: usize) {
        let len = self.buf.len() - at;
        match u16::try_from(len) {
            Ok(l) => self.buf[at..at + 2].copy_from_slice(&l.to_ne_bytes()),
            Err(_) => self.overflow = Some(format!("nested attribute of {len} bytes")),
        }
    }

    /// Bytes written since `at` (to keep a nest under the u16 limit).
    pub fn since(&self, at: usize) -> usize {
        self.buf.len() - at
    }
}

/// One netlink message inside a received (or our own) buffer.
#[derive(Debug, Clone, Copy)]
pub struct Msg<'a> {
    pub ty: u16,
    pub flags: u16,
    pub seq: u32,
    pub pid: u32,
    /// Everything after the netlink header.
    pub payload: &'a [u8],
    /// The whole message, header included.
    pub raw: &'a [u8],
}

impl<'a> Msg<'a> {
    pub fn is_nftables(&self) -> bool {
        self.ty >> 8 == NFNL_SUBSYS_NFTABLES
    }

    /// The nf_tables message type (low byte).
    pub fn nft_msg(&self) -> u16 {
        self.ty & 0xff
    }

    pub fn family(&self) -> u8 {
        self.payload.first().copied().unwrap_or(0)
    }

    /// The attributes after the nfgenmsg header.
    pub fn attrs(&self) -> Result<Attrs<'a>> {
        match self.payload.get(NFGENMSG_LEN..) {
            Some(rest) => Attrs::parse(rest),
            None => bail!(
                "nf_tables message of {} bytes has no nfgenmsg header",
                self.raw.len()
            ),
        }
    }
}

/// Splits a buffer into netlink messages; an error for a truncated or malformed one.
pub fn messages(buf: &[u8]) -> Result<Vec<Msg<'_>>> {
    let mut out = Vec::new();
    let mut off = 0;
    while off < buf.len() {
        let rest = &buf[off..];
        if rest.len() < NLMSG_HDRLEN {
            bail!(
                "truncated netlink header at byte {off} ({} bytes left)",
                rest.len()
            );
        }
        let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            bail!(
                "netlink message at byte {off} claims {len} bytes, {} available",
                rest.len()
            );
        }
        out.push(Msg {
            ty: u16::from_ne_bytes([rest[4], rest[5]]),
            flags: u16::from_ne_bytes([rest[6], rest[7]]),
            seq: u32::from_ne_bytes([rest[8], rest[9], rest[10], rest[11]]),
            pid: u32::from_ne_bytes([rest[12], rest[13], rest[14], rest[15]]),
            payload: &rest[NLMSG_HDRLEN..len],
            raw: &rest[..len],
        });
        off += align4(len).min(rest.len());
    }
    Ok(out)
}

/// The attributes of one level, in order; type bits (nested, byte order) masked off.
#[derive(Debug, Clone, Default)]
pub struct Attrs<'a> {
    pub list: Vec<(u16, &'a [u8])>,
}

impl<'a> Attrs<'a> {
    pub fn parse(mut data: &'a [u8]) -> Result<Attrs<'a>> {
        let mut list = Vec::new();
        while data.len() >= 4 {
            let len = u16::from_ne_bytes([data[0], data[1]]) as usize;
            let ty = u16::from_ne_bytes([data[2], data[3]]) & NLA_TYPE_MASK;
            if len < 4 || len > data.len() {
                bail!(
                    "attribute type {ty} claims {len} bytes, {} available",
                    data.len()
                );
            }
            list.push((ty, &data[4..len]));
            data = &data[align4(len).min(data.len())..];
        }
        Ok(Attrs { list })
    }

    pub fn get(&self, ty: u16) -> Option<&'a [u8]> {
        self.list.iter().find(|(t, _)| *t == ty).map(|(_, d)| *d)
    }

    pub fn u32(&self, ty: u16) -> Option<u32> {
        self.get(ty).and_then(be32)
    }

    pub fn str(&self, ty: u16) -> Option<String> {
        self.get(ty).map(strz)
    }

    pub fn nested(&self, ty: u16) -> Result<Option<Attrs<'a>>> {
        match self.get(ty) {
            Some(d) => Ok(Some(Attrs::parse(d)?)),
            None => Ok(None),
        }
    }
}

pub fn be32(d: &[u8]) -> Option<u32> {
    d.get(..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

pub fn be16(d: &[u8]) -> Option<u16> {
    d.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]]))
}

/// A NUL-terminated string attribute (lossy UTF-8, everything from the first NUL dropped).
pub fn strz(d: &[u8]) -> String {
    let end = d.iter().position(|b| *b == 0).unwrap_or(d.len());
    String::from_utf8_lossy(&d[..end]).into_owned()
}

pub fn hex(d: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(d.len() * 2);
    for b in d {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 0xf) as usize] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_and_reader_round_trip() {
        let mut w = Writer::new();
        w.begin(nft_type(msg::NEWTABLE), NLM_F_REQUEST, 7, NFPROTO_INET, 0);
        w.put_str(attr::TABLE_NAME, "tiernet");
        let n = w.nest_start(attr::CHAIN_HOOK);
        w.put_u32(attr::HOOK_HOOKNUM, 2);
        w.nest_end(n);
        let buf = w.finish().unwrap();
        let ms = messages(&buf).unwrap();
        assert_eq!(ms.len(), 1);
        assert_eq!(ms[0].seq, 7);
        assert_eq!(ms[0].nft_msg(), msg::NEWTABLE);
        let a = ms[0].attrs().unwrap();
        assert_eq!(a.str(attr::TABLE_NAME).as_deref(), Some("tiernet"));
        let hook = a.nested(attr::CHAIN_HOOK).unwrap().unwrap();
        assert_eq!(hook.u32(attr::HOOK_HOOKNUM), Some(2));
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        assert!(messages(&[1, 2, 3]).is_err());
        assert!(messages(&[200, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(Attrs::parse(&[40, 0, 1, 0, 1]).is_err());
        assert!(Attrs::parse(&[2, 0, 1, 0]).is_err());
        assert_eq!(be32(&[1, 2]), None);
        assert_eq!(strz(b"abc\0\0"), "abc");
    }
}
