//! The health and metrics endpoint: /healthz, /readyz, /metrics.
//! Reads state only; /readyz is true only with a ZooKeeper session and complete watches.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;

use crate::controller::Context;

/// Binds `addr`; the IPv6 wildcard falls back to the IPv4 one on a host without IPv6, so the
/// default serves IPv6-only, dual-stack and IPv4-only clusters alike.
async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    match tokio::net::TcpListener::bind(addr).await {
        Err(err) if addr.ip() == std::net::Ipv6Addr::UNSPECIFIED => {
            tracing::info!(%err, "no IPv6 here; serving health and metrics on IPv4 only");
            tokio::net::TcpListener::bind((std::net::Ipv4Addr::UNSPECIFIED, addr.port())).await
        }
        other => other,
    }
}

/// Serves until the process ends. `ctx` is filled once the controller exists.
pub async fn serve(addr: SocketAddr, ctx: Arc<OnceLock<Arc<Context>>>) -> std::io::Result<()> {
    let readyz = move || {
        let ctx = ctx.clone();
        async move {
            match ctx.get().map(|c| c.not_ready()) {
                Some(None) => (StatusCode::OK, "ready\n".to_string()),
                Some(Some(why)) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: {}\n", why.summary),
                ),
                None => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not ready: starting\n".to_string(),
                ),
            }
        }
    };
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route(
            "/metrics",
            get(|| async {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    crate::metrics::get().encode(),
                )
            }),
        );
    let listener = bind(addr).await?;
    tracing::info!(%addr, "health and metrics server listening");
    axum::serve(listener, app).await
}
