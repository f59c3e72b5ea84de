use super::*;
use crate::zk::format::fixture;
use proptest::prelude::*;

fn options() -> Options {
    Options {
        ssl_port: Some("https".into()),
        ..Options::default()
    }
}

#[test]
fn golden_nodes_of_the_fixture() {
    let nodes = nodes(&Options::default(), &fixture::publish()).unwrap();
    assert_eq!(nodes.len(), 4);
    fixture::assert_golden("curator.txt", &fixture::render(&nodes));
}

#[test]
fn one_exact_instance() {
    let publish = fixture::publish();
    let nodes = nodes(&Options::default(), &publish).unwrap();
    let canary = nodes.iter().find(|n| n.path.contains("canary")).unwrap();
    let id = instance_id(&publish.owner, "web-canary-0");
    assert_eq!(canary.path, format!("/services/web/{id}"));
    assert_eq!(
        String::from_utf8(canary.data.clone()).unwrap(),
        format!(
            r#"{{"name":"web","id":"{id}","address":"10.1.0.20","port":20880,"sslPort":null,"payload":{{"@class":"org.springframework.cloud.zookeeper.discovery.ZookeeperInstance","id":"{id}","name":"web","metadata":{{"instance_status":"UP","podkeeper.io/owner":"test/shop/web","track":"canary","version":"1.4.2","weight":"1000","zone":"zone-a"}}}},"registrationTimeUTC":1767225602000,"serviceType":"DYNAMIC","uriSpec":{{"parts":[{{"value":"scheme","variable":true}},{{"value":"://","variable":false}},{{"value":"address","variable":true}},{{"value":":","variable":false}},{{"value":"port","variable":true}}]}},"enabled":true}}"#
        )
    );
}

