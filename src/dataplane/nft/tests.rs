//! Encoder and decoder without a kernel: the canonical lines of small tables, how interval
//! sets read back in the kernel's order, input the encoder refuses, and malformed bytes.

use super::decode::{decode_all, Decoder};
use super::encode;
use super::socket::KernelError;
use super::wire::{self, attr, msg, nft_type, Writer, NFPROTO_INET};
use super::{without_unsupported, NftSession};
use crate::compile::ranges::AddrRange;
use crate::nftables::ir::*;

fn addr(s: &str) -> Value {
    Value::Addr(s.parse::<AddrRange>().expect("range"))
}

fn small() -> Table {
    let internal = Set {
        name: "internal_v4".into(),
        key: vec![Field::Saddr4],
        is_map: false,
        elements: vec![
            Element {
                key: vec![addr("10.2.0.0/16")],
                verdict: None,
            },
            Element {
                key: vec![addr("10.1.0.0/16")],
                verdict: None,
            },
            Element {
                key: vec![addr("192.168.0.0-255.255.255.255")],
                verdict: None,
            },
        ],
    };
    let flows = Set {
        name: "fwd".into(),
        key: vec![Field::Saddr4, Field::Daddr4, Field::L4Proto, Field::Dport],
        is_map: true,
        elements: vec![Element {
            key: vec![
                addr("10.2.10.0/24"),
                addr("10.3.10.10"),
                Value::Proto(6),
                Value::Ports(3389, 3389),
            ],
            verdict: Some(Verdict::Jump("flow_x".into())),
        }],
    };
    let forward = Chain {
        name: "forward".into(),
        base: Some(BaseChain {
            hook: Hook::Forward,
            priority: 0,
            policy_drop: true,
        }),
        rules: vec![
            Rule::new(
                vec![Match::CtState(vec![CtState::Established, CtState::Related])],
                Some(Verdict::Accept),
            ),
            Rule::new(
                vec![Match::Lookup {
                    key: vec![Field::Daddr4],
                    set: "internal_v4".into(),
                    negate: true,
                }],
                None,
            )
            .counted()
            .comment("to the outside"),
            Rule::new(
                vec![Match::L4Proto(vec![6, 17])],
                Some(Verdict::Vmap {
                    key: flows.key.clone(),
                    map: "fwd".into(),
                }),
            ),
        ],
    };
    let flow = Chain {
        name: "flow_x".into(),
        base: None,
        rules: vec![Rule::new(vec![], Some(Verdict::Accept))],
    };
    Table {
        name: "tiernet".into(),
        sets: vec![internal, flows],
        chains: vec![forward, flow],
    }
}

#[test]
fn canonical_lines_of_a_small_table() {
    let got = NftSession::canonical(&small()).expect("canonical");
    let want = [
        "table inet tiernet",
        "set fwd: type ipv4_addr . ipv4_addr . inet_proto . inet_service : verdict flags interval,map,concat keylen 16 datalen 16 fields 4,4,1,2 udata 000400000000010400000000030800040d0000000100060400000000",
        "element fwd: 0a020a00-0a020aff . 0a030a0a . 06 . 0d3d : jump flow_x",
        "set internal_v4: type ipv4_addr flags interval keylen 4 udata 000402000000",
        "element internal_v4: 0a010000-0a01ffff",
        "element internal_v4: 0a020000-0a02ffff",
        "element internal_v4: c0a80000-ffffffff open",
        "chain flow_x",
        "rule flow_x #1: [immediate accept]",
        "chain forward: type filter hook forward priority 0 policy drop",
        "rule forward #1: [ct load state => reg 1] [bitwise reg 1 = (reg 1 & 06000000) ^ 00000000] [cmp neq reg 1 00000000] [immediate accept]",
        "rule forward #2: [meta load nfproto => reg 1] [cmp eq reg 1 02] [payload load 4b @ network header + 16 => reg 1] [lookup reg 1 set internal_v4 inv] [counter] comment \"to the outside\"",
        "rule forward #3: [meta load l4proto => reg 1] [lookup reg 1 set { 06, 11 } (inet_proto)] [meta load nfproto => reg 1] [cmp eq reg 1 02] [payload load 4b @ network header + 12 => reg 1] [payload load 4b @ network header + 16 => reg 9] [meta load l4proto => reg 10] [byteorder reg 10 = hton(reg 10, 2, 1)] [payload load 2b @ transport header + 2 => reg 11] [lookup reg 1 set fwd dreg 0]",
    ];
    assert_eq!(got, want);
}

