//! Notices znodes podkeeper owns being changed behind its back (an admin script, a superuser,
//! a restored backup): one persistent recursive watch per watched folder, and a ledger of the
//! events podkeeper's own writes will raise, so those are not mistaken for tampering.
//! Reports paths only; deciding what is owned and repairing it is the controller's.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use zookeeper_client::Client;

use super::ZkError;
pub use super::reader::Change;
use super::reader::{TreeEvent, TreeWatch};

/// An expected event that never came (lost in a reconnect) stops masking the path after this.
const EXPECTATION_TTL: Duration = Duration::from_secs(30);

/// Expectations past their TTL are dropped by a sweep at most this often; a lookup ignores an
/// expired one meanwhile. Sweeping at every event made a first publish of n endpoints cost
/// O(n²): every event walked every expectation still pending.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The events podkeeper's own writes are about to raise, by path.
#[derive(Debug, Default)]
pub struct Ledger {
    expected: Mutex<Expected>,
    /// Only writes below these raise events: expecting others would mask a later change.
    watched: Mutex<HashSet<String>>,
}

/// Expected events by path: how many, and when the last was expected.
#[derive(Debug, Default)]
struct Expected {
    paths: HashMap<String, (u32, Instant)>,
    swept: Option<Instant>,
}

impl Expected {
    /// Drops the expectations past their TTL, at most every [`SWEEP_EVERY`]. Run on writes
    /// too, not only on events: with no events (a watch gone with its connection) the
    /// expectations of every later write would pile up.
    fn sweep(&mut self, now: Instant) {
        if self
            .swept
            .is_none_or(|s| now.duration_since(s) >= SWEEP_EVERY)
        {
            self.paths
                .retain(|_, (_, at)| now.duration_since(*at) < EXPECTATION_TTL);
            self.swept = Some(now);
        }
    }
}

/// `path` itself and its ancestors, nearest first ("/a/b": "/a/b", "/a", "/").
fn self_and_ancestors(path: &str) -> impl Iterator<Item = &str> {
    let cuts = path.rmatch_indices('/').map(|(i, _)| i.max(1));
    let cuts = cuts.filter(move |&i| i < path.len());
    std::iter::once(path).chain(cuts.map(move |i| &path[..i]))
}

impl Ledger {
    /// Before a commit: each path below a watched folder will raise one event.
    pub fn expect<'a>(&self, paths: impl IntoIterator<Item = &'a str>) {
        let now = Instant::now();
        let watched = self.watched.lock().expect("ledger lock");
        let under = |p: &str| self_and_ancestors(p).any(|a| watched.contains(a));
        let mut expected = self.expected.lock().expect("ledger lock");
        expected.sweep(now);
        for p in paths.into_iter().filter(|p| under(p)) {
            let e = expected.paths.entry(p.to_string()).or_insert((0, now));
            *e = (e.0 + 1, now);
        }
    }

    #[cfg(test)]
    fn set_watched(&self, roots: HashSet<String>) {
        *self.watched.lock().expect("ledger lock") = roots;
    }

    /// `root` is watched now: writes below it raise events.
    fn watching(&self, root: &str) {
        let mut watched = self.watched.lock().expect("ledger lock");
        if !watched.contains(root) {
            watched.insert(root.to_string());
        }
    }

    /// `root` is not watched any more.
    #[cfg(test)]
    fn unwatched(&self, root: &str) {
        self.watched.lock().expect("ledger lock").remove(root);
    }

    /// Only these roots are watched any more.
    fn watching_only(&self, roots: &HashSet<&str>) {
        let mut watched = self.watched.lock().expect("ledger lock");
        watched.retain(|r| roots.contains(r.as_str()));
    }

    /// After a failed commit: nothing was written, no event comes.
    pub fn cancel<'a>(&self, paths: impl IntoIterator<Item = &'a str>) {
        let expected = &mut self.expected.lock().expect("ledger lock").paths;
        for p in paths {
            if let Some(e) = expected.get_mut(p) {
                e.0 -= 1;
                if e.0 == 0 {
                    expected.remove(p);
                }
            }
        }
    }

    /// An event on `path`: was it ours?
    pub fn consume(&self, path: &str) -> bool {
        let mut guard = self.expected.lock().expect("ledger lock");
        let expected = &mut *guard;
        let now = Instant::now();
        let live = |at: &Instant| now.duration_since(*at) < EXPECTATION_TTL;
        expected.sweep(now);
        let Some((n, at)) = expected.paths.get_mut(path) else {
            return false;
        };
        let ours = live(at);
        *n -= 1;
        if *n == 0 || !ours {
            expected.paths.remove(path);
        }
        ours
    }

    /// Paths still expected (for tests and metrics).
    pub fn pending(&self) -> usize {
        self.expected.lock().expect("ledger lock").paths.len()
    }
}

