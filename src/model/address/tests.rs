use super::*;
use crate::model::pod::Labels;
use proptest::prelude::*;

fn pod() -> PodInfo {
    PodInfo {
        name: "web-0".into(),
        labels: Labels::default(),
        annotations: Labels::default(),
        ip: Some("10.244.0.7".into()),
        ports: [("http".into(), 8080)].into(),
        node: Some("n1".into()),
        ready: true,
        registered: None,
        host_network: false,
        host_ports: Box::new([(8080, 30080)]),
        ready_since_ms: 0,
        terminating_since_ms: None,
        ready_at_termination: false,
    }
}

fn nodes() -> HashMap<String, NodeInfo> {
    [(
        "n1".to_string(),
        NodeInfo {
            internal_ip: Some("192.168.0.1".into()),
            external_ip: Some("203.0.113.1".into()),
            ..Default::default()
        },
    )]
    .into()
}

fn spec(y: &str) -> AddressSpec {
    serde_yaml::from_str(y).unwrap()
}

fn resolve(y: &str, pod: &PodInfo) -> Result<(String, u16), Unresolved> {
    Mode::compile(&spec(y))
        .unwrap()
        .resolve("shop", pod, &nodes(), 8080)
}

#[test]
fn each_mode_resolves_its_address() {
    let p = pod();
    assert_eq!(resolve("{}", &p), Ok(("10.244.0.7".into(), 8080)));
    assert_eq!(
        resolve("mode: HostIP", &p),
        Ok(("192.168.0.1".into(), 30080))
    );
    assert_eq!(
        resolve("{mode: HostIP, nodeAddressType: ExternalIP}", &p),
        Ok(("203.0.113.1".into(), 30080))
    );
    assert_eq!(
        resolve("{mode: Template, host: '{pod}.web.{namespace}.svc'}", &p),
        Ok(("web-0.web.shop.svc".into(), 8080))
    );
    assert_eq!(
        resolve("{mode: Template, host: 'x-{podIP}-{node}', port: 443}", &p),
        Ok(("x-10.244.0.7-n1".into(), 443))
    );
    let np = Mode::compile(&spec("{mode: NodePort, service: web}")).unwrap();
    assert_eq!(
        np.resolve("shop", &p, &nodes(), 8080),
        Err(Unresolved::NoNodePort)
    );
    let bound = match np {
        Mode::NodePort { kind, service, .. } => Mode::NodePort {
            kind,
            service,
            ports: Some(NodePorts {
                main: 31000,
                extra: vec![],
            }),
        },
        _ => unreachable!(),
    };
    assert_eq!(
        bound.resolve("shop", &p, &nodes(), 8080),
        Ok(("192.168.0.1".into(), 31000))
    );
}

#[test]
fn unresolvable_pods_say_why_and_a_missing_pod_ip_is_not_reported() {
    let mut p = pod();
    p.host_ports = Box::new([]);
    assert_eq!(
        resolve("mode: HostIP", &p),
        Err(Unresolved::NoHostPort(8080))
    );
    p.host_network = true;
    assert_eq!(
        resolve("mode: HostIP", &p),
        Ok(("192.168.0.1".into(), 8080)),
        "hostNetwork pods use the container port"
    );
    let mut nodes = nodes();
    nodes.get_mut("n1").unwrap().external_ip = None;
    let err = Mode::compile(&spec("{mode: HostIP, nodeAddressType: ExternalIP}"))
        .unwrap()
        .resolve("shop", &p, &nodes, 8080)
        .unwrap_err();
    assert!(err.reported());
    assert_eq!(err.to_string(), "node n1 has no ExternalIP address");
    p.node = Some("gone".into());
    assert_eq!(
        resolve("mode: HostIP", &p),
        Err(Unresolved::NoNode("gone".into()))
    );
    p.ip = None;
    let err = resolve("{}", &p).unwrap_err();
    assert!(!err.reported());
}

