//! Inclusive address ranges of one family, as nftables interval sets hold them.

use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(addr: &IpAddr) -> Family {
        if addr.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }

    fn max(self) -> u128 {
        match self {
            Family::V4 => u32::MAX as u128,
            Family::V6 => u128::MAX,
        }
    }

    pub fn addr(self, v: u128) -> IpAddr {
        match self {
            Family::V4 => IpAddr::V4(Ipv4Addr::from(v as u32)),
            Family::V6 => IpAddr::V6(Ipv6Addr::from(v)),
        }
    }

    pub fn suffix(self) -> &'static str {
        match self {
            Family::V4 => "v4",
            Family::V6 => "v6",
        }
    }
}

pub fn addr_value(addr: &IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u32::from(*a) as u128,
        IpAddr::V6(a) => u128::from(*a),
    }
}

/// An inclusive range `lo..=hi` of addresses of one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AddrRange {
    pub family: Family,
    pub lo: u128,
    pub hi: u128,
}

impl AddrRange {
    pub fn of_net(net: &IpNet) -> AddrRange {
        let family = Family::of(&net.addr());
        AddrRange {
            family,
            lo: addr_value(&net.network()),
            hi: addr_value(&net.broadcast()),
        }
    }

    pub fn host(addr: &IpAddr) -> AddrRange {
        let v = addr_value(addr);
        AddrRange {
            family: Family::of(addr),
            lo: v,
            hi: v,
        }
    }

    pub fn everything(family: Family) -> AddrRange {
        AddrRange {
            family,
            lo: 0,
            hi: family.max(),
        }
    }

    pub fn lo_addr(&self) -> IpAddr {
        self.family.addr(self.lo)
    }

    pub fn hi_addr(&self) -> IpAddr {
        self.family.addr(self.hi)
    }

    pub fn contains(&self, addr: &IpAddr) -> bool {
        Family::of(addr) == self.family && (self.lo..=self.hi).contains(&addr_value(addr))
    }

    pub fn overlaps(&self, other: &AddrRange) -> bool {
        self.family == other.family && self.lo <= other.hi && other.lo <= self.hi
    }
}

impl std::fmt::Display for AddrRange {
    /// nft's notation: a prefix where the range is one, else `lo-hi`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.lo == self.hi {
            return write!(f, "{}", self.lo_addr());
        }
        let size = self.hi - self.lo;
        let bits: u32 = match self.family {
            Family::V4 => 32,
            Family::V6 => 128,
        };
        if size.wrapping_add(1) & size == 0 && self.lo & size == 0 {
            let host_bits = if size == u128::MAX {
                128
            } else {
                (size + 1).trailing_zeros()
            };
            return write!(f, "{}/{}", self.lo_addr(), bits - host_bits);
        }
        write!(f, "{}-{}", self.lo_addr(), self.hi_addr())
    }
}

impl serde::Serialize for AddrRange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for AddrRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl std::str::FromStr for AddrRange {
    type Err = String;

    /// Reads what `Display` writes: `a`, `a/len` or `lo-hi`.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("'{s}' is not an address, prefix or range");
        if let Some((lo, hi)) = s.split_once('-') {
            let (lo, hi): (IpAddr, IpAddr) = (
                lo.parse().map_err(|_| bad())?,
                hi.parse().map_err(|_| bad())?,
            );
            if Family::of(&lo) != Family::of(&hi) || addr_value(&lo) > addr_value(&hi) {
                return Err(bad());
            }
            return Ok(AddrRange {
                family: Family::of(&lo),
                lo: addr_value(&lo),
                hi: addr_value(&hi),
            });
        }
        if s.contains('/') {
            return s
                .parse::<IpNet>()
                .map(|n| AddrRange::of_net(&n))
                .map_err(|_| bad());
        }
        s.parse::<IpAddr>()
            .map(|a| AddrRange::host(&a))
            .map_err(|_| bad())
    }
}

/// Sorts and merges overlapping or adjacent ranges (of one family each).
pub fn normalize(mut ranges: Vec<AddrRange>) -> Vec<AddrRange> {
    ranges.sort();
    let mut out: Vec<AddrRange> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(last) if last.family == r.family && r.lo <= last.hi.saturating_add(1) => {
                last.hi = last.hi.max(r.hi);
            }
            _ => out.push(r),
        }
    }
    out
}

/// `from` minus every range in `holes` (holes of other families are ignored).
pub fn subtract(from: &[AddrRange], holes: &[AddrRange]) -> Vec<AddrRange> {
    let holes = normalize(holes.to_vec());
    let mut out = Vec::new();
    for r in normalize(from.to_vec()) {
        let mut lo = r.lo;
        let mut open = true;
        for h in holes.iter().filter(|h| h.overlaps(&r)) {
            if h.lo > lo {
                out.push(AddrRange {
                    family: r.family,
                    lo,
                    hi: h.lo - 1,
                });
            }
            if h.hi >= r.hi {
                open = false;
                break;
            }
            lo = lo.max(h.hi + 1);
        }
        if open && lo <= r.hi {
            out.push(AddrRange {
                family: r.family,
                lo,
                hi: r.hi,
            });
        }
    }
    out
}

/// Everything of `family` that is not in `ranges`.
pub fn complement(family: Family, ranges: &[AddrRange]) -> Vec<AddrRange> {
    subtract(&[AddrRange::everything(family)], ranges)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> AddrRange {
        AddrRange::of_net(&s.parse().unwrap())
    }

    #[test]
    fn subtract_punches_holes() {
        let got = subtract(
            &[net("10.0.0.0/24")],
            &[net("10.0.0.10/32"), net("10.0.0.128/25")],
        );
        let text: Vec<String> = got.iter().map(|r| r.to_string()).collect();
        assert_eq!(text, ["10.0.0.0-10.0.0.9", "10.0.0.11-10.0.0.127"]);
    }

    #[test]
    fn complement_covers_the_rest_exactly() {
        let got = complement(Family::V4, &[net("10.0.0.0/8")]);
        let text: Vec<String> = got.iter().map(|r| r.to_string()).collect();
        assert_eq!(text, ["0.0.0.0-9.255.255.255", "11.0.0.0-255.255.255.255"]);
        assert_eq!(
            complement(Family::V6, &[AddrRange::everything(Family::V6)]),
            vec![]
        );
        assert_eq!(net("::/0").to_string(), "::/0");
    }

    #[test]
    fn display_uses_prefixes_where_possible() {
        assert_eq!(net("10.2.10.0/24").to_string(), "10.2.10.0/24");
        assert_eq!(net("0.0.0.0/0").to_string(), "0.0.0.0/0");
        assert_eq!(net("fd00:1:10::/64").to_string(), "fd00:1:10::/64");
    }

    #[test]
    fn text_round_trips() {
        for text in [
            "10.0.0.0/24",
            "10.0.0.1-10.0.0.9",
            "10.0.0.7",
            "fd00::/64",
            "0.0.0.0/0",
            "::/0",
        ] {
            let r: AddrRange = text.parse().unwrap();
            assert_eq!(r.to_string(), text);
        }
        assert!("10.0.0.9-10.0.0.1".parse::<AddrRange>().is_err());
    }

    #[test]
    fn normalize_merges_adjacent() {
        let got = normalize(vec![net("10.0.1.0/24"), net("10.0.0.0/24")]);
        assert_eq!(got, vec![net("10.0.0.0/23")]);
    }
}
