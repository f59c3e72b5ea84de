//! The format → slice mapping: every format's states, the loop guard, the addresses left out,
//! and the slicing invariants (also as properties).

use std::net::IpAddr;

use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::zk::format::dubbo::java_url_encode;

const CLUSTER: &str = "east";

fn port(name: &str) -> PortSpec {
    PortSpec {
        name: name.into(),
        target: None,
    }
}

fn named(name: &str, target: &str) -> PortSpec {
    PortSpec {
        name: name.into(),
        target: Some(target.into()),
    }
}

fn folder(children: Vec<(String, Vec<u8>)>) -> Folder {
    Folder {
        children,
        service_record: None,
    }
}

fn dubbo_node(host: &str, params: &str) -> (String, Vec<u8>) {
    let url = format!(
        "dubbo://{host}:20880/com.acme.Orders?interface=com.acme.Orders&side=provider{params}"
    );
    (java_url_encode(&url), Vec::new())
}

fn import(source: &Source, f: &Folder, ports: &[PortSpec]) -> Selection {
    select(source, &read(source, f), CLUSTER, ports)
}

fn dubbo_any() -> Source {
    Source::Dubbo {
        group: None,
        version: None,
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn dubbo_weight_zero_or_disabled_is_not_serving_and_the_rest_is_ready() {
    let f = folder(vec![
        dubbo_node("10.0.0.1", "&weight=100"),
        dubbo_node("10.0.0.2", "&weight=0"),
        dubbo_node("10.0.0.3", "&enabled=false"),
        dubbo_node("10.0.0.4", ""),
        // A consumer in the same folder is no provider.
        (
            java_url_encode("consumer://10.0.0.9/com.acme.Orders?side=consumer"),
            Vec::new(),
        ),
    ]);
    let sel = import(&dubbo_any(), &f, &[port("rpc")]);
    assert_eq!(sel.seen, 4);
    let got: Vec<(IpAddr, Conditions)> = sel
        .endpoints
        .iter()
        .map(|e| (e.address, e.conditions))
        .collect();
    assert_eq!(
        got,
        vec![
            (ip("10.0.0.1"), Conditions::UP),
            (ip("10.0.0.2"), Conditions::DOWN),
            (ip("10.0.0.3"), Conditions::DOWN),
            (ip("10.0.0.4"), Conditions::UP),
        ]
    );
    assert!(
        sel.endpoints
            .iter()
            .all(|e| e.ports == [("rpc".into(), 20880)])
    );
}

#[test]
fn dubbo_keeps_only_the_consumers_group_and_version() {
    let f = folder(vec![
        dubbo_node("10.0.0.1", "&group=g1&version=1.0.0"),
        dubbo_node("10.0.0.2", "&group=g2&version=1.0.0"),
        dubbo_node("10.0.0.3", ""),
    ]);
    let g1 = Source::Dubbo {
        group: Some("g1".into()),
        version: Some("1.0.0".into()),
    };
    let sel = import(&g1, &f, &[port("rpc")]);
    assert_eq!(sel.endpoints.len(), 1);
    assert_eq!(sel.endpoints[0].address, ip("10.0.0.1"));
    assert_eq!(
        sel.left_out,
        vec![
            ("10.0.0.2:20880".into(), LeftOut::OtherGroupOrVersion),
            ("10.0.0.3:20880".into(), LeftOut::OtherGroupOrVersion),
        ]
    );
    let none = import(&dubbo_any(), &f, &[port("rpc")]);
    assert_eq!(
        none.endpoints.len(),
        1,
        "no group asked: providers without one"
    );
    let any = Source::Dubbo {
        group: Some("*".into()),
        version: Some("*".into()),
    };
    assert_eq!(import(&any, &f, &[port("rpc")]).endpoints.len(), 3);
}

#[test]
fn the_loop_guard_skips_this_clusters_nodes_and_keeps_other_clusters() {
    let f = folder(vec![
        dubbo_node("10.0.0.1", "&podkeeper.owner=east/shop/web"),
        dubbo_node("10.0.0.2", "&podkeeper.owner=west/shop/web"),
        dubbo_node("10.0.0.3", "&podkeeper.owner=eastern/shop/web"),
    ]);
    let sel = import(&dubbo_any(), &f, &[port("rpc")]);
    let addrs: Vec<IpAddr> = sel.endpoints.iter().map(|e| e.address).collect();
    assert_eq!(addrs, vec![ip("10.0.0.2"), ip("10.0.0.3")]);
    assert_eq!(
        sel.left_out,
        vec![("10.0.0.1:20880".into(), LeftOut::OwnCluster)]
    );
}

fn curator_node(id: &str, address: &str, status: &str, enabled: bool) -> (String, Vec<u8>) {
    let v = json!({"name": "orders", "id": id, "address": address, "port": 8080,
        "payload": {"metadata": {"instance_status": status}}, "enabled": enabled});
    (id.to_string(), serde_json::to_vec(&v).unwrap())
}

#[test]
fn curator_out_of_service_or_disabled_is_not_ready_and_host_names_are_left_out() {
    let f = folder(vec![
        curator_node("a", "10.0.1.1", "UP", true),
        curator_node("b", "10.0.1.2", "OUT_OF_SERVICE", true),
        curator_node("c", "10.0.1.3", "UP", false),
        curator_node("d", "orders-vm-4.example.com", "UP", true),
        ("garbage".into(), b"{".to_vec()),
    ]);
    let sel = import(&Source::Curator, &f, &[port("http")]);
    let got: Vec<Conditions> = sel.endpoints.iter().map(|e| e.conditions).collect();
    assert_eq!(got, [Conditions::UP, Conditions::DOWN, Conditions::DOWN]);
    assert_eq!(
        sel.left_out,
        vec![("orders-vm-4.example.com:8080".into(), LeftOut::NotAnIp)]
    );
    assert_eq!(sel.seen, 4, "garbage is not a provider");
}

fn member(name: &str, host: &str, status: &str, extra: serde_json::Value) -> (String, Vec<u8>) {
    let v = json!({"serviceEndpoint": {"host": host, "port": 9090},
        "additionalEndpoints": extra, "status": status});
    (name.to_string(), serde_json::to_vec(&v).unwrap())
}

#[test]
fn serverset_alive_is_ready_stopping_drains_and_named_ports_come_from_additional_endpoints() {
    let admin = json!({"admin": {"host": "x", "port": 9990}});
    let f = folder(vec![
        member("member_0001", "10.0.2.1", "ALIVE", admin.clone()),
        member("member_0002", "10.0.2.2", "STOPPING", admin.clone()),
        member("member_0003", "10.0.2.3", "DEAD", admin),
        member("member_0004", "10.0.2.4", "ALIVE", json!({})),
        ("vector_0001".into(), b"{\"vector\":[]}".to_vec()),
    ]);
    let sel = import(
        &Source::ServerSet,
        &f,
        &[port("thrift"), named("admin", "admin")],
    );
    let got: Vec<(IpAddr, Conditions)> = sel
        .endpoints
        .iter()
        .map(|e| (e.address, e.conditions))
        .collect();
    assert_eq!(
        got,
        vec![
            (ip("10.0.2.1"), Conditions::UP),
            (ip("10.0.2.2"), Conditions::DRAINING),
            (ip("10.0.2.3"), Conditions::DOWN),
        ]
    );
    assert_eq!(
        sel.endpoints[0].ports,
        vec![("thrift".into(), 9090), ("admin".into(), 9990)]
    );
    assert_eq!(
        sel.left_out,
        vec![("10.0.2.4:9090".into(), LeftOut::NoNamedPort("admin".into()))]
    );
}

fn native_record(host: &str, status: &str, weight: u32) -> (String, Vec<u8>) {
    let v = json!({"host": host, "port": 8080, "ports": {"http": 8080, "grpc": 9000},
        "weight": weight, "group": "default", "pod": "p", "namespace": "n",
        "metadata": {}, "status": status});
    (host.to_string(), serde_json::to_vec(&v).unwrap())
}

fn service_record(cluster: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"serviceName": "web", "policy": {},
        "owner": {"clusterId": cluster, "namespace": "shop", "name": "web", "uid": "u"},
        "generation": 1}))
    .unwrap()
}

