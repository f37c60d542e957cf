//! `carrierctl ledger …`: offline work on a ledger directory, and audits.
//!
//! The admin's ledger directory is the network's sequencer: it holds the
//! log key (`log.key`, made by `genesis`). Every command that writes signs
//! one request with the author's key file (`--key`), sequences it with the
//! log key (checking every rule) and stores a new signed checkpoint; a
//! refused request leaves the ledger untouched and says which rule it broke.
//! Audit commands (`checkpoint`, `audit`, `prove`, `check-proof`) are in
//! `audit.rs`.

use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use carrier_daemon::ledger::LedgerStore;
use carrier_daemon::paths::{self, DataDir};
use carrier_proto::identity::{Card, Did, Identity, IdentityKind};
use carrier_proto::keystore;
use carrier_proto::ledger::Consent;
use carrier_proto::ledger::{Approval, Entry, LedgerState, Op, Quotas, Sequencer, WitnessKey, WitnessPolicy};
use carrier_proto::pb::{self, control_request::Request, control_response::Response};
use clap::{Args, Subcommand};

use crate::control::Target;
use crate::render;

/// The log key's file name in the admin's ledger directory.
const LOG_KEY_FILE: &str = "log.key";

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
        /// The log key file that will sequence the ledger and sign its
        /// checkpoints [default: a new `log.key` in the ledger directory].
        #[arg(long, value_name = "FILE")]
        log_key: Option<PathBuf>,
        /// A witness that cosigns checkpoints, by its verifier key (as
        /// `carrierctl keygen --kind witness` prints it); repeatable.
        #[arg(long = "witness", value_name = "VKEY")]
        witnesses: Vec<String>,
        /// How many witnesses must cosign a checkpoint before daemons take it.
        #[arg(long, default_value_t = 0)]
        witness_quorum: u32,
        #[command(flatten)]
        quotas: QuotaArgs,
    },
    /// Register a device from its card (printed by `carrierd init`). Signed by a registrar.
    ///
    /// Example: carrierctl ledger register-device --key admin/registrar.key carrier-card:…
    RegisterDevice {
        #[command(flatten)]
        at: LedgerDir,
        #[command(flatten)]
        how: crate::submit::How,
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
        #[command(flatten)]
        how: crate::submit::How,
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
        #[command(flatten)]
        how: crate::submit::How,
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
        #[command(flatten)]
        how: crate::submit::How,
        /// Signer's key file.
        #[arg(long)]
        key: PathBuf,
        /// Why, for people.
        #[arg(long, default_value = "")]
        reason: String,
        /// Who.
        did: Did,
    },
    /// Hand sequencing to another device under a new log key: when the
    /// sequencer is lost, or retires. The first --key (a registrar) signs
    /// the request; more registrars' keys, or the current log key, approve
    /// it, as many as the genesis's handover quorum asks. Hand it to any
    /// daemon (--submit), or write it (--out).
    ///
    /// Example: carrierctl ledger handover --to did:carrier:z… --key admin/registrar.key --log-key new-log.key --submit
    Handover {
        #[command(flatten)]
        at: LedgerDir,
        #[command(flatten)]
        how: crate::submit::How,
        /// The active device that sequences from now on.
        #[arg(long, value_name = "DID")]
        to: Did,
        /// Key files: a registrar's that signs, then approvers' (registrars,
        /// or the current log key).
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
        /// The new log key file (made if it does not exist): copy it to the
        /// new sequencer's device and set `[ledger] sequencer_key` there.
        /// Without it, a new key is made beside the signing registrar's key
        /// file, named after the new sequencer.
        #[arg(long, value_name = "FILE")]
        log_key: Option<PathBuf>,
    },
    /// Replace the witnesses that cosign checkpoints, and their quorum,
    /// from this entry on. The first --key (a registrar) signs the request;
    /// more registrars approve it, as many as the genesis's handover quorum
    /// asks. Hand it to any daemon (--submit), or write it (--out).
    ///
    /// Example: carrierctl ledger witnesses --witness 'w1+1a2b3c4d+BA…' --witness-quorum 1 --key admin/registrar.key --submit
    Witnesses {
        #[command(flatten)]
        at: LedgerDir,
        #[command(flatten)]
        how: crate::submit::How,
        /// A witness's C2SP verifier key (`carrierctl keygen --kind
        /// witness` prints it); once per witness.
        #[arg(long = "witness", value_name = "VKEY")]
        witnesses: Vec<String>,
        /// Cosignatures every checkpoint needs from them.
        #[arg(long, value_name = "K")]
        witness_quorum: u32,
        /// Key files: a registrar's that signs, then other registrars'.
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
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
    /// Hand an author's signed request (made with `--out` by any writing
    /// command) to the daemon, which sequences or forwards it.
    ///
    /// Example: carrierctl ledger submit --wait laptop-revoke.request
    Submit {
        /// The request (`carrier-request:…`), or a file holding it.
        request: String,
        /// Wait until it is sequenced or refused.
        #[arg(long)]
        wait: bool,
    },
    /// List the requests the daemon holds for the sequencer, with the rule
    /// each refused one broke.
    ///
    /// Example: carrierctl ledger pending --socket /run/carrier/control.sock
    Pending,
    /// Sequence the requests pending at a daemon with this ledger
    /// directory's log key, and publish the result to it (for networks whose
    /// sequencer is the admin's offline ledger directory).
    ///
    /// Example: carrierctl ledger sequence --ledger admin/ledger --socket /run/carrier/control.sock
    Sequence {
        #[command(flatten)]
        at: LedgerDir,
    },
    /// Print the latest checkpoint: the log key's signed note of the log's
    /// size and Merkle root. Save it to audit the log later.
    ///
    /// Example: carrierctl ledger checkpoint --socket /run/carrier/control.sock > saved.note
    Checkpoint {
        #[command(flatten)]
        at: LedgerDir,
    },
    /// Prove the log only grew since a saved checkpoint, and list what was
    /// added; or check evidence that the log key signed two histories, or
    /// that the log broke a promise.
    ///
    /// Example: carrierctl ledger audit --since saved.note
    /// Example: carrierctl ledger audit --evidence equivocation-1765000000000.txt --verifier-key 'carrier/3fa4…+1a2b3c4d+AQ…'
    /// Example: carrierctl ledger audit --broken-promise broken-promise-1765000000000-3fa4c1d2e5f60718.txt --socket SOCK
    #[command(group = clap::ArgGroup::new("what").required(true).args(["since", "evidence", "broken_promise"]))]
    Audit {
        #[command(flatten)]
        at: LedgerDir,
        /// A checkpoint saved earlier (`carrierctl ledger checkpoint`).
        #[arg(long, value_name = "FILE")]
        since: Option<PathBuf>,
        /// Evidence of a fork (`equivocation-*.txt` in a daemon's ledger
        /// directory): checked with the log key alone, offline.
        #[arg(long, value_name = "FILE")]
        evidence: Option<PathBuf>,
        /// With --evidence: the log's C2SP verifier key (printed by `ledger
        /// genesis`), instead of the ledger's genesis.
        #[arg(long, value_name = "VKEY", requires = "evidence")]
        verifier_key: Option<String>,
        /// Evidence that the log broke a promise (`broken-promise-*.txt` in
        /// a daemon's ledger directory): checked with the log keys the
        /// ledger names, offline.
        #[arg(long, value_name = "FILE")]
        broken_promise: Option<PathBuf>,
    },
    /// Print an inclusion proof of a DID's latest entry, which anyone checks
    /// offline with `carrierctl ledger check-proof` and the verifier key.
    ///
    /// Example: carrierctl ledger prove did:carrier:z… --out laptop.proof
    Prove {
        #[command(flatten)]
        at: LedgerDir,
        /// Whose entry.
        did: Did,
        /// Write the proof here instead of printing it.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Check an inclusion proof offline, with the network's checkpoint
    /// verifier key alone (printed by `ledger genesis` and in `ledger prove`'s output).
    ///
    /// Example: carrierctl ledger check-proof --verifier-key 'carrier/3fa4…+1a2b3c4d+AQ…' laptop.proof
    CheckProof {
        /// The C2SP verifier key of the network's log.
        #[arg(long, value_name = "VKEY")]
        verifier_key: String,
        /// The proof file.
        file: PathBuf,
    },
    /// Check every entry from genesis: signatures, rules, storage, and the
    /// Merkle root against the signed checkpoint.
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
    pub(crate) ledger: Option<PathBuf>,
}

/// Signs a handover of sequencing to `to` under the log key in `log_key`
/// (made there if missing), approved by every key after the first.
fn handover(
    at: &LedgerDir,
    how: &crate::submit::How,
    target: &Target,
    to: Did,
    keys: &[PathBuf],
    log_key: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    if how.in_directory() {
        bail!("a handover is sequenced by the new sequencer: hand it to a daemon (--submit) or write it (--out)");
    }
    let log_key = match log_key {
        Some(path) => path.to_path_buf(),
        None => {
            let signer = keys.first().context("give the signing registrar's --key")?;
            let name = to.to_string();
            let short = name.rsplit(':').next().unwrap_or(&name).chars().take(16).collect::<String>();
            signer.with_file_name(format!("log-{short}.key"))
        }
    };
    let log_key = log_key.as_path();
    let new_key = match keystore::load_kind(log_key, IdentityKind::Log) {
        Ok(key) => key,
        Err(keystore::KeyStoreError::Missing(_)) => {
            let key = Identity::generate(IdentityKind::Log);
            keystore::create(log_key, &key).context("cannot write the new log key")?;
            println!(
                "created the new log key {}: copy it to {to} and set [ledger] sequencer_key there",
                log_key.display()
            );
            key
        }
        Err(error) => return Err(error.into()),
    };
    let (signer, approvers) = keys.split_first().context("give the signing registrar's --key")?;
    let signer = keystore::load_kind(signer, IdentityKind::Registrar)?;
    let network = crate::submit::network_id(at, how, target)?;
    let mut approvals = approvers
        .iter()
        .map(|path| {
            let key = keystore::load(path)?;
            Ok(Approval::sign(&key, &network, &new_key.signing_key(), &to))
        })
        .collect::<anyhow::Result<Vec<Approval>>>()?;
    approvals.sort_by(|a, b| a.key.as_bytes().cmp(b.key.as_bytes()));
    approvals.dedup_by(|a, b| a.key == b.key);
    let op = Op::Handover { log_key: new_key.signing_key(), sequencer: to, approvals };
    crate::submit::write(at, how, target, &signer, op)
}

fn witnesses(
    at: &LedgerDir,
    how: &crate::submit::How,
    target: &Target,
    vkeys: &[String],
    quorum: u32,
    keys: &[PathBuf],
) -> anyhow::Result<()> {
    if how.in_directory() {
        bail!(
            "a change of witnesses is sequenced by the network's sequencer: hand it to a daemon (--submit) or write it (--out)"
        );
    }
    let witnesses = vkeys
        .iter()
        .map(|vkey| WitnessKey::parse_vkey(vkey).with_context(|| format!("--witness {vkey}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if quorum as usize > witnesses.len() {
        bail!("a quorum of {quorum} out of {} witnesses can never be met", witnesses.len());
    }
    let policy = WitnessPolicy { witnesses, quorum };
    let (signer, approvers) = keys.split_first().context("give the signing registrar's --key")?;
    let signer = keystore::load_kind(signer, IdentityKind::Registrar)?;
    // Approvals name the witnesses they replace: those in force now.
    let state = carrier_proto::ledger::replay(&entries_of(at, target)?)?;
    let current = state.network().context("the ledger has no genesis")?;
    let (network, replacing) = (current.id, current.witnesses.clone());
    let mut approvals = approvers
        .iter()
        .map(|path| {
            let approver = keystore::load_kind(path, IdentityKind::Registrar)?;
            Ok(Approval::sign_witnesses(&approver, &network, &replacing, &policy))
        })
        .collect::<anyhow::Result<Vec<Approval>>>()?;
    approvals.sort_by(|a, b| a.key.as_bytes().cmp(b.key.as_bytes()));
    approvals.dedup_by(|a, b| a.key == b.key);
    crate::submit::write(at, how, target, &signer, Op::Witnesses { policy, approvals })
}

/// Every encoded entry of the ledger to read: the running daemon's when
/// `--socket` names its control socket, else the directory's (verified).
pub(crate) fn entries_of(at: &LedgerDir, target: &Target) -> anyhow::Result<Vec<Vec<u8>>> {
    match (target.socket(), &at.ledger) {
        (Some(_), Some(_)) => bail!("give --ledger DIR or --socket PATH, not both"),
        (Some(_), None) => entries_from_daemon(target),
        (None, _) => Ok(LedgerStore::read_all(&at.path()?)?),
    }
}

impl LedgerDir {
    pub(crate) fn open_store(&self) -> anyhow::Result<LedgerStore> {
        self.open()
    }

    pub(crate) fn path(&self) -> anyhow::Result<PathBuf> {
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

/// The genesis's quotas, each with its default.
#[derive(Args)]
pub(crate) struct QuotaArgs {
    /// Most apps one device may ever register.
    #[arg(long, default_value_t = carrier_proto::ledger::DEFAULT_MAX_APPS_PER_DEVICE)]
    max_apps_per_device: u32,
    /// Most requests sequenced per minute for one device (with its apps).
    #[arg(long, default_value_t = carrier_proto::ledger::DEFAULT_MAX_REQUESTS_PER_MINUTE)]
    max_requests_per_minute: u32,
    /// Most requests sequenced per day for one device (with its apps).
    #[arg(long, default_value_t = carrier_proto::ledger::DEFAULT_MAX_REQUESTS_PER_DAY)]
    max_requests_per_day: u32,
    /// Most key rotations sequenced per day for one DID.
    #[arg(long, default_value_t = carrier_proto::ledger::DEFAULT_MAX_ROTATIONS_PER_DAY)]
    max_rotations_per_day: u32,
    /// Most requests sequenced per minute for one registrar.
    #[arg(long, default_value_t = carrier_proto::ledger::DEFAULT_REGISTRAR_REQUESTS_PER_MINUTE)]
    registrar_requests_per_minute: u32,
    /// Most requests sequenced per day for one registrar.
    #[arg(long, default_value_t = carrier_proto::ledger::DEFAULT_REGISTRAR_REQUESTS_PER_DAY)]
    registrar_requests_per_day: u32,
    /// Longest a signed request may wait for the sequencer, in seconds.
    #[arg(long, default_value_t = carrier_proto::ledger::DEFAULT_MAX_REQUEST_LIFETIME_S)]
    max_request_lifetime_s: u32,
    /// Registrars that must sign a handover of sequencing to another device
    /// (fewer will do if the current log key countersigns).
    #[arg(long, default_value_t = 1)]
    handover_quorum: u32,
}

impl From<QuotaArgs> for Quotas {
    /// A quota at its default is written as 0 ("the default"), as the
    /// genesis format says.
    fn from(a: QuotaArgs) -> Self {
        use carrier_proto::ledger as l;
        let or_zero = |value: u32, default: u32| if value == default { 0 } else { value };
        Quotas {
            max_apps_per_device: a.max_apps_per_device,
            max_requests_per_minute: a.max_requests_per_minute,
            max_requests_per_day: or_zero(a.max_requests_per_day, l::DEFAULT_MAX_REQUESTS_PER_DAY),
            max_rotations_per_day: or_zero(a.max_rotations_per_day, l::DEFAULT_MAX_ROTATIONS_PER_DAY),
            registrar_requests_per_minute: or_zero(
                a.registrar_requests_per_minute,
                l::DEFAULT_REGISTRAR_REQUESTS_PER_MINUTE,
            ),
            registrar_requests_per_day: or_zero(a.registrar_requests_per_day, l::DEFAULT_REGISTRAR_REQUESTS_PER_DAY),
            max_request_lifetime_s: or_zero(a.max_request_lifetime_s, l::DEFAULT_MAX_REQUEST_LIFETIME_S),
            handover_quorum: or_zero(a.handover_quorum, 1),
        }
    }
}

pub(crate) fn run(command: LedgerCommand, target: &Target, json: bool) -> anyhow::Result<()> {
    match command {
        LedgerCommand::Genesis { at, network, key, registrars, log_key, witnesses, witness_quorum, quotas } => {
            let witnesses = witnesses
                .iter()
                .map(|vkey| WitnessKey::parse_vkey(vkey).with_context(|| format!("--witness {vkey}")))
                .collect::<anyhow::Result<Vec<_>>>()?;
            anyhow::ensure!(
                witness_quorum as usize <= witnesses.len(),
                "--witness-quorum {witness_quorum} needs at least that many --witness keys (given {})",
                witnesses.len()
            );
            let witnesses = WitnessPolicy { witnesses, quorum: witness_quorum };
            anyhow::ensure!(
                quotas.handover_quorum as usize <= 1 + registrars.len(),
                "--handover-quorum {} needs at least that many registrars (given {})",
                quotas.handover_quorum,
                1 + registrars.len()
            );
            let signer = keystore::load_kind(&key, IdentityKind::Registrar)?;
            let mut keys = vec![signer.signing_key()];
            keys.extend(registrars.iter().map(Did::signing_key));
            let path = at.path()?;
            let log_path = log_key.unwrap_or_else(|| path.join(LOG_KEY_FILE));
            let (log, made) = keystore::load_or_create(&log_path, IdentityKind::Log)?;
            let op =
                Op::Genesis { network, registrars: keys, log_key: log.signing_key(), quotas: quotas.into(), witnesses };
            let entry = LedgerState::new().next_entry(op, now_ms(), &signer);
            let store = LedgerStore::create(&path, entry, &mut Sequencer::new(log, None))?;
            let net = store.state().network().context("genesis applied but no network")?;
            println!("created network {:?} in {}", net.name, path.display());
            println!("network id: {}", net.id);
            let verb = if made { "made" } else { "using" };
            println!("log key: {verb} {} (keep it secret: it orders the ledger)", log_path.display());
            println!("checkpoint verifier key: {}", carrier_proto::ledger::verifier_key(&net.id, &net.log_key));
            Ok(())
        }
        LedgerCommand::RegisterDevice { at, how, key, roles, card } => {
            let card = read_card(&card, IdentityKind::Device)?;
            let op = Op::RegisterDevice { did: card.did(), keys: card.keys(), roles };
            let signer = keystore::load_kind(&key, IdentityKind::Registrar)?;
            crate::submit::write(&at, &how, target, &signer, op)
        }
        LedgerCommand::RegisterApp { at, how, key, name, app_key, consent, card } => {
            let card = read_card(&card, IdentityKind::App)?;
            let device = keystore::load_kind(&key, IdentityKind::Device)?;
            let network = crate::submit::network_id(&at, &how, target)?;
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
            crate::submit::write(&at, &how, target, &device, op)
        }
        LedgerCommand::Rotate { at, how, key, did, card } => {
            let card = Card::parse(&card_text(&card)?)?;
            crate::submit::write(&at, &how, target, &keystore::load(&key)?, Op::RotateKeys { did, keys: card.keys() })
        }
        LedgerCommand::Revoke { at, how, key, reason, did } => {
            crate::submit::write(&at, &how, target, &keystore::load(&key)?, Op::Revoke { did, reason })
        }
        LedgerCommand::Handover { at, how, to, keys, log_key } => {
            handover(&at, &how, target, to, &keys, log_key.as_deref())
        }
        LedgerCommand::Witnesses { at, how, witnesses: vkeys, witness_quorum, keys } => {
            witnesses(&at, &how, target, &vkeys, witness_quorum, &keys)
        }
        LedgerCommand::Submit { request, wait } => {
            let entry = crate::submit::read_request(&request)?;
            crate::submit::submit(target, entry, wait)
        }
        LedgerCommand::Pending => crate::submit::pending(target, json),
        LedgerCommand::Sequence { at } => crate::submit::sequence(&at, target),
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
            // A running daemon may know more than its log: a revocation in
            // force before it is sequenced.
            let live = match target.socket() {
                Some(_) => match target.request(Request::Resolve(pb::ResolveRequest { did: did.to_string() }))? {
                    Response::Resolve(reply) => Some((reply.active, reply.status)),
                    _ => bail!("unexpected reply from carrierd"),
                },
                None => None,
            };
            render::resolution(&resolution, live, json);
            Ok(())
        }
        LedgerCommand::Publish { at } => crate::submit::publish(&at.path()?, target, Vec::new()),
        LedgerCommand::Checkpoint { at } => crate::audit::checkpoint(&at, target),
        LedgerCommand::Audit { at, since: Some(since), .. } => crate::audit::audit(&at, target, &since, json),
        LedgerCommand::Audit { at, evidence: Some(evidence), verifier_key, .. } => {
            crate::audit::evidence(&at, target, &evidence, verifier_key.as_deref(), json)
        }
        LedgerCommand::Audit { at, broken_promise: Some(file), .. } => {
            crate::audit::broken_promise(&at, target, &file, json)
        }
        LedgerCommand::Audit { .. } => bail!("give --since FILE, --evidence FILE or --broken-promise FILE"),
        LedgerCommand::Prove { at, did, out } => crate::audit::prove(&at, target, did, out),
        LedgerCommand::CheckProof { verifier_key, file } => crate::audit::check_proof(&file, &verifier_key),
        LedgerCommand::Verify { at } => {
            let path = at.path()?;
            let started = Instant::now();
            let (state, checkpoint) = LedgerStore::verify(&path)?;
            render::verified(&state, started.elapsed());
            println!("checkpoint signed by the log key covers all {} entries", checkpoint.size());
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

/// Signs `op` as `signer`'s request and sequences it with the directory's
/// log key.
pub(crate) fn sign_and_append(at: &LedgerDir, signer: &Identity, op: Op) -> anyhow::Result<()> {
    let mut store = at.open()?;
    let log_path = at.path()?.join(LOG_KEY_FILE);
    let log = keystore::load_kind(&log_path, IdentityKind::Log)
        .with_context(|| format!("this ledger directory cannot sequence: no log key at {}", log_path.display()))?;
    let mut sequencer = Sequencer::new(log, None);
    let entry = store.state().next_entry(op, now_ms(), signer);
    let name = entry.op().name();
    let results = store.sequence(&mut sequencer, vec![entry], now_ms())?;
    match results.into_iter().next() {
        Some(Ok(index)) => {
            println!("appended entry {index} ({name}); ledger height {}", store.state().head().height);
            Ok(())
        }
        Some(Err(rejection)) => bail!("entry refused: {rejection}"),
        None => bail!("nothing was sequenced"),
    }
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

pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
