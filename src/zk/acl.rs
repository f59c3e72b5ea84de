//! Which ACL each znode podkeeper creates gets: its own identity may do everything, readers
//! may read, and nobody else may change what it owns. Pure, except `session_identities`.

use zookeeper_client::{Acl, AuthId, Client, Permission};

use super::security::Credentials;

/// An ACL id, `scheme:id` (e.g. `world:anyone`, `sasl:dubbo`, `x509:CN=app`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Identity {
    /// The scheme.
    pub scheme: String,
    /// The id within it.
    pub id: String,
}

impl Identity {
    /// Everyone.
    pub fn anyone() -> Identity {
        Identity {
            scheme: "world".into(),
            id: "anyone".into(),
        }
    }
}

impl std::str::FromStr for Identity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            Some((scheme, id))
                if ["world", "digest", "sasl", "x509", "ip", "auth"].contains(&scheme)
                    && !id.is_empty() =>
            {
                Ok(Identity {
                    scheme: scheme.into(),
                    id: id.into(),
                })
            }
            _ => Err(format!(
                "invalid ZooKeeper ACL id {s:?}: expected scheme:id with scheme world, digest, \
                 sasl, x509 or ip (e.g. world:anyone, sasl:consumer, x509:CN=app)"
            )),
        }
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.scheme, self.id)
    }
}

/// What the operator is configured to grant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AclPolicy {
    /// Everyone may do everything (podkeeper before ACLs; forced when there is no identity).
    pub open: bool,
    /// May read every node podkeeper creates (clients must).
    pub readers: Vec<Identity>,
    /// May also create and delete children in the client-format folders podkeeper creates
    /// (VM providers registering beside the pods). ZooKeeper checks deletes on the parent, so
    /// they can delete podkeeper's nodes there too; the tamper watch puts those back.
    pub neighbours: Vec<Identity>,
    /// The home prefix (`/podkeeper`): the folders at and below it that podkeeper creates are
    /// its alone (nobody else may create there: no planted epoch, namespace folder or record).
    pub home: Option<String>,
}

impl Default for AclPolicy {
    fn default() -> Self {
        AclPolicy {
            open: false,
            readers: vec![Identity::anyone()],
            neighbours: Vec::new(),
            home: None,
        }
    }
}

/// The role of a node podkeeper creates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeKind {
    /// Records, endpoints, client-format nodes, the leader epoch: only podkeeper writes.
    Owned,
    /// A client-format folder podkeeper created (Dubbo `providers`, a Curator service).
    Folder,
    /// A parent above a service outside the home prefix (`/dubbo`, `/services/x`): others
    /// create their own services beside podkeeper's. Below the home prefix parents are `Owned`
    /// (see [`NodeAcls::parent_kind`]).
    Ancestor,
}

/// The ACLs of one session's writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeAcls {
    owned: Vec<Acl>,
    folder: Vec<Acl>,
    ancestor: Vec<Acl>,
    /// Who podkeeper is on this session (empty: anonymous, ACLs are open).
    pub writers: Vec<Identity>,
    /// See [`AclPolicy::home`].
    home: Option<String>,
}

fn acl(perm: Permission, who: &Identity) -> Acl {
    Acl::new(perm, AuthId::new(&who.scheme, &who.id))
}

/// The permission bits, for comparing ACLs as sets.
fn bits(p: Permission) -> u8 {
    [
        Permission::READ,
        Permission::WRITE,
        Permission::CREATE,
        Permission::DELETE,
        Permission::ADMIN,
    ]
    .iter()
    .enumerate()
    .map(|(i, b)| u8::from(p.has(*b)) << i)
    .sum()
}

/// Adds `perm` for `who`, merging with an entry `who` already has.
fn grant(acls: &mut Vec<Acl>, perm: Permission, who: &Identity) {
    match acls
        .iter_mut()
        .find(|a| a.scheme() == who.scheme && a.id() == who.id)
    {
        Some(a) => *a = Acl::new(a.permission() | perm, AuthId::new(&who.scheme, &who.id)),
        None => acls.push(acl(perm, who)),
    }
}

