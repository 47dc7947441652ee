//! Flows that respect the tier rules by construction, one pattern at a time.

use super::{port_pool, GenFlow, Params, Plan, Rng, CLASS, OFFICE, THIN_CLIENT, TIERS};
use crate::topology::index::Endpoint;
use crate::topology::model::{PortSpec, TRANSFER_ROLE};
use chrono::Days;

/// The flows of a plan whose segments and services are in place.
pub(super) fn generate(rng: Rng, plan: &Plan, p: &Params) -> Vec<GenFlow> {
    let mut fl = Flows {
        rng,
        plan,
        pools: Pools::new(plan),
        p,
    };
    (0..p.flows).map(|i| fl.flow(i)).collect()
}

/// How a flow crosses the tiers; each respects the tier rules by construction.
#[derive(Clone, Copy)]
enum Pattern {
    InternetIn,
    InternetOut,
    /// Within one confidentiality class: anything goes.
    Lateral,
    Up,
    Down,
}

/// Candidate endpoints per confidentiality class, computed once.
struct Pools {
    tiers: [Vec<usize>; 3],
    segments: [Vec<usize>; 3],
    services: [Vec<usize>; 3],
    /// Services a flow up into the class may end at.
    up_targets: [Vec<usize>; 3],
    transfer: [Vec<usize>; 3],
    exposed: Vec<usize>,
}

impl Pools {
    fn new(plan: &Plan) -> Self {
        let mut pools = Pools {
            tiers: Default::default(),
            segments: Default::default(),
            services: Default::default(),
            up_targets: Default::default(),
            transfer: Default::default(),
            exposed: Vec::new(),
        };
        for (t, &c) in CLASS.iter().enumerate() {
            pools.tiers[c].push(t);
        }
        for (s, seg) in plan.segments.iter().enumerate() {
            pools.segments[CLASS[seg.tier]].push(s);
        }
        for (v, svc) in plan.services.iter().enumerate() {
            let c = CLASS[plan.tier_of_service(v)];
            pools.services[c].push(v);
            // Office lists no inbound roles; research and hospital take thin-client and transfer.
            if c == CLASS[OFFICE] || matches!(svc.role, Some(THIN_CLIENT | TRANSFER_ROLE)) {
                pools.up_targets[c].push(v);
            }
            if svc.role == Some(TRANSFER_ROLE) {
                pools.transfer[c].push(v);
            }
            if svc.exposed {
                pools.exposed.push(v);
            }
        }
        pools
    }
}

/// The class that requires approval for transfers across confidentialities.
const APPROVING_CLASS: usize = 2;

struct Flows<'p> {
    rng: Rng,
    plan: &'p Plan,
    pools: Pools,
    p: &'p Params,
}

