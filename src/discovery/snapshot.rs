//! The immutable view a client picks from: the service record, every endpoint, the balancer,
//! and whether the view may be out of date. Built off the hot path; never talks to ZooKeeper.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::balance::shape::ZonePreference;
use super::balance::{Balancer, Shaping, ring};
use super::endpoint::{Endpoint, PickContext, Picked};
use crate::model::policy::Policy;
use crate::model::record::{EndpointRecord, ServiceRecord};

/// Why a snapshot may no longer match the registry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Staleness {
    /// Read from a live session; every change seen so far is applied.
    #[default]
    Fresh,
    /// ZooKeeper is unreachable (disconnected, session lost, or not reached yet); this is the
    /// last view read before that.
    Unreachable,
    /// The registry lost every pickable endpoint in one step; fail-static kept the last view
    /// that had some, on the bet that a wholesale disappearance is an accident, not a scale-down.
    Emptied,
    /// The operator flagged the service record `stale`: rather than publish no endpoints at all,
    /// it kept the last known ones (its opt-in `keepLastEndpoints` guard).
    KeptByOperator,
}

/// What the registry holds under one service path, as read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Registry {
    /// The record at `<path>`; `None` when the node is missing or unreadable.
    pub service: Option<ServiceRecord>,
    /// The records under `<path>/endpoints`, by znode name.
    pub endpoints: BTreeMap<String, EndpointRecord>,
}

/// Immutable once built; replaced whole when anything changes.
#[derive(Debug)]
pub struct Snapshot {
    service: Option<Arc<ServiceRecord>>,
    endpoints: Arc<[Arc<Endpoint>]>,
    balancer: Arc<Balancer>,
    staleness: Staleness,
    revision: u64,
    /// How the balancer was built, so a rebuild (a registry change or a warm-up step) builds
    /// the same way.
    vnodes: u32,
    zone: Option<Arc<ZonePreference>>,
    /// Built with the declared weights: the service record's load heartbeat had expired.
    declared: bool,
}

/// The record as a client weighs it once the operator stopped vouching for load-derived
/// weights: its declared weight again.
fn as_declared(record: &EndpointRecord) -> EndpointRecord {
    match record.declared_weight {
        Some(w) if record.weight > 0 => EndpointRecord {
            weight: w,
            ..record.clone()
        },
        _ => record.clone(),
    }
}

impl Snapshot {
    /// A snapshot with nothing in it: what a client holds before its first read.
    pub fn empty(policy: Policy) -> Snapshot {
        Snapshot {
            service: None,
            endpoints: Arc::from(Vec::new()),
            balancer: Arc::new(Balancer::new(policy, &[])),
            staleness: Staleness::Fresh,
            revision: 0,
            vnodes: ring::DEFAULT_VNODES,
            zone: None,
            declared: false,
        }
    }

    /// Builds a fresh snapshot from what was read, following `pinned` if set and the service
    /// record's policy otherwise. Endpoints carried over from `previous` keep their in-flight
    /// counts, so LeastRequest does not forget running requests when anything else changes.
    pub fn build(
        registry: &Registry,
        pinned: Option<Policy>,
        previous: Option<&Snapshot>,
    ) -> Snapshot {
        Snapshot::build_with_vnodes(registry, pinned, previous, ring::DEFAULT_VNODES)
    }

    /// [`Snapshot::build`] with a chosen number of ring points per endpoint. The zone preference
    /// is `previous`'s, and weights are ramped for the current time.
    pub fn build_with_vnodes(
        registry: &Registry,
        pinned: Option<Policy>,
        previous: Option<&Snapshot>,
        vnodes: u32,
    ) -> Snapshot {
        let zone = previous.and_then(|p| p.zone.clone());
        Snapshot::build_at(registry, pinned, previous, vnodes, zone, crate::now_ms())
    }