/// A change under a watched folder that podkeeper did not make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tampered {
    /// Whose folder (the tag given to [`Tamper::watch`]).
    pub tag: String,
    /// The folder watched.
    pub root: String,
    /// The node that changed.
    pub path: String,
    /// Created, deleted or changed.
    pub kind: Change,
}

/// One folder's watch: the session generation it was set on, its tag, the task reading it.
type Watch = (u64, String, JoinHandle<()>);

/// The watches of one process, by folder, each tied to the session it was set on.
pub struct Tamper {
    /// One ledger per ensemble: the same path on two ensembles is two nodes, and a write to
    /// one must not hide a change to the other.
    ledgers: Mutex<HashMap<String, Arc<Ledger>>>,
    watches: Mutex<HashMap<(String, String), Watch>>,
    events: mpsc::UnboundedSender<Tampered>,
}

impl Tamper {
    /// Tampering is reported on `events`.
    pub fn new(events: mpsc::UnboundedSender<Tampered>) -> Tamper {
        Tamper {
            ledgers: Mutex::default(),
            watches: Mutex::default(),
            events,
        }
    }

    /// The ledger the writer records its expected events on `ensemble` in.
    pub fn ledger(&self, ensemble: &str) -> Arc<Ledger> {
        let mut ledgers = self.ledgers.lock().expect("ledgers lock");
        ledgers.entry(ensemble.to_string()).or_default().clone()
    }

    /// Watches `root` (recursively) on the session `generation` of `client` to `ensemble`,
    /// unless it already is; `tag` comes back with each event. The same path on two ensembles
    /// is two watches.
    pub async fn watch(
        &self,
        client: &Client,
        generation: u64,
        ensemble: &str,
        root: &str,
        tag: &str,
    ) -> Result<(), ZkError> {
        let key = (ensemble.to_string(), root.to_string());
        if let Some((g, _, task)) = self.watches.lock().expect("watches lock").get(&key)
            && *g == generation
            && !task.is_finished()
        {
            return Ok(());
        }
        let mut watch = TreeWatch::open(client, root)
            .await
            .map_err(super::server("addWatch", root))?;
        let (ledger, events) = (self.ledger(ensemble), self.events.clone());
        let (root_owned, tag_owned) = (root.to_string(), tag.to_string());
        let task = tokio::spawn(async move {
            let tag = tag_owned;
            loop {
                // A reconnect sets the watch again (inside `TreeWatch`); what changed while
                // disconnected is repaired by the full resync the session change starts.
                let (path, kind) = match watch.next().await {
                    TreeEvent::Ended => return,
                    TreeEvent::Reconnected | TreeEvent::Disconnected => continue,
                    TreeEvent::Node(path, kind) => (path, kind),
                };
                if ledger.consume(&path) {
                    continue;
                }
                crate::metrics::get().tamper_events.inc();
                let t = Tampered {
                    tag: tag.clone(),
                    root: root_owned.clone(),
                    path,
                    kind,
                };
                if events.send(t).is_err() {
                    return;
                }
            }
        });
        let mut watches = self.watches.lock().expect("watches lock");
        if let Some((_, _, old)) = watches.insert(key, (generation, tag.to_string(), task)) {
            old.abort();
        }
        self.ledger(ensemble).watching(root);
        Ok(())
    }

    /// Stops every watch set for `tag` (the resource went away).
    pub fn unwatch(&self, tag: &str) {
        let mut watches = self.watches.lock().expect("watches lock");
        watches.retain(|_, (_, t, task)| {
            let keep = t != tag;
            if !keep {
                task.abort();
            }
            keep
        });
        self.forget_unwatched(&watches);
    }