impl Default for NodeAcls {
    fn default() -> Self {
        NodeAcls::open()
    }
}

impl NodeAcls {
    /// Everyone may do everything.
    pub fn open() -> NodeAcls {
        let all = vec![acl(Permission::ALL, &Identity::anyone())];
        NodeAcls {
            owned: all.clone(),
            folder: all.clone(),
            ancestor: all,
            writers: Vec::new(),
            home: None,
        }
    }

    /// The ACLs for a session authenticated as `writers` under `policy`.
    pub fn new(policy: &AclPolicy, writers: Vec<Identity>) -> NodeAcls {
        if policy.open || writers.is_empty() {
            return NodeAcls {
                writers,
                ..NodeAcls::open()
            };
        }
        let mut owned = Vec::new();
        for w in &writers {
            grant(&mut owned, Permission::ALL, w);
        }
        for r in &policy.readers {
            grant(&mut owned, Permission::READ, r);
        }
        let mut folder = owned.clone();
        for n in &policy.neighbours {
            grant(
                &mut folder,
                Permission::READ | Permission::CREATE | Permission::DELETE,
                n,
            );
        }
        let mut ancestor = owned.clone();
        grant(&mut ancestor, Permission::CREATE, &Identity::anyone());
        NodeAcls {
            owned,
            folder,
            ancestor,
            writers,
            home: policy.home.clone(),
        }
    }

    /// The kind a parent folder at `path` gets: `Owned` at or below the home prefix, where
    /// nobody else may create anything, `Ancestor` elsewhere.
    pub fn parent_kind(&self, path: &str) -> NodeKind {
        match &self.home {
            Some(h) if path == h || path.starts_with(&format!("{h}/")) => NodeKind::Owned,
            _ => NodeKind::Ancestor,
        }
    }

    /// The ACL a node of `kind` gets.
    pub fn of(&self, kind: NodeKind) -> &[Acl] {
        match kind {
            NodeKind::Owned => &self.owned,
            NodeKind::Folder => &self.folder,
            NodeKind::Ancestor => &self.ancestor,
        }
    }

    /// Does a node of `kind` with ACL `actual` need repair? Order does not matter.
    pub fn differs(&self, kind: NodeKind, actual: &[Acl]) -> bool {
        let key = |a: &Acl| {
            (
                a.scheme().to_string(),
                a.id().to_string(),
                bits(a.permission()),
            )
        };
        let mut want: Vec<_> = self.of(kind).iter().map(key).collect();
        let mut have: Vec<_> = actual.iter().map(key).collect();
        want.sort();
        have.sort();
        want != have
    }

    /// Anyone may write (no identity, or the policy says so).
    pub fn is_open(&self) -> bool {
        self.owned
            .iter()
            .any(|a| a.scheme() == "world" && a.permission() == Permission::ALL)
    }
}