impl Flows<'_> {
    fn flow(&mut self, i: usize) -> GenFlow {
        let patterns = [
            Pattern::InternetIn,
            Pattern::InternetOut,
            Pattern::Lateral,
            Pattern::Lateral,
            Pattern::Up,
            Pattern::Up,
            Pattern::Down,
        ];
        let pattern = patterns[self.rng.below(patterns.len())];
        let (from, to, approval) = match self.ends(pattern) {
            Some(ends) => ends,
            None => self
                .ends(Pattern::Lateral)
                .expect("every class has a segment"),
        };
        let ports = self.narrowing(&to);
        let expires = match self.rng.below(10) {
            0 => self
                .p
                .today
                .checked_sub_days(Days::new(1 + self.rng.below(30) as u64)),
            1 => self
                .p
                .today
                .checked_add_days(Days::new(self.rng.below(30) as u64)),
            _ => None,
        };
        GenFlow {
            name: format!("flow{i}"),
            from,
            to,
            ports,
            approval: approval.then(|| format!("ERB-{i:04}")),
            expires,
        }
    }

    /// Sources, destinations and whether the flow needs an approval (rule 6).
    fn ends(&mut self, pattern: Pattern) -> Option<(Vec<Endpoint>, Vec<Endpoint>, bool)> {
        match pattern {
            Pattern::InternetIn => {
                let to = self.some(Pool::Exposed, Endpoint::Service)?;
                Some((vec![Endpoint::Internet], to, false))
            }
            Pattern::InternetOut => Some((
                self.refs_in(CLASS[OFFICE])?,
                vec![Endpoint::Internet],
                false,
            )),
            Pattern::Lateral => {
                let class = CLASS[self.rng.below(TIERS.len())];
                Some((self.refs_in(class)?, self.refs_in(class)?, false))
            }
            Pattern::Up => {
                let (lo, hi) = self.two_classes();
                let to = self.some(Pool::UpTargets(hi), Endpoint::Service)?;
                // A transfer into an approving class needs a reference.
                let approval = hi == APPROVING_CLASS && self.has_transfer(&to);
                Some((self.refs_in(lo)?, to, approval))
            }
            Pattern::Down => {
                let (lo, hi) = self.two_classes();
                let to = self.some(Pool::Transfer(lo), Endpoint::Service)?;
                // Every transfer out of an approving class needs one.
                Some((self.refs_in(hi)?, to, hi == APPROVING_CLASS))
            }
        }
    }

    fn has_transfer(&self, to: &[Endpoint]) -> bool {
        to.iter()
            .any(|e| matches!(e, Endpoint::Service(v) if self.plan.services[*v].role == Some(TRANSFER_ROLE)))
    }

    /// Two distinct confidentiality classes, lower first.
    fn two_classes(&mut self) -> (usize, usize) {
        let a = self.rng.below(3);
        let b = (a + 1 + self.rng.below(2)) % 3;
        (a.min(b), a.max(b))
    }

    fn pool(&self, which: Pool) -> &[usize] {
        match which {
            Pool::Exposed => &self.pools.exposed,
            Pool::UpTargets(c) => &self.pools.up_targets[c],
            Pool::Transfer(c) => &self.pools.transfer[c],
        }
    }

    /// One or two distinct items of a pool.
    fn some(&mut self, which: Pool, wrap: fn(usize) -> Endpoint) -> Option<Vec<Endpoint>> {
        let len = self.pool(which).len();
        if len == 0 {
            return None;
        }
        let i = self.rng.below(len);
        let first = self.pool(which)[i];
        let mut out = vec![wrap(first)];
        if self.rng.percent(30) {
            let j = self.rng.below(len);
            let second = self.pool(which)[j];
            if second != first {
                out.push(wrap(second));
            }
        }
        Some(out)
    }

    /// One or two endpoints (tier, segment or service) inside confidentiality class `class`.
    fn refs_in(&mut self, class: usize) -> Option<Vec<Endpoint>> {
        let n = 1 + usize::from(self.rng.percent(30));
        let mut out = Vec::new();
        for _ in 0..n {
            let e = if self.rng.percent(self.p.tier_ref_percent) {
                self.rng.pick(&self.pools.tiers[class]).map(Endpoint::Tier)
            } else if self.rng.percent(50) {
                self.rng
                    .pick(&self.pools.segments[class])
                    .map(Endpoint::Segment)
            } else {
                self.rng
                    .pick(&self.pools.services[class])
                    .map(Endpoint::Service)
            };
            if let Some(e) = e.filter(|e| !out.contains(e)) {
                out.push(e);
            }
        }
        if out.is_empty() {
            out.push(Endpoint::Segment(
                self.rng.pick(&self.pools.segments[class])?,
            ));
        }
        Some(out)
    }

    /// Sometimes narrows a flow's ports: icmp, a sub-range of a single destination
    /// service's ports, or any well-known port toward segments and tiers.
    fn narrowing(&mut self, to: &[Endpoint]) -> Option<Vec<PortSpec>> {
        if !self.rng.percent(30) || to.contains(&Endpoint::Internet) {
            return None;
        }
        if self.rng.percent(20) {
            return Some(vec![PortSpec::icmp()]);
        }
        let services: Vec<usize> = to
            .iter()
            .filter_map(|e| match e {
                Endpoint::Service(v) => Some(*v),
                _ => None,
            })
            .collect();
        match services[..] {
            [] => Some(vec![port_pool()[self.rng.below(port_pool().len())]]),
            [v] => {
                let offered = &self.plan.services[v].ports;
                let p = offered[self.rng.below(offered.len())];
                let lo = p.lo + self.rng.below(usize::from(p.hi - p.lo) + 1) as u16;
                let hi = lo + self.rng.below(usize::from(p.hi - lo) + 1) as u16;
                Some(vec![PortSpec { lo, hi, ..p }])
            }
            _ => None,
        }
    }
}

#[derive(Clone, Copy)]
enum Pool {
    Exposed,
    UpTargets(usize),
    Transfer(usize),
}
