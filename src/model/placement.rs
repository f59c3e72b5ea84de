//! What an edit of a registration's place retires: the old ensemble, service path and client
//! folders it no longer wants. Pure; the controller writes the new place first, then removes
//! what this returns, so consumers never see an empty list in between.

use crate::crd::{PlacedFolder, Placement};

/// What to remove after the new place is written, all on one ensemble.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retired {
    /// The ensemble it is on (`None`: the operator's own).
    pub zookeeper: Option<crate::crd::PlacedEnsemble>,
    /// The old service record and its endpoints, when the path or the ensemble changed.
    pub path: Option<String>,
    /// Client folders whose nodes of this resource go (the others' stay).
    pub folders: Vec<PlacedFolder>,
}

/// What `old` holds that `new` does not want, or `None` when nothing is retired.
///
/// On another ensemble everything of `old` goes. On the same one, the service record goes
/// only when its path changed, and a folder only when no registry of `new` writes it in the
/// same format: a path edit leaves the Dubbo and Curator folders alone (their content is
/// rewritten in place by the next write, never emptied).
pub fn retired(old: &Placement, new: &Placement) -> Option<Retired> {
    let retired = if old.zookeeper != new.zookeeper {
        Retired {
            zookeeper: old.zookeeper.clone(),
            path: Some(old.path.clone()),
            folders: old.folders.clone(),
        }
    } else {
        Retired {
            zookeeper: old.zookeeper.clone(),
            path: (old.path != new.path).then(|| old.path.clone()),
            folders: old
                .folders
                .iter()
                .filter(|f| !new.folders.contains(f))
                .cloned()
                .collect(),
        }
    };
    (retired.path.is_some() || !retired.folders.is_empty()).then_some(retired)
}

/// Everything at each of `places`, once per distinct place: what deletion removes (the place
/// the status recorded and the one the spec calls for now, when they differ).
pub fn everything(places: &[&Placement]) -> Vec<Retired> {
    let mut seen: Vec<&Placement> = Vec::new();
    for p in places {
        if !seen.contains(p) {
            seen.push(p);
        }
    }
    seen.into_iter()
        .map(|p| Retired {
            zookeeper: p.zookeeper.clone(),
            path: Some(p.path.clone()),
            folders: p.folders.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{PlacedEnsemble, RegistryFormat};
    use proptest::prelude::*;

    fn folder(format: RegistryFormat, path: &str) -> PlacedFolder {
        PlacedFolder {
            format,
            path: path.into(),
        }
    }

    fn place(zk: Option<&str>, path: &str, folders: &[PlacedFolder]) -> Placement {
        Placement {
            zookeeper: zk.map(|c| PlacedEnsemble {
                connect: c.into(),
                chroot: None,
            }),
            path: path.into(),
            folders: folders.to_vec(),
        }
    }

    #[test]
    fn a_path_edit_retires_the_record_only_never_the_client_folders() {
        let dubbo = folder(RegistryFormat::Dubbo, "/dubbo/a.B/providers");
        let curator = folder(RegistryFormat::Curator, "/services/web");
        let old = place(None, "/podkeeper/ns/web", &[dubbo.clone(), curator.clone()]);
        let new = place(None, "/podkeeper/ns/web2", &[dubbo, curator]);
        let r = retired(&old, &new).expect("the record moved");
        assert_eq!(r.path.as_deref(), Some("/podkeeper/ns/web"));
        assert!(r.folders.is_empty(), "{:?}", r.folders);
    }

    #[test]
    fn a_dropped_interface_or_format_change_retires_that_folder_alone() {
        let a = folder(RegistryFormat::Dubbo, "/dubbo/a.A/providers");
        let b = folder(RegistryFormat::Dubbo, "/dubbo/a.B/providers");
        let old = place(None, "/p", &[a.clone(), b.clone()]);
        let r = retired(&old, &place(None, "/p", std::slice::from_ref(&b))).unwrap();
        assert_eq!((r.path, r.folders), (None, vec![a]));
        let as_curator = folder(RegistryFormat::Curator, &b.path);
        let r = retired(
            &place(None, "/p", std::slice::from_ref(&b)),
            &place(None, "/p", &[as_curator]),
        );
        assert_eq!(r.unwrap().folders, vec![b]);
    }

    #[test]
    fn another_ensemble_retires_everything_on_the_old_one() {
        let f = folder(RegistryFormat::ServerSet, "/serversets/web");
        let old = place(Some("zk-a:2181"), "/p", std::slice::from_ref(&f));
        let new = place(Some("zk-b:2181"), "/p", std::slice::from_ref(&f));
        let r = retired(&old, &new).unwrap();
        assert_eq!(r.zookeeper.unwrap().connect, "zk-a:2181");
        assert_eq!((r.path.as_deref(), r.folders), (Some("/p"), vec![f]));
    }

    #[test]
    fn deletion_removes_every_place_once() {
        let f = folder(RegistryFormat::Dubbo, "/dubbo/a.A/providers");
        let a = place(None, "/p", std::slice::from_ref(&f));
        let b = place(None, "/q", std::slice::from_ref(&f));
        let c = place(Some("zk-b:2181"), "/p", &[]);
        let all = everything(&[&a, &b, &c, &a]);
        let paths: Vec<_> = all.iter().map(|r| r.path.clone().unwrap()).collect();
        assert_eq!(paths, ["/p", "/q", "/p"]);
        assert_eq!(
            (&all[0].folders, &all[1].folders),
            (&vec![f.clone()], &vec![f])
        );
        assert!(all[2].folders.is_empty() && all[2].zookeeper.is_some());
    }

    fn arb_place() -> impl Strategy<Value = Placement> {
        let formats = prop_oneof![
            Just(RegistryFormat::Dubbo),
            Just(RegistryFormat::Curator),
            Just(RegistryFormat::ServerSet)
        ];
        let folders = proptest::collection::vec((formats, 0..4u8), 0..4);
        (proptest::option::of(0..2u8), 0..3u8, folders).prop_map(|(zk, p, fs)| {
            let mut folders: Vec<PlacedFolder> = fs
                .into_iter()
                .map(|(f, i)| folder(f, &format!("/f{i}")))
                .collect();
            folders.sort();
            folders.dedup();
            place(
                zk.map(|z| format!("zk-{z}:2181")).as_deref(),
                &format!("/p{p}"),
                &folders,
            )
        })
    }

    proptest! {
        /// Nothing the new place writes is retired on its ensemble, and everything of the old
        /// place is either kept by the new one or retired.
        #[test]
        fn retired_is_exactly_the_old_minus_the_new(old in arb_place(), new in arb_place()) {
            let r = retired(&old, &new);
            let same_zk = old.zookeeper == new.zookeeper;
            let path_gone = r.as_ref().and_then(|r| r.path.clone());
            prop_assert_eq!(path_gone.is_some(), !same_zk || old.path != new.path);
            for f in &old.folders {
                let gone = r.as_ref().is_some_and(|r| r.folders.contains(f));
                prop_assert_eq!(gone, !same_zk || !new.folders.contains(f));
            }
            if let Some(r) = &r {
                prop_assert_eq!(&r.zookeeper, &old.zookeeper);
            }
            prop_assert!(retired(&old, &old).is_none());
        }
    }
}