#[test]
fn native_records_map_status_and_ports_and_the_owner_guards_the_whole_path() {
    let mut f = folder(vec![
        native_record("10.0.3.1", "UP", 100),
        native_record("10.0.3.2", "DRAINING", 0),
        native_record("10.0.3.3", "UP", 0),
    ]);
    f.service_record = Some(service_record("west"));
    let ports = [port("http"), named("grpc", "grpc")];
    let sel = import(&Source::Native, &f, &ports);
    let got: Vec<Conditions> = sel.endpoints.iter().map(|e| e.conditions).collect();
    assert_eq!(
        got,
        [Conditions::UP, Conditions::DRAINING, Conditions::DOWN]
    );
    assert_eq!(
        sel.endpoints[0].ports,
        vec![("http".into(), 8080), ("grpc".into(), 9000)]
    );
    f.service_record = Some(service_record(CLUSTER));
    let own = import(&Source::Native, &f, &ports);
    assert!(own.endpoints.is_empty());
    assert!(own.left_out.iter().all(|(_, w)| *w == LeftOut::OwnCluster));
    assert_eq!(own.left_out.len(), 3);
}

#[test]
fn addresses_pods_cannot_use_are_left_out_with_the_reason() {
    for (host, want) in [
        ("127.0.0.1", Err(LeftOut::Loopback)),
        ("::1", Err(LeftOut::Loopback)),
        ("169.254.10.1", Err(LeftOut::LinkLocal)),
        ("fe80::1", Err(LeftOut::LinkLocal)),
        ("0.0.0.0", Err(LeftOut::Unusable)),
        ("224.0.0.5", Err(LeftOut::Unusable)),
        ("db-1", Err(LeftOut::NotAnIp)),
        ("::ffff:10.0.0.7", Ok(ip("10.0.0.7"))),
        ("[2001:db8::7]", Ok(ip("2001:db8::7"))),
        ("10.0.0.7", Ok(ip("10.0.0.7"))),
    ] {
        assert_eq!(provider::usable_address(host), want, "{host}");
    }
}

