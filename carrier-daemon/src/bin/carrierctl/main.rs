//! `carrierctl`: the administrator's tool.
//!
//! - `carrierctl keygen` makes a key file (registrar, device or app) and
//!   prints its card.
//! - `carrierctl ledger …` works offline on a ledger directory: make a
//!   network, register and revoke devices and apps, rotate keys, inspect and
//!   verify; `ledger publish` hands new entries to a running daemon. See
//!   `ledger.rs`.
//! - `carrierctl status|peers|routes|counters|watch|connect|disconnect` ask the running
//!   daemon over its control socket. See `control.rs`.
//!
//! Output is a table for people or JSON (`--json`) for scripts; errors go to
//! stderr with a non-zero exit code.

mod audit;
#[path = "../common/cli.rs"]
mod cli;
mod control;
mod ledger;
mod render;
mod submit;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use carrier_proto::identity::{Identity, IdentityKind};
use carrier_proto::keystore;
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "carrierctl", version, about = "Administer a Carrier network and its daemons")]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Options every command takes, before or after its name
/// (`carrierctl --json status` and `carrierctl status --json` are the same).
#[derive(clap::Args)]
struct Global {
    #[command(flatten)]
    target: control::Target,
    /// Print JSON instead of a table or text.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Make a new key file (mode 0600) and print its DID and card (a witness
    /// key: its verifier key, for `ledger genesis --witness`).
    ///
    /// Example: carrierctl keygen --kind registrar --out admin/registrar.key
    Keygen {
        /// What the key is for.
        #[arg(long, value_enum)]
        kind: KeyKind,
        /// Where to write the key file; an existing file is never overwritten.
        #[arg(long)]
        out: PathBuf,
    },
    /// Make an app's consent to be hosted by a device in a network, for the
    /// device's owner to register it with (`ledger register-app --consent`).
    /// The device's DID and the network id are in its `carrierctl status`.
    ///
    /// Example: carrierctl consent --app-key ~/.local/share/chat/app.key --device did:carrier:z… --network 3fa4…
    Consent {
        /// The app's key file.
        #[arg(long, value_name = "FILE")]
        app_key: PathBuf,
        /// The hosting device's DID.
        #[arg(long)]
        device: carrier_proto::identity::Did,
        /// The network id (64 hex digits).
        #[arg(long)]
        network: String,
    },
    /// Create, change and inspect a ledger directory (offline), or publish
    /// new entries to a running daemon.
    #[command(subcommand)]
    Ledger(ledger::LedgerCommand),
    /// Print one line that lets a new device join: the network's genesis
    /// (registrars, log key, quotas), its id, and bootstrap addresses. On
    /// the new device: `carrierd init --invite LINE`.
    ///
    /// Example: carrierctl invite --ledger admin/ledger --bootstrap /ip4/192.0.2.7/udp/4242/quic-v1
    Invite {
        #[command(flatten)]
        at: ledger::LedgerDir,
        /// A bootstrap address (repeatable) [default: with --socket, the
        /// daemon's listen addresses].
        #[arg(long = "bootstrap", value_name = "ADDR")]
        bootstrap: Vec<String>,
    },
    /// The running daemon: DID, network, uptime, addresses, ledger head, counts.
    ///
    /// Example: carrierctl status --json
    Status,
    /// Peers the daemon has links to.
    ///
    /// Example: carrierctl peers
    Peers,
    /// The daemon's Kademlia routing table.
    ///
    /// Example: carrierctl routes --json
    Routes,
    /// Find a device by DID and link to it, or link to it at an address.
    ///
    /// Example: carrierctl connect did:carrier:z…
    /// Example: carrierctl connect did:carrier:z… --addr /ip4/192.0.2.7/udp/7640/quic-v1/noise/p2p/<relay>/p2p-circuit/p2p/<peer>
    Connect {
        /// The device.
        did: String,
        /// Link at this address (a direct one, or a circuit through a
        /// relay) instead of looking the device up.
        #[arg(long)]
        addr: Option<String>,
    },
    /// Admission and refusal counters since the daemon started.
    ///
    /// Example: carrierctl counters
    Counters,
    /// Print peer up/down, revocation and ledger events as they happen (Ctrl-C stops).
    ///
    /// Example: carrierctl watch --json
    Watch,
    /// Print a shell completion script.
    ///
    /// Example: carrierctl completions bash > /etc/bash_completion.d/carrierctl
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Close the links to a device.
    ///
    /// Example: carrierctl disconnect did:carrier:z…
    Disconnect {
        /// The device.
        did: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum KeyKind {
    Registrar,
    Device,
    App,
    /// Cosigns the network's checkpoints; prints its verifier key for
    /// `ledger genesis --witness`.
    Witness,
    /// Orders a network's ledger and signs its checkpoints (a genesis makes
    /// one; a handover names a new one).
    Log,
}

impl From<KeyKind> for IdentityKind {
    fn from(kind: KeyKind) -> Self {
        match kind {
            KeyKind::Registrar => IdentityKind::Registrar,
            KeyKind::Device => IdentityKind::Device,
            KeyKind::App => IdentityKind::App,
            KeyKind::Witness => IdentityKind::Witness,
            KeyKind::Log => IdentityKind::Log,
        }
    }
}

fn main() -> ExitCode {
    cli::init_logging("warn");
    cli::exit(run(Cli::parse()))
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let Global { target, json } = cli.global;
    match cli.command {
        Command::Keygen { kind, out } => {
            let identity = Identity::generate(kind.into());
            keystore::create(&out, &identity).context("cannot write the key file")?;
            println!("created {} key {}", identity.kind(), out.display());
            println!("did:  {}", identity.did());
            match identity.kind() {
                IdentityKind::Witness => {
                    println!("vkey: {}", carrier_proto::ledger::witness_key_of(&identity).vkey());
                }
                _ => println!("card: {}", identity.card()),
            }
            Ok(())
        }
        Command::Consent { app_key, device, network } => {
            let network = carrier_proto::ledger::EntryHash::from_hex(&network)
                .with_context(|| format!("{network:?} is not a network id (64 hex digits)"))?;
            let app = keystore::load_kind(&app_key, IdentityKind::App)?;
            let consent = carrier_proto::ledger::Consent::sign(&app, &device, &network);
            println!("app:     {}", app.did());
            println!("consent: {consent}");
            Ok(())
        }
        Command::Ledger(command) => ledger::run(command, &target, json),
        Command::Invite { at, bootstrap } => invite(&at, &target, bootstrap),
        Command::Status => control::status(&target, json),
        Command::Peers => control::peers(&target, json),
        Command::Routes => control::routes(&target, json),
        Command::Connect { did, addr } => control::connect(&target, &did, addr),
        Command::Counters => control::counters(&target, json),
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "carrierctl", &mut std::io::stdout());
            Ok(())
        }
        Command::Watch => control::watch(&target, json),
        Command::Disconnect { did } => control::disconnect(&target, &did),
    }
}

/// Prints the invitation line for the network of `at` (or the daemon's).
fn invite(at: &ledger::LedgerDir, target: &control::Target, mut bootstrap: Vec<String>) -> anyhow::Result<()> {
    use carrier_proto::pb::{control_request::Request, control_response::Response};
    let genesis = ledger::entries_of(at, target)?.into_iter().next().context("the ledger is empty")?;
    let genesis = carrier_proto::ledger::Entry::decode(&genesis)?;
    if bootstrap.is_empty() && target.socket().is_some() {
        let Response::Status(status) = target.request(Request::Status(carrier_proto::pb::StatusRequest {}))? else {
            anyhow::bail!("unexpected reply from carrierd")
        };
        bootstrap = status.listen_addrs.into_iter().filter(|a| !a.contains("/0.0.0.0/")).collect();
    }
    if bootstrap.is_empty() {
        anyhow::bail!("give at least one --bootstrap address the new device can reach");
    }
    let invite = carrier_proto::ledger::Invite::new(genesis, bootstrap)?;
    println!("{}", invite.to_line());
    Ok(())
}
