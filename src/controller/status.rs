//! Builds a resource's status from the outcome of a reconcile. Pure: the caller patches it.
//! Conditions keep their lastTransitionTime while their status stays the same.

use crate::crd::{Condition, GroupStatus, ServiceRegistrationStatus};

/// How the reconcile ended, as the user should see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// ZooKeeper holds the desired state.
    Synced,
    /// The spec cannot be acted on.
    InvalidSpec(String),
    /// The path is refused.
    PathRefused(String),
    /// `spec.address` cannot be used as it stands (e.g. a NodePort Service that is not
    /// `externalTrafficPolicy: Local`).
    AddressRefused(String),
    /// No RegistryPolicy grants the resource's namespace what it asks to publish.
    PolicyRefused(String),
    /// Another owner holds the path.
    Conflict(String),
    /// No ZooKeeper session.
    ZooKeeperUnavailable(String),
    /// A write failed.
    WriteFailed(String),
    /// `spec.suspend` is set.
    Suspended,
}

/// Counts that go on the status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Matched pods.
    pub matched: u32,
    /// Ready pods.
    pub ready: u32,
    /// Endpoints in ZooKeeper.
    pub published: u32,
    /// Draining endpoints in ZooKeeper.
    pub draining: u32,
    /// Per group.
    pub groups: Vec<GroupStatus>,
    /// Notes about pods left out.
    pub warnings: Vec<String>,
    /// Per registry of `spec.registries`.
    pub registries: Vec<crate::crd::RegistryStatus>,
    /// Ready pods left out because their address cannot be resolved.
    pub unresolved: u32,
    /// The first few of them.
    pub unresolved_addresses: Vec<crate::crd::UnresolvedAddress>,
}

fn cond(type_: &str, ok: bool, reason: &str, message: String) -> Condition {
    Condition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.into(),
        message,
        last_transition_time: None,
        observed_generation: None,
    }
}

/// The new status. `prev` supplies transition times and, when this outcome says nothing about
/// counts (e.g. ZooKeeper down), the last known counts.
pub fn build(
    prev: Option<&ServiceRegistrationStatus>,
    generation: Option<i64>,
    outcome: &Outcome,
    counts: Option<&Counts>,
    path: Option<&str>,
    now: &str,
) -> ServiceRegistrationStatus {
    let zk_ok = !matches!(outcome, Outcome::ZooKeeperUnavailable(_));
    let (synced_ok, synced_reason, synced_msg) = match outcome {
        Outcome::Synced => (
            true,
            "Synced",
            "ZooKeeper holds the desired endpoints".to_string(),
        ),
        Outcome::InvalidSpec(m) => (false, "InvalidSpec", m.clone()),
        Outcome::PathRefused(m) => (false, "PathRefused", m.clone()),
        Outcome::AddressRefused(m) => (false, "AddressRefused", m.clone()),
        Outcome::PolicyRefused(m) => (false, "PolicyRefused", m.clone()),
        Outcome::Conflict(m) => (false, "Conflict", m.clone()),
        Outcome::ZooKeeperUnavailable(m) => (false, "ZooKeeperUnavailable", m.clone()),
        Outcome::WriteFailed(m) => (false, "WriteFailed", m.clone()),
        Outcome::Suspended => (
            false,
            "Suspended",
            "spec.suspend is true: nothing is written, what is there stays".to_string(),
        ),
    };
    let mut status = match (counts, prev) {
        (Some(c), _) => ServiceRegistrationStatus {
            matched: c.matched,
            ready: c.ready,
            published: c.published,
            draining: c.draining,
            groups: c.groups.clone(),
            registries: c.registries.clone(),
            unresolved: c.unresolved,
            unresolved_addresses: c.unresolved_addresses.clone(),
            ..Default::default()
        },
        (None, Some(p)) => ServiceRegistrationStatus {
            conditions: Vec::new(),
            ..p.clone()
        },
        (None, None) => ServiceRegistrationStatus::default(),
    };
    status.observed_generation = generation;
    status.path = path.map(str::to_string).or(status.path);
    let ready_endpoints = status.published.saturating_sub(status.draining);
    let (ready_ok, ready_reason, ready_msg) = if !synced_ok {
        (false, synced_reason, synced_msg.clone())
    } else if ready_endpoints == 0 {
        (
            false,
            "NoReadyEndpoints",
            "no selected pod is ready".to_string(),
        )
    } else {
        let mut msg = format!("{ready_endpoints} ready endpoint(s) published");
        if let Some(c) = counts.filter(|c| !c.warnings.is_empty()) {
            msg.push_str("; ");
            msg.push_str(&c.warnings.join("; "));
        }
        (true, "EndpointsPublished", msg)
    };
    let conflict = match outcome {
        Outcome::Conflict(m) => cond("Conflict", true, "PathOwnedElsewhere", m.clone()),
        _ => cond("Conflict", false, "NoConflict", String::new()),
    };
    let zk = if zk_ok {
        cond("ZooKeeperAvailable", true, "Connected", String::new())
    } else {
        cond(
            "ZooKeeperAvailable",
            false,
            "Unavailable",
            synced_msg.clone(),
        )
    };
    let mut conditions = vec![
        cond("Ready", ready_ok, ready_reason, ready_msg),
        cond("Synced", synced_ok, synced_reason, synced_msg),
        zk,
        conflict,
    ];
    for c in &mut conditions {
        c.observed_generation = generation;
        let before = prev.and_then(|p| p.conditions.iter().find(|o| o.type_ == c.type_));
        c.last_transition_time = match before {
            Some(b) if b.status == c.status => b.last_transition_time.clone(),
            _ => Some(now.to_string()),
        };
    }
    status.conditions = conditions;
    status.last_sync_time = if synced_ok {
        Some(now.to_string())
    } else {
        prev.and_then(|p| p.last_sync_time.clone())
    };
    status
}

