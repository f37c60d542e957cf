//! `carrierctl ledger …`: offline work on a ledger directory.
//!
//! Every command that writes signs one entry with the key file given by
//! `--key`, checks it against the ledger's rules and appends it; a refused
//! entry leaves the ledger untouched and says which rule it broke.

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use carrier_daemon::ledger::LedgerStore;
use carrier_daemon::paths::{self, DataDir};
use carrier_proto::identity::{Card, Did, Identity, IdentityKind};
use carrier_proto::keystore;
use carrier_proto::ledger::Consent;
use carrier_proto::ledger::{Entry, LedgerState, Op};
use carrier_proto::pb::{self, control_request::Request, control_response::Response};
use clap::{Args, Subcommand};

use crate::control::Target;
use crate::render;

#[derive(Subcommand)]
pub(crate) enum LedgerCommand {
    /// Make a new network: a ledger whose first entry names it and its registrars.
    ///
    /// Example: carrierctl ledger genesis --ledger admin/ledger --network home --key admin/registrar.key
    Genesis {
        #[command(flatten)]
        at: LedgerDir,
        /// The network's name, for people.
        #[arg(long)]
        network: String,
        /// Registrar key file that signs the genesis (one of the registrars).
        #[arg(long)]
        key: PathBuf,
        /// Further registrars, by DID.
        #[arg(long = "registrar", value_name = "DID")]
        registrars: Vec<Did>,
    },
    /// Register a device from its card (printed by `carrierd init`). Signed by a registrar.
    ///
    /// Example: carrierctl ledger register-device --key admin/registrar.key carrier-card:…
    RegisterDevice {
        #[command(flatten)]
        at: LedgerDir,
        /// Registrar key file.
        #[arg(long)]
        key: PathBuf,
        /// Roles to grant (repeatable), e.g. --role relay.
        #[arg(long = "role")]
        roles: Vec<String>,
        /// The device's card, or a file holding it.
        card: String,
    },
    /// Register an app under a device from the app's card. Signed by the device.
    ///
    /// The app must consent to this device: give its key file (the app's
    /// owner is this device's), or the consent it made with
    /// `carrierctl consent`.
    ///
    /// Example: carrierctl ledger register-app --key ~/.local/share/carrier/device.key --app-key ~/.local/share/chat/app.key --name chat carrier-card:…
    RegisterApp {
        #[command(flatten)]
        at: LedgerDir,
        /// The hosting device's key file.
        #[arg(long)]
        key: PathBuf,
        /// The app's name, for people.
        #[arg(long)]
        name: String,
        /// The app's key file: its consent is made with it here.
        #[arg(long, value_name = "FILE", required_unless_present = "consent", conflicts_with = "consent")]
        app_key: Option<PathBuf>,
        /// The app's consent (`carrier-consent:…`), made by its owner.
        #[arg(long)]
        consent: Option<String>,
        /// The app's card, or a file holding it.
        card: String,
    },
    /// Replace a DID's keys with those on a new card. Signed by the DID's
    /// current key, its hosting device (apps), or a registrar.
    ///
    /// Example: carrierctl ledger rotate --key old.key did:carrier:z… carrier-card:…
    Rotate {
        #[command(flatten)]
        at: LedgerDir,
        /// Signer's key file.
        #[arg(long)]
        key: PathBuf,
        /// Whose keys to replace.
        did: Did,
        /// Card of the new keys, or a file holding it.
        card: String,
    },
    /// Revoke a DID for good (a device's apps go with it). Signed by the DID
    /// itself, its hosting device (apps), or a registrar.
    ///
    /// Example: carrierctl ledger revoke --key admin/registrar.key --reason "laptop stolen" did:carrier:z…
    Revoke {
        #[command(flatten)]
        at: LedgerDir,
        /// Signer's key file.
        #[arg(long)]
        key: PathBuf,
        /// Why, for people.
        #[arg(long, default_value = "")]
        reason: String,
        /// Who.
        did: Did,
    },
    /// List every entry.
    ///
    /// Example: carrierctl ledger show --json
    Show {
        #[command(flatten)]
        at: LedgerDir,
    },
    /// Show what the ledger says about a DID.
    ///
    /// Example: carrierctl ledger resolve did:carrier:z…
    Resolve {
        #[command(flatten)]
        at: LedgerDir,
        /// The DID to look up.
        did: Did,
    },
    /// Hand the entries of a ledger directory that a running daemon does not
    /// have yet to that daemon, which verifies and spreads them.
    ///
    /// Example: carrierctl ledger publish --ledger admin/ledger
    Publish {
        #[command(flatten)]
        at: LedgerDir,
    },
    /// Check every entry from genesis: signatures, chain, authority, storage.
    ///
    /// Example: carrierctl ledger verify --ledger /var/lib/carrier/ledger
    Verify {
        #[command(flatten)]
        at: LedgerDir,
    },
}

