//! The keep-last guard (`spec.keepLastEndpoints`): when no selected pod is ready any more, the
//! last pickable endpoints stay published, marked stale, instead of the service emptying. Pure.

use std::collections::BTreeMap;
use std::sync::Arc;

use smol_str::SmolStr;

use super::record::PublishedRecord;

/// Endpoint records by name.
pub type Endpoints = BTreeMap<SmolStr, Arc<PublishedRecord>>;

/// Does the guard have to look at what is published? Only when it is on and nothing desired
/// can be picked.
pub fn engaged(enabled: bool, desired: &Endpoints) -> bool {
    enabled && !desired.values().any(|e| e.pickable())
}

/// What to publish instead of `desired` while the guard is engaged: the published pickable
/// endpoints, when there are any (the service record is then marked stale).
pub fn keep(published_pickable: Endpoints) -> Option<Endpoints> {
    (!published_pickable.is_empty()).then_some(published_pickable)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::record::EndpointStatus;

    fn ep(weight: u32, status: EndpointStatus) -> Arc<PublishedRecord> {
        Arc::new(PublishedRecord {
            host: "10.0.0.1".into(),
            port: 80,
            ports: Default::default(),
            weight,
            declared_weight: None,
            load: None,
            group: "default".into(),
            zone: None,
            node: None,
            pod: "p".into(),
            namespace: "n".into(),
            metadata: Default::default(),
            status,
            ready_since_ms: 0,
        })
    }

    #[test]
    fn the_guard_engages_only_when_on_and_nothing_desired_is_pickable() {
        let up: Endpoints = [("a".into(), ep(5, EndpointStatus::Up))].into();
        let draining: Endpoints = [("a".into(), ep(0, EndpointStatus::Draining))].into();
        assert!(!engaged(true, &up));
        assert!(engaged(true, &draining));
        assert!(engaged(true, &Endpoints::new()));
        assert!(!engaged(false, &Endpoints::new()));
        assert_eq!(
            keep(Endpoints::new()),
            None,
            "nothing to keep: the service empties"
        );
        assert_eq!(keep(up.clone()), Some(up));
    }
}
