//! What a namespace may publish: its own native folder on the operator's ensemble by default,
//! and what the RegistryPolicies naming it grant. Pure; the controller keeps the policies and
//! refuses a resource asking for more (`PolicyRefused`). Not "policy": that word names the
//! load-balancing policy here.

use crate::crd::{DubboGrant, RegistryPolicySpec};
use crate::model::pod::Labels;
use crate::model::selector::Selector;

// Path globs: `*` stays within one segment.

/// What one resource asks to publish, in the terms policies grant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// The resource's namespace.
    pub namespace: String,
    /// Its labels (for policies' `namespaceSelector`).
    pub namespace_labels: Labels,
    /// Its native service path.
    pub native_path: String,
    /// Dubbo interfaces, each with its registry root, group and version.
    pub dubbo: Vec<DubboAsk>,
    /// Curator service folders.
    pub curator: Vec<String>,
    /// ServerSet member folders.
    pub server_set: Vec<String>,
    /// `address.host` of a Template address.
    pub template_host: Option<String>,
    /// `spec.zookeeper` (canonical connect string and chroot), when it names another ensemble
    /// than the operator's.
    pub ensemble: Option<(String, Option<String>)>,
}

/// One Dubbo interface a resource asks to publish.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DubboAsk {
    /// The registry root, absolute (`/dubbo`).
    pub root: String,
    /// The interface.
    pub interface: String,
    /// Its group (`""`: none).
    pub group: String,
    /// Its version (`""`: none).
    pub version: String,
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
            .filter(|(_, p)| names(p, ns, &req.namespace_labels))
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
                .any(|(_, p)| pick(p).iter().any(|g| glob(g, path, &['/'])))
        };
        if !in_own && !any_path(|p| &p.native_paths, &req.native_path) {
            return Err(none_grants(format!(
                "native path {} (outside the namespace's own {own}/)",
                req.native_path
            )));
        }
        for ask in &req.dubbo {
            let ok = granted
                .iter()
                .any(|(_, p)| p.dubbo.iter().any(|g| dubbo_grants(g, ask)));
            if !ok {
                return Err(none_grants(format!(
                    "Dubbo interface {} under {} (group {:?}, version {:?})",
                    ask.interface, ask.root, ask.group, ask.version
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
        if let Some((connect, chroot)) = &req.ensemble {
            let ok = granted.iter().any(|(_, p)| {
                p.ensembles
                    .iter()
                    .any(|g| ensemble_grants(g, connect, chroot))
            });
            if !ok {
                let shown = format!("{connect}{}", chroot.as_deref().unwrap_or(""));
                return Err(none_grants(format!("ZooKeeper ensemble {shown:?}")));
            }
        }
        Ok(())
    }

    /// Whether namespace `ns` may use the ensemble `(connect, chroot)` at all (the reverse
    /// mirror reads any folder there, so the ensemble is all a policy grants it).
    pub fn check_ensemble(
        &self,
        ns: &str,
        labels: &Labels,
        ensemble: (String, Option<String>),
    ) -> Result<(), Refusal> {
        self.check(&Request {
            namespace: ns.to_string(),
            namespace_labels: labels.clone(),
            native_path: format!("{}/{ns}", self.home.trim_end_matches('/')),
            ensemble: Some(ensemble),
            ..Default::default()
        })
    }

    fn in_cluster_domain(&self, host: &str) -> bool {
        // The pod IP is the pod's own address: nobody else's.
        host == "{podIP}" || template_within(host, &format!("*.{}", self.cluster_domain))
    }
}

/// Whether the policy names namespace `ns` (labelled `labels`): by name or glob, or by its
/// selector. A selector that does not compile names nobody.
fn names(p: &RegistryPolicySpec, ns: &str, labels: &Labels) -> bool {
    p.namespaces.iter().any(|n| glob(n, ns, &[]))
        || p.namespace_selector
            .as_ref()
            .and_then(|s| Selector::compile(s).ok())
            .is_some_and(|s| !s.is_empty() && s.matches(labels))
}

fn dubbo_grants(g: &DubboGrant, ask: &DubboAsk) -> bool {
    glob(&g.root, &ask.root, &['/'])
        && glob(&g.interface, &ask.interface, &[])
        && glob(&g.group, &ask.group, &[])
        && glob(&g.version, &ask.version, &[])
}

/// Whether the grant `hosts[/chroot]` covers every host of `connect` and its chroot.
fn ensemble_grants(grant: &str, connect: &str, chroot: &Option<String>) -> bool {
    let (hosts, root) = match grant.find('/') {
        Some(i) => (&grant[..i], Some(&grant[i..])),
        None => (grant, None),
    };
    let patterns: Vec<&str> = hosts.split(',').map(str::trim).collect();
    let hosts_ok = connect
        .split(',')
        .all(|h| patterns.iter().any(|p| glob(p, h, &['.', ':'])));
    let root_ok = match (root, chroot) {
        (None, None) => true,
        (Some(p), Some(c)) => glob(p, c, &['/']),
        _ => false,
    };
    hosts_ok && root_ok
}

/// Whether every host `template` can render lies within the host glob `allowed`. Without
/// placeholders the host must match the glob. What placeholders render could be anything, so
/// then only a grant of a whole domain (`*.example.com`: one leading `*`) covers it, when the
/// text after the last placeholder ends in that domain.
fn template_within(template: &str, allowed: &str) -> bool {
    if allowed.chars().all(|c| c == '*') && !allowed.is_empty() {
        return true;
    }
    match template.rfind('}') {
        None => glob(allowed, template, &[]),
        Some(i) => match allowed.strip_prefix('*') {
            Some(domain) if domain.starts_with('.') && !domain.contains('*') => {
                template[i + 1..].ends_with(domain)
            }
            _ => false,
        },
    }
}

/// Glob match: `**` matches anything; `*` matches any run of characters but the `seps`;
/// everything else matches itself.
pub fn glob(pattern: &str, text: &str, seps: &[char]) -> bool {
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
                run = reachable[j] || (run && (double || !seps.contains(&t[j - 1])));
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

    fn ask(root: &str, interface: &str, group: &str, version: &str) -> DubboAsk {
        DubboAsk {
            root: root.into(),
            interface: interface.into(),
            group: group.into(),
            version: version.into(),
        }
    }

    #[test]
    fn a_namespace_selector_grants_by_label_and_an_empty_one_grants_nobody() {
        let t = tenancy(&[
            (
                "team",
                "{namespaceSelector: {matchLabels: {team: orders}}, nativePaths: [/shared/**]}",
            ),
            ("empty", "{namespaceSelector: {}, nativePaths: [/open/**]}"),
        ]);
        let mut r = req("any-name", "/shared/x");
        assert!(t.check(&r).is_err());
        r.namespace_labels = [("team".to_string(), "orders".to_string())]
            .into_iter()
            .collect();
        assert_eq!(t.check(&r), Ok(()));
        r.native_path = "/open/x".into();
        assert!(
            t.check(&r).is_err(),
            "an empty selector must not grant every namespace"
        );
    }

    #[test]
    fn a_granted_interface_under_another_root_is_refused() {
        let t = tenancy(&[(
            "evil",
            "{namespaces: [evil], dubbo: [{interface: 'com.evil.*'}]}",
        )]);
        let mut r = req("evil", "/podkeeper/evil/web");
        r.dubbo = vec![ask("/dubbo", "com.evil.X", "", "")];
        assert_eq!(t.check(&r), Ok(()));
        r.dubbo = vec![ask(
            "/podkeeper/billing/web/endpoints",
            "com.evil.X",
            "",
            "",
        )];
        let err = t.check(&r).unwrap_err();
        assert!(
            err.0.contains("under /podkeeper/billing/web/endpoints"),
            "{err}"
        );
    }

    #[test]
    fn ensemble_grants_match_host_by_host_and_name_the_chroot() {
        let t = tenancy(&[(
            "zk",
            "{namespaces: [a], ensembles: ['zk-*.team-a.svc:2181', 'zk.shared:2181/team-a*']}",
        )]);
        let with = |connect: &str, chroot: Option<&str>| {
            let mut r = req("a", "/podkeeper/a/web");
            r.ensemble = Some((connect.into(), chroot.map(Into::into)));
            t.check(&r).is_ok()
        };
        assert!(with("zk-0.team-a.svc:2181,zk-1.team-a.svc:2181", None));
        assert!(!with("zk-1.attacker.net:2181,zk-0.team-a.svc:2181", None));
        assert!(!with("zk-0.team-a.svc:2181.attacker.net:2181", None));
        assert!(
            !with("zk-0.team-a.svc:2181", Some("/elsewhere")),
            "a chroot the grant names not"
        );
        assert!(with("zk.shared:2181", Some("/team-a-1")));
        assert!(!with("zk.shared:2181", Some("/team-b")));
        assert!(!with("zk.shared:2181", None));
    }

    #[test]
    fn an_import_needs_only_the_ensemble_granted() {
        let t = tenancy(&[("zk", "{namespaces: [a], ensembles: ['zk.vms:2181']}")]);
        let none = Labels::default();
        let vms = || ("zk.vms:2181".to_string(), None);
        assert_eq!(t.check_ensemble("a", &none, vms()), Ok(()));
        let err = t.check_ensemble("b", &none, vms()).unwrap_err();
        assert!(err.0.contains("ZooKeeper ensemble"), "{err}");
        let other = ("zk.other:2181".to_string(), None);
        assert!(t.check_ensemble("a", &none, other).is_err());
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
        assert!(glob("/podkeeper/shop/*", "/podkeeper/shop/web", &['/']));
        assert!(!glob("/podkeeper/shop/*", "/podkeeper/shop/a/b", &['/']));
        assert!(glob("/podkeeper/shop/**", "/podkeeper/shop/a/b", &['/']));
        assert!(glob("com.acme.*", "com.acme.shop.Orders", &[]));
        assert!(!glob("com.acme.*", "com.acmex.Orders", &[]));
        assert!(glob("team-*", "team-", &[]) && !glob("team-*", "team", &[]));
        assert!(glob("*", "", &[]) && glob("", "", &[]) && !glob("", "x", &[]));
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
        dubbo.dubbo = vec![ask("/dubbo", "com.acme.OrderService", "g1", "1.0.0")];
        let err = t.check(&dubbo).unwrap_err();
        assert!(
            err.0.contains("Dubbo interface com.acme.OrderService"),
            "{err}"
        );
        let mut zk = req("shop", "/podkeeper/shop/web");
        zk.ensemble = Some(("evil:2181".into(), None));
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
        ok.dubbo = vec![ask("/dubbo", "com.acme.OrderService", "g1", "2.0")];
        ok.curator = vec!["/services/orders-api".into()];
        assert_eq!(t.check(&ok), Ok(()));
        let mut wrong_group = ok.clone();
        wrong_group.dubbo[0].group = "g2".into();
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
        // Only a whole-domain grant covers what placeholders render.
        let t = tenancy(&[(
            "ext",
            "{namespaces: [x], templateHosts: ['shop-*.example.com', 'api.*.example.com']}",
        )]);
        let mut r = req("x", "/podkeeper/x/web");
        r.template_host = Some("{pod}.payments.example.com".into());
        assert!(t.check(&r).is_err());
        r.template_host = Some("shop-eu.example.com".into());
        assert!(t.check(&r).is_ok());
    }

    proptest! {
        /// `*` and `**` alone match everything without (resp. with) separators, and a literal
        /// pattern matches only itself.
        #[test]
        fn glob_laws(text in "[a-c/.]{0,12}") {
            prop_assert!(glob("**", &text, &['/']));
            prop_assert_eq!(glob("*", &text, &['/']), !text.contains('/'));
            prop_assert!(glob(&text, &text, &['/']) || text.contains('*'));
            let longer = format!("{text}x");
            prop_assert!(!glob(&longer, &text, &['/']));
        }
    }
}
