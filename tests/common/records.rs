//! The golden native-format records (`golden/*.json`, the README's samples byte for byte) and
//! records derived from them, so that every test writes what the operator writes.

#![allow(dead_code)]

use serde_json::Value;

/// A service record exactly as the operator writes it.
pub const SERVICE: &str = include_str!("golden/service.json");
/// An endpoint record exactly as the operator writes it.
pub const ENDPOINT: &str = include_str!("golden/endpoint.json");

/// The golden service record with `changes` merged in (objects merge key by key).
pub fn service(changes: Value) -> Value {
    merged(serde_json::from_str(SERVICE).unwrap(), changes)
}

/// The golden endpoint record with `changes` merged in (objects merge key by key).
pub fn endpoint(changes: Value) -> Value {
    merged(serde_json::from_str(ENDPOINT).unwrap(), changes)
}

/// `base` with `changes` written over it; a `null` in `changes` removes the key.
pub fn merged(mut base: Value, changes: Value) -> Value {
    match (&mut base, changes) {
        (Value::Object(base_map), Value::Object(changes)) => {
            for (key, value) in changes {
                if value.is_null() {
                    base_map.remove(&key);
                    continue;
                }
                let old = base_map.remove(&key).unwrap_or(Value::Null);
                base_map.insert(key, merged(old, value));
            }
            base
        }
        (_, changes) => changes,
    }
}
