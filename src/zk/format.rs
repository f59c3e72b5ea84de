//! Registry formats: how service and endpoint records are encoded in znodes.
//! The writer diffs decoded records, so a new format (Curator, Dubbo, ServerSet) is a codec here.

use crate::model::record::{PublishedRecord, ServiceRecord};

pub mod curator;
pub mod dubbo;
pub mod fixture;
pub mod publish;
pub mod registry;
pub mod serverset;

/// A host as it stands in a URI authority: IPv6 addresses in brackets (RFC 3986), so that
/// `scheme://host:port` parses (Dubbo URLs, Curator's `address` inside its URI spec).
pub fn uri_host(host: &str) -> std::borrow::Cow<'_, str> {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]").into()
    } else {
        host.into()
    }
}

/// A host read from a registry, without the brackets [`uri_host`] adds.
pub fn plain_host(host: &str) -> &str {
    match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(inner) if inner.contains(':') => inner,
        _ => host,
    }
}

/// Encodes and decodes the records of one registry format.
pub trait Codec: Send + Sync {
    /// Name for logs and errors.
    fn name(&self) -> &'static str;
    /// Bytes of the service record.
    fn encode_service(&self, record: &ServiceRecord) -> Vec<u8>;
    /// The service record, if `data` is one of ours.
    fn decode_service(&self, data: &[u8]) -> Option<ServiceRecord>;
    /// Bytes of an endpoint record.
    fn encode_endpoint(&self, record: &PublishedRecord) -> Vec<u8>;
    /// The endpoint record, if `data` is valid (invalid data gets rewritten).
    fn decode_endpoint(&self, data: &[u8]) -> Option<PublishedRecord>;
}

/// The formats podkeeper can write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Format {
    /// podkeeper's own JSON records (see the README).
    #[default]
    Native,
}

impl Format {
    /// The codec of this format.
    pub fn codec(self) -> &'static dyn Codec {
        match self {
            Format::Native => &NativeJson,
        }
    }
}

/// podkeeper's JSON records.
struct NativeJson;

impl Codec for NativeJson {
    fn name(&self) -> &'static str {
        "native"
    }
    fn encode_service(&self, record: &ServiceRecord) -> Vec<u8> {
        serde_json::to_vec(record).expect("records serialize")
    }
    fn decode_service(&self, data: &[u8]) -> Option<ServiceRecord> {
        serde_json::from_slice(data).ok()
    }
    fn encode_endpoint(&self, record: &PublishedRecord) -> Vec<u8> {
        serde_json::to_vec(record).expect("records serialize")
    }
    fn decode_endpoint(&self, data: &[u8]) -> Option<PublishedRecord> {
        serde_json::from_slice(data).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::record::{EndpointStatus, Owner};

    #[test]
    fn ipv6_hosts_get_brackets_once_and_lose_them_once() {
        for (plain, uri) in [
            ("10.0.0.1", "10.0.0.1"),
            ("fd00::1", "[fd00::1]"),
            ("2001:db8::10:1", "[2001:db8::10:1]"),
            ("host.example", "host.example"),
        ] {
            assert_eq!(uri_host(plain), uri);
            assert_eq!(uri_host(uri), uri, "already bracketed");
            assert_eq!(plain_host(uri), plain);
            assert_eq!(plain_host(plain), plain);
        }
        assert_eq!(plain_host("[x]"), "[x]", "only IPv6 loses brackets");
    }

    #[test]
    fn native_records_round_trip_and_garbage_is_refused() {
        let codec = Format::Native.codec();
        let svc = ServiceRecord {
            service_name: "web".into(),
            policy: Default::default(),
            owner: Owner {
                cluster_id: "c".into(),
                namespace: "n".into(),
                name: "w".into(),
                uid: "u".into(),
            },
            generation: 3,
            stale: false,
            warmup_seconds: 0,
            load: None,
        };
        assert_eq!(codec.decode_service(&codec.encode_service(&svc)), Some(svc));
        let ep = PublishedRecord {
            host: "10.0.0.1".into(),
            port: 80,
            ports: Default::default(),
            weight: 7,
            declared_weight: None,
            load: None,
            group: "default".into(),
            zone: None,
            node: None,
            pod: "p".into(),
            namespace: "n".into(),
            metadata: Default::default(),
            status: EndpointStatus::Up,
            ready_since_ms: 0,
        };
        assert_eq!(codec.decode_endpoint(&codec.encode_endpoint(&ep)), Some(ep));
        assert_eq!(codec.decode_endpoint(b"garbage"), None);
        assert_eq!(codec.decode_service(b"{\"serviceName\": 1}"), None);
        assert_eq!(codec.name(), "native");
    }
}
