use super::*;
use crate::zk::format::fixture;
use crate::zk::format::publish::PublishedEndpoint;
use proptest::prelude::*;

fn read_back(nodes: &[Node]) -> Vec<Discovered> {
    let mut members: Vec<Discovered> = nodes
        .iter()
        .filter_map(|n| decode(&n.path, &n.data))
        .collect();
    let vectors: Vec<Vector> = nodes
        .iter()
        .filter_map(|n| decode_vector(&n.path, &n.data))
        .collect();
    weigh(&mut members, &vectors);
    members
}

#[test]
fn golden_nodes_of_the_fixture() {
    let nodes = nodes(&Options::default(), &fixture::publish()).unwrap();
    assert_eq!(nodes.len(), 5, "four members and one vector");
    fixture::assert_golden("serverset.txt", &fixture::render(&nodes));
}

#[test]
fn one_exact_member_and_the_vector() {
    let nodes = nodes(&Options::default(), &fixture::publish()).unwrap();
    let canary = nodes.iter().find(|n| n.path.contains("canary")).unwrap();
    assert!(
        canary
            .path
            .starts_with("/serversets/web/member_web-canary-0_")
    );
    assert_eq!(
        String::from_utf8(canary.data.clone()).unwrap(),
        r#"{"serviceEndpoint":{"host":"10.1.0.20","port":20880},"additionalEndpoints":{"dubbo":{"host":"10.1.0.20","port":20880},"http":{"host":"10.1.0.20","port":8080},"https":{"host":"10.1.0.20","port":8443}},"status":"ALIVE","metadata":{"podkeeper.io/owner":"test/shop/web","track":"canary","version":"1.4.2","zone":"zone-a"}}"#
    );
    let vector = nodes.iter().find(|n| n.path.contains("/vector_")).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&vector.data).unwrap();
    let ws: Vec<f64> = v["vector"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["weight"].as_f64().unwrap())
        .collect();
    // Sorted by member name: canary-0, stable-0, stable-1, stable-2 (draining).
    assert_eq!(ws, vec![0.3, 0.9, 1.8, 0.0]);
    let text = String::from_utf8(vector.data.clone()).unwrap();
    assert!(
        text.contains(r#""weight":0.0,"#),
        "floats keep their point: {text}"
    );
}

#[test]
fn read_back_gives_shares_and_draining() {
    let publish = fixture::publish();
    let found = read_back(&nodes(&Options::default(), &publish).unwrap());
    assert_eq!(found.len(), 4);
    let total: f64 = found.iter().map(|d| d.weight).sum();
    let share = |group: &str| -> f64 {
        found
            .iter()
            .filter(|d| d.metadata["track"] == group)
            .map(|d| d.weight)
            .sum::<f64>()
            / total
    };
    assert!((share("stable") - 0.9).abs() < 1e-12);
    assert!((share("canary") - 0.1).abs() < 1e-12);
    let draining: Vec<&str> = found
        .iter()
        .filter(|d| d.draining)
        .map(|d| d.host.as_str())
        .collect();
    assert_eq!(draining, vec!["10.1.0.12"]);
    for d in &found {
        assert_eq!(d.owner.as_deref(), Some("test/shop/web"));
    }
}

#[test]
fn any_change_is_a_new_name_and_a_rebalance_touches_only_the_vector() {
    let mut publish = fixture::publish();
    let before = nodes(&Options::default(), &publish).unwrap();
    // Rebalance: stable-0 and stable-1 swap weights; members stay, the vector is replaced.
    let mut a = (*publish.endpoints[0].record).clone();
    let mut b = (*publish.endpoints[1].record).clone();
    std::mem::swap(&mut a.weight, &mut b.weight);
    publish.endpoints[0].record = a.into();
    publish.endpoints[1].record = b.into();
    let after = nodes(&Options::default(), &publish).unwrap();
    let gone: Vec<&Node> = before.iter().filter(|n| !after.contains(n)).collect();
    let new: Vec<&Node> = after.iter().filter(|n| !before.contains(n)).collect();
    assert_eq!(gone.len(), 1);
    assert_eq!(new.len(), 1);
    assert!(gone[0].path.contains("/vector_") && new[0].path.contains("/vector_"));
    assert_ne!(gone[0].path, new[0].path);
    // A zone change rewrites that member under a new name.
    let mut c = (*publish.endpoints[2].record).clone();
    c.zone = Some("zone-z".into());
    publish.endpoints[2].record = c.into();
    let moved = nodes(&Options::default(), &publish).unwrap();
    let members_gone = after
        .iter()
        .filter(|n| n.path.contains("/member_") && !moved.contains(n))
        .count();
    assert_eq!(members_gone, 1);
}

#[test]
fn neighbours_decode_and_are_not_ours() {
    let owner = OwnerTag::new("test", "shop", "web");
    // An Aurora-style member (thrift JSON, shard 0) and a foreign vector with an integer weight.
    let member = br#"{"serviceEndpoint":{"host":"192.168.7.9","port":31337},"additionalEndpoints":{"http":{"host":"192.168.7.9","port":31337}},"status":"ALIVE","shard":0}"#;
    let d = decode("member_0000000007", member).unwrap();
    assert_eq!(
        (d.host.as_str(), d.port, d.shard),
        ("192.168.7.9", 31337, Some(0))
    );
    assert!(!is_ours("member_0000000007", member, &owner));
    let vector = br#"{"vector":[{"select":"member=member_0000000007","weight":2},{"select":"shard=0","weight":3.0},{"select":"weird"}]}"#;
    let v = decode_vector("vector_0000000001", vector).unwrap();
    assert_eq!(v.descriptors.len(), 2);
    assert_eq!(
        v.descriptors[0].weight, 1.0,
        "an integer weight is ignored, as Finagle does"
    );
    assert!(!is_ours("vector_0000000001", vector, &owner));
    let mut ms = vec![d];
    weigh(&mut ms, &[v]);
    assert_eq!(ms[0].weight, 3.0);
    let stopping = br#"{"serviceEndpoint":{"host":"h","port":1},"status":"STOPPING"}"#;
    assert!(decode("member_1", stopping).unwrap().draining);
}

