//! The podkeeper binary: `run` (the operator), `crd`, `resolve`, `tree`.

mod cli;

use clap::Parser as _;

use crate::cli::{Cli, Command};

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
            Command::Run(args) => podkeeper::run(args.config()?).await,
            Command::Resolve(args) => cli::resolve(args).await,
            Command::Tree(args) => cli::tree(args).await,
            Command::Crd => unreachable!("handled above"),
        }
    })
}
