//! Dubbo's dynamic configuration: the service-scoped override rule ("configurator") that tells
//! every consumer of one interface which `loadbalance` to use. Pure; no I/O.
//!
//! Facts this follows (Dubbo 3.3 sources; 2.7.23 reads the same node and schema):
//! - Node: `RegistryDirectory.ReferenceConfigurationListener` watches
//!   `DynamicConfiguration.getRuleKey(url) + ".configurators"` in the rule group `dubbo`
//!   (`GovernanceRuleRepository.DEFAULT_GROUP`); the rule key is `URL.getColonSeparatedKey()`:
//!   `interface:version:group`, an absent (blank) part left empty, both colons always there.
//!   The ZooKeeper config center (`ZookeeperDynamicConfiguration`, a
//!   `TreePathDynamicConfiguration`) stores key `k` of group `g` at `<root>/g/k`, `<root>` being
//!   `/<config namespace, default dubbo>/config`. So: `/dubbo/config/dubbo/<iface>:<v>:<g>.configurators`.
//! - Body: `ConfigParser.parseConfigurators` loads YAML with SnakeYAML's `SafeConstructor`
//!   (`ConfiguratorConfig.parseFromMap`, `ConfigItem.parseFromMap`: unknown keys and comments are
//!   ignored). A service-scoped rule's `key` is the service key `[group/]interface[:version]`
//!   (`ConfigParser.appendService`), which `AbstractConfigurator` compares with each provider
//!   URL's `getServiceKey()`. `configs[].side: consumer` with no `addresses` (`0.0.0.0`) applies
//!   on every consumer (`AbstractConfigurator.configure`, any non-empty `configVersion` being
//!   the 2.7+ form); `parameters` are added to each provider URL the consumer holds
//!   (`OverrideConfigurator`), and the cluster reads `loadbalance` from the first invoker's URL
//!   (`AbstractClusterInvoker.initLoadBalance`). A `side: provider` rule only reaches providers
//!   that run Dubbo, which podkeeper's pods need not.
//! - Names: `LoadbalanceRules` / `META-INF/dubbo/internal/...LoadBalance`: `random` (weighted,
//!   the default), `roundrobin` (smooth weighted), `leastactive`, `consistenthash`,
//!   `shortestresponse`, `adaptive`.
//!
//! The rule is rewritten whole; its first line is a YAML comment naming the owner, so podkeeper
//! recognises its own node and leaves a rule written by an operator or Dubbo Admin alone.

use crate::model::policy::Policy;

/// Dubbo's default config root in ZooKeeper: `/<namespace>/config`, namespace `dubbo`.
pub const DEFAULT_CONFIG_ROOT: &str = "/dubbo/config";
/// The group of governance rules (`GovernanceRuleRepository.DEFAULT_GROUP`).
pub const RULE_GROUP: &str = "dubbo";
/// The suffix of a configurator rule's key (`Constants.CONFIGURATORS_SUFFIX`).
pub const SUFFIX: &str = ".configurators";
/// The rule schema version written; Dubbo 2.7 treats any non-empty version as its own.
pub const CONFIG_VERSION: &str = "v3.0";
/// What a consumer uses with no rule and no `loadbalance` of its own (`DEFAULT_LOADBALANCE`).
pub const DEFAULT_LOADBALANCE: &str = "random";
/// The start of the comment line that marks a rule as podkeeper's.
const OWNER_COMMENT: &str = "# podkeeper.io/owner: ";

/// Java's `StringUtils.isBlank`: absent, empty or whitespace only.
fn present(part: Option<&str>) -> Option<&str> {
    part.filter(|s| !s.trim().is_empty())
}

/// The rule key: `interface:version:group`, absent parts empty (`URL.getColonSeparatedKey`).
pub fn rule_key(interface: &str, group: Option<&str>, version: Option<&str>) -> String {
    format!(
        "{interface}:{}:{}",
        present(version).unwrap_or(""),
        present(group).unwrap_or("")
    )
}

/// The service key a rule's `key` field names: `[group/]interface[:version]` (`URL.buildKey`).
pub fn service_key(interface: &str, group: Option<&str>, version: Option<&str>) -> String {
    let mut key = String::new();
    if let Some(g) = present(group) {
        key.push_str(g);
        key.push('/');
    }
    key.push_str(interface);
    if let Some(v) = present(version) {
        key.push(':');
        key.push_str(v);
    }
    key
}

/// The node of the rule for one interface: `<root_config>/dubbo/<interface>:<version>:<group>.configurators`,
/// `root_config` being the config center's root (`/dubbo/config` by default).
pub fn path(
    root_config: &str,
    interface: &str,
    group: Option<&str>,
    version: Option<&str>,
) -> String {
    format!(
        "{}/{RULE_GROUP}/{}{SUFFIX}",
        root_config.trim_end_matches('/'),
        rule_key(interface, group, version)
    )
}

/// Dubbo's `loadbalance` name for a policy. Dubbo's `random` and `roundrobin` already weigh
/// by the provider URL's `weight`, so the weighted and plain policies share a name.
pub fn loadbalance(policy: Policy) -> &'static str {
    match policy {
        Policy::RoundRobin | Policy::WeightedRoundRobin => "roundrobin",
        Policy::Random | Policy::WeightedRandom => "random",
        Policy::LeastRequest => "leastactive",
        Policy::ConsistentHash => "consistenthash",
    }
}

