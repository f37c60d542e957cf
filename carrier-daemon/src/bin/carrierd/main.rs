//! `carrierd`: the Carrier daemon.
//!
//! `carrierd init` makes this device's identity (an Ed25519 key and an X25519
//! Noise key in one 0600 key file) and prints the card an admin registers it
//! with. It never replaces an existing identity.

#[path = "../common/cli.rs"]
mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use carrier_daemon::paths::{self, DataDir};
use carrier_proto::identity::{Identity, IdentityKind};
use carrier_proto::keystore::{self, KeyStoreError};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "carrierd", version, about = "The Carrier daemon")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create this device's identity and print its DID and card.
    ///
    /// Example: carrierd init --data-dir /var/lib/carrier
    Init {
        /// Data directory [default: the user data directory, e.g. ~/.local/share/carrier].
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    cli::init_logging("info");
    cli::exit(run(Cli::parse()))
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Init { data_dir } => init(DataDir::new(paths::data_dir(data_dir.as_deref())?)),
    }
}

fn init(dir: DataDir) -> anyhow::Result<()> {
    let key_path = dir.device_key();
    if let Ok(existing) = keystore::load(&key_path) {
        anyhow::bail!(
            "{} already holds a device identity ({}); refusing to overwrite it",
            key_path.display(),
            existing.did()
        );
    }
    let identity = Identity::generate(IdentityKind::Device);
    match keystore::create(&key_path, &identity) {
        Err(e @ KeyStoreError::Exists(_)) => {
            return Err(e).context("refusing to overwrite an existing key file");
        }
        other => other.context("cannot create the device identity")?,
    }
    let card = identity.card().to_string();
    std::fs::write(dir.device_card(), format!("{card}\n"))
        .with_context(|| format!("cannot write {}", dir.device_card().display()))?;
    println!("created device identity in {}", dir.root().display());
    println!("did:  {}", identity.did());
    println!("card: {card}");
    println!("Register this device by giving the card to your network's admin:");
    println!("  carrierctl ledger register-device --key REGISTRAR_KEY {card}");
    Ok(())
}