/// Equal apart from timestamps: no need to patch.
pub fn same(a: &ServiceRegistrationStatus, b: &ServiceRegistrationStatus) -> bool {
    let strip = |s: &ServiceRegistrationStatus| {
        let mut s = s.clone();
        s.last_sync_time = None;
        // Patched on its own, before and after a move ([`super::reconcile`]'s place step).
        s.placement_intents = Vec::new();
        for c in &mut s.conditions {
            c.last_transition_time = None;
        }
        s
    };
    strip(a) == strip(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(published: u32) -> Counts {
        Counts {
            matched: 3,
            ready: published,
            published,
            ..Default::default()
        }
    }

    fn get<'a>(s: &'a ServiceRegistrationStatus, t: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == t).unwrap()
    }

    #[test]
    fn synced_with_endpoints_is_ready() {
        let s = build(
            None,
            Some(2),
            &Outcome::Synced,
            Some(&counts(2)),
            Some("/p/a"),
            "T1",
        );
        assert_eq!(get(&s, "Ready").status, "True");
        assert_eq!(get(&s, "Synced").status, "True");
        assert_eq!(get(&s, "Conflict").status, "False");
        assert_eq!(s.path.as_deref(), Some("/p/a"));
        assert_eq!(s.observed_generation, Some(2));
        assert_eq!(s.last_sync_time.as_deref(), Some("T1"));
    }

    #[test]
    fn transition_times_are_kept_while_status_holds() {
        let a = build(
            None,
            Some(1),
            &Outcome::Synced,
            Some(&counts(2)),
            None,
            "T1",
        );
        let b = build(
            Some(&a),
            Some(1),
            &Outcome::Synced,
            Some(&counts(3)),
            None,
            "T2",
        );
        assert_eq!(get(&b, "Ready").last_transition_time.as_deref(), Some("T1"));
        assert!(!same(&a, &b), "counts changed");
        let c = build(
            Some(&b),
            Some(1),
            &Outcome::ZooKeeperUnavailable("down".into()),
            None,
            None,
            "T3",
        );
        assert_eq!(get(&c, "ZooKeeperAvailable").status, "False");
        assert_eq!(
            get(&c, "ZooKeeperAvailable")
                .last_transition_time
                .as_deref(),
            Some("T3")
        );
        assert_eq!(c.published, 3, "last known counts kept");
        assert_eq!(c.last_sync_time.as_deref(), Some("T2"));
    }

    #[test]
    fn conflict_and_no_endpoints_are_not_ready() {
        let s = build(
            None,
            None,
            &Outcome::Conflict("owned by x".into()),
            None,
            None,
            "T",
        );
        assert_eq!(get(&s, "Conflict").status, "True");
        assert_eq!(get(&s, "Ready").reason, "Conflict");
        let s = build(None, None, &Outcome::Synced, Some(&counts(0)), None, "T");
        assert_eq!(get(&s, "Ready").reason, "NoReadyEndpoints");
    }
}