#[test]
fn specs_that_mix_modes_or_bad_templates_are_refused() {
    for bad in [
        "{mode: PodIP, host: x}",
        "{mode: HostIP, service: web}",
        "{mode: NodePort}",
        "{mode: Template}",
        "{mode: PodIP, nodeAddressType: ExternalIP}",
        "{mode: Template, host: '{pod'}",
        "{mode: Template, host: '{ip}.x'}",
        "{mode: Template, host: 'a}'}",
        "{mode: Template, host: x, port: 0}",
    ] {
        assert!(Mode::compile(&spec(bad)).is_err(), "{bad} compiled");
    }
}

fn service(y: &str) -> ServiceInfo {
    let svc: k8s_openapi::api::core::v1::Service = serde_yaml::from_str(y).unwrap();
    ServiceInfo::from_service(&svc)
}

#[test]
fn node_port_binding_needs_a_local_node_port_service_leading_to_the_port() {
    let local = service(
        "spec: {type: NodePort, externalTrafficPolicy: Local, ports: [{name: web, port: 80, targetPort: http, nodePort: 31000}, {name: admin, port: 9090, nodePort: 31090}]}",
    );
    let extra = ["admin".to_string()];
    let bound = bind("web", Some(&local), Some("http"), None, &extra).unwrap();
    assert_eq!(bound.main, 31000);
    assert_eq!(bound.extra, vec![("admin".to_string(), 31090)]);
    let by_number = bind("web", Some(&local), None, Some(9090), &[]).unwrap();
    assert_eq!(by_number.main, 31090, "no targetPort: the port itself");
    let cluster =
        service("spec: {type: NodePort, ports: [{port: 80, targetPort: http, nodePort: 31000}]}");
    let err = bind("web", Some(&cluster), Some("http"), None, &[]).unwrap_err();
    assert!(err.contains("externalTrafficPolicy: Local"), "{err}");
    let clusterip = service("spec: {ports: [{port: 80}]}");
    assert!(bind("web", Some(&clusterip), None, Some(80), &[]).is_err());
    assert!(bind("web", None, None, Some(80), &[]).is_err());
}

proptest! {
    /// A template renders to its text with each placeholder replaced, whatever the order.
    #[test]
    fn templates_render_what_they_say(parts in prop::collection::vec(0u8..5, 1..8)) {
        let (mut src, mut want) = (String::new(), String::new());
        for p in parts {
            let (s, w) = match p {
                0 => ("{pod}", "web-0"),
                1 => ("{namespace}", "shop"),
                2 => ("{node}", "n1"),
                3 => ("{podIP}", "10.244.0.7"),
                _ => (".x-", ".x-"),
            };
            src.push_str(s);
            want.push_str(w);
        }
        let mode = Mode::Template { host: parse_template(&src).unwrap(), port: None };
        prop_assert_eq!(mode.resolve("shop", &pod(), &nodes(), 1), Ok((want, 1)));
    }
}

proptest! {
    /// `port` (asked of every pod) and `resolve` (per published record) never disagree.
    #[test]
    fn port_agrees_with_resolve(
        ip in any::<bool>(),
        node in 0u8..3,
        host_network in any::<bool>(),
        host_port in any::<bool>(),
        mode in 0usize..6,
    ) {
        let mut p = pod();
        if !ip { p.ip = None; }
        p.node = [Some("n1".into()), Some("gone".into()), None][node as usize].clone();
        p.host_network = host_network;
        if !host_port { p.host_ports = Box::new([]); }
        let modes = [
            "{}",
            "mode: HostIP",
            "{mode: HostIP, nodeAddressType: ExternalIP}",
            "{mode: Template, host: '{pod}.x'}",
            "{mode: Template, host: '{podIP}-{node}', port: 9}",
            "{mode: NodePort, service: web}",
        ];
        let m = Mode::compile(&spec(modes[mode])).unwrap();
        let resolved = m.resolve("shop", &p, &nodes(), 8080);
        prop_assert_eq!(m.port(&p, &nodes(), 8080), resolved.map(|(_, port)| port));
    }
}