/// Which ledger to work on.
#[derive(Args)]
pub(crate) struct LedgerDir {
    /// Ledger directory [default: the user data directory's ledger/].
    #[arg(long, value_name = "DIR")]
    ledger: Option<PathBuf>,
}

/// Every encoded entry of the ledger to read: the running daemon's when
/// `--socket` names its control socket, else the directory's (verified).
fn entries_of(at: &LedgerDir, target: &Target) -> anyhow::Result<Vec<Vec<u8>>> {
    match (target.socket(), &at.ledger) {
        (Some(_), Some(_)) => bail!("give --ledger DIR or --socket PATH, not both"),
        (Some(_), None) => entries_from_daemon(target),
        (None, _) => Ok(LedgerStore::read_all(&at.path()?)?),
    }
}

impl LedgerDir {
    fn path(&self) -> anyhow::Result<PathBuf> {
        match &self.ledger {
            Some(dir) => Ok(dir.clone()),
            None => Ok(DataDir::new(paths::data_dir(None)?).ledger()),
        }
    }

    fn open(&self) -> anyhow::Result<LedgerStore> {
        let path = self.path()?;
        LedgerStore::open(&path).with_context(|| format!("cannot open the ledger in {}", path.display()))
    }
}

pub(crate) fn run(command: LedgerCommand, target: &Target, json: bool) -> anyhow::Result<()> {
    match command {
        LedgerCommand::Genesis { at, network, key, registrars } => {
            let signer = keystore::load_kind(&key, IdentityKind::Registrar)?;
            let mut keys = vec![signer.signing_key()];
            keys.extend(registrars.iter().map(Did::signing_key));
            let op = Op::Genesis { network, registrars: keys };
            let path = at.path()?;
            let entry = LedgerState::new().next_entry(op, now_ms(), &signer);
            let store = LedgerStore::create(&path, entry)?;
            let net = store.state().network().context("genesis applied but no network")?;
            println!("created network {:?} in {}", net.name, path.display());
            println!("network id: {}", net.id);
            Ok(())
        }
        LedgerCommand::RegisterDevice { at, key, roles, card } => {
            let card = read_card(&card, IdentityKind::Device)?;
            let op = Op::RegisterDevice { did: card.did(), keys: card.keys(), roles };
            append(&at, &key, Some(IdentityKind::Registrar), op)
        }
        LedgerCommand::RegisterApp { at, key, name, app_key, consent, card } => {
            let card = read_card(&card, IdentityKind::App)?;
            let device = keystore::load_kind(&key, IdentityKind::Device)?;
            let network = at.open()?.state().network().context("the ledger has no genesis")?.id;
            let consent = match (app_key, consent) {
                (Some(path), _) => {
                    let app = keystore::load_kind(&path, IdentityKind::App)?;
                    if app.did() != card.did() {
                        bail!("{} is the key of {}, not of the card's app {}", path.display(), app.did(), card.did());
                    }
                    Consent::sign(&app, &device.did(), &network)
                }
                (None, Some(text)) => text.parse::<Consent>()?,
                (None, None) => bail!("the app's consent is needed: give --app-key or --consent"),
            };
            if !consent.verify(&card.keys().signing, &device.did(), &network) {
                bail!(
                    "that consent is not {}'s to this device ({}) in this network; make one with `carrierctl consent`",
                    card.did(),
                    device.did()
                );
            }
            let op = Op::RegisterApp { did: card.did(), keys: card.keys(), device: device.did(), name, consent };
            sign_and_append(&at, &device, op)
        }
        LedgerCommand::Rotate { at, key, did, card } => {
            let card = Card::parse(&card_text(&card)?)?;
            append(&at, &key, None, Op::RotateKeys { did, keys: card.keys() })
        }
        LedgerCommand::Revoke { at, key, reason, did } => append(&at, &key, None, Op::Revoke { did, reason }),
        LedgerCommand::Show { at } => {
            // Read-only, so it also works on the ledger of a running daemon.
            let encoded = entries_of(&at, target)?;
            let state = carrier_proto::ledger::replay(&encoded)?;
            let entries = encoded.iter().map(|bytes| Entry::decode(bytes)).collect::<Result<Vec<_>, _>>()?;
            render::entries(&state, &entries, json);
            Ok(())
        }
        LedgerCommand::Resolve { at, did } => {
            let state = carrier_proto::ledger::replay(entries_of(&at, target)?)?;
            let resolution = state.resolve(&did).with_context(|| format!("{did} is not on this ledger"))?;
            render::resolution(&resolution, json);
            Ok(())
        }
        LedgerCommand::Publish { at } => {
            let path = at.path()?;
            let entries = LedgerStore::read_all(&path)?;
            let request = Request::Publish(pb::PublishRequest { entries });
            let Response::Publish(reply) = target.request(request)? else { bail!("unexpected reply from carrierd") };
            let height = reply.head.map(|h| h.height).unwrap_or(0);
            println!("published: the daemon took {} new entries; its ledger height is {height}", reply.appended);
            Ok(())
        }
        LedgerCommand::Verify { at } => {
            let path = at.path()?;
            let started = Instant::now();
            let state = LedgerStore::verify(&path)?;
            render::verified(&state, started.elapsed());
            Ok(())
        }
    }
}

