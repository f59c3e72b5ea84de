//! The committed CRD files are exactly what `podkeeper crd` prints.

#[test]
fn committed_crds_are_fresh() {
    let root = env!("CARGO_MANIFEST_DIR");
    for (kind, generated) in [
        ("serviceregistration", podkeeper::crd::crd_yaml()),
        ("registrypolicy", podkeeper::crd::policy_crd_yaml()),
        ("registryimport", podkeeper::crd::import_crd_yaml()),
    ] {
        for dir in ["crds", "charts/podkeeper/crds"] {
            let file = format!("{dir}/{kind}.yaml");
            // A missing copy fails too: the chart installs the CRDs from its own files.
            let committed = std::fs::read_to_string(format!("{root}/{file}")).unwrap_or_else(|e| {
                panic!("{file}: {e}; generate it with: cargo run -- crd {kind} > {file}")
            });
            assert!(
                committed == generated,
                "{file} is stale; regenerate it with: cargo run -- crd {kind} > crds/{kind}.yaml && cp crds/{kind}.yaml charts/podkeeper/crds/"
            );
        }
    }
}

#[test]
fn crd_declares_the_documented_names_and_columns() {
    let y = podkeeper::crd::crd_yaml();
    for needle in [
        "name: serviceregistrations.podkeeper.io",
        "- svcreg",
        "scope: Namespaced",
        "name: Ready",
        "name: Published",
        "name: Path",
        "x-kubernetes-validations",
    ] {
        assert!(y.contains(needle), "CRD lacks {needle:?}");
    }
}

#[test]
fn import_crd_declares_its_names_columns_and_one_of_rule() {
    let y = podkeeper::crd::import_crd_yaml();
    for needle in [
        "name: registryimports.podkeeper.io",
        "- regimport",
        "scope: Namespaced",
        "name: Imported",
        "name: LeftOut",
        "set exactly one of dubbo, curator, serverSet, native",
        "service.ports: names must be unique",
    ] {
        assert!(y.contains(needle), "import CRD lacks {needle:?}");
    }
}