    /// Stops the watch `tag` set on `root` of `ensemble` (a place it moved away from); a watch
    /// another resource set there now stays.
    pub fn unwatch_root(&self, ensemble: &str, root: &str, tag: &str) {
        let mut watches = self.watches.lock().expect("watches lock");
        let key = (ensemble.to_string(), root.to_string());
        if watches.get(&key).is_some_and(|(_, t, _)| t == tag)
            && let Some((_, _, task)) = watches.remove(&key)
        {
            task.abort();
        }
        self.forget_unwatched(&watches);
    }

    /// The ledger stops expecting events below roots no watch covers any more.
    fn forget_unwatched(&self, watches: &HashMap<(String, String), Watch>) {
        for (ensemble, ledger) in self.ledgers.lock().expect("ledgers lock").iter() {
            let roots: HashSet<&str> = watches
                .keys()
                .filter(|(e, _)| e == ensemble)
                .map(|(_, r)| r.as_str())
                .collect();
            ledger.watching_only(&roots);
        }
    }

    /// Folders watched now (ensemble, root).
    pub fn watched(&self) -> Vec<(String, String)> {
        self.watches
            .lock()
            .expect("watches lock")
            .keys()
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ledger_masks_exactly_the_expected_events_below_watched_folders() {
        let l = Ledger::default();
        l.set_watched(["/a".into(), "/b".into()].into());
        l.expect(["/a", "/a", "/b", "/c/x", "/ab"]);
        assert!(
            !l.consume("/c/x") && !l.consume("/ab"),
            "not watched: not expected"
        );
        assert!(l.consume("/a"));
        assert!(l.consume("/a"));
        assert!(!l.consume("/a"), "a third event on /a is not ours");
        l.cancel(["/b"]);
        assert!(!l.consume("/b"), "a cancelled write raises nothing");
        assert_eq!(l.pending(), 0);
        l.cancel(["/never"]);
        assert_eq!(l.pending(), 0);
        // Below a watched folder at any depth; a sibling with the folder's name as a prefix is not.
        l.set_watched(["/x/y".into()].into());
        l.expect(["/x/y/z/w", "/x/yz", "/x"]);
        assert_eq!(l.pending(), 1);
        assert!(l.consume("/x/y/z/w"));
    }

    #[test]
    fn a_write_on_one_ensemble_never_hides_a_change_to_the_same_path_on_another() {
        let (tx, _rx) = mpsc::unbounded_channel();
        let tamper = Tamper::new(tx);
        for ensemble in ["zk-a:2181", "zk-b:2181"] {
            tamper.ledger(ensemble).watching("/podkeeper/shop/web");
        }
        tamper
            .ledger("zk-a:2181")
            .expect(["/podkeeper/shop/web/endpoints/p1"]);
        assert!(
            !tamper
                .ledger("zk-b:2181")
                .consume("/podkeeper/shop/web/endpoints/p1"),
            "a change on zk-b is another client's, whatever podkeeper wrote on zk-a"
        );
        assert!(
            tamper
                .ledger("zk-a:2181")
                .consume("/podkeeper/shop/web/endpoints/p1")
        );
    }

    #[test]
    fn folders_are_watched_and_forgotten_one_by_one() {
        let l = Ledger::default();
        l.watching("/a");
        l.watching("/b");
        l.watching("/a");
        l.expect(["/a/1", "/b/1", "/c/1"]);
        assert_eq!(l.pending(), 2);
        l.unwatched("/a");
        l.expect(["/a/2", "/b/2"]);
        assert_eq!(l.pending(), 3, "below /a nothing is expected any more");
        assert!(l.consume("/b/2") && !l.consume("/a/2"));
    }

    #[test]
    fn ancestors_nearest_first() {
        let all: Vec<&str> = self_and_ancestors("/a/b/c").collect();
        assert_eq!(all, ["/a/b/c", "/a/b", "/a", "/"]);
        assert_eq!(self_and_ancestors("/").collect::<Vec<_>>(), ["/"]);
    }
}
