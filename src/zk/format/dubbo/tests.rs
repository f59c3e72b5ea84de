use super::*;
use crate::model::record::EndpointStatus;
use crate::zk::format::fixture;
use proptest::prelude::*;

fn options() -> Options {
    Options {
        group: Some("g1".into()),
        version: Some("1.0.0".into()),
        warmup_seconds: Some(120),
        ..Options::new(&["org.example.DemoService", "org.example.HealthService"])
    }
}

#[test]
fn golden_nodes_of_the_fixture() {
    let nodes = nodes(&options(), &fixture::publish()).unwrap();
    assert_eq!(nodes.len(), 8);
    let mut text = String::new();
    for n in &nodes {
        // The decoded URL beside the node name, so the golden file can be read.
        let name = n.path.rsplit('/').next().unwrap();
        text.push_str(&format!(
            "{}\n# {}\n\n",
            n.path,
            java_url_decode(name).unwrap()
        ));
    }
    fixture::assert_golden("dubbo.txt", &text);
}

#[test]
fn one_exact_node_name() {
    let publish = fixture::publish();
    let nodes = nodes(&Options::new(&["org.example.DemoService"]), &publish).unwrap();
    let canary = nodes.iter().find(|n| n.path.contains("10.1.0.20")).unwrap();
    assert_eq!(
        canary.path,
        "/dubbo/org.example.DemoService/providers/dubbo%3A%2F%2F10.1.0.20%3A20880%2F\
         org.example.DemoService%3Fanyhost%3Dfalse%26application%3Dweb%26dubbo%3D2.0.2%26\
         dynamic%3Dfalse%26interface%3Dorg.example.DemoService%26podkeeper.owner%3Dtest%2F\
         shop%2Fweb%26podkeeper.zone%3Dzone-a%26side%3Dprovider%26timestamp%3D1767225602000%26\
         weight%3D100000"
    );
    assert!(canary.data.is_empty());
}

#[test]
fn dirs_are_per_interface_under_the_root() {
    let mut o = options();
    assert_eq!(
        dirs(&o, "web"),
        vec![
            "/dubbo/org.example.DemoService/providers",
            "/dubbo/org.example.HealthService/providers"
        ]
    );
    o.root = "/rpc".into();
    assert_eq!(dirs(&o, "web")[0], "/rpc/org.example.DemoService/providers");
}

#[test]
fn decode_reads_back_what_nodes_wrote() {
    let publish = fixture::publish();
    let nodes = nodes(&options(), &publish).unwrap();
    for n in &nodes {
        let d = decode(&n.path, &n.data).expect("our node decodes");
        let ep = publish
            .endpoints
            .iter()
            .find(|e| e.record.host == d.host)
            .unwrap();
        assert_eq!(d.port, 20880);
        assert_eq!(d.weight, f64::from(ep.record.weight));
        assert_eq!(d.draining, ep.record.status == EndpointStatus::Draining);
        assert_eq!(d.zone.as_deref(), ep.record.zone.as_deref());
        assert_eq!(d.owner.as_deref(), Some("test/shop/web"));
        assert_eq!(d.metadata["timestamp"], ep.ready_since_ms.to_string());
        assert_eq!(d.metadata["warmup"], "120000");
        assert_eq!(d.metadata["group"], "g1");
        assert_eq!(d.metadata["version"], "1.0.0");
        assert!(is_ours(&n.path, &n.data, &publish.owner));
        assert!(!is_ours(
            &n.path,
            &n.data,
            &OwnerTag::new("other", "shop", "web")
        ));
    }
}

#[test]
fn a_weight_change_is_a_new_name() {
    let mut publish = fixture::publish();
    let before = nodes(&options(), &publish).unwrap();
    let mut rec = (*publish.endpoints[0].record).clone();
    rec.weight += 1;
    publish.endpoints[0].record = rec.into();
    let after = nodes(&options(), &publish).unwrap();
    let changed = before.iter().filter(|n| !after.contains(n)).count();
    assert_eq!(changed, 2, "one endpoint, two interfaces");
}

#[test]
fn a_vm_provider_written_by_dubbo_decodes_and_is_not_ours() {
    // As Dubbo 3.3 registers a provider (parameters sorted, pid and timestamp included).
    let url = "tri://192.168.7.9:50051/org.example.DemoService?application=vm-app&deprecated=false\
               &dubbo=2.0.2&dynamic=true&generic=false&group=g1&interface=org.example.DemoService\
               &methods=hello,bye&pid=4242&release=3.3.6&service-name-mapping=true&side=provider\
               &timestamp=1767225000000&version=1.0.0";
    let name = java_url_encode(url);
    let d = decode(&name, b"192.168.7.9").unwrap();
    assert_eq!((d.host.as_str(), d.port), ("192.168.7.9", 50051));
    assert_eq!(d.weight, 100.0, "Dubbo's default weight");
    assert!(!d.draining);
    assert_eq!(d.owner, None);
    assert!(!is_ours(&name, &[], &OwnerTag::new("test", "shop", "web")));
    assert_eq!(d.metadata["methods"], "hello,bye");
}