    /// The full form: ring points per endpoint, the caller's zone preference, and the time
    /// (Unix ms) weights are ramped for when the service record sets a warm-up.
    pub fn build_at(
        registry: &Registry,
        pinned: Option<Policy>,
        previous: Option<&Snapshot>,
        vnodes: u32,
        zone: Option<Arc<ZonePreference>>,
        now_ms: i64,
    ) -> Snapshot {
        let counters: HashMap<&str, &Arc<Endpoint>> = previous
            .map(|p| p.endpoints.iter().map(|e| (e.name(), e)).collect())
            .unwrap_or_default();
        let declared = registry
            .service
            .as_ref()
            .and_then(|s| s.load.as_ref())
            .is_some_and(|l| l.expired(now_ms));
        let endpoints: Arc<[Arc<Endpoint>]> = registry
            .endpoints
            .iter()
            .map(|(name, record)| {
                (
                    name,
                    if declared {
                        as_declared(record)
                    } else {
                        record.clone()
                    },
                )
            })
            .map(|(name, record)| match counters.get(name.as_str()) {
                Some(old) if *old.record() == record => Arc::clone(old),
                Some(old) => Arc::new(Endpoint::with_load(name, record, Arc::clone(old.load()))),
                None => Arc::new(Endpoint::new(name, record)),
            })
            .collect();
        let policy = pinned
            .or(registry.service.as_ref().map(|s| s.policy))
            .unwrap_or_default();
        let service = registry.service.clone().map(Arc::new);
        let staleness = match &registry.service {
            Some(service) if service.stale => Staleness::KeptByOperator,
            _ => Staleness::Fresh,
        };
        let mut snapshot = Snapshot {
            service,
            endpoints,
            balancer: Arc::new(Balancer::new(policy, &[])),
            staleness,
            revision: previous.map_or(1, |p| p.revision + 1),
            vnodes,
            zone,
            declared,
        };
        snapshot.balancer =
            Arc::new(snapshot.balance(policy, previous.map(|p| &*p.balancer), now_ms));
        snapshot
    }

    fn balance(&self, policy: Policy, previous: Option<&Balancer>, now_ms: i64) -> Balancer {
        let warmup_s = self.service.as_ref().map_or(0, |s| s.warmup_seconds);
        let shaping = Shaping {
            warmup_ms: i64::from(warmup_s) * 1000,
            now_ms,
            zone: self.zone.as_deref(),
        };
        Balancer::shaped(policy, &self.endpoints, self.vnodes, previous, shaping)
    }

