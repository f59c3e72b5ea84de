//! The podkeeper binary: `run` (the operator), `crd`, `resolve`, `tree`.

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "podkeeper",
    version,
    about = "Mirrors ready Kubernetes pods into ZooKeeper for discovery and load balancing"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the operator.
    Run(Box<podkeeper::config::RunArgs>),
    /// Print the ServiceRegistration CRD as YAML.
    Crd,
    /// Show a service's endpoints and sample picks with its load-balancing policy.
    Resolve(podkeeper::discovery::cli::ResolveArgs),
    /// Show what is registered under a path.
    Tree(podkeeper::discovery::cli::TreeArgs),
}

fn main() {
    if let Err(err) = run(Cli::parse()) {
        // The whole cause chain on one line, without a backtrace: these are messages for people.
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Crd = cli.command {
        print!("{}", podkeeper::crd::crd_yaml());
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Run(args) => podkeeper::run(*args).await,
            Command::Resolve(args) => podkeeper::discovery::cli::resolve(args).await,
            Command::Tree(args) => podkeeper::discovery::cli::tree(args).await,
            Command::Crd => unreachable!("handled above"),
        }
    })
}
