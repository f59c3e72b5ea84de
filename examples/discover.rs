//! Discovers a service podkeeper registered and spreads some picks over it.
//!
//! ```text
//! PODKEEPER_ZK_CONNECT=127.0.0.1:2181 cargo run --example discover -- /podkeeper/shop/web 1000
//! ```

use std::collections::BTreeMap;

use anyhow::Context as _;
use podkeeper::discovery::{Discovery, PickContext};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .context("usage: discover <service-path> [picks]")?;
    let picks: usize = args
        .next()
        .map(|n| n.parse())
        .transpose()
        .context("picks must be a number")?
        .unwrap_or(10);
    let connect = std::env::var("PODKEEPER_ZK_CONNECT").unwrap_or_else(|_| "127.0.0.1:2181".into());

    // Follows the path from now on: the policy comes from the service record and switches live.
    let discovery = Discovery::builder(&connect, &path).start().await?;
    let snapshot = discovery.snapshot();
    match snapshot.service() {
        Some(service) => println!(
            "{} ({}): policy {}",
            path,
            service.service_name,
            snapshot.policy()
        ),
        None => println!("{path}: no service record yet"),
    }
    for endpoint in snapshot.endpoints() {
        let record = endpoint.record();
        println!(
            "  {:<24} {:<22} weight {:<5} {:?}",
            endpoint.name(),
            endpoint.address(),
            record.weight,
            record.status
        );
    }

    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..picks {
        // The key matters to ConsistentHash only; a real caller would pass a user or session id.
        let key = format!("request-{i}");
        let Some(picked) = discovery.pick(&PickContext::with_key(key.as_bytes())) else {
            anyhow::bail!("nothing to pick: no endpoint is UP with a weight above 0");
        };
        // Under LeastRequest `picked.guard` counts the request as in flight until dropped,
        // which is here, right away: a real caller keeps it until the response arrives.
        *counts.entry(picked.address()).or_default() += 1;
    }
    println!("{picks} picks:");
    for (address, n) in counts {
        println!("  {address:<22} {n}");
    }
    Ok(())
}
