//! What an import reconcile reports: the status (conditions, counts, providers left out) and
//! its Events, computed from the outcome. Pure; reconcile.rs sends them.

use super::folder::{Place, Snapshot};
use crate::crd::Condition;
use crate::crd::RegistryImport;
use crate::crd::registry_import::{LeftOutProvider, RegistryImportStatus};
use crate::model::import::Selection;

/// Providers left out named on the status; the count covers all of them.
const LEFT_OUT_SHOWN: usize = 10;

/// How a reconcile ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The namespace may not use the ensemble.
    Refused(String),
    /// The folder was never read (ZooKeeper unreachable since the start).
    Waiting,
    /// A Service of that name exists without podkeeper's label for this import.
    ServiceNotOurs,
    /// The slices hold the selection.
    Synced {
        /// What was imported and left out.
        selection: Selection,
        /// Slices in place.
        slices: usize,
        /// Slices created, replaced or deleted now.
        touched: usize,
    },
}

/// The outcome with what the folder task knows.
#[derive(Debug, Clone)]
pub struct Report {
    outcome: Outcome,
    path: Option<String>,
    unavailable: Option<String>,
    stale_since: Option<String>,
}

impl Report {
    /// A report of `outcome` for the folder at `place`.
    pub fn new(outcome: Outcome, place: Option<&Place>, snap: &Snapshot) -> Report {
        Report {
            outcome,
            path: place.map(|p| p.providers.clone()),
            unavailable: snap.unavailable.clone(),
            stale_since: snap.stale_since.clone(),
        }
    }

    /// Requeue slowly (nothing will wake it sooner but an edit)?
    pub fn retry_slowly(&self) -> bool {
        matches!(
            self.outcome,
            Outcome::Refused(_) | Outcome::ServiceNotOurs | Outcome::Waiting
        )
    }

    /// The new status, keeping what this outcome does not know from the old one.
    pub fn status(&self, ri: &RegistryImport) -> RegistryImportStatus {
        let old = ri.status.clone().unwrap_or_default();
        let now = chrono::Utc::now().to_rfc3339();
        let mut s = RegistryImportStatus {
            observed_generation: ri.metadata.generation,
            path: self.path.clone().or(old.path.clone()),
            stale_since: self.stale_since.clone(),
            ..old.clone()
        };
        if let Outcome::Synced {
            selection,
            slices,
            touched,
        } = &self.outcome
        {
            s.seen = selection.seen as u32;
            s.imported = selection.endpoints.len() as u32;
            s.left_out = selection.left_out.len() as u32;
            s.left_out_providers = selection
                .left_out
                .iter()
                .take(LEFT_OUT_SHOWN)
                .map(|(p, why)| LeftOutProvider {
                    provider: p.clone(),
                    reason: why.to_string(),
                })
                .collect();
            s.slices = *slices as u32;
            if *touched > 0 || old.last_sync_time.is_none() {
                s.last_sync_time = Some(now.clone());
            }
        }
        s.conditions = vec![
            condition(&old, "Ready", self.ready(), ri, &now),
            condition(&old, "ZooKeeperAvailable", self.zookeeper(), ri, &now),
        ];
        s
    }

    /// (status, reason, message) of Ready.
    fn ready(&self) -> (&'static str, &'static str, String) {
        match &self.outcome {
            Outcome::Refused(why) => ("False", "PolicyRefused", why.clone()),
            Outcome::ServiceNotOurs => (
                "False",
                "ServiceNotOurs",
                "a Service of this name exists without the podkeeper.io/import label naming this resource; it is left alone".into(),
            ),
            Outcome::Waiting => (
                "False",
                "WaitingForZooKeeper",
                "the folder was not read yet".into(),
            ),
            Outcome::Synced { selection, .. } => match &self.unavailable {
                Some(_) => (
                    "False",
                    "ZooKeeperUnavailable",
                    "the slices keep the last providers read".into(),
                ),
                None => (
                    "True",
                    "Synced",
                    format!(
                        "{} endpoint(s) from {} provider(s), {} left out",
                        selection.endpoints.len(),
                        selection.seen,
                        selection.left_out.len()
                    ),
                ),
            },
        }
    }

    /// (status, reason, message) of ZooKeeperAvailable.
    fn zookeeper(&self) -> (&'static str, &'static str, String) {
        if let Outcome::Refused(_) = self.outcome {
            return ("Unknown", "PolicyRefused", "not connected".into());
        }
        match (&self.unavailable, &self.stale_since) {
            (Some(why), since) => (
                "False",
                "Unavailable",
                format!(
                    "{why}; slices stale since {}",
                    since.as_deref().unwrap_or("now")
                ),
            ),
            (None, _) if self.outcome == Outcome::Waiting => {
                ("Unknown", "Connecting", "not read yet".into())
            }
            (None, _) => ("True", "Reading", "the folder is watched".into()),
        }
    }

