//! Where a resource's znodes live, and which paths a resource may use.
//! Pure path logic; the writer and the controller both rely on it.

use crate::model::record::ENDPOINTS;

/// A path a resource may not use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Not a well-formed absolute znode path.
    #[error("path {path:?} is not a valid znode path: {reason}")]
    Invalid {
        /// The path.
        path: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// Outside the operator's allowed prefix.
    #[error(
        "path {path:?} is outside the allowed prefix {prefix:?} (operator flag --allowed-path-prefix)"
    )]
    OutsidePrefix {
        /// The path.
        path: String,
        /// The allowed prefix.
        prefix: String,
    },
}

/// Checks that `path` is an absolute znode path ZooKeeper accepts and we are willing to own.
pub fn validate(path: &str) -> Result<(), PathError> {
    let bad = |reason| {
        Err(PathError::Invalid {
            path: path.to_string(),
            reason,
        })
    };
    if !path.starts_with('/') {
        return bad("must start with '/'");
    }
    if path.len() > 1 && path.ends_with('/') {
        return bad("must not end with '/'");
    }
    if path.len() > 1024 {
        return bad("longer than 1024 characters");
    }
    for seg in path.split('/').skip(1) {
        if seg.is_empty() {
            return bad("empty segment ('//')");
        }
        if seg == "." || seg == ".." {
            return bad("'.' and '..' segments are not allowed");
        }
        if seg.chars().any(|c| {
            c.is_control()
                || ('\u{e000}'..='\u{f8ff}').contains(&c)
                || ('\u{fff0}'..='\u{ffff}').contains(&c)
        }) {
            return bad("control or reserved characters are not allowed");
        }
    }
    if path == "/zookeeper" || path.starts_with("/zookeeper/") {
        return bad("/zookeeper is reserved by ZooKeeper");
    }
    Ok(())
}

/// The base path of a resource: `spec.path`, or `<prefix>/<namespace>/<serviceName>`; it must
/// lie strictly under `prefix`.
pub fn service_path(
    spec_path: Option<&str>,
    prefix: &str,
    namespace: &str,
    service: &str,
) -> Result<String, PathError> {
    let prefix = prefix.trim_end_matches('/');
    let path = match spec_path {
        Some(p) => p.to_string(),
        None => format!("{prefix}/{namespace}/{service}"),
    };
    validate(&path)?;
    if !prefix.is_empty() && !path.starts_with(&format!("{prefix}/")) {
        return Err(PathError::OutsidePrefix {
            path,
            prefix: prefix.to_string(),
        });
    }
    Ok(path)
}

/// `<path>/endpoints`.
pub fn endpoints_path(path: &str) -> String {
    format!("{path}/{ENDPOINTS}")
}

/// The path of child `name` of `parent`.
pub fn child(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}

/// `<path>/endpoints/<name>`.
pub fn endpoint_path(path: &str, name: &str) -> String {
    format!("{path}/{ENDPOINTS}/{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_path_is_prefix_namespace_service() {
        assert_eq!(
            service_path(None, "/podkeeper", "shop", "web").unwrap(),
            "/podkeeper/shop/web"
        );
        assert_eq!(
            service_path(None, "/podkeeper/", "shop", "web").unwrap(),
            "/podkeeper/shop/web"
        );
    }

    #[test]
    fn paths_outside_the_prefix_or_malformed_are_refused() {
        assert!(matches!(
            service_path(Some("/other/web"), "/podkeeper", "s", "w"),
            Err(PathError::OutsidePrefix { .. })
        ));
        assert!(matches!(
            service_path(Some("/podkeeper"), "/podkeeper", "s", "w"),
            Err(PathError::OutsidePrefix { .. })
        ));
        assert!(matches!(
            service_path(Some("/podkeeperx/a"), "/podkeeper", "s", "w"),
            Err(PathError::OutsidePrefix { .. })
        ));
        for bad in [
            "relative",
            "/a//b",
            "/a/../b",
            "/a/",
            "/zookeeper/x",
            "/a/\u{1}",
        ] {
            assert!(validate(bad).is_err(), "{bad:?} should be invalid");
        }
        assert_eq!(
            service_path(Some("/podkeeper/x/y"), "/podkeeper", "s", "w").unwrap(),
            "/podkeeper/x/y"
        );
        assert_eq!(endpoint_path("/p/s", "pod-1"), "/p/s/endpoints/pod-1");
    }
}