#[test]
fn the_batch_is_begin_replace_idiom_objects_end() {
    let b = encode::replace(
        &small(),
        encode::NFT_TABLE_F_OWNER | encode::NFT_TABLE_F_PERSIST,
        100,
    )
    .expect("encode");
    let ms = wire::messages(&b.bytes).expect("parse");
    assert_eq!(ms.len(), b.labels.len());
    let types: Vec<u16> = ms.iter().map(|m| m.ty).collect();
    assert_eq!(types[0], wire::NFNL_MSG_BATCH_BEGIN);
    assert_eq!(types[types.len() - 1], wire::NFNL_MSG_BATCH_END);
    assert_eq!(
        &types[1..4],
        &[
            nft_type(msg::NEWTABLE),
            nft_type(msg::DELTABLE),
            nft_type(msg::NEWTABLE)
        ]
    );
    // The first NEWTABLE carries no flags (an update must not change OWNER/PERSIST).
    assert_eq!(ms[1].attrs().expect("attrs").u32(attr::TABLE_FLAGS), None);
    assert_eq!(
        ms[3].attrs().expect("attrs").u32(attr::TABLE_FLAGS),
        Some(0x6)
    );
    assert!(b.is_flagged_newtable(103));
    for (i, m) in ms.iter().enumerate() {
        assert_eq!(m.seq, 100 + i as u32);
        // No per-message acks: a big batch would overflow the socket with them.
        if i + 1 < ms.len() {
            assert_eq!(m.flags & wire::NLM_F_ACK, 0, "message {i}");
        }
    }
    // Rules are appended, not inserted at the head.
    let rules = ms.iter().filter(|m| m.ty == nft_type(msg::NEWRULE));
    assert!(
        rules.clone().count() == 4 && rules.into_iter().all(|m| m.flags & wire::NLM_F_APPEND != 0)
    );
}

/// A dump lists rbtree elements in descending order, with the leading end element.
#[test]
fn interval_elements_read_back_in_kernel_order() {
    let elems: [(&[u8], bool); 7] = [
        (&[0xc0, 0xa8, 0, 0], false),
        (&[0x0a, 0x03, 0, 0], true),
        (&[0x0a, 0x02, 0, 0], false),
        (&[0x0a, 0x02, 0, 0], true),
        (&[0x0a, 0x01, 0, 0], false),
        (&[0x0a, 0x00, 0, 0], false),
        (&[0, 0, 0, 0], true),
    ];
    let mut w = Writer::new();
    w.begin(nft_type(msg::NEWTABLE), 0, 1, NFPROTO_INET, 0);
    w.put_str(attr::TABLE_NAME, "t");
    w.begin(nft_type(msg::NEWSET), 0, 2, NFPROTO_INET, 0);
    w.put_str(attr::SET_TABLE, "t");
    w.put_str(attr::SET_NAME, "s");
    w.put_u32(attr::SET_FLAGS, encode::NFT_SET_INTERVAL);
    w.put_u32(attr::SET_KEY_TYPE, 7);
    w.put_u32(attr::SET_KEY_LEN, 4);
    w.begin(nft_type(msg::NEWSETELEM), 0, 3, NFPROTO_INET, 0);
    w.put_str(attr::SET_ELEM_LIST_TABLE, "t");
    w.put_str(attr::SET_ELEM_LIST_SET, "s");
    let list = w.nest_start(attr::SET_ELEM_LIST_ELEMENTS);
    for (key, end) in elems {
        let e = w.nest_start(attr::LIST_ELEM);
        let k = w.nest_start(attr::SET_ELEM_KEY);
        w.put(attr::DATA_VALUE, key);
        w.nest_end(k);
        if end {
            w.put_u32(attr::SET_ELEM_FLAGS, 1);
        }
        w.nest_end(e);
    }
    w.nest_end(list);
    let bytes = w.finish().expect("encode");
    let lines = decode_all("t", &bytes).expect("decode").expect("table");
    assert_eq!(
        lines,
        [
            "table inet t",
            "set s: type ipv4_addr flags interval keylen 4",
            // 10.0/16 and 10.1/16 are adjacent: the second start ends the first range.
            "element s: 0a000000-0a00ffff",
            "element s: 0a010000-0a01ffff",
            "element s: 0a020000-0a02ffff",
            "element s: c0a80000-ffffffff",
        ]
    );
}

