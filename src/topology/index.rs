//! Name lookups and tier policies over a parsed topology, shared by validation and compilation.

use super::model::*;
use std::collections::HashMap;

/// What a `from`/`to` name refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Endpoint {
    Internet,
    Tier(usize),
    Segment(usize),
    Service(usize),
}

/// A tier's effective security policy, after following `same_policy_as`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The tier whose policy applies (itself, or its `same_policy_as` target).
    pub source: usize,
    pub confidentiality: u32,
    pub internet: Internet,
    pub inbound_roles: Option<Vec<String>>,
    pub requires_approval: bool,
}

pub struct Index<'t> {
    pub topo: &'t Topology,
    pub tiers: HashMap<&'t str, usize>,
    pub gateways: HashMap<&'t str, usize>,
    pub transit: HashMap<&'t str, usize>,
    pub segments: HashMap<&'t str, usize>,
    pub services: HashMap<&'t str, usize>,
    pub flows: HashMap<&'t str, usize>,
}

fn by_name<'t, T>(items: &'t [T], name: impl Fn(&'t T) -> &'t str) -> HashMap<&'t str, usize> {
    let mut map = HashMap::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        // The first definition wins; validation reports the duplicates.
        map.entry(name(item)).or_insert(i);
    }
    map
}

impl<'t> Index<'t> {
    pub fn new(topo: &'t Topology) -> Self {
        Index {
            topo,
            tiers: by_name(&topo.tiers, |t| t.name.v.as_str()),
            gateways: by_name(&topo.gateways, |g| g.name.v.as_str()),
            transit: by_name(&topo.transit, |t| t.name.v.as_str()),
            segments: by_name(&topo.segments, |s| s.name.v.as_str()),
            services: by_name(&topo.services, |s| s.name.v.as_str()),
            flows: by_name(&topo.flows, |f| f.name.v.as_str()),
        }
    }

    /// Resolves a flow endpoint name. A name that matches more than one kind is an error,
    /// since the reader of the topology could not tell which is meant.
    pub fn endpoint(&self, name: &str) -> Result<Endpoint, String> {
        let mut found = Vec::new();
        if name == INTERNET {
            found.push((Endpoint::Internet, "the internet"));
        }
        if let Some(&i) = self.tiers.get(name) {
            found.push((Endpoint::Tier(i), "a tier"));
        }
        if let Some(&i) = self.segments.get(name) {
            found.push((Endpoint::Segment(i), "a segment"));
        }
        if let Some(&i) = self.services.get(name) {
            found.push((Endpoint::Service(i), "a service"));
        }
        match found.as_slice() {
            [] => Err(format!(
                "'{name}' is not a tier, segment, service or 'internet'"
            )),
            [(e, _)] => Ok(*e),
            many => {
                let kinds: Vec<&str> = many.iter().map(|(_, k)| *k).collect();
                Err(format!(
                    "'{name}' is ambiguous: it names {}",
                    kinds.join(" and ")
                ))
            }
        }
    }

    pub fn segment_tier(&self, segment: usize) -> Option<usize> {
        self.tiers
            .get(self.topo.segments[segment].tier.v.as_str())
            .copied()
    }

    pub fn service_segment(&self, service: usize) -> Option<usize> {
        self.segments
            .get(self.topo.services[service].segment.v.as_str())
            .copied()
    }

    pub fn service_tier(&self, service: usize) -> Option<usize> {
        self.service_segment(service)
            .and_then(|s| self.segment_tier(s))
    }

    pub fn segment_gateway(&self, segment: usize) -> Option<usize> {
        self.gateways
            .get(self.topo.segments[segment].gateway.v.as_str())
            .copied()
    }

    /// The tier an endpoint lies in (None for the internet or a dangling reference).
    pub fn endpoint_tier(&self, e: Endpoint) -> Option<usize> {
        match e {
            Endpoint::Internet => None,
            Endpoint::Tier(t) => Some(t),
            Endpoint::Segment(s) => self.segment_tier(s),
            Endpoint::Service(s) => self.service_tier(s),
        }
    }

    /// The segments an endpoint covers (all of a tier's, a segment itself, a service's own).
    pub fn endpoint_segments(&self, e: Endpoint) -> Vec<usize> {
        match e {
            Endpoint::Internet => Vec::new(),
            Endpoint::Tier(t) => (0..self.topo.segments.len())
                .filter(|&s| self.segment_tier(s) == Some(t))
                .collect(),
            Endpoint::Segment(s) => vec![s],
            Endpoint::Service(s) => self.service_segment(s).into_iter().collect(),
        }
    }

    pub fn endpoint_name(&self, e: Endpoint) -> String {
        match e {
            Endpoint::Internet => INTERNET.to_string(),
            Endpoint::Tier(i) => self.topo.tiers[i].name.v.clone(),
            Endpoint::Segment(i) => self.topo.segments[i].name.v.clone(),
            Endpoint::Service(i) => self.topo.services[i].name.v.clone(),
        }
    }

    /// The tier whose policy fields apply to `tier`, following `same_policy_as` chains.
    /// Returns None on a dangling or cyclic chain (validation reports those).
    pub fn policy_source(&self, tier: usize) -> Option<usize> {
        let mut cur = tier;
        for _ in 0..=self.topo.tiers.len() {
            match &self.topo.tiers[cur].same_policy_as {
                None => return Some(cur),
                Some(target) => cur = *self.tiers.get(target.v.as_str())?,
            }
        }
        None
    }

    pub fn policy(&self, tier: usize) -> Policy {
        let source = self.policy_source(tier).unwrap_or(tier);
        let t = &self.topo.tiers[source];
        Policy {
            source,
            confidentiality: t.level.v,
            internet: t.internet.as_ref().map_or(Internet::None, |i| i.v),
            inbound_roles: t
                .inbound_roles
                .as_ref()
                .map(|r| r.iter().map(|x| x.v.clone()).collect()),
            requires_approval: t.requires_approval.as_ref().is_some_and(|r| r.v),
        }
    }
}