/// Who this session is, as ACL ids: SASL and x509 from the server's `whoami`, digest computed
/// from the login (the server reports only the user name). IP ids are left out: they change
/// with the pod.
pub(super) async fn session_identities(
    client: &Client,
    credentials: Option<&Credentials>,
) -> Result<Vec<Identity>, zookeeper_client::Error> {
    let users = client.list_auth_users().await?;
    let mut ids: Vec<Identity> = users
        .iter()
        .filter(|u| matches!(u.scheme(), "sasl" | "x509" | "super"))
        .filter(|u| u.scheme() != "super")
        .map(|u| Identity {
            scheme: u.scheme().to_string(),
            id: u.user().to_string(),
        })
        .collect();
    if users.iter().any(|u| u.scheme() == "digest")
        && let Some(login) = credentials.and_then(Credentials::login)
        && login.mechanism == super::security::Mechanism::Digest
    {
        let (scheme, id) = login.acl_id();
        ids.push(Identity { scheme, id });
    }
    ids.sort();
    ids.dedup();
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> Identity {
        s.parse().unwrap()
    }

    #[test]
    fn owned_nodes_are_the_writers_and_readable_by_readers_only() {
        let acls = NodeAcls::new(&AclPolicy::default(), vec![id("sasl:podkeeper")]);
        let owned = acls.of(NodeKind::Owned);
        assert_eq!(owned.len(), 2);
        assert!(owned.contains(&acl(Permission::ALL, &id("sasl:podkeeper"))));
        assert!(owned.contains(&acl(Permission::READ, &Identity::anyone())));
        assert!(!acls.is_open());
        // Ancestors let others create their own services; folders add only neighbours.
        let anc = acls.of(NodeKind::Ancestor);
        assert!(anc.contains(&acl(
            Permission::READ | Permission::CREATE,
            &Identity::anyone()
        )));
        assert_eq!(acls.of(NodeKind::Folder), owned);
    }

    #[test]
    fn neighbours_may_create_and_delete_in_folders_only() {
        let policy = AclPolicy {
            neighbours: vec![id("sasl:vm-provider")],
            readers: vec![id("sasl:consumer")],
            open: false,
            home: None,
        };
        let acls = NodeAcls::new(&policy, vec![id("x509:CN=podkeeper"), id("sasl:podkeeper")]);
        let folder = acls.of(NodeKind::Folder);
        let crd = Permission::READ | Permission::CREATE | Permission::DELETE;
        assert!(folder.contains(&acl(crd, &id("sasl:vm-provider"))));
        assert!(
            !acls
                .of(NodeKind::Owned)
                .iter()
                .any(|a| a.id() == "vm-provider")
        );
        assert!(
            !acls
                .of(NodeKind::Owned)
                .iter()
                .any(|a| a.scheme() == "world")
        );
        assert_eq!(acls.of(NodeKind::Owned).len(), 3);
    }

    #[test]
    fn folders_at_and_below_home_are_podkeeper_s_alone() {
        let policy = AclPolicy {
            home: Some("/podkeeper".into()),
            ..Default::default()
        };
        let acls = NodeAcls::new(&policy, vec![id("sasl:podkeeper")]);
        for p in ["/podkeeper", "/podkeeper/shop", "/podkeeper/shop/web"] {
            assert_eq!(acls.parent_kind(p), NodeKind::Owned, "{p}");
        }
        for p in ["/dubbo", "/dubbo/a.B", "/services", "/podkeeper-other", "/"] {
            assert_eq!(acls.parent_kind(p), NodeKind::Ancestor, "{p}");
        }
        let owned = acls.of(NodeKind::Owned);
        assert!(
            !owned
                .iter()
                .any(|a| a.scheme() == "world" && a.permission().has(Permission::CREATE))
        );
    }

    #[test]
    fn no_identity_or_an_open_policy_means_open() {
        assert!(NodeAcls::new(&AclPolicy::default(), vec![]).is_open());
        let open = AclPolicy {
            open: true,
            ..Default::default()
        };
        assert!(NodeAcls::new(&open, vec![id("sasl:p")]).is_open());
        assert_eq!(
            NodeAcls::open().of(NodeKind::Owned),
            NodeAcls::open().of(NodeKind::Ancestor)
        );
    }

    #[test]
    fn differs_ignores_order_and_sees_any_change() {
        let acls = NodeAcls::new(&AclPolicy::default(), vec![id("sasl:podkeeper")]);
        let mut have = acls.of(NodeKind::Owned).to_vec();
        have.reverse();
        assert!(!acls.differs(NodeKind::Owned, &have));
        assert!(acls.differs(NodeKind::Owned, &NodeAcls::open().owned));
        have.pop();
        assert!(acls.differs(NodeKind::Owned, &have));
    }

    #[test]
    fn identities_parse_with_a_clear_error() {
        assert_eq!(id("x509:CN=a,O=b").id, "CN=a,O=b");
        let err = "anyone".parse::<Identity>().unwrap_err();
        assert!(err.contains("scheme:id"), "{err}");
        assert!("kerberos:x".parse::<Identity>().is_err());
    }
}
