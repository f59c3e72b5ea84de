//! What a namespace may publish: its own native folder on the operator's ensemble by default,
//! and what the RegistryPolicies naming it grant. Pure; the controller keeps the policies and
//! refuses a resource asking for more (`PolicyRefused`). Not "policy": that word names the
//! load-balancing policy here.

use crate::crd::{DubboGrant, RegistryPolicySpec};

/// What one resource asks to publish, in the terms policies grant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// The resource's namespace.
    pub namespace: String,
    /// Its native service path.
    pub native_path: String,
    /// Dubbo interfaces with their group and version (`""`: none).
    pub dubbo: Vec<(String, String, String)>,
    /// Curator service folders.
    pub curator: Vec<String>,
    /// ServerSet member folders.
    pub server_set: Vec<String>,
    /// `address.host` of a Template address.
    pub template_host: Option<String>,
    /// `spec.zookeeper.connect`, when it names another ensemble than the operator's.
    pub ensemble: Option<String>,
}

/// The policies in force and what every namespace gets without one.
#[derive(Debug, Clone, Default)]
pub struct Tenancy {
    /// The home prefix (`/podkeeper`): a namespace owns `<home>/<namespace>/…`.
    pub home: String,
    /// The cluster's DNS domain (`cluster.local`): Template hosts inside it are always allowed.
    pub cluster_domain: String,
    /// Every RegistryPolicy, by name.
    pub policies: Vec<(String, RegistryPolicySpec)>,
}

/// Why a resource may not publish what it asks, naming the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

impl Tenancy {
    /// Checks everything `req` asks for; the first thing not granted is the refusal.
    pub fn check(&self, req: &Request) -> Result<(), Refusal> {
        let ns = req.namespace.as_str();
        let granted: Vec<&(String, RegistryPolicySpec)> = self
            .policies
            .iter()
            .filter(|(_, p)| p.namespaces.iter().any(|n| glob(n, ns, None)))
            .collect();
        let names = || granted.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>();
        let none_grants = |what: String| {
            Refusal(format!(
                "{what} is granted to namespace {ns} by no RegistryPolicy (policies naming it: {})",
                match names().as_slice() {
                    [] => "none".to_string(),
                    n => n.join(", "),
                }
            ))
        };
        let own = format!("{}/{ns}", self.home.trim_end_matches('/'));
        let in_own = req.native_path == own || req.native_path.starts_with(&format!("{own}/"));
        let any_path = |pick: fn(&RegistryPolicySpec) -> &Vec<String>, path: &str| {
            granted
                .iter()
                .any(|(_, p)| pick(p).iter().any(|g| glob(g, path, Some('/'))))
        };
        if !in_own && !any_path(|p| &p.native_paths, &req.native_path) {
            return Err(none_grants(format!(
                "native path {} (outside the namespace's own {own}/)",
                req.native_path
            )));
        }
        for (iface, group, version) in &req.dubbo {
            let ok = granted.iter().any(|(_, p)| {
                p.dubbo
                    .iter()
                    .any(|g| dubbo_grants(g, iface, group, version))
            });
            if !ok {
                return Err(none_grants(format!(
                    "Dubbo interface {iface} (group {group:?}, version {version:?})"
                )));
            }
        }
        for dir in &req.curator {
            if !any_path(|p| &p.curator_services, dir) {
                return Err(none_grants(format!("Curator service folder {dir}")));
            }
        }
        for dir in &req.server_set {
            if !any_path(|p| &p.server_set_paths, dir) {
                return Err(none_grants(format!("ServerSet folder {dir}")));
            }
        }
        if let Some(host) = &req.template_host {
            let ok = self.in_cluster_domain(host)
                || granted
                    .iter()
                    .any(|(_, p)| p.template_hosts.iter().any(|g| template_within(host, g)));
            if !ok {
                return Err(none_grants(format!(
                    "Template host {host:?} (outside *.{})",
                    self.cluster_domain
                )));
            }
        }
        if let Some(connect) = &req.ensemble {
            let ok = granted
                .iter()
                .any(|(_, p)| p.ensembles.iter().any(|g| glob(g, connect, None)));
            if !ok {
                return Err(none_grants(format!("ZooKeeper ensemble {connect:?}")));
            }
        }
        Ok(())
    }

