//! podkeeper: mirrors ready pods selected by `ServiceRegistration` resources into ZooKeeper,
//! and lets programs outside Kubernetes discover and load-balance across them.
//!
//! Feature `operator` (on by default) adds the operator; without it the library is the
//! discovery client, the records and the ZooKeeper layer, and compiles no Kubernetes crate.

#[cfg(feature = "operator")]
pub mod config;
#[cfg(feature = "operator")]
pub mod controller;
#[cfg(feature = "operator")]
pub mod crd;
pub mod discovery;
#[cfg(feature = "operator")]
pub mod failpoint;
#[cfg(feature = "operator")]
pub mod import;
pub mod metrics;
pub mod model;
#[cfg(feature = "operator")]
pub mod server;
#[cfg(feature = "operator")]
pub mod telemetry;
pub mod zk;

#[cfg(feature = "operator")]
use std::sync::{Arc, OnceLock};

#[cfg(feature = "operator")]
use anyhow::Context as _;
#[cfg(feature = "operator")]
use kube::Api;
#[cfg(feature = "operator")]
use kube::api::ListParams;

#[cfg(feature = "operator")]
use crate::crd::ServiceRegistration;
#[cfg(feature = "operator")]
use crate::zk::session::{SessionOptions, Sessions, Target};

/// Wall-clock time in Unix milliseconds (pod timestamps are compared against it).
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Runs the operator until a signal arrives. Flags are parsed and checked by the binary.
#[cfg(feature = "operator")]
pub async fn run(args: config::RunConfig) -> anyhow::Result<()> {
    telemetry::init(args.log_format);
    anyhow::ensure!(
        !args.allowed_path_prefix.is_empty(),
        "--allowed-path-prefix needs at least one prefix"
    );
    for prefix in &args.allowed_path_prefix {
        zk::layout::validate(prefix).context("--allowed-path-prefix")?;
    }

    // Before any TLS: kube and zookeeper-client share rustls, which links two providers.
    zk::security::install_crypto_provider();
    let client = kube::Client::try_default().await.context(
        "no Kubernetes to connect to: set KUBECONFIG (or write ~/.kube/config), or run in a \
             pod with a service account",
    )?;
    check_crd(&client).await?;

    let credentials = match args.zk_security.is_empty() {
        true => None,
        false => {
            let creds = zk::security::Credentials::load(args.zk_security.clone())
                .context("ZooKeeper credentials")?;
            creds.watch(std::time::Duration::from_secs(2));
            tracing::info!(credentials = %creds.describe(), "ZooKeeper credentials loaded");
            Some(creds)
        }
    };
    let (changes_tx, changes_rx) = tokio::sync::mpsc::unbounded_channel();
    let sessions = Sessions::new(
        Target {
            connect: args.zk_connect.clone(),
            chroot: args.zk_chroot.clone(),
        },
        SessionOptions {
            timeout: args.zk_session_timeout,
            credentials,
            acl: args.zk_acl.clone(),
        },
        changes_tx,
    );
    let slot: Arc<OnceLock<Arc<controller::Context>>> = Arc::default();
    let server_slot = slot.clone();
    let addr = args.health_addr;
    let server = tokio::spawn(async move { server::serve(addr, server_slot).await });
    let identity = args.identity.clone().unwrap_or_else(|| {
        std::env::var("POD_NAME").unwrap_or_else(|_| {
            let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
            format!("{}-{}", host.trim(), std::process::id())
        })
    });
    let mut lease = None;
    let leadership = if args.leader_elect {
        let ns = args
            .lease_namespace
            .clone()
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .unwrap_or_else(|| "default".into());
        let leadership = Arc::new(controller::leader::Leadership::elected());
        let cfg = controller::leader::LeaseConfig {
            name: args.lease_name.clone(),
            identity: identity.clone(),
            duration: args.lease_duration,
        };
        tracing::info!(lease = %format!("{ns}/{}", cfg.name), %identity, "leader election on");
        let api: Api<k8s_openapi::api::coordination::v1::Lease> =
            Api::namespaced(client.clone(), &ns);
        tokio::spawn(controller::leader::run(
            api.clone(),
            cfg.clone(),
            leadership.clone(),
        ));
        lease = Some((api, cfg));
        leadership
    } else {
        Arc::new(controller::leader::Leadership::always())
    };
    if args.dry_run {
        tracing::warn!("dry run: plans are logged, nothing is written to ZooKeeper");
    }
    let wiring = controller::Wiring {
        settings: controller::Settings {
            allowed_path_prefixes: args
                .allowed_path_prefix
                .iter()
                .map(|p| p.trim_end_matches('/').to_string())
                .collect(),
            cluster_id: args.cluster_id.clone(),
            resync_interval: args.resync_interval,
            dry_run: args.dry_run,
            max_deletes_per_txn: args.max_deletes_per_txn,
            identity,
            cluster_domain: args.cluster_domain.clone(),
        },
        sessions,
        session_changes: changes_rx,
        namespaces: args
            .namespaces
            .iter()
            .filter(|n| !n.is_empty())
            .cloned()
            .collect(),
        leadership,
        import: args.import,
    };
    tracing::info!(zk = %args.zk_connect, prefixes = ?args.allowed_path_prefix, cluster = %args.cluster_id, "podkeeper starting");
    let elected = wiring.leadership.clone();
    let controllers = controller::run(client, wiring, move |ctx| {
        let _ = slot.set(ctx);
    });
    tokio::select! {
        r = controllers => {
            if let Some((api, cfg)) = &lease {
                controller::leader::release(api, cfg, &elected).await;
            }
            r
        }
        r = server => match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(anyhow::Error::new(e).context(format!("health server on {addr}"))),
            Err(e) => Err(e.into()),
        },
    }
}

/// Fails with an instruction when the CRD is missing.
#[cfg(feature = "operator")]
async fn check_crd(client: &kube::Client) -> anyhow::Result<()> {
    let api: Api<ServiceRegistration> = Api::all(client.clone());
    match api.list(&ListParams::default().limit(1)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => anyhow::bail!(
            "the ServiceRegistration CRD (serviceregistrations.podkeeper.io) is not installed; install it with\n  \
             kubectl apply -f crds/\nor\n  podkeeper crd | kubectl apply -f -"
        ),
        Err(kube::Error::Api(e)) if e.code == 403 => {
            // Namespaced RBAC cannot list cluster-wide; the namespaced controllers report problems.
            Ok(())
        }
        Err(e) => {
            Err(anyhow::Error::new(e)
                .context("checking that the ServiceRegistration CRD is installed"))
        }
    }
}