    /// When a warming endpoint's weight next moves (Unix ms), so the holder can call
    /// [`Snapshot::restepped`] then; `None` while nothing warms (the common case: picks never
    /// look at a clock).
    /// Also when the service record's load heartbeat expires, if it has not yet: the
    /// declared weights apply from then.
    pub fn next_step_ms(&self) -> Option<i64> {
        let expiry = self.load_expiry_ms().filter(|_| !self.declared);
        match (self.balancer.next_step_ms(), expiry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn load_expiry_ms(&self) -> Option<i64> {
        let mark = self.service.as_ref()?.load.as_ref()?;
        Some(mark.updated_ms + i64::from(mark.expire_seconds) * 1000 + 1)
    }

    /// The same endpoints with the balancer rebuilt for `now_ms` (the next warm-up step).
    pub fn restepped(&self, now_ms: i64) -> Snapshot {
        if !self.declared && self.load_expiry_ms().is_some_and(|at| at <= now_ms) {
            return self.with_declared_weights(now_ms);
        }
        Snapshot {
            service: self.service.clone(),
            endpoints: Arc::clone(&self.endpoints),
            balancer: Arc::new(self.balance(self.policy(), Some(&self.balancer), now_ms)),
            staleness: self.staleness,
            revision: self.revision + 1,
            vnodes: self.vnodes,
            zone: self.zone.clone(),
            declared: self.declared,
        }
    }

    /// The same endpoints weighed as declared (the load heartbeat expired), in-flight counts
    /// kept.
    fn with_declared_weights(&self, now_ms: i64) -> Snapshot {
        let endpoints: Arc<[Arc<Endpoint>]> = self
            .endpoints
            .iter()
            .map(|e| {
                let record = as_declared(e.record());
                Arc::new(Endpoint::with_load(e.name(), record, Arc::clone(e.load())))
            })
            .collect();
        let mut next = Snapshot {
            service: self.service.clone(),
            endpoints,
            balancer: Arc::clone(&self.balancer),
            staleness: self.staleness,
            revision: self.revision + 1,
            vnodes: self.vnodes,
            zone: self.zone.clone(),
            declared: true,
        };
        next.balancer = Arc::new(next.balance(self.policy(), Some(&self.balancer), now_ms));
        next
    }

    /// Whether the weights are the declared ones because the load heartbeat expired.
    pub fn declared_weights(&self) -> bool {
        self.declared
    }

    /// The same view, marked as possibly out of date.
    pub fn marked(&self, staleness: Staleness) -> Snapshot {
        Snapshot {
            service: self.service.clone(),
            endpoints: Arc::clone(&self.endpoints),
            balancer: Arc::clone(&self.balancer),
            staleness,
            revision: self.revision + 1,
            vnodes: self.vnodes,
            zone: self.zone.clone(),
            declared: self.declared,
        }
    }

    /// The service record, when the service node exists and parses.
    pub fn service(&self) -> Option<&ServiceRecord> {
        self.service.as_deref()
    }

    /// Every endpoint read, DRAINING and weight-0 ones included, in znode name order.
    pub fn endpoints(&self) -> &[Arc<Endpoint>] {
        &self.endpoints
    }

    /// The endpoints a pick can return.
    pub fn pickable(&self) -> &[Arc<Endpoint>] {
        self.balancer.targets()
    }

    /// The policy picks follow: the pinned one, else the service record's, else RoundRobin.
    pub fn policy(&self) -> Policy {
        self.balancer.policy()
    }

    /// Why this view may be out of date, if it may.
    pub fn staleness(&self) -> Staleness {
        self.staleness
    }

    /// True unless the view was read from a live session and is complete.
    pub fn is_stale(&self) -> bool {
        self.staleness != Staleness::Fresh
    }

    /// Grows by one with each published snapshot of a client; 0 before the first read.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Picks one endpoint by the snapshot's policy; `None` when nothing is pickable.
    #[inline]
    pub fn pick(&self, ctx: &PickContext<'_>) -> Option<Picked> {
        self.balancer.pick(ctx)
    }

    /// The balancer, for callers that want to pick with their own random source.
    pub fn balancer(&self) -> &Balancer {
        &self.balancer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::record::EndpointStatus;

    fn record(i: usize, weight: u32) -> EndpointRecord {
        EndpointRecord {
            host: format!("10.0.0.{i}"),
            port: 80,
            ports: Default::default(),
            weight,
            declared_weight: None,
            load: None,
            group: "default".into(),
            zone: None,
            node: None,
            pod: format!("web-{i}"),
            namespace: "shop".into(),
            metadata: Default::default(),
            status: EndpointStatus::Up,
            ready_since_ms: 0,
        }
    }

    #[test]
    fn a_record_the_operator_marked_stale_makes_a_stale_snapshot() {
        let mut reg = registry(Policy::RoundRobin, &[1]);
        assert!(!Snapshot::build(&reg, None, None).is_stale());
        reg.service.as_mut().unwrap().stale = true;
        let snapshot = Snapshot::build(&reg, None, None);
        assert_eq!(snapshot.staleness(), Staleness::KeptByOperator);
        assert_eq!(
            snapshot.pickable().len(),
            1,
            "the kept endpoints are still picked"
        );
    }

    fn registry(policy: Policy, weights: &[u32]) -> Registry {
        Registry {
            // From JSON, as the operator writes it: fields added later default as in production.
            service: Some(
                serde_json::from_value(serde_json::json!({
                    "serviceName": "web",
                    "policy": policy,
                    "owner": {"clusterId": "c", "namespace": "shop", "name": "web", "uid": "u"},
                    "generation": 1,
                }))
                .unwrap(),
            ),
            endpoints: weights
                .iter()
                .enumerate()
                .map(|(i, &w)| (format!("web-{i}"), record(i, w)))
                .collect(),
        }
    }

    #[test]
    fn load_weights_fall_back_to_declared_when_the_heartbeat_expires() {
        use crate::model::record::LoadMark;
        let mut reg = registry(Policy::WeightedRoundRobin, &[30, 170]);
        for (i, e) in reg.endpoints.values_mut().enumerate() {
            e.declared_weight = Some(100 + i as u32);
        }
        let mark = LoadMark {
            reason: "UnevenCapacity".into(),
            updated_ms: 1_000,
            expire_seconds: 60,
        };
        reg.service.as_mut().unwrap().load = Some(mark);
        let weights = |s: &Snapshot| -> Vec<u32> {
            s.endpoints().iter().map(|e| e.record().weight).collect()
        };
        let fresh = Snapshot::build_at(&reg, None, None, ring::DEFAULT_VNODES, None, 2_000);
        assert_eq!(
            weights(&fresh),
            [30, 170],
            "the operator vouches for the load weights"
        );
        assert!(!fresh.declared_weights());
        let due = fresh
            .next_step_ms()
            .expect("a rebuild is due when the heartbeat expires");
        assert_eq!(due, 61_001);
        let later = fresh.restepped(due);
        assert_eq!(
            weights(&later),
            [100, 101],
            "declared weights once the heartbeat is stale"
        );
        assert!(later.declared_weights() && later.next_step_ms().is_none());
        let cold = Snapshot::build_at(&reg, None, None, ring::DEFAULT_VNODES, None, 70_000);
        assert_eq!(
            weights(&cold),
            [100, 101],
            "a snapshot built late is declared from the start"
        );
    }

    #[test]
    fn policy_comes_from_the_record_unless_pinned() {
        let reg = registry(Policy::WeightedRandom, &[1, 2]);
        assert_eq!(
            Snapshot::build(&reg, None, None).policy(),
            Policy::WeightedRandom
        );
        assert_eq!(
            Snapshot::build(&reg, Some(Policy::Random), None).policy(),
            Policy::Random
        );
        let no_record = Registry {
            service: None,
            ..reg
        };
        assert_eq!(
            Snapshot::build(&no_record, None, None).policy(),
            Policy::RoundRobin
        );
    }

    #[test]
    fn in_flight_counts_survive_rebuilds() {
        let first = Snapshot::build(&registry(Policy::LeastRequest, &[1, 1]), None, None);
        let running = first.pick(&PickContext::default()).unwrap();
        let name = running.name().to_string();
        // Weight change: a new Endpoint value, the same counter.
        let second = Snapshot::build(&registry(Policy::LeastRequest, &[5, 5]), None, Some(&first));
        let same = second
            .endpoints()
            .iter()
            .find(|e| e.name() == name)
            .unwrap();
        assert_eq!(same.in_flight(), 1);
        assert_eq!(second.revision(), first.revision() + 1);
        // And the new balancer sees it: of two endpoints, the idle one wins every pick.
        for _ in 0..20 {
            let next = second.pick(&PickContext::default()).unwrap();
            assert_ne!(next.name(), name);
        }
        drop(running);
        assert_eq!(same.in_flight(), 0);
    }

    #[test]
    fn a_warm_up_is_stepped_by_rebuilds_not_by_picks() {
        const READY: i64 = 1_767_225_600_000;
        let mut reg = registry(Policy::WeightedRandom, &[100, 100]);
        reg.service.as_mut().unwrap().warmup_seconds = 60;
        reg.endpoints.get_mut("web-1").unwrap().ready_since_ms = READY;
        let first = Snapshot::build_at(&reg, None, None, 16, None, READY + 1_000);
        assert_eq!(first.next_step_ms(), Some(READY + 3_000));
        let later = first.restepped(READY + 3_000);
        assert_eq!(later.next_step_ms(), Some(READY + 6_000));
        assert_eq!(later.revision(), first.revision() + 1);
        assert!(Arc::ptr_eq(&first.endpoints, &later.endpoints));
        let done = later.restepped(READY + 60_000);
        assert_eq!(
            done.next_step_ms(),
            None,
            "warm-up over: nothing more to do"
        );
        reg.service.as_mut().unwrap().warmup_seconds = 0;
        let off = Snapshot::build_at(&reg, None, None, 16, None, READY + 1_000);
        assert_eq!(off.next_step_ms(), None, "warmupSeconds 0: no ramp at all");
    }

    #[test]
    fn the_zone_preference_carries_over_to_later_builds() {
        let mut reg = registry(Policy::RoundRobin, &[1, 1, 1]);
        for (i, rec) in reg.endpoints.values_mut().enumerate() {
            rec.zone = Some(if i == 0 { "a" } else { "b" }.into());
        }
        let pref = Arc::new(ZonePreference::new("a"));
        let first = Snapshot::build_at(&reg, None, None, 16, Some(pref), 0);
        assert_eq!(first.pickable().len(), 1);
        let second = Snapshot::build(&reg, None, Some(&first));
        assert_eq!(second.pickable().len(), 1);
        assert_eq!(second.pickable()[0].record().zone.as_deref(), Some("a"));
        assert_eq!(Snapshot::build(&reg, None, None).pickable().len(), 3);
    }

    #[test]
    fn unchanged_endpoints_are_shared_not_copied() {
        let reg = registry(Policy::RoundRobin, &[1, 1, 1]);
        let first = Snapshot::build(&reg, None, None);
        let second = Snapshot::build(&reg, None, Some(&first));
        for (a, b) in first.endpoints().iter().zip(second.endpoints()) {
            assert!(Arc::ptr_eq(a, b));
        }
        let stale = second.marked(Staleness::Unreachable);
        assert!(stale.is_stale() && !second.is_stale());
        assert_eq!(stale.pickable().len(), 3);
    }
}