    fn in_cluster_domain(&self, host: &str) -> bool {
        // The pod IP is the pod's own address: nobody else's.
        host == "{podIP}" || template_within(host, &format!("*.{}", self.cluster_domain))
    }
}

fn dubbo_grants(g: &DubboGrant, iface: &str, group: &str, version: &str) -> bool {
    glob(&g.interface, iface, None)
        && glob(&g.group, group, None)
        && glob(&g.version, version, None)
}

/// Whether every host `template` can render lies within the host glob `allowed`: the text after
/// the template's last placeholder must match the glob's fixed tail (the part after its last
/// `*`), and, without placeholders, the whole host must match the glob.
fn template_within(template: &str, allowed: &str) -> bool {
    if allowed.chars().all(|c| c == '*') && !allowed.is_empty() {
        return true;
    }
    match template.rfind('}') {
        None => glob(allowed, template, None),
        Some(i) => {
            let tail = &template[i + 1..];
            match allowed.rfind('*') {
                // `*.example.com`: what the placeholders render is the `*`.
                Some(j) => !allowed[j + 1..].is_empty() && tail.ends_with(&allowed[j + 1..]),
                None => false,
            }
        }
    }
}

/// Glob match: `**` matches anything; `*` matches any run of characters except `sep` (any at
/// all without one); everything else matches itself.
pub fn glob(pattern: &str, text: &str, sep: Option<char>) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    // Rows of the classic table: reachable[j] = p[..i] matches t[..j].
    let mut reachable = vec![false; t.len() + 1];
    reachable[0] = true;
    let mut i = 0;
    while i < p.len() {
        let mut next = vec![false; t.len() + 1];
        if p[i] == '*' {
            let double = p.get(i + 1) == Some(&'*');
            let mut run = false;
            for j in 0..=t.len() {
                // Extend a run of `*` over characters it may cover.
                run = reachable[j] || (run && (double || Some(t[j - 1]) != sep));
                next[j] = run;
            }
            i += if double { 2 } else { 1 };
        } else {
            for j in 1..=t.len() {
                next[j] = reachable[j - 1] && p[i] == t[j - 1];
            }
            i += 1;
        }
        reachable = next;
    }
    reachable[t.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tenancy(policies: &[(&str, &str)]) -> Tenancy {
        Tenancy {
            home: "/podkeeper".into(),
            cluster_domain: "cluster.local".into(),
            policies: policies
                .iter()
                .map(|(n, yaml)| (n.to_string(), serde_yaml::from_str(yaml).unwrap()))
                .collect(),
        }
    }

    fn req(ns: &str, path: &str) -> Request {
        Request {
            namespace: ns.into(),
            native_path: path.into(),
            ..Default::default()
        }
    }

    #[test]
    fn globs() {
        assert!(glob("/podkeeper/shop/*", "/podkeeper/shop/web", Some('/')));
        assert!(!glob("/podkeeper/shop/*", "/podkeeper/shop/a/b", Some('/')));
        assert!(glob("/podkeeper/shop/**", "/podkeeper/shop/a/b", Some('/')));
        assert!(glob("com.acme.*", "com.acme.shop.Orders", None));
        assert!(!glob("com.acme.*", "com.acmex.Orders", None));
        assert!(glob("team-*", "team-", None) && !glob("team-*", "team", None));
        assert!(glob("*", "", None) && glob("", "", None) && !glob("", "x", None));
    }

    #[test]
    fn without_a_policy_a_namespace_has_its_own_native_folder_and_nothing_else() {
        let t = tenancy(&[]);
        assert!(t.check(&req("shop", "/podkeeper/shop/web")).is_ok());
        assert!(t.check(&req("shop", "/podkeeper/shop/a/b")).is_ok());
        let err = t.check(&req("shop", "/podkeeper/billing/web")).unwrap_err();
        assert!(
            err.0.contains("native path /podkeeper/billing/web"),
            "{err}"
        );
        assert!(err.0.contains("namespace shop"), "{err}");
        // A prefix of another namespace's name is not its folder.
        assert!(t.check(&req("shop", "/podkeeper/shopping/web")).is_err());
        let mut dubbo = req("shop", "/podkeeper/shop/web");
        dubbo.dubbo = vec![("com.acme.OrderService".into(), "g1".into(), "1.0.0".into())];
        let err = t.check(&dubbo).unwrap_err();
        assert!(
            err.0.contains("Dubbo interface com.acme.OrderService"),
            "{err}"
        );
        let mut zk = req("shop", "/podkeeper/shop/web");
        zk.ensemble = Some("evil:2181".into());
        assert!(t.check(&zk).is_err());
    }

    #[test]
    fn policies_grant_by_namespace_pattern_and_name_themselves_in_refusals() {
        let t = tenancy(&[
            (
                "orders",
                "{namespaces: [orders, orders-*], dubbo: [{interface: com.acme.Order*, group: g1}], curatorServices: [/services/orders-*]}",
            ),
            (
                "shared",
                "{namespaces: ['*'], nativePaths: [/podkeeper/shared/*]}",
            ),
        ]);
        let mut ok = req("orders-eu", "/podkeeper/shared/web");
        ok.dubbo = vec![("com.acme.OrderService".into(), "g1".into(), "2.0".into())];
        ok.curator = vec!["/services/orders-api".into()];
        assert_eq!(t.check(&ok), Ok(()));
        let mut wrong_group = ok.clone();
        wrong_group.dubbo[0].1 = "g2".into();
        let err = t.check(&wrong_group).unwrap_err();
        assert!(
            err.0.contains("policies naming it: orders, shared"),
            "{err}"
        );
        let mut evil = ok.clone();
        evil.namespace = "acc-evil".into();
        let err = t.check(&evil).unwrap_err();
        assert!(
            err.0.contains("Dubbo") && err.0.contains("policies naming it: shared"),
            "{err}"
        );
    }

    #[test]
    fn template_hosts_stay_inside_the_cluster_domain_or_a_granted_domain() {
        let t = tenancy(&[(
            "ext",
            "{namespaces: [shop], templateHosts: ['*.shop.example.com']}",
        )]);
        let with = |ns: &str, host: &str| {
            let mut r = req(ns, &format!("/podkeeper/{ns}/web"));
            r.template_host = Some(host.into());
            t.check(&r).is_ok()
        };
        assert!(with("other", "{pod}.web.other.svc.cluster.local"));
        assert!(with("other", "{podIP}"));
        assert!(!with("other", "attacker.example.net"));
        assert!(!with("other", "{pod}.attacker.example.net"));
        assert!(with("shop", "{pod}.shop.example.com"));
        assert!(with("shop", "api.shop.example.com"));
        assert!(!with("shop", "shop.example.com.attacker.net"));
        // A placeholder after the domain could render anything.
        assert!(!with("shop", "x.shop.example.com{pod}"));
        assert!(!with("other", "{pod}.shop.example.com"));
    }

    proptest! {
        /// `*` and `**` alone match everything without (resp. with) separators, and a literal
        /// pattern matches only itself.
        #[test]
        fn glob_laws(text in "[a-c/.]{0,12}") {
            prop_assert!(glob("**", &text, Some('/')));
            prop_assert_eq!(glob("*", &text, Some('/')), !text.contains('/'));
            prop_assert!(glob(&text, &text, Some('/')) || text.contains('*'));
            let longer = format!("{text}x");
            prop_assert!(!glob(&longer, &text, Some('/')));
        }
    }
}
