//! What a pick hands out: one endpoint of a snapshot, plus the in-flight guard LeastRequest needs.
//! Plain values shared between snapshots; knows nothing of ZooKeeper or of policies.

use std::sync::Arc;

use super::balance::shard::{self, SHARDS};
use crate::model::record::EndpointRecord;

/// One endpoint as the registry published it, with its live in-flight count.
///
/// A handle: [`Endpoint::handle`] makes another over the same data, so that threads picking
/// at once can each clone an `Arc<Endpoint>` of their own instead of all counting references
/// on one cache line.
pub struct Endpoint {
    data: Arc<Data>,
}

struct Data {
    name: String,
    record: EndpointRecord,
    // Shared with the same pod's Endpoint in later snapshots, so a weight change or a
    // reconnect does not forget the requests that are still running.
    load: Arc<Load>,
}

/// The requests in flight on one pod, shared by its `Endpoint` in every snapshot.
#[derive(Debug, Default)]
pub(crate) struct Load {
    /// One count per shard of picking threads ([`super::balance::shard`]), made when that
    /// shard first counts here: a thread's picks read and write only its own shard's counts,
    /// so threads picking at once share no count (each shard balances its own requests, as
    /// each Envoy worker does). Each is referenced once from here and once by every live guard
    /// taken in its shard, so its reference count less one is that shard's requests in flight;
    /// a guard uncounts itself where it counted, on whichever thread it drops.
    tokens: [std::sync::OnceLock<Arc<Token>>; SHARDS],
}

impl Load {
    fn in_shard(&self, shard: usize) -> usize {
        self.tokens[shard]
            .get()
            .map_or(0, |t| Arc::strong_count(t) - 1)
    }
}

/// What a guard holds: only its place in the count. Aligned so that every pod's count sits on
/// cache lines of its own, and picks on one core do not evict another pod's count from another.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Token;

impl Endpoint {
    /// An endpoint with no requests in flight.
    pub fn new(name: impl Into<String>, record: EndpointRecord) -> Endpoint {
        Endpoint::with_load(name, record, Arc::default())
    }

    pub(crate) fn with_load(
        name: impl Into<String>,
        record: EndpointRecord,
        load: Arc<Load>,
    ) -> Endpoint {
        let data = Data {
            name: name.into(),
            record,
            load,
        };
        Endpoint {
            data: Arc::new(data),
        }
    }

    /// Another handle on the same endpoint: the same name, record and in-flight count.
    pub(crate) fn handle(&self) -> Endpoint {
        Endpoint {
            data: Arc::clone(&self.data),
        }
    }

    /// The znode name under `<path>/endpoints` (the pod name).
    pub fn name(&self) -> &str {
        &self.data.name
    }

    /// The published record.
    pub fn record(&self) -> &EndpointRecord {
        &self.data.record
    }

    /// `host:port`, with brackets around an IPv6 host.
    pub fn address(&self) -> String {
        host_port(&self.data.record.host, self.data.record.port)
    }

    /// May a client send a new request here (UP and weight above 0)?
    pub fn pickable(&self) -> bool {
        self.data.record.pickable()
    }

    /// Requests picked through LeastRequest whose guard is still alive, from every thread.
    pub fn in_flight(&self) -> usize {
        (0..SHARDS).map(|s| self.data.load.in_shard(s)).sum()
    }

    pub(crate) fn load(&self) -> &Arc<Load> {
        &self.data.load
    }

    /// Counts one more request in flight, in this thread's shard, until the guard drops.
    #[inline]
    pub fn start_request(&self) -> InFlightGuard {
        self.start_request_in(shard::this_thread() % SHARDS)
    }

    #[inline]
    pub(crate) fn start_request_in(&self, shard: usize) -> InFlightGuard {
        InFlightGuard::holding(Arc::clone(self.token_in(shard)))
    }

    /// The count of `shard`'s requests in flight here: its strong references less one.
    pub(crate) fn token_in(&self, shard: usize) -> &Arc<Token> {
        self.data.load.tokens[shard].get_or_init(Arc::default)
    }
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("name", &self.data.name)
            .field("record", &self.data.record)
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

/// `host:port`, with brackets around an IPv6 host.
pub fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Counts a request as in flight on its endpoint until dropped, on whichever thread.
#[derive(Debug)]
#[must_use = "the request counts as in flight only while the guard lives"]
pub struct InFlightGuard {
    // Dropping the reference is what uncounts the request.
    _token: Arc<Token>,
}

impl InFlightGuard {
    /// Counts one more request on `token`'s count until dropped.
    #[inline]
    pub(crate) fn holding(token: Arc<Token>) -> InFlightGuard {
        InFlightGuard { _token: token }
    }
}

/// What a caller knows about the request being routed.
#[derive(Clone, Copy, Debug, Default)]
pub struct PickContext<'a> {
    /// The affinity key for ConsistentHash (user id, session id, ...). Other policies ignore it;
    /// ConsistentHash without a key picks at random.
    pub key: Option<&'a [u8]>,
}

impl<'a> PickContext<'a> {
    /// A context carrying an affinity key.
    pub fn with_key(key: &'a [u8]) -> PickContext<'a> {
        PickContext { key: Some(key) }
    }
}

/// The endpoint chosen for one request.
#[derive(Debug)]
pub struct Picked {
    /// The endpoint; it stays valid after the snapshot that held it is replaced. It may be
    /// another handle on the same data than the `Arc` the snapshot lists: compare endpoints
    /// by name, not by pointer.
    pub endpoint: Arc<Endpoint>,
    /// Present under LeastRequest: keep it until the request completes.
    pub guard: Option<InFlightGuard>,
}

impl std::ops::Deref for Picked {
    type Target = Endpoint;
    fn deref(&self) -> &Endpoint {
        &self.endpoint
    }
}