#[test]
fn garbage_and_non_providers_are_skipped_not_fatal() {
    for name in [
        "",
        "garbage",
        "%ZZ",
        "%E2%82",
        "dubbo%3A%2F%2Fhost-without-port%2Fx",
        "empty%3A%2F%2F0.0.0.0%3A0%2Fx%3Fcategory%3Dproviders",
        "consumer%3A%2F%2F10.0.0.1%3A0%2Fx%3Fside%3Dconsumer",
        "dubbo%3A%2F%2F10.0.0.1%3A99999%2Fx",
        "dubbo%3A%2F%2F10.0.0.1%3A1%2Fx%3Fweight%3Dheavy",
    ] {
        assert_eq!(decode(name, &[]), None, "{name:?}");
    }
    let disabled = java_url_encode("dubbo://10.0.0.1:1/x?enabled=false&weight=5");
    assert!(decode(&disabled, &[]).unwrap().draining);
    let v6 = java_url_encode("dubbo://[fd00::1]:20880/x?weight=3");
    let d = decode(&v6, &[]).unwrap();
    assert_eq!((d.host.as_str(), d.port, d.weight), ("fd00::1", 20880, 3.0));
}

#[test]
fn bad_options_and_values_are_refused() {
    let publish = fixture::publish();
    let mut o = options();
    o.interfaces.clear();
    assert!(matches!(
        nodes(&o, &publish),
        Err(FormatError::Option {
            field: "interfaces",
            ..
        })
    ));
    let mut o = options();
    o.group = Some("a&b".into());
    assert!(nodes(&o, &publish).is_err());
    let mut o = options();
    o.methods = vec!["a,b".into()];
    assert!(nodes(&o, &publish).is_err());
    let mut o = options();
    o.root = "bad//root".into();
    assert!(nodes(&o, &publish).is_err());
    let mut bad_owner = publish.clone();
    bad_owner.owner.cluster_id = "a=b".into();
    assert!(matches!(
        nodes(&options(), &bad_owner),
        Err(FormatError::Value { .. })
    ));
}

#[test]
fn options_deserialize_with_defaults_in_camel_case() {
    let o: Options =
        serde_json::from_str(r#"{"interfaces":["a.B"],"warmupSeconds":60,"group":"g"}"#).unwrap();
    assert_eq!(o.root, "dubbo");
    assert_eq!(o.protocol, "dubbo");
    assert_eq!(o.warmup_seconds, Some(60));
    let schema = serde_json::to_value(schemars::schema_for!(Options)).unwrap();
    assert!(schema["properties"]["warmupSeconds"]["description"].is_string());
}

#[test]
fn weights_fit_a_java_int_and_keep_shares() {
    assert_eq!(weights(&[300_000, 600_000, 0]), vec![300_000, 600_000, 0]);
    let big = vec![100_000_000u32; 30];
    let w = weights(&big);
    let sum: u64 = w.iter().map(|&x| u64::from(x)).sum();
    assert!(sum <= i32::MAX as u64);
    assert!(w.windows(2).all(|p| p[0] == p[1]));
}

proptest! {
    #[test]
    fn url_encoding_round_trips_and_uses_the_java_alphabet(s in "\\PC*") {
        let e = java_url_encode(&s);
        prop_assert!(e.chars().all(|c| c.is_ascii_alphanumeric() || ".-*_+%".contains(c)));
        prop_assert_eq!(java_url_decode(&e), Some(s));
    }

    #[test]
    fn decode_never_panics(s in "\\PC*", b in proptest::collection::vec(any::<u8>(), 0..16)) {
        let _ = decode(&s, &b);
        let _ = decode(&java_url_encode(&s), &b);
    }

    #[test]
    fn scaled_weights_keep_zero_and_ready_apart(ws in proptest::collection::vec(0u32..=u32::MAX, 1..40)) {
        let out = weights(&ws);
        let sum: u64 = out.iter().map(|&x| u64::from(x)).sum();
        prop_assert!(sum <= i32::MAX as u64);
        for (a, b) in ws.iter().zip(&out) {
            prop_assert_eq!(*a == 0, *b == 0);
            prop_assert!(b <= a);
        }
    }
}

#[test]
fn a_provider_url_past_its_share_of_the_listing_is_refused() {
    let mut options = Options::new(&["org.example.DemoService"]);
    options.methods = (0..100)
        .map(|i| format!("method{i:03}{}", "x".repeat(40)))
        .collect();
    let err = nodes(&options, &fixture::publish()).unwrap_err();
    assert!(err.to_string().contains("4 KiB"), "{err}");
    options.methods.truncate(10);
    assert!(nodes(&options, &fixture::publish()).is_ok());
}

#[test]
fn a_pushed_policy_adds_one_owned_configurator_rule_per_interface() {
    use crate::model::policy::Policy;
    let publish = fixture::publish();
    let plain = nodes(&options(), &publish).unwrap();
    let pushed_options = Options {
        loadbalance: Some(Policy::LeastRequest),
        ..options()
    };
    let pushed = nodes(&pushed_options, &publish).unwrap();
    let rules: Vec<&Node> = pushed
        .iter()
        .filter(|n| n.path.ends_with(".configurators"))
        .collect();
    assert_eq!(rules.len(), pushed_options.interfaces.len());
    assert_eq!(
        pushed.len(),
        plain.len() + rules.len(),
        "the providers are unchanged"
    );
    let dirs = dirs(&pushed_options, "web");
    assert!(
        rules
            .iter()
            .all(|r| dirs.iter().any(|d| r.path.starts_with(d.as_str())))
    );
    for r in &rules {
        assert!(String::from_utf8_lossy(&r.data).contains("loadbalance: leastactive"));
        assert!(is_ours(&r.path, &r.data, &publish.owner));
        let other = OwnerTag::new("other", "shop", "web");
        assert!(
            !is_ours(&r.path, &r.data, &other),
            "another owner's rule is left alone"
        );
        assert!(
            !is_ours(&r.path, b"configVersion: v3.0\n", &publish.owner),
            "a hand-written rule"
        );
    }
    assert_eq!(dirs.len(), super::dirs(&options(), "web").len() + 1);
}