#[test]
fn the_encoder_refuses_what_nft_would() {
    let mut t = small();
    t.sets[0].elements.push(Element {
        key: vec![Value::Proto(6)],
        verdict: None,
    });
    let e = format!(
        "{:#}",
        encode::replace(&t, 0, 1).err().expect("type mismatch")
    );
    assert!(
        e.contains("set internal_v4") && e.contains("element 4"),
        "{e}"
    );

    let mut t = small();
    t.chains[0].rules[1].comment = Some("x".repeat(129));
    assert!(format!(
        "{:#}",
        encode::replace(&t, 0, 1).err().expect("long comment")
    )
    .contains("comment longer"));

    let mut t = small();
    t.chains[0].rules.push(Rule::new(
        vec![Match::Iifname("a-very-long-ifname".into())],
        None,
    ));
    assert!(format!(
        "{:#}",
        encode::replace(&t, 0, 1).err().expect("long ifname")
    )
    .contains("interface name"));

    let mut t = small();
    t.sets[1].elements[0].verdict = None;
    assert!(format!(
        "{:#}",
        encode::replace(&t, 0, 1)
            .err()
            .expect("map element without verdict")
    )
    .contains("no verdict"));

    let mut t = small();
    t.chains[0].rules.push(Rule::new(
        vec![Match::Lookup {
            key: vec![Field::Saddr6],
            set: "internal_v4".into(),
            negate: false,
        }],
        None,
    ));
    assert!(format!(
        "{:#}",
        encode::replace(&t, 0, 1).err().expect("key type mismatch")
    )
    .contains("does not match"));
}

/// The kernel's extack offset inside an element message names the element.
#[test]
fn an_error_offset_names_the_element() {
    let t = small();
    let b = encode::replace(&t, 0, 1).expect("encode");
    let (i, elems) = b
        .labels
        .iter()
        .enumerate()
        .find_map(|(i, l)| match l {
            encode::Label::Elems { set: 0, elems } => Some((i, elems.clone())),
            _ => None,
        })
        .expect("elements of internal_v4");
    // Stream: leading end, then start/end pairs in key order (10.1/16 is element 2).
    let (offset, _) = elems[1];
    let d = b.describe(1 + i as u32, Some(offset), &t);
    assert!(
        d.contains("NEWSETELEM internal_v4") && d.contains("element 2: 10.1.0.0/16"),
        "{d}"
    );
}

/// Truncated or corrupted input is an error or a different reading, never a panic.
#[test]
fn damaged_bytes_never_panic() {
    let good = encode::replace(&small(), 0, 1).expect("encode").bytes;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for round in 0..2000 {
        let mut b = good.clone();
        match round % 3 {
            0 => b.truncate(next() as usize % b.len()),
            1 => {
                for _ in 0..4 {
                    let i = next() as usize % b.len();
                    b[i] = next() as u8;
                }
            }
            _ => {
                let i = next() as usize % b.len();
                b[i] ^= 0x80;
            }
        }
        let _ = decode_all("tiernet", &b);
    }
    assert!(Decoder::new("tiernet").lines().is_none());
}

fn kernel_error(seq: u32, errno: i32) -> KernelError {
    KernelError {
        seq,
        errno,
        text: None,
        offset: None,
    }
}

/// Kernels without PERSIST (< 6.9) or OWNER (< 5.12) refuse the flagged NEWTABLE: retry
/// without PERSIST first, then without OWNER; other refusals are not retried.
#[test]
fn unsupported_table_flags_are_dropped_one_at_a_time() {
    let all = encode::NFT_TABLE_F_OWNER | encode::NFT_TABLE_F_PERSIST;
    let b = encode::replace(&small(), all, 10).expect("encode");
    // seq 10 begin, 11 ensure, 12 delete, 13 the flagged NEWTABLE; later ones fail with it.
    let errs = [
        kernel_error(13, libc::EOPNOTSUPP),
        kernel_error(14, libc::ENOENT),
    ];
    assert_eq!(
        without_unsupported(all, &b, &errs),
        Some((encode::NFT_TABLE_F_OWNER, "PERSIST", libc::EOPNOTSUPP))
    );
    let old = [kernel_error(13, libc::EINVAL)];
    assert_eq!(
        without_unsupported(encode::NFT_TABLE_F_OWNER, &b, &old),
        Some((0, "OWNER", libc::EINVAL))
    );
    assert_eq!(without_unsupported(0, &b, &old), None);
    assert_eq!(
        without_unsupported(all, &b, &[kernel_error(20, libc::EOPNOTSUPP)]),
        None,
        "a rule's error"
    );
    assert_eq!(
        without_unsupported(all, &b, &[kernel_error(11, libc::EPERM)]),
        None,
        "owned by another socket"
    );
}