#[test]
fn garbage_is_skipped_not_fatal() {
    for (name, data) in [
        ("member_1", &b"garbage"[..]),
        ("member_1", b"{}"),
        (
            "member_1",
            b"{\"serviceEndpoint\":{\"host\":\"h\",\"port\":\"1\"}}",
        ),
        (
            "member_1",
            b"{\"serviceEndpoint\":{\"host\":\"h\",\"port\":70000}}",
        ),
        (
            "other",
            b"{\"serviceEndpoint\":{\"host\":\"h\",\"port\":1}}",
        ),
    ] {
        assert_eq!(
            decode(name, data),
            None,
            "{name} {:?}",
            String::from_utf8_lossy(data)
        );
    }
    assert_eq!(
        decode_vector("vector_1", b"garbage").unwrap().descriptors,
        vec![]
    );
    assert_eq!(decode_vector("member_1", b"{}"), None);
    assert!(!is_ours(
        "vector_1",
        b"garbage",
        &OwnerTag::new("a", "b", "c")
    ));
}

#[test]
fn shards_from_ordinals_when_asked() {
    assert_eq!(ordinal("web-3"), Some(3));
    assert_eq!(ordinal("web-stable-abc12"), None);
    assert_eq!(ordinal("web"), None);
    let o = Options {
        shard_from_ordinal: true,
        ..Options::default()
    };
    let found = read_back(&nodes(&o, &fixture::publish()).unwrap());
    assert!(found.iter().all(|d| d.shard.is_some()));
    let o: Options = serde_json::from_str(r#"{"basePath":"/aurora/web"}"#).unwrap();
    assert_eq!(dirs(&o, "prod"), vec!["/aurora/web/prod"]);
    assert!(
        nodes(
            &Options {
                base_path: "x".into(),
                ..o
            },
            &fixture::publish()
        )
        .is_err()
    );
}

#[test]
fn no_endpoints_no_vector() {
    let mut publish = fixture::publish();
    publish.endpoints.clear();
    assert!(nodes(&Options::default(), &publish).unwrap().is_empty());
}

proptest! {
    #[test]
    fn read_back_keeps_every_ratio(ws in proptest::collection::vec(0u32..=1_000_000, 1..40)) {
        let mut publish = fixture::publish();
        let template = (*publish.endpoints[0].record).clone();
        publish.endpoints = ws.iter().enumerate().map(|(i, &w)| {
            let mut r = template.clone();
            r.pod = format!("pod-{i}").into();
            r.host = format!("10.0.{}.{}", i / 200, i % 200).into();
            r.weight = w;
            r.status = if w == 0 { EndpointStatus::Draining } else { EndpointStatus::Up };
            PublishedEndpoint { record: r.into(), ready_since_ms: 0 }
        }).collect();
        let found = read_back(&nodes(&Options::default(), &publish).unwrap());
        prop_assert_eq!(found.len(), ws.len());
        let ready: u64 = ws.iter().map(|&w| u64::from(w)).sum();
        let n_ready = ws.iter().filter(|&&w| w > 0).count() as f64;
        for d in &found {
            let idx = publish.endpoints.iter().position(|e| e.record.host == d.host).unwrap();
            let w = ws[idx];
            prop_assert_eq!(d.draining, w == 0);
            if w > 0 {
                let want = f64::from(w) * n_ready / ready as f64;
                prop_assert!((d.weight - want).abs() <= want * 1e-12);
            }
        }
    }

    #[test]
    fn decode_never_panics(b in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = decode("member_x", &b);
        let _ = decode_vector("vector_x", &b);
        let _ = is_ours("vector_x", &b, &OwnerTag::new("a", "b", "c"));
    }
}

#[test]
fn a_large_set_splits_its_vector_so_every_node_fits_a_write_and_weights_stay() {
    let mut publish = fixture::publish();
    let template = (*publish.endpoints[0].record).clone();
    let n = 10_000;
    publish.endpoints = (0..n)
        .map(|i| {
            let mut r = template.clone();
            r.pod = format!("web-7d9f8c6b5-{i:05}").into();
            r.host = format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256).into();
            r.weight = 1 + (i % 7) as u32;
            PublishedEndpoint {
                record: r.into(),
                ready_since_ms: 0,
            }
        })
        .collect();
    let all = nodes(&Options::default(), &publish).unwrap();
    let vectors: Vec<&Node> = all
        .iter()
        .filter(|n| base_name(&n.path).starts_with(VECTOR_PREFIX))
        .collect();
    assert!(vectors.len() > 1, "one vector of {n} members");
    let limit = crate::zk::writer::MAX_TXN_BYTES / 2;
    for v in &vectors {
        assert!(
            v.path.len() + v.data.len() < limit,
            "{} bytes",
            v.data.len()
        );
        assert!(is_ours(&v.path, &v.data, &publish.owner));
    }
    let found = read_back(&all);
    assert_eq!(found.len(), n);
    let total: f64 = (0..n).map(|i| f64::from(1 + (i % 7) as u32)).sum();
    for d in &found {
        let i = publish
            .endpoints
            .iter()
            .position(|e| e.record.host == d.host)
            .unwrap();
        let want = f64::from(1 + (i % 7) as u32) * n as f64 / total;
        assert!(
            (d.weight - want).abs() <= want * 1e-12,
            "{}: {} != {want}",
            d.host,
            d.weight
        );
    }
}
