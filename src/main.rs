//! The podkeeper binary: `run` (the operator), `crd`, `resolve`, `tree`.

mod cli;

use clap::Parser as _;

use crate::cli::{Cli, Command};

// The allocator, when a feature picks one other than the platform's malloc (figures in
// docs/performance-history.md, "Memory"). mimalloc wins when both are enabled.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
#[cfg(all(feature = "jemalloc", not(feature = "mimalloc")))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    if let Err(err) = run(Cli::parse()) {
        // The cause chain on one line, each cause once, without a backtrace: for people.
        eprintln!("error: {}", cli::one_line(&err));
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Crd { which } = &cli.command {
        use podkeeper::crd::{crd_yaml, import_crd_yaml, policy_crd_yaml};
        match which.as_deref() {
            Some("serviceregistration") => print!("{}", crd_yaml()),
            Some("registryimport") => print!("{}", import_crd_yaml()),
            Some(_) => print!("{}", policy_crd_yaml()),
            None => print!(
                "{}---\n{}---\n{}",
                crd_yaml(),
                policy_crd_yaml(),
                import_crd_yaml()
            ),
        }
        return Ok(());
    }
    podkeeper::controller::configure_allocator();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(podkeeper::controller::on_thread_park)
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Run(args) => podkeeper::run(args.config()?).await,
            Command::Resolve(args) => cli::resolve(args).await,
            Command::Tree(args) => cli::tree(args).await,
            Command::Crd { .. } => unreachable!("handled above"),
        }
    })
}
