//! The leader's fence: an epoch znode each new leader bumps once per ensemble, whose version
//! every transaction checks, so a former leader (paused, partitioned) cannot write any more.

use std::collections::HashMap;

use zookeeper_client::Client;

use super::ZkError;
use super::acl::{NodeAcls, NodeKind};
use super::server;
use super::session::Session;
use super::writer::{mkdir_parent, persistent, repair_acl};

/// What a transaction checks: the epoch znode still has the version this leader set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The epoch znode.
    pub path: String,
    /// The version the current leader set.
    pub version: i32,
}

/// Bumps the epoch once per ensemble and term, and hands out the fence for later writes.
pub struct Fencer {
    path: String,
    /// `<prefix>/.cluster-<id>`: which Kubernetes cluster uses the id on an ensemble.
    marker_path: String,
    cluster_id: String,
    /// This cluster's marker (the kube-system namespace's uid), once known.
    marker: std::sync::OnceLock<String>,
    /// Ensembles (and their session generation) whose marker was checked.
    claimed: std::sync::Mutex<std::collections::HashSet<(String, u64)>>,
    /// The epoch of releases before one epoch per installation: bumped too (when it exists), so
    /// a paused pod of an older release is fenced during the upgrade.
    legacy: String,
    identity: String,
    /// One lock per ensemble: a bump that hangs on one ensemble holds up only its writers.
    fences: std::sync::Mutex<HashMap<String, PerEnsemble>>,
}

/// The fence of one ensemble and the term it was bumped in, behind its own lock.
type PerEnsemble = std::sync::Arc<tokio::sync::Mutex<Option<(u64, Fence)>>>;

impl Fencer {
    /// The epoch znode is `<prefix>/.leader-epoch-<cluster id>` on every ensemble: one per
    /// installation, so that the clusters sharing an ensemble (each with its own id) never
    /// fence each other. `identity` is written into it so an operator can see who leads.
    pub fn new(prefix: &str, cluster_id: &str, identity: &str) -> Fencer {
        Fencer {
            path: epoch_path(prefix, cluster_id),
            marker_path: format!("{}/.cluster-{cluster_id}", prefix.trim_end_matches('/')),
            cluster_id: cluster_id.to_string(),
            marker: std::sync::OnceLock::new(),
            claimed: std::sync::Mutex::default(),
            legacy: format!("{}/.leader-epoch", prefix.trim_end_matches('/')),
            identity: identity.to_string(),
            fences: std::sync::Mutex::default(),
        }
    }

    /// This Kubernetes cluster's marker (the kube-system namespace's uid): from now on every
    /// ensemble is checked to be this cluster's under its id before anything is written.
    pub fn set_marker(&self, marker: &str) {
        let _ = self.marker.set(marker.to_string());
    }

    /// Claims the cluster id on the session's ensemble (once per session), or refuses when
    /// another cluster holds it: two clusters left at one id (`default`) would take over each
    /// other's paths without a word.
    async fn claim(
        &self,
        session: &Session,
        client: &Client,
        generation: u64,
    ) -> Result<(), ZkError> {
        let Some(ours) = self.marker.get() else {
            return Ok(());
        };
        let key = (session.target().to_string(), generation);
        if self.claimed.lock().expect("claimed lock").contains(&key) {
            return Ok(());
        }
        let path = &self.marker_path;
        let data = serde_json::to_vec(&serde_json::json!({ "kubeSystemUid": ours })).expect("json");
        let theirs = loop {
            match client.get_data(path).await {
                Ok((found, _)) => break found,
                Err(zookeeper_client::Error::NoNode) => {
                    let acls = session.acls();
                    mkdir_parent(client, path, &acls, None).await?;
                    match client
                        .create(path, &data, &persistent(&acls, NodeKind::Owned))
                        .await
                    {
                        Ok(_) => break data.clone(),
                        Err(zookeeper_client::Error::NodeExists) => continue,
                        Err(e) => return Err(server("create", path)(e)),
                    }
                }
                Err(e) => return Err(server("get", path)(e)),
            }
        };
        let theirs: String = serde_json::from_slice::<serde_json::Value>(&theirs)
            .ok()
            .and_then(|v| v.get("kubeSystemUid")?.as_str().map(str::to_string))
            .unwrap_or_default();
        if theirs != *ours {
            return Err(ZkError::ClusterIdTaken {
                id: self.cluster_id.clone(),
                path: path.clone(),
                theirs,
                ours: ours.clone(),
            });
        }
        self.claimed.lock().expect("claimed lock").insert(key);
        Ok(())
    }

