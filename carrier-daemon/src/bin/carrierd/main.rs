//! `carrierd`: the Carrier daemon.
//!
//! - `carrierd init` makes this device's identity (an Ed25519 key and an
//!   X25519 Noise key in one 0600 key file) and prints the card an admin
//!   registers it with. It never replaces an existing identity.
//! - `carrierd run` runs the daemon in the foreground, as systemd runs it:
//!   it reports readiness with sd_notify and shuts down in order on SIGTERM
//!   or SIGINT.

#[path = "../common/cli.rs"]
mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use carrier_daemon::config::Config;
use carrier_daemon::daemon::Daemon;
use carrier_daemon::ledger::LedgerStore;
use carrier_daemon::notify;
use carrier_daemon::paths::{self, DataDir, Mode, Paths};
use carrier_proto::identity::{Identity, IdentityKind};
use carrier_proto::keystore::{self, KeyStoreError};
use carrier_proto::ledger::Invite;
use clap::{Parser, Subcommand};

/// The daemon's allocator. Each message makes a few small allocations that
/// are freed on another thread; glibc's allocator serialises those on its
/// arena locks, mimalloc does not (in `benches/app_messaging.rs` it is
/// worth about a fifth of the message rate).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
        /// Use the system data directory (/var/lib/carrier).
        #[arg(long, conflicts_with = "data_dir")]
        system: bool,
        /// Succeed quietly when an identity exists already (for service start-up).
        #[arg(long)]
        if_missing: bool,
        /// Join the network of this invitation (`carrierctl invite`): also
        /// write its genesis and a configuration with its bootstrap
        /// addresses. An identity made already is kept.
        #[arg(long, value_name = "LINE")]
        invite: Option<String>,
        /// With --invite: the configuration file to write [default:
        /// ~/.config/carrier/carrierd.toml, or /etc/carrier/carrierd.toml
        /// with --system]; an existing file is never overwritten.
        #[arg(long, value_name = "FILE", requires = "invite")]
        config: Option<PathBuf>,
    },
    /// Run the daemon in the foreground until SIGTERM or SIGINT (as systemd runs it).
    ///
    /// Example: carrierd run --system
    Run {
        /// Configuration file [default: ~/.config/carrier/carrierd.toml, or
        /// /etc/carrier/carrierd.toml with --system]. A missing default file
        /// means all defaults; a missing file given here is an error.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Use the system paths (/etc/carrier, /var/lib/carrier, /run/carrier).
        #[arg(long)]
        system: bool,
        /// Data directory, overriding the configuration and the mode's default.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    cli::exit(run(Cli::parse()))
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Init { data_dir, system, if_missing, invite, config } => {
            cli::init_logging("info");
            let mode = if system { Mode::System } else { Mode::User };
            let dir = match (data_dir, system) {
                (Some(dir), _) => dir,
                (None, true) => Paths::for_mode(Mode::System)?.data_dir,
                (None, false) => paths::data_dir(None)?,
            };
            // Check the line before any key is made.
            let invite = invite.map(|line| Invite::parse(&line)).transpose()?;
            let dir = DataDir::new(dir);
            // Joining keeps an identity made already (the packaged service
            // makes one on its first start).
            init(&dir, if_missing || invite.is_some())?;
            match invite {
                Some(invite) => {
                    let config = match config {
                        Some(path) => path,
                        None => Paths::for_mode(mode)?.config_file,
                    };
                    join(&dir, &invite, &config)
                }
                None => Ok(()),
            }
        }
        Command::Run { config, system, data_dir } => {
            let mode = if system { Mode::System } else { Mode::User };
            let defaults = Paths::for_mode(mode)?;
            let config = match &config {
                Some(path) => Config::load(path, false)?,
                None => Config::load(&defaults.config_file, true)?,
            };
            cli::init_logging(&config.log.level);
            let data_dir = data_dir.or_else(|| config.data_dir.clone()).unwrap_or(defaults.data_dir);
            let runtime_dir = config.runtime_dir.clone().unwrap_or(defaults.runtime_dir);
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(serve(config, DataDir::new(data_dir), runtime_dir))
        }
    }
}

/// Runs the daemon until SIGTERM or SIGINT, then shuts it down in order.
async fn serve(config: Config, data_dir: DataDir, runtime_dir: PathBuf) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let daemon = Daemon::start(&config, data_dir, &runtime_dir).await?;
    println!("listening on {}", daemon.overlay().listen_addr());
    println!("did {}", daemon.did());
    notify::notify("READY=1");
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = interrupt.recv() => tracing::info!("SIGINT: shutting down"),
    }
    notify::notify("STOPPING=1");
    daemon.shutdown().await;
    Ok(())
}

/// Writes the invitation's genesis and a configuration naming its
/// bootstrap addresses.
fn join(dir: &DataDir, invite: &Invite, config: &std::path::Path) -> anyhow::Result<()> {
    LedgerStore::create_replica(&dir.ledger(), invite.genesis.clone())
        .with_context(|| format!("cannot write the network's genesis into {}", dir.ledger().display()))?;
    let bootstrap: Vec<String> = invite.bootstrap.iter().map(|a| format!("{a:?}")).collect();
    let text = format!(
        "# Written by `carrierd init --invite` for network {}.\nbootstrap = [{}]\n",
        invite.network_id(),
        bootstrap.join(", ")
    );
    if config.exists() {
        println!("{} exists already; add the invitation's bootstrap addresses to it:", config.display());
        println!("  bootstrap = [{}]", bootstrap.join(", "));
    } else {
        if let Some(parent) = config.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(config, text).with_context(|| format!("cannot write {}", config.display()))?;
        println!("wrote {} (bootstrap: {})", config.display(), invite.bootstrap.join(", "));
    }
    println!(
        "network {} ready: start carrierd; it waits for its registration and is admitted once the admin registers the card",
        invite.network_id()
    );
    Ok(())
}

fn init(dir: &DataDir, if_missing: bool) -> anyhow::Result<()> {
    let key_path = dir.device_key();
    if let Ok(existing) = keystore::load(&key_path) {
        if if_missing {
            println!("device identity {} exists in {}", existing.did(), dir.root().display());
            println!("did:  {}", existing.did());
            println!("card: {}", existing.card());
            return Ok(());
        }
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
