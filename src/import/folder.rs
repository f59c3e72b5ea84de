//! One task per RegistryImport that follows its ZooKeeper folder with a persistent recursive
//! watch and keeps the last complete read; it wakes the import's reconcile. Reads, never writes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::channel::mpsc::UnboundedSender;
use kube::runtime::reflector::ObjectRef;

use crate::crd::RegistryImport;
use crate::model::import::Folder;
use crate::zk::reader::{ReadError, ReadSession, TreeEvent, TreeWatch};
use crate::zk::session::Session;

/// Where an import reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// The ensemble's session key (display form).
    pub ensemble: String,
    /// The path watched (recursively).
    pub watched: String,
    /// The folder whose children are the providers.
    pub providers: String,
    /// A node read beside (the native service record).
    pub record: Option<String>,
}

/// What the folder task knows.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The last complete read; kept while ZooKeeper cannot be read.
    pub folder: Option<Folder>,
    /// Why ZooKeeper cannot be read now (`None`: it can).
    pub unavailable: Option<String>,
    /// Since when (RFC 3339) the folder could not be read.
    pub stale_since: Option<String>,
    /// When the first change not yet written to the slices reached the task.
    pub changed_at: Option<Instant>,
}

type Shared = Arc<Mutex<Snapshot>>;

struct Watched {
    place: Place,
    snapshot: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.task.abort();
        crate::metrics::get().imports.dec();
    }
}

/// The folder tasks by import (namespace, name).
#[derive(Default)]
pub struct Folders {
    watched: Mutex<HashMap<(String, String), Watched>>,
}

impl Folders {
    /// The snapshot of `key`'s folder, starting (or moving) its task to `place`.
    pub fn follow(
        &self,
        key: &(String, String),
        place: &Place,
        session: Arc<Session>,
        wake: UnboundedSender<ObjectRef<RegistryImport>>,
    ) -> Shared {
        let mut watched = self.watched.lock().expect("folders lock");
        if let Some(w) = watched.get(key).filter(|w| w.place == *place) {
            return w.snapshot.clone();
        }
        let snapshot = Shared::default();
        let me = ObjectRef::new(&key.1).within(&key.0);
        let task = tokio::spawn(follow(place.clone(), session, snapshot.clone(), wake, me));
        crate::metrics::get().imports.inc();
        let w = Watched {
            place: place.clone(),
            snapshot: snapshot.clone(),
            task,
        };
        watched.insert(key.clone(), w);
        snapshot
    }

    /// Stops following `key`'s folder (the import was deleted).
    pub fn forget(&self, key: &(String, String)) {
        self.watched.lock().expect("folders lock").remove(key);
    }
}

/// Follows the folder until aborted: watch, read, wake; on session trouble mark the snapshot
/// stale and wait for the session to come back.
async fn follow(
    place: Place,
    session: Arc<Session>,
    snapshot: Shared,
    wake: UnboundedSender<ObjectRef<RegistryImport>>,
    me: ObjectRef<RegistryImport>,
) {
    let woken = || {
        let _ = wake.unbounded_send(me.clone());
    };
    let mut backoff = Duration::from_millis(200);
    loop {
        let client = match session.client() {
            Ok((client, _)) => client,
            Err(e) => {
                if mark_unavailable(&snapshot, e.to_string()) {
                    woken();
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        let reader = ReadSession::of(client);
        let mut watch = match reader.watch_tree(&place.watched).await {
            Ok(w) => w,
            Err(e) => {
                mark_unavailable(&snapshot, e.to_string());
                woken();
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        backoff = Duration::from_millis(200);
        refresh(&reader, &place, &snapshot, Instant::now()).await;
        woken();
        watch_until_ended(&mut watch, &reader, &place, &snapshot, &woken).await;
    }
}

/// Reads again at every change until the session ends.
async fn watch_until_ended(
    watch: &mut TreeWatch,
    reader: &ReadSession,
    place: &Place,
    snapshot: &Shared,
    woken: &impl Fn(),
) {
    loop {
        match watch.next().await {
            TreeEvent::Node(..) => {
                let at = Instant::now();
                // A burst (a provider's node and its parent) is one read.
                while let Some(TreeEvent::Node(..)) = watch.next().now_or_never() {}
                refresh(reader, place, snapshot, at).await;
            }
            TreeEvent::Reconnected => refresh(reader, place, snapshot, Instant::now()).await,
            TreeEvent::Disconnected => {
                mark_unavailable(snapshot, "disconnected from ZooKeeper".into());
            }
            TreeEvent::Ended => {
                mark_unavailable(snapshot, "the ZooKeeper session ended".into());
                woken();
                return;
            }
        }
        woken();
    }
}

/// Reads the folder; on success replaces the snapshot's folder, else marks it stale.
async fn refresh(reader: &ReadSession, place: &Place, snapshot: &Shared, at: Instant) {
    match read(reader, place).await {
        Ok(folder) => {
            let mut s = snapshot.lock().expect("snapshot lock");
            if s.folder.as_ref() != Some(&folder) {
                s.changed_at.get_or_insert(at);
                s.folder = Some(folder);
            }
            s.unavailable = None;
            s.stale_since = None;
        }
        Err(e) => {
            tracing::debug!(path = %place.providers, err = %e, "reading an imported folder failed");
            mark_unavailable(snapshot, e.to_string());
        }
    }
}

/// Records why the folder cannot be read; true when it could until now.
fn mark_unavailable(snapshot: &Shared, why: String) -> bool {
    let mut s = snapshot.lock().expect("snapshot lock");
    let was = s.unavailable.is_none();
    s.unavailable = Some(why);
    s.stale_since
        .get_or_insert_with(|| chrono::Utc::now().to_rfc3339());
    was
}

/// The providers folder's children with their data, and the record beside.
async fn read(reader: &ReadSession, place: &Place) -> Result<Folder, ReadError> {
    let names = reader.children(&place.providers).await?.unwrap_or_default();
    let paths: Vec<String> = names
        .iter()
        .map(|n| format!("{}/{n}", place.providers.trim_end_matches('/')))
        .collect();
    let data = reader.get_many(&paths).await?;
    let children = names
        .into_iter()
        .zip(data)
        .filter_map(|(n, d)| Some((n, d?)))
        .collect();
    let service_record = match &place.record {
        Some(p) => reader.get(p).await?,
        None => None,
    };
    Ok(Folder {
        children,
        service_record,
    })
}
