//! What a pick hands out: one endpoint of a snapshot, plus the in-flight guard LeastRequest needs.
//! Plain values shared between snapshots; knows nothing of ZooKeeper or of policies.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::model::record::EndpointRecord;

/// One endpoint as the registry published it, with its live in-flight count.
#[derive(Debug)]
pub struct Endpoint {
    name: String,
    record: EndpointRecord,
    // Shared with the same pod's Endpoint in later snapshots, so a weight change or a
    // reconnect does not forget the requests that are still running.
    in_flight: Arc<AtomicUsize>,
}

impl Endpoint {
    /// An endpoint with no requests in flight.
    pub fn new(name: impl Into<String>, record: EndpointRecord) -> Endpoint {
        Endpoint::with_counter(name, record, Arc::default())
    }

    pub(crate) fn with_counter(
        name: impl Into<String>,
        record: EndpointRecord,
        in_flight: Arc<AtomicUsize>,
    ) -> Endpoint {
        Endpoint {
            name: name.into(),
            record,
            in_flight,
        }
    }

    /// The znode name under `<path>/endpoints` (the pod name).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The published record.
    pub fn record(&self) -> &EndpointRecord {
        &self.record
    }

    /// `host:port`, with brackets around an IPv6 host.
    pub fn address(&self) -> String {
        host_port(&self.record.host, self.record.port)
    }

    /// May a client send a new request here (UP and weight above 0)?
    pub fn pickable(&self) -> bool {
        self.record.pickable()
    }

    /// Requests picked through LeastRequest whose guard is still alive.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub(crate) fn counter(&self) -> &Arc<AtomicUsize> {
        &self.in_flight
    }

    /// Counts one more request in flight until the returned guard drops.
    pub fn start_request(&self) -> InFlightGuard {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlightGuard {
            counter: Arc::clone(&self.in_flight),
        }
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

/// Counts a request as in flight on its endpoint until dropped.
#[derive(Debug)]
#[must_use = "the request counts as in flight only while the guard lives"]
pub struct InFlightGuard {
    counter: Arc<AtomicUsize>,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::Relaxed);
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
    /// The endpoint; it stays valid after the snapshot that held it is replaced.
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
