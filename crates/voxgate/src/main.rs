//! The `voxgate` binary: parses arguments and hands over to the library.

use clap::Parser as _;

fn main() -> anyhow::Result<()> {
    let cli = voxgate::cli::Cli::parse();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(64)
        .build()?
        .block_on(voxgate::cli::run(cli))
}