/// Every entry of the running daemon's ledger, a batch at a time.
fn entries_from_daemon(target: &Target) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut entries = Vec::new();
    loop {
        let request = Request::Entries(pb::EntriesRequest { from: entries.len() as u64, max: 1_000 });
        let Response::Entries(batch) = target.request(request)? else { bail!("unexpected reply from carrierd") };
        let height = batch.head.map(|h| h.height).unwrap_or(0);
        if batch.entries.is_empty() {
            return Ok(entries);
        }
        entries.extend(batch.entries);
        if entries.len() as u64 >= height {
            return Ok(entries);
        }
    }
}

/// Loads the signer's key (checking its kind if given) and appends `op`.
fn append(at: &LedgerDir, key: &Path, kind: Option<IdentityKind>, op: Op) -> anyhow::Result<()> {
    let signer = match kind {
        Some(kind) => keystore::load_kind(key, kind)?,
        None => keystore::load(key)?,
    };
    sign_and_append(at, &signer, op)
}

fn sign_and_append(at: &LedgerDir, signer: &Identity, op: Op) -> anyhow::Result<()> {
    let mut store = at.open()?;
    let entry = store.state().next_entry(op, now_ms(), signer);
    let (seq, name) = (entry.seq(), entry.op().name());
    store.append(entry)?;
    println!("appended entry {seq} ({name}); ledger height {}", store.state().head().height);
    Ok(())
}

/// A card given inline (`carrier-card:…`) or as a file holding one.
fn card_text(arg: &str) -> anyhow::Result<String> {
    if arg.starts_with(carrier_proto::identity::card::CARD_PREFIX) {
        return Ok(arg.to_owned());
    }
    std::fs::read_to_string(arg).with_context(|| format!("{arg} is neither a card nor a readable card file"))
}

fn read_card(arg: &str, kind: IdentityKind) -> anyhow::Result<Card> {
    let card = Card::parse(&card_text(arg)?)?;
    if card.kind() != kind {
        bail!("this is the card of a {}, but a {kind} card is needed here", card.kind());
    }
    Ok(card)
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
