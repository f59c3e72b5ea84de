//! The desired state of one resource kept up to date pod by pod, with the status counts
//! beside it. Pure: pods, nodes and the time come in as arguments.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use indexmap::IndexMap;
use indexmap::map::Entry as SlotEntry;
use smol_str::SmolStr;

use super::desired::{
    Cand, Desired, MAX_WARNINGS, Rebuild, Selection, Slot, endpoint_record, place, slot,
};
use super::load::{Factors, effective};
use super::pod::{NodeInfo, PodInfo};
use super::record::{EndpointStatus, LoadFigures, PublishedRecord};
use super::registration::Registration;
use super::weights::{self, Member};
use crate::crd::GroupStatus;

/// The desired state of one resource, kept up to date pod by pod.
///
/// [`Tracker::build`] computes it from all pods; [`Tracker::update`] applies the pods changed
/// since, re-solving only the weight groups they touch and rebuilding only the records whose
/// pod or weight changed (the others keep their `Arc`, so the diff skips them by pointer).
/// Both give the same result as [`desired`](super::desired::desired) over the same pods (property-tested).
#[derive(Debug, Clone, Default)]
pub struct Tracker {
    /// By pod name. Hashed: a change looks its pod up here first, and a B-tree search compares
    /// a dozen long names sharing a prefix, each read from its own allocation (round 10 of
    /// docs/performance-history.md). The entries sit in one vector beside a table of their indices: a
    /// table of whole entries, at the half load a doubling table can have, took 45 B per pod
    /// more than a B-tree. Where an order shows, it is the names': the weight solver breaks
    /// ties by name and [`Tracker::recounted`] sorts what it lists.
    slots: IndexMap<SmolStr, Slot>,
    desired: Desired,
    /// The earliest drain end among the slots.
    next_expiry: Option<i64>,
    /// Endpoints whose record may differ from what was last published (see
    /// [`Tracker::published`]); `None` until the first publish: all of them.
    unpublished: Option<BTreeSet<SmolStr>>,
    /// The status counts over the slots, kept as they change.
    totals: Totals,
    /// Load factors and figures of the pods weighed by load (`spec.load`); absent: 1, none.
    factors: Arc<Factors>,
}

/// What the status counts over all slots, kept slot by slot so a change costs O(log n).
#[derive(Debug, Clone, Default)]
struct Totals {
    ready: u32,
    draining: u32,
    group_ready: Vec<u32>,
    group_weight: Vec<u64>,
    /// Drain ends of the draining endpoints, and how many end then.
    drain_ends: BTreeMap<i64, u32>,
    /// Drain ends of every draining pod, published or not.
    expiries: BTreeMap<i64, u32>,
    /// Pods with a warning, by name.
    warned: BTreeSet<SmolStr>,
    /// Ready pods whose address cannot be resolved, by name.
    unresolved: BTreeSet<SmolStr>,
}

impl Totals {
    /// Counts slot `s` of pod `name` in (`add`) or out.
    fn apply(&mut self, name: &SmolStr, s: &Slot, add: bool) {
        let step = |n: &mut u32| if add { *n += 1 } else { *n -= 1 };
        if s.ready {
            step(&mut self.ready);
        }
        if let Some(u) = s.expires {
            count_in(&mut self.expiries, u, add);
        }
        if s.warning().is_some() {
            name_in(&mut self.warned, name, add);
        }
        if s.unresolved().is_some() {
            name_in(&mut self.unresolved, name, add);
        }
        let Some(c) = s.cand else { return };
        // A draining candidate's slot holds its drain's end (`slot` sets both).
        match s.expires.filter(|_| c.draining) {
            Some(until) => {
                step(&mut self.draining);
                count_in(&mut self.drain_ends, until, add);
            }
            None => {
                let g = c.group();
                if self.group_ready.len() <= g {
                    self.group_ready.resize(g + 1, 0);
                    self.group_weight.resize(g + 1, 0);
                }
                step(&mut self.group_ready[g]);
                self.reweigh(g, 0, c.weight, add);
            }
        }
    }