/// A YAML double-quoted scalar (a JSON string is one).
fn quoted(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

fn owner_line(owner_tag: &str) -> String {
    format!("{OWNER_COMMENT}{}\n", quoted(owner_tag))
}

/// The rule's YAML: every consumer of `interface` (in `group`, at `version`) uses `policy`.
/// The same input gives the same bytes.
pub fn rule(
    interface: &str,
    group: Option<&str>,
    version: Option<&str>,
    policy: Policy,
    owner_tag: &str,
) -> Vec<u8> {
    format!(
        "{}configVersion: {}\nscope: service\nkey: {}\nenabled: true\nconfigs:\n  - side: consumer\n    parameters:\n      loadbalance: {}\n",
        owner_line(owner_tag),
        quoted(CONFIG_VERSION),
        quoted(&service_key(interface, group, version)),
        loadbalance(policy),
    )
    .into_bytes()
}

/// Did podkeeper write this rule for `owner_tag`? Its first line is the owner comment.
pub fn is_ours(data: &[u8], owner_tag: &str) -> bool {
    data.starts_with(owner_line(owner_tag).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const IFACE: &str = "org.example.DemoService";

    #[test]
    fn path_follows_the_colon_separated_rule_key() {
        assert_eq!(
            path("/dubbo/config", IFACE, Some("g1"), Some("1.0.0")),
            "/dubbo/config/dubbo/org.example.DemoService:1.0.0:g1.configurators"
        );
        assert_eq!(
            path("/dubbo/config/", IFACE, None, None),
            "/dubbo/config/dubbo/org.example.DemoService::.configurators"
        );
        assert_eq!(
            path(DEFAULT_CONFIG_ROOT, IFACE, Some("g1"), Some(" ")),
            "/dubbo/config/dubbo/org.example.DemoService::g1.configurators"
        );
        assert_eq!(
            path("/other/config", IFACE, Some(""), Some("2")),
            "/other/config/dubbo/org.example.DemoService:2:.configurators"
        );
    }

    #[test]
    fn service_key_is_group_slash_interface_colon_version() {
        assert_eq!(
            service_key(IFACE, Some("g1"), Some("1.0.0")),
            "g1/org.example.DemoService:1.0.0"
        );
        assert_eq!(
            service_key(IFACE, None, Some("1.0.0")),
            "org.example.DemoService:1.0.0"
        );
        assert_eq!(
            service_key(IFACE, Some("g1"), None),
            "g1/org.example.DemoService"
        );
        assert_eq!(service_key(IFACE, Some(""), Some("")), IFACE);
    }

    #[test]
    fn every_policy_has_a_dubbo_name() {
        let names: Vec<_> = Policy::ALL.iter().map(|p| loadbalance(*p)).collect();
        assert_eq!(
            names,
            [
                "roundrobin",
                "random",
                "random",
                "roundrobin",
                "leastactive",
                "consistenthash"
            ]
        );
    }

    #[test]
    fn golden_rule() {
        let got = rule(
            IFACE,
            Some("g1"),
            Some("1.0.0"),
            Policy::LeastRequest,
            "test/shop/web",
        );
        let want = "# podkeeper.io/owner: \"test/shop/web\"\n\
                    configVersion: \"v3.0\"\n\
                    scope: service\n\
                    key: \"g1/org.example.DemoService:1.0.0\"\n\
                    enabled: true\n\
                    configs:\n  \
                    - side: consumer\n    \
                    parameters:\n      \
                    loadbalance: leastactive\n";
        assert_eq!(String::from_utf8(got.clone()).unwrap(), want);
        assert_eq!(
            got,
            rule(
                IFACE,
                Some("g1"),
                Some("1.0.0"),
                Policy::LeastRequest,
                "test/shop/web"
            )
        );
        let bare = rule(IFACE, None, None, Policy::WeightedRandom, "c/ns/x");
        assert_eq!(
            String::from_utf8(bare).unwrap(),
            "# podkeeper.io/owner: \"c/ns/x\"\n\
             configVersion: \"v3.0\"\n\
             scope: service\n\
             key: \"org.example.DemoService\"\n\
             enabled: true\n\
             configs:\n  \
             - side: consumer\n    \
             parameters:\n      \
             loadbalance: random\n"
        );
    }

    #[test]
    fn odd_strings_stay_quoted_on_one_line() {
        let got = String::from_utf8(rule(
            IFACE,
            Some("a\"b\nc"),
            Some("1.0"),
            Policy::Random,
            "x\ny",
        ))
        .unwrap();
        assert!(
            got.starts_with("# podkeeper.io/owner: \"x\\ny\"\n"),
            "{got}"
        );
        assert!(
            got.contains("key: \"a\\\"b\\nc/org.example.DemoService:1.0\"\n"),
            "{got}"
        );
        assert!(is_ours(got.as_bytes(), "x\ny"));
    }

    #[test]
    fn is_ours_needs_our_owner_line_first() {
        let ours = rule(IFACE, None, None, Policy::RoundRobin, "c/ns/web");
        assert!(is_ours(&ours, "c/ns/web"));
        assert!(!is_ours(&ours, "c/ns/we"));
        assert!(!is_ours(&ours, "c/ns/web2"));
        assert!(!is_ours(&ours, "other/ns/web"));
        let admin = b"configVersion: v3.0\nscope: service\nkey: org.example.DemoService\n\
                      enabled: true\nconfigs:\n- side: consumer\n  parameters:\n    loadbalance: random\n";
        assert!(!is_ours(admin, "c/ns/web"));
        assert!(!is_ours(b"", "c/ns/web"));
        let mut edited = b"# note\n".to_vec();
        edited.extend_from_slice(&ours);
        assert!(!is_ours(&edited, "c/ns/web"));
    }
}