#[test]
fn two_registrations_of_one_address_are_one_endpoint_serving_if_either_serves() {
    let f = folder(vec![
        dubbo_node("10.0.0.1", "&weight=100"),
        dubbo_node("10.0.0.1", "&weight=0"),
    ]);
    let sel = import(&dubbo_any(), &f, &[port("rpc")]);
    assert_eq!(sel.endpoints.len(), 1);
    assert_eq!(sel.endpoints[0].conditions, Conditions::UP);
    assert_eq!(
        Conditions::DRAINING.merge(Conditions::DRAINING),
        Conditions::DRAINING
    );
    assert!(!Conditions::DRAINING.merge(Conditions::DOWN).terminating);
}

fn ep(address: IpAddr, port: u16, conditions: Conditions) -> Endpoint {
    Endpoint {
        address,
        ports: vec![("rpc".into(), port)],
        conditions,
        zone: None,
    }
}

fn v4(n: u32) -> IpAddr {
    IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + n))
}

#[test]
fn slices_hold_one_family_one_port_tuple_and_at_most_a_hundred() {
    let mut eps: Vec<Endpoint> = (1..=250).map(|n| ep(v4(n), 80, Conditions::UP)).collect();
    eps.push(ep(ip("2001:db8::1"), 80, Conditions::UP));
    eps.push(ep(v4(7), 81, Conditions::UP));
    let slices = assign("orders", &[], &eps);
    let sizes: Vec<usize> = slices.iter().map(|s| s.endpoints.len()).collect();
    assert_eq!(sizes.iter().sum::<usize>(), 252);
    assert_eq!(slices.len(), 5, "{sizes:?}");
    for s in &slices {
        assert!(s.endpoints.len() <= MAX_PER_SLICE);
        assert!(s.name.starts_with("orders-"));
        for e in &s.endpoints {
            assert_eq!(Family::of(&e.address), s.key.family);
            assert_eq!(e.ports, s.key.ports);
        }
    }
    assert!(diff(&slices, &assign("orders", &slices, &eps)).is_empty());
}