#[test]
fn draining_is_out_of_service_and_disabled_and_ssl_port_is_named() {
    let publish = fixture::publish();
    for n in nodes(&options(), &publish).unwrap() {
        let v: serde_json::Value = serde_json::from_slice(&n.data).unwrap();
        assert_eq!(v["sslPort"], 8443);
        let draining = n.path.contains("web-stable-2");
        assert_eq!(v["enabled"], !draining);
        let status = &v["payload"]["metadata"]["instance_status"];
        assert_eq!(status, if draining { "OUT_OF_SERVICE" } else { "UP" });
        let w: u64 = v["payload"]["metadata"]["weight"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(w >= 1, "Spring weights are at least 1");
        let d = decode(&n.path, &n.data).unwrap();
        assert_eq!(d.draining, draining);
        assert!(is_ours(&n.path, &n.data, &publish.owner));
        assert!(!is_ours(
            &n.path,
            &n.data,
            &OwnerTag::new("test", "shop", "api")
        ));
        assert!(curator_accepts(&n.data, SPRING_PAYLOAD_CLASS));
        assert!(!curator_accepts(&n.data, "com.example.Other"));
    }
}

#[test]
fn spring_weights_keep_the_shares() {
    // 300,000 / 600,000 / 100,000 / 0: the sum is 1,000,000, so the scale is 100.
    let publish = fixture::publish();
    let ws: Vec<u32> = publish.endpoints.iter().map(|e| e.record.weight).collect();
    let scale = spring_weight_scale(ws.iter().copied());
    assert_eq!(scale, 100);
    let spring: Vec<u64> = ws.iter().map(|&w| spring_weight(w, scale)).collect();
    assert_eq!(spring, vec![3000, 6000, 1000, 1]);
    // Without groups relative weights stay exact up to 100 pods of weight 100.
    assert_eq!(spring_weight_scale([100u32; 100].into_iter()), 1);
    assert_eq!(spring_weight_scale([100u32; 101].into_iter()), 10);
    assert_eq!(spring_weight(150, 10), 15);
    assert_eq!(spring_weight(4, 10), 1);
    assert_eq!(spring_weight(5, 10), 1);
    assert_eq!(spring_weight(15, 10), 2);
}

#[test]
fn payload_none_keeps_ownership_in_the_id() {
    let publish = fixture::publish();
    let o = Options {
        payload: PayloadKind::None,
        ..Options::default()
    };
    for n in nodes(&o, &publish).unwrap() {
        let v: serde_json::Value = serde_json::from_slice(&n.data).unwrap();
        assert!(v["payload"].is_null());
        assert!(is_ours(&n.path, &n.data, &publish.owner));
        assert!(!is_ours(
            &n.path,
            &n.data,
            &OwnerTag::new("x", "shop", "web")
        ));
        assert!(curator_accepts(&n.data, SPRING_PAYLOAD_CLASS));
    }
}

#[test]
fn a_spring_registration_decodes_and_is_not_ours() {
    // What a Spring Boot app registers by itself (Curator's compatible mode: no `enabled`).
    let data = br#"{"name":"web","id":"1d2c6a9e-6d3f-4a7b-9c52-0f3c2b1a9e77","address":"192.168.7.9","port":8080,"sslPort":null,"payload":{"@class":"org.springframework.cloud.zookeeper.discovery.ZookeeperInstance","id":"application-1","name":"web","metadata":{"instance_status":"UP"}},"registrationTimeUTC":1767225000000,"serviceType":"DYNAMIC","uriSpec":{"parts":[{"value":"scheme","variable":true},{"value":"://","variable":false},{"value":"address","variable":true},{"value":":","variable":false},{"value":"port","variable":true}]}}"#;
    let d = decode("1d2c6a9e-6d3f-4a7b-9c52-0f3c2b1a9e77", data).unwrap();
    assert_eq!(
        (d.host.as_str(), d.port, d.weight),
        ("192.168.7.9", 8080, 1.0)
    );
    assert!(!d.draining);
    assert_eq!(d.owner, None);
    assert!(!is_ours("x", data, &OwnerTag::new("test", "shop", "web")));
    assert!(curator_accepts(data, SPRING_PAYLOAD_CLASS));
}

#[test]
fn garbage_is_skipped_not_fatal() {
    for data in [
        &b""[..],
        b"null",
        b"[1]",
        b"{\"address\":\"h\"}",
        b"{\"address\":\"h\",\"port\":70000}",
        b"{\"address\":1,\"port\":1}",
    ] {
        assert_eq!(decode("x", data), None);
        assert!(!is_ours("x", data, &OwnerTag::new("a", "b", "c")));
    }
    assert!(!curator_accepts(
        b"{\"serviceType\":\"dynamic\"}",
        SPRING_PAYLOAD_CLASS
    ));
    assert!(!curator_accepts(
        b"{\"payload\":{\"id\":\"x\"}}",
        SPRING_PAYLOAD_CLASS
    ));
    assert!(!curator_accepts(b"garbage", SPRING_PAYLOAD_CLASS));
}

#[test]
fn uri_specs_parse_like_curator() {
    let parts = uri_spec_parts("{scheme}://{ address }:{port}/x").unwrap();
    assert_eq!(
        parts,
        vec![
            ("scheme".to_string(), true),
            ("://".to_string(), false),
            ("address".to_string(), true),
            (":".to_string(), false),
            ("port".to_string(), true),
            ("/x".to_string(), false),
        ]
    );
    for bad in ["{a{b}}", "a}", "{a"] {
        assert!(uri_spec_parts(bad).is_err(), "{bad}");
    }
    let o = Options {
        uri_spec: "{oops".into(),
        ..Options::default()
    };
    assert!(nodes(&o, &fixture::publish()).is_err());
    let o = Options {
        payload_class: "not a class".into(),
        ..Options::default()
    };
    assert!(o.validate().is_err());
}

#[test]
fn options_deserialize_with_defaults_in_camel_case() {
    let o: Options = serde_json::from_str(r#"{"serviceType":"STATIC","sslPort":"https"}"#).unwrap();
    assert_eq!(o.base_path, "/services");
    assert_eq!(o.service_type, ServiceType::Static);
    assert_eq!(o.payload_class, SPRING_PAYLOAD_CLASS);
    assert_eq!(dirs(&o, "web"), vec!["/services/web"]);
    let schema = serde_json::to_value(schemars::schema_for!(Options)).unwrap();
    assert!(schema["properties"]["payloadClass"]["description"].is_string());
}

proptest! {
    #[test]
    fn every_node_is_readable_by_curator_and_decodes(
        weights in proptest::collection::vec(0u32..=2_000_000, 1..30),
        meta in proptest::collection::btree_map("[a-z./_-]{1,12}", "\\PC{0,12}", 0..5),
    ) {
        let mut publish = fixture::publish();
        let template = (*publish.endpoints[0].record).clone();
        publish.endpoints = weights.iter().enumerate().map(|(i, &w)| {
            let mut r = template.clone();
            r.pod = format!("pod-{i}").into();
            r.weight = w;
            r.status = if w == 0 { EndpointStatus::Draining } else { EndpointStatus::Up };
            r.metadata = meta.iter().map(|(k, v)| (k.into(), v.into())).collect();
            super::super::publish::PublishedEndpoint { record: r.into(), ready_since_ms: i as i64 }
        }).collect();
        for n in nodes(&Options::default(), &publish).unwrap() {
            prop_assert!(curator_accepts(&n.data, SPRING_PAYLOAD_CLASS));
            let d = decode(&n.path, &n.data).unwrap();
            prop_assert!(is_ours(&n.path, &n.data, &publish.owner));
            prop_assert_eq!(d.draining, d.weight == 0.0);
        }
    }

    #[test]
    fn decode_never_panics(b in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = decode("x", &b);
        let _ = is_ours("x", &b, &OwnerTag::new("a", "b", "c"));
        let _ = curator_accepts(&b, SPRING_PAYLOAD_CLASS);
    }
}

#[test]
fn an_ipv6_pod_is_written_in_brackets_and_read_without() {
    let mut publish = fixture::publish();
    let ep = std::sync::Arc::make_mut(&mut publish.endpoints[0].record);
    ep.host = "fd00:10:244::7".into();
    let nodes = nodes(&Options::default(), &publish).unwrap();
    let n = nodes.iter().find(|n| n.path.contains("stable-0")).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&n.data).unwrap();
    assert_eq!(v["address"], "[fd00:10:244::7]");
    assert_eq!(decode(&n.path, &n.data).unwrap().host, "fd00:10:244::7");
}
