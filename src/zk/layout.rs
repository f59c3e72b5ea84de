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
        "path {path:?} is outside the allowed prefixes {prefix:?} (operator flag --allowed-path-prefix)"
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

/// The base path of a resource: `spec.path`, or `<first prefix>/<namespace>/<serviceName>`; it
/// must lie strictly under one of the allowed `prefixes`.
pub fn service_path(
    spec_path: Option<&str>,
    prefixes: &[String],
    namespace: &str,
    service: &str,
) -> Result<String, PathError> {
    let home = prefixes.first().map_or("", |p| p.trim_end_matches('/'));
    let path = match spec_path {
        Some(p) => p.to_string(),
        None => format!("{home}/{namespace}/{service}"),
    };
    allowed(&path, prefixes)?;
    Ok(path)
}

/// Checks that `path` is valid and lies strictly under one of `prefixes` (none: anywhere).
pub fn allowed(path: &str, prefixes: &[String]) -> Result<(), PathError> {
    validate(path)?;
    let under = |prefix: &String| {
        let prefix = prefix.trim_end_matches('/');
        prefix.is_empty() || path.starts_with(&format!("{prefix}/"))
    };
    if prefixes.is_empty() || prefixes.iter().any(under) {
        return Ok(());
    }
    Err(PathError::OutsidePrefix {
        path: path.to_string(),
        prefix: prefixes.join(","),
    })
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

    fn pk() -> Vec<String> {
        vec!["/podkeeper".to_string()]
    }

    #[test]
    fn default_path_is_prefix_namespace_service() {
        assert_eq!(
            service_path(None, &pk(), "shop", "web").unwrap(),
            "/podkeeper/shop/web"
        );
        assert_eq!(
            service_path(None, &["/podkeeper/".to_string()], "shop", "web").unwrap(),
            "/podkeeper/shop/web"
        );
    }

    #[test]
    fn paths_outside_the_prefix_or_malformed_are_refused() {
        assert!(matches!(
            service_path(Some("/other/web"), &pk(), "s", "w"),
            Err(PathError::OutsidePrefix { .. })
        ));
        assert!(matches!(
            service_path(Some("/podkeeper"), &pk(), "s", "w"),
            Err(PathError::OutsidePrefix { .. })
        ));
        assert!(matches!(
            service_path(Some("/podkeeperx/a"), &pk(), "s", "w"),
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
            service_path(Some("/podkeeper/x/y"), &pk(), "s", "w").unwrap(),
            "/podkeeper/x/y"
        );
        assert_eq!(endpoint_path("/p/s", "pod-1"), "/p/s/endpoints/pod-1");
    }

    #[test]
    fn any_of_several_prefixes_allows_a_path_and_the_first_is_home() {
        let prefixes: Vec<String> = ["/podkeeper", "/dubbo", "/services"]
            .map(String::from)
            .into();
        assert_eq!(
            service_path(None, &prefixes, "shop", "web").unwrap(),
            "/podkeeper/shop/web"
        );
        assert!(allowed("/dubbo/com.example.Api/providers", &prefixes).is_ok());
        assert!(allowed("/services/web", &prefixes).is_ok());
        let err = allowed("/serversets/web", &prefixes).unwrap_err();
        assert!(
            err.to_string().contains("/podkeeper,/dubbo,/services"),
            "{err}"
        );
        assert!(allowed("/anywhere/at/all", &[]).is_ok());
    }
}