    /// Events to publish: (normal?, reason, note).
    pub fn events(&self, ri: &RegistryImport) -> Vec<(bool, &'static str, String)> {
        let old = ri.status.clone().unwrap_or_default();
        let was = |t: &str| {
            old.conditions
                .iter()
                .find(|c| c.type_ == t)
                .map(|c| c.status.clone())
        };
        let mut out = Vec::new();
        match &self.outcome {
            Outcome::Refused(why) => out.push((false, "PolicyRefused", why.clone())),
            Outcome::ServiceNotOurs => out.push((false, "ServiceNotOurs", self.ready().2)),
            Outcome::Synced {
                selection,
                slices,
                touched,
            } if *touched > 0 => out.push((
                true,
                "SlicesUpdated",
                format!(
                    "{} endpoint(s) ({} ready) in {slices} slice(s); {touched} slice(s) written",
                    selection.endpoints.len(),
                    selection
                        .endpoints
                        .iter()
                        .filter(|e| e.conditions.ready)
                        .count()
                ),
            )),
            _ => {}
        }
        if self.unavailable.is_some() && was("ZooKeeperAvailable").as_deref() != Some("False") {
            out.push((false, "ZooKeeperUnavailable", self.zookeeper().2));
        }
        out
    }
}

fn condition(
    old: &RegistryImportStatus,
    type_: &str,
    (status, reason, message): (&'static str, &'static str, String),
    ri: &RegistryImport,
    now: &str,
) -> Condition {
    let prev = old.conditions.iter().find(|c| c.type_ == type_);
    let since = match prev {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => Some(now.to_string()),
    };
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        last_transition_time: since,
        observed_generation: ri.metadata.generation,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::import::LeftOut;

    fn ri() -> RegistryImport {
        serde_yaml::from_str(
            "apiVersion: podkeeper.io/v1alpha1\nkind: RegistryImport\n\
             metadata: {name: orders, namespace: shop, uid: u-1, generation: 2}\n\
             spec: {source: {dubbo: {interface: com.acme.Orders}},\n\
               service: {name: orders, ports: [{name: rpc, port: 20880}]}}\n",
        )
        .unwrap()
    }

    fn synced() -> Outcome {
        Outcome::Synced {
            selection: Selection {
                seen: 2,
                endpoints: vec![],
                left_out: vec![("127.0.0.1:1".into(), LeftOut::Loopback)],
            },
            slices: 0,
            touched: 1,
        }
    }

    #[test]
    fn zookeeper_down_since_start_waits_and_a_refusal_names_the_grant() {
        let down = Snapshot {
            unavailable: Some("connection refused".into()),
            stale_since: Some("2026-01-01T00:00:00Z".into()),
            ..Snapshot::default()
        };
        let r = Report::new(Outcome::Waiting, None, &down);
        let s = r.status(&ri());
        assert_eq!(s.conditions[0].reason, "WaitingForZooKeeper");
        assert_eq!(s.conditions[1].status, "False");
        assert!(r.retry_slowly());
        let refused = Outcome::Refused(
            "ZooKeeper ensemble \"zk:2181\" is granted by no RegistryPolicy".into(),
        );
        let r = Report::new(refused, None, &Snapshot::default());
        let s = r.status(&ri());
        assert_eq!(
            (
                s.conditions[0].status.as_str(),
                s.conditions[0].reason.as_str()
            ),
            ("False", "PolicyRefused")
        );
        assert_eq!(s.conditions[1].status, "Unknown");
        assert!(
            r.events(&ri())
                .iter()
                .any(|e| !e.0 && e.1 == "PolicyRefused")
        );
    }

    #[test]
    fn zookeeper_lost_keeps_counts_says_stale_since_and_warns_once() {
        let mut ri = ri();
        let ok = Report::new(synced(), None, &Snapshot::default());
        let s = ok.status(&ri);
        assert_eq!((s.seen, s.left_out), (2, 1));
        assert_eq!(s.left_out_providers[0].reason, "loopback address");
        assert_eq!(s.conditions[0].status, "True");
        ri.status = Some(s);
        let lost = Snapshot {
            unavailable: Some("disconnected".into()),
            stale_since: Some("2026-01-01T00:00:00Z".into()),
            ..Snapshot::default()
        };
        let r = Report::new(synced(), None, &lost);
        let s = r.status(&ri);
        let zk = &s.conditions[1];
        assert_eq!(
            (zk.status.as_str(), zk.reason.as_str()),
            ("False", "Unavailable")
        );
        assert!(
            zk.message.contains("stale since 2026-01-01T00:00:00Z"),
            "{zk:?}"
        );
        assert_eq!(s.stale_since.as_deref(), Some("2026-01-01T00:00:00Z"));
        assert!(r.events(&ri).iter().any(|e| e.1 == "ZooKeeperUnavailable"));
        ri.status = Some(s);
        assert!(!r.events(&ri).iter().any(|e| e.1 == "ZooKeeperUnavailable"));
    }
}