    /// The fence for writes through `session` (of `generation`) in `term`, bumping the epoch
    /// on first use, once the cluster id is claimed there. `None` for a replica that runs
    /// without leader election (nothing to fence against).
    pub async fn fence(
        &self,
        session: &Session,
        client: &Client,
        generation: u64,
        term: Option<u64>,
    ) -> Result<Option<Fence>, ZkError> {
        self.claim(session, client, generation).await?;
        let Some(term) = term else {
            return Ok(None);
        };
        let key = session.target().to_string();
        let slot = self
            .fences
            .lock()
            .expect("fences lock")
            .entry(key.clone())
            .or_default()
            .clone();
        let mut slot = slot.lock().await;
        if let Some((t, f)) = slot.as_ref()
            && *t == term
        {
            return Ok(Some(f.clone()));
        }
        let fence = bump_epoch(client, &self.path, &self.identity, &session.acls()).await?;
        tracing::info!(term, epoch_version = fence.version, target = %key, "bumped the leader epoch");
        match client.set_data(&self.legacy, b"{}", None).await {
            Ok(_) | Err(zookeeper_client::Error::NoNode) => {}
            Err(err) => {
                tracing::warn!(path = %self.legacy, %err, "cannot bump the older releases' epoch")
            }
        }
        *slot = Some((term, fence.clone()));
        Ok(Some(fence))
    }
}

/// The epoch znode of the installation `cluster_id` under `prefix`.
pub fn epoch_path(prefix: &str, cluster_id: &str) -> String {
    format!(
        "{}/.leader-epoch-{cluster_id}",
        prefix.trim_end_matches('/')
    )
}

/// Bumps the epoch znode at `path` (created, or its ACL repaired, with `acls`) and returns the
/// fence for the new term.
pub async fn bump_epoch(
    client: &Client,
    path: &str,
    holder: &str,
    acls: &NodeAcls,
) -> Result<Fence, ZkError> {
    let data = serde_json::to_vec(
        &serde_json::json!({ "holder": holder, "at": chrono::Utc::now().to_rfc3339() }),
    )
    .expect("json");
    // A replaced node restarts at version 0: it is bumped past the version it had, or a former
    // leader holding a fence of a version it already passed could write again.
    let mut past: Option<i32> = None;
    loop {
        match client.set_data(path, &data, None).await {
            Ok(stat) if past.is_some_and(|v| stat.version <= v) => continue,
            Ok(stat) => {
                repair_acl(client, path, NodeKind::Owned, acls, None).await?;
                return Ok(Fence {
                    path: path.to_string(),
                    version: stat.version,
                });
            }
            // Planted by someone else (or left by another identity), with an ACL that shuts
            // podkeeper out: its parent is podkeeper's, so it may delete it and create its own.
            Err(zookeeper_client::Error::NoAuth) => {
                tracing::warn!(
                    path,
                    "the leader epoch node is not writable by podkeeper; replacing it"
                );
                let had = client
                    .check_stat(path)
                    .await
                    .map_err(server("stat", path))?;
                past = past.max(had.map(|s| s.version));
                match client.delete(path, None).await {
                    Ok(()) | Err(zookeeper_client::Error::NoNode) => continue,
                    Err(e) => return Err(server("delete", path)(e)),
                }
            }
            Err(zookeeper_client::Error::NoNode) => {
                mkdir_parent(client, path, acls, None).await?;
                match client
                    .create(path, &data, &persistent(acls, NodeKind::Owned))
                    .await
                {
                    Ok(_) if past.is_some() => continue,
                    Ok((stat, _)) => {
                        return Ok(Fence {
                            path: path.to_string(),
                            version: stat.version,
                        });
                    }
                    Err(zookeeper_client::Error::NodeExists) => continue,
                    Err(e) => return Err(server("create", path)(e)),
                }
            }
            Err(e) => return Err(server("set", path)(e)),
        }
    }
}