#[test]
fn one_providers_change_touches_one_slice_and_an_emptied_slice_is_deleted() {
    let eps: Vec<Endpoint> = (1..=150).map(|n| ep(v4(n), 80, Conditions::UP)).collect();
    let slices = assign("orders", &[], &eps);
    let mut changed = eps.clone();
    changed[120].conditions = Conditions::DOWN;
    let c = diff(&slices, &assign("orders", &slices, &changed));
    assert_eq!((c.write.len(), c.delete.len()), (1, 0));
    let only_first: Vec<Endpoint> = eps[..100].to_vec();
    let after = assign("orders", &slices, &only_first);
    let c = diff(&slices, &after);
    assert_eq!(c.write.len(), 0, "the full slice is untouched");
    assert_eq!(c.delete.len(), 1);
    let c = diff(&after, &assign("orders", &after, &eps));
    assert_eq!((c.write.len(), c.delete.len()), (1, 0), "{c:?}");
}

fn arb_endpoint() -> impl Strategy<Value = Endpoint> {
    (0u32..400, prop::bool::ANY, 0u8..3, prop::bool::ANY).prop_map(|(n, v6, p, up)| {
        let address = match v6 {
            true => IpAddr::V6(std::net::Ipv6Addr::from(0x2001_0db8_u128 << 96 | n as u128)),
            false => v4(n),
        };
        let c = if up { Conditions::UP } else { Conditions::DOWN };
        ep(address, 80 + u16::from(p), c)
    })
}

/// `select` never yields two endpoints of one address and port tuple; the strategy may.
fn distinct(eps: Vec<Endpoint>) -> Vec<Endpoint> {
    let mut seen = std::collections::BTreeSet::new();
    eps.into_iter()
        .filter(|e| seen.insert((e.address, e.ports.clone())))
        .collect()
}

proptest! {
    #[test]
    fn every_endpoint_lands_once_in_a_fitting_slice(eps in prop::collection::vec(arb_endpoint(), 0..600)) {
        let eps = distinct(eps);
        let slices = assign("svc", &[], &eps);
        let mut placed: Vec<Endpoint> = Vec::new();
        for s in &slices {
            prop_assert!(!s.endpoints.is_empty() && s.endpoints.len() <= MAX_PER_SLICE);
            for e in &s.endpoints {
                prop_assert_eq!(Family::of(&e.address), s.key.family);
                prop_assert_eq!(&e.ports, &s.key.ports);
            }
            placed.extend(s.endpoints.iter().cloned());
        }
        placed.sort();
        let mut want = eps.clone();
        want.sort();
        prop_assert_eq!(placed, want);
        prop_assert!(diff(&slices, &assign("svc", &slices, &eps)).is_empty());
    }

    #[test]
    fn one_provider_added_removed_or_changed_touches_at_most_one_slice(
        eps in prop::collection::vec(arb_endpoint(), 1..500),
        pick in any::<prop::sample::Index>(),
        extra in arb_endpoint(),
        what in 0u8..3,
    ) {
        let eps = distinct(eps);
        let before = assign("svc", &[], &eps);
        let mut next = eps.clone();
        let i = pick.index(next.len());
        match what {
            0 => { next.remove(i); }
            1 => next[i].conditions = match next[i].conditions.ready {
                true => Conditions::DOWN,
                false => Conditions::UP,
            },
            _ => next = distinct([next, vec![extra]].concat()),
        }
        let after = assign("svc", &before, &next);
        let c = diff(&before, &after);
        prop_assert!(c.touched() <= 1, "{} slices touched", c.touched());
    }
}