    /// A serving endpoint of group `g` moved from weight `from` to `to` (`add`), or the
    /// reverse.
    fn reweigh(&mut self, g: usize, from: u32, to: u32, add: bool) {
        let w = &mut self.group_weight[g];
        let (plus, minus) = if add { (to, from) } else { (from, to) };
        *w = *w + u64::from(plus) - u64::from(minus);
    }
}

fn count_in(set: &mut BTreeMap<i64, u32>, key: i64, add: bool) {
    if add {
        *set.entry(key).or_default() += 1;
    } else if let Some(n) = set.get_mut(&key) {
        *n -= 1;
        if *n == 0 {
            set.remove(&key);
        }
    }
}

fn name_in(set: &mut BTreeSet<SmolStr>, name: &SmolStr, add: bool) {
    if add {
        set.insert(name.clone());
    } else {
        set.remove(name);
    }
}

/// A pod's load factor in `factors` (1 when it has none).
fn factor(factors: &Factors, pod: &str) -> f64 {
    factors.get(pod).map_or(1.0, |w| f64::from(w.factor))
}

/// The load figures a pod's record carries.
fn figures(factors: &Factors, pod: &str) -> Option<Arc<LoadFigures>> {
    factors.get(pod).and_then(|w| w.figures.clone())
}

impl Tracker {
    /// A pod's load factor (1 when it is not weighed by load).
    pub fn factor(&self, pod: &str) -> f64 {
        factor(&self.factors, pod)
    }

    /// Takes the load factors in force; returns the pods whose factor changed, whose records
    /// the next [`Tracker::update`] must be given. Figures alone change no pod: a record takes
    /// the latest when it is rebuilt anyway.
    pub fn set_factors(&mut self, factors: Arc<Factors>) -> Vec<SmolStr> {
        if Arc::ptr_eq(&factors, &self.factors) {
            return Vec::new();
        }
        let old = std::mem::replace(&mut self.factors, factors);
        let new = &self.factors;
        let mut changed: Vec<SmolStr> = old
            .keys()
            .chain(new.keys().filter(|n| !old.contains_key(*n)))
            .filter(|n| factor(&old, n) != factor(new, n))
            .cloned()
            .collect();
        changed.sort_unstable();
        changed
    }

    /// The desired state over `pods`.
    pub fn build<'a>(
        reg: &Registration,
        pods: impl IntoIterator<Item = &'a PodInfo>,
        nodes: &HashMap<String, NodeInfo>,
        now_ms: i64,
    ) -> Tracker {
        Tracker::build_weighed(reg, pods, nodes, now_ms, Arc::default())
    }

    /// The desired state over `pods`, their weights under the load `factors`.
    pub fn build_weighed<'a>(
        reg: &Registration,
        pods: impl IntoIterator<Item = &'a PodInfo>,
        nodes: &HashMap<String, NodeInfo>,
        now_ms: i64,
        factors: Arc<Factors>,
    ) -> Tracker {
        let mut t = Tracker {
            factors,
            ..Tracker::default()
        };
        // A pod the resource does not select changes nothing in an empty tracker: skipping it
        // here makes a resource of 100 pods in a namespace of 100,000 cheap to build
        // (`cargo bench --bench reconcile -- reconcile_sparse`).
        let selected = pods.into_iter().filter(|p| reg.selects(p));
        t.update(reg, selected.map(|p| (&*p.name, Some(p))), nodes, now_ms);
        // The slots grew by doubling: as small as holds them.
        t.slots.shrink_to_fit();
        // Inserted in name order, a B-tree splits every full node in two and keeps its nodes
        // about half full; built from sorted entries, they are full. Half the nodes: about
        // 100 B per pod less (examples/memory).
        t.desired.endpoints = std::mem::take(&mut t.desired.endpoints)
            .into_iter()
            .collect();
        t
    }

    /// What ZooKeeper should hold.
    pub fn desired(&self) -> &Desired {
        &self.desired
    }

    /// When the result changes with no pod changing (the earliest end of a drain), Unix ms.
    pub fn next_wakeup_ms(&self) -> Option<i64> {
        self.next_expiry
    }

    /// Gives up the tracking state.
    pub fn into_desired(self) -> Desired {
        self.desired
    }

    /// The endpoints whose record may have changed since [`Tracker::published`] was last
    /// called (a superset: added, removed, rebuilt or re-weighed); `None` when it never was, or
    /// when the whole state must be compared.
    pub fn unpublished(&self) -> Option<&BTreeSet<SmolStr>> {
        self.unpublished.as_ref()
    }

    /// ZooKeeper now holds exactly [`Tracker::desired`]: later changes are tracked from here.
    pub fn published(&mut self) {
        self.unpublished = Some(BTreeSet::new());
    }

    /// ZooKeeper holds something else than [`Tracker::desired`] (the keep-last guard's
    /// endpoints): the next write compares everything.
    pub fn unpublished_all(&mut self) {
        self.unpublished = None;
    }

    /// Applies changed pods: `(name, Some(pod))` for a pod added or changed, `(name, None)` for
    /// one gone. Unchanged pods must be the ones seen before, under the same `reg` and `nodes`.
    /// Drains that ended by `now_ms` are applied too. Returns how many records were rebuilt.
    pub fn update<'a>(
        &mut self,
        reg: &Registration,
        changed: impl IntoIterator<Item = (&'a str, Option<&'a PodInfo>)>,
        nodes: &HashMap<String, NodeInfo>,
        now_ms: i64,
    ) -> usize {
        let mut touched = vec![false; reg.groups.len() + 1];
        // Names are clones of the pod's own (`PodInfo::name`): one copy of a long name, shared.
        let mut rebuild: Vec<Rebuild<'a>> = self.expire(now_ms);
        let mut selection = Selection::default();
        for (name, pod) in changed {
            let shared = pod.map_or_else(|| SmolStr::new(name), |p| p.name.clone());
            let new = pod.and_then(|p| {
                let group = selection.group_of(reg, p)?;
                Some(slot(reg, p, group, nodes, now_ms, self.factor(&p.name)))
            });
            let cand = new.as_ref().and_then(|s| s.cand);
            for c in [self.replace_slot(&shared, new), cand]
                .into_iter()
                .flatten()
            {
                if c.serving() {
                    touched[c.group()] = true;
                }
            }
            rebuild.push((shared, pod, cand));
        }
        let mut reweighed: Vec<(SmolStr, u32)> = Vec::new();
        if let Some(shares) = reg.shares.as_deref() {
            for (g, _) in touched.iter().enumerate().filter(|(_, t)| **t) {
                self.solve(shares, g, &mut reweighed);
            }
        }
        if let Some(unpublished) = self.unpublished.as_mut() {
            let names = rebuild
                .iter()
                .map(|(n, ..)| n)
                .chain(reweighed.iter().map(|(n, _)| n));
            unpublished.extend(names.cloned());
        }
        let mut rebuilt = self.rebuild(reg, &rebuild, nodes);
        let endpoints = &mut self.desired.endpoints;
        for (name, weight) in reweighed {
            if let Some(rec) = endpoints.get_mut(&name)
                && rec.weight != weight
            {
                *rec = Arc::new(PublishedRecord {
                    weight,
                    load: figures(&self.factors, &name),
                    ..(**rec).clone()
                });
                rebuilt += 1;
            }
        }
        self.count(reg);
        rebuilt
    }

    /// Slots whose drain ended by `now_ms` count nothing any more: the endpoints to remove.
    fn expire<'a>(&mut self, now_ms: i64) -> Vec<Rebuild<'a>> {
        let mut gone = Vec::new();
        if self.next_expiry.is_none_or(|d| d > now_ms) {
            return gone;
        }
        for (name, slot) in self.slots.iter_mut() {
            if slot.expires.is_some_and(|u| u <= now_ms) {
                self.totals.apply(name, slot, false);
                // Exactly what `slot` gives for a pod whose drain ended (it counts nothing).
                *slot = Slot {
                    ready: false,
                    cand: None,
                    note: None,
                    expires: None,
                };
                gone.push((name.clone(), None, None));
            }
        }
        gone
    }

    /// Puts pod `name`'s new slot in (`None`: it has none now), moving the totals; returns the
    /// old slot's candidate. One search of the slots.
    fn replace_slot(&mut self, name: &SmolStr, new: Option<Slot>) -> Option<Cand> {
        let old = match (self.slots.entry(name.clone()), new) {
            (SlotEntry::Occupied(mut o), new) => {
                self.totals.apply(name, o.get(), false);
                match new {
                    Some(new) => {
                        self.totals.apply(name, &new, true);
                        Some(o.insert(new))
                    }
                    None => Some(o.swap_remove()),
                }
            }
            (SlotEntry::Vacant(v), Some(new)) => {
                self.totals.apply(name, &new, true);
                v.insert(new);
                None
            }
            (SlotEntry::Vacant(_), None) => None,
        };
        old.and_then(|o| o.cand)
    }

    /// Builds the records of the pods in `rebuild` again (removing those with no candidate);
    /// returns how many changed.
    fn rebuild(
        &mut self,
        reg: &Registration,
        rebuild: &[Rebuild<'_>],
        nodes: &HashMap<String, NodeInfo>,
    ) -> usize {
        let endpoints = &mut self.desired.endpoints;
        let mut rebuilt = 0;
        // The record built last, to share its ports and metadata with the next equal ones.
        let mut last: Option<Arc<PublishedRecord>> = None;
        for (name, pod, cand) in rebuild {
            // With weight groups the solve may have moved the weight since: read it again.
            let cand = match reg.shares {
                Some(_) => self.slots.get(name).and_then(|s| s.cand),
                None => *cand,
            };
            let (Some(pod), Some(c)) = (pod, cand) else {
                endpoints.remove(name);
                continue;
            };
            let status = if c.serving() {
                EndpointStatus::Up
            } else {
                EndpointStatus::Draining
            };
            let ports = (c.container_port, c.port);
            let group = reg.group_name(c.group());
            let mut record = endpoint_record(reg, pod, ports, c.weight, group, status, nodes);
            if factor(&self.factors, name) != 1.0 {
                record.declared_weight = Some(c.relative);
            }
            record.load = figures(&self.factors, name);
            if let Some(record) = place(endpoints, name, record, last.as_ref()) {
                last = Some(record);
                rebuilt += 1;
            }
        }
        rebuilt
    }

    /// Re-solves group `g`; records the members whose weight moved.
    fn solve(&mut self, shares: &[u32], g: usize, moved: &mut Vec<(SmolStr, u32)>) {
        // One pass over the slots: the group's serving members, each with its candidate.
        let serving: Vec<(&SmolStr, &mut Cand)> = self
            .slots
            .iter_mut()
            .filter_map(|(name, s)| s.cand.as_mut().map(|c| (name, c)))
            .filter(|(_, c)| c.serving() && c.group() == g)
            .collect();
        let members: Vec<Member> = serving
            .iter()
            .map(|(name, c)| Member {
                group: g,
                name,
                relative: effective(c.relative, factor(&self.factors, name)),
            })
            .collect();
        let solved = weights::solve(Some(shares), &members);
        drop(members);
        for ((name, c), w) in serving.into_iter().zip(solved) {
            if c.weight != w {
                self.totals.reweigh(g, c.weight, w, true);
                c.weight = w;
                moved.push((name.clone(), w));
            }
        }
    }

    /// Counts, group totals, the next drain deadline and warnings, from the totals.
    fn count(&mut self, reg: &Registration) {
        let (d, t) = (&mut self.desired, &self.totals);
        let why = |name: &SmolStr, f: fn(&Slot) -> Option<&str>| {
            self.slots
                .get(name)
                .and_then(f)
                .map(str::to_string)
                .unwrap_or_default()
        };
        d.warnings = t
            .warned
            .iter()
            .take(MAX_WARNINGS)
            .map(|n| why(n, Slot::warning))
            .collect();
        if t.warned.len() > MAX_WARNINGS {
            let more = t.warned.len() - MAX_WARNINGS;
            d.warnings.push(format!("and {more} more"));
        }
        d.unresolved = t.unresolved.len() as u32;
        d.unresolved_pods = t
            .unresolved
            .iter()
            .take(MAX_WARNINGS)
            .map(|n| (n.to_string(), why(n, Slot::unresolved)))
            .collect();
        d.matched = self.slots.len() as u32;
        d.ready = t.ready;
        d.draining = t.draining;
        d.next_deadline_ms = t.drain_ends.keys().next().copied();
        self.next_expiry = t.expiries.keys().next().copied();
        let ready = |g: usize| t.group_ready.get(g).copied().unwrap_or(0);
        d.groups = (0..=reg.groups.len())
            .filter(|&g| !(g == reg.groups.len() && !reg.groups.is_empty() && ready(g) == 0))
            .map(|g| GroupStatus {
                name: reg.group_name(g).to_string(),
                ready: ready(g),
                weight: t.group_weight.get(g).copied().unwrap_or(0),
            })
            .collect();
    }

    /// The counts of [`Tracker::count`] walked from the slots: the oracle for the totals.
    #[cfg(test)]
    pub(crate) fn recounted(&self, reg: &Registration) -> Desired {
        let mut d = self.desired.clone();
        let group_count = reg.groups.len() + 1;
        let (mut ready, mut weight) = (vec![0u32; group_count], vec![0u64; group_count]);
        let (mut warnings, mut unresolved) = (Vec::new(), Vec::new());
        let (mut n_ready, mut draining, mut next) = (0, 0, None::<i64>);
        let mut slots: Vec<_> = self.slots.iter().collect();
        slots.sort_unstable_by_key(|(name, _)| *name);
        for (name, s) in slots {
            n_ready += u32::from(s.ready);
            warnings.extend(s.warning().map(str::to_string));
            unresolved.extend(s.unresolved().map(|w| (name.to_string(), w.to_string())));
            match s.cand.map(|c| (c, s.expires.filter(|_| c.draining))) {
                Some((_, Some(until))) => {
                    draining += 1;
                    next = Some(next.map_or(until, |n: i64| n.min(until)));
                }
                Some((c, None)) => {
                    ready[c.group()] += 1;
                    weight[c.group()] += u64::from(c.weight);
                }
                None => {}
            }
        }
        let more = warnings.len().saturating_sub(MAX_WARNINGS);
        warnings.truncate(MAX_WARNINGS);
        if more > 0 {
            warnings.push(format!("and {more} more"));
        }
        (d.ready, d.draining, d.next_deadline_ms) = (n_ready, draining, next);
        (d.matched, d.warnings) = (self.slots.len() as u32, warnings);
        d.unresolved = unresolved.len() as u32;
        unresolved.truncate(MAX_WARNINGS);
        d.unresolved_pods = unresolved;
        d.groups = (0..group_count)
            .filter(|&g| !(g == reg.groups.len() && !reg.groups.is_empty() && ready[g] == 0))
            .map(|g| GroupStatus {
                name: reg.group_name(g).to_string(),
                ready: ready[g],
                weight: weight[g],
            })
            .collect();
        d
    }
}
