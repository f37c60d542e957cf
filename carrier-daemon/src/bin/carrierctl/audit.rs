//! `carrierctl ledger checkpoint|audit|prove|check-proof`: what anyone can
//! check of a ledger with the log's public key alone.
//!
//! - `checkpoint` prints the latest signed note (save it to audit later);
//! - `audit --since FILE` proves the log only grew since a saved note and
//!   lists what was added; `audit --evidence FILE` checks evidence that the
//!   log key signed two histories;
//! - `prove DID` prints an inclusion proof of that DID's latest entry, and
//!   `check-proof` checks one offline, given the network's verifier key.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use base64::Engine;
use carrier_proto::identity::Did;
use carrier_proto::ledger::merkle::{leaf_hash, verify_consistency, verify_inclusion};
use carrier_proto::ledger::{
    Entry, EntryHash, Fork, LedgerState, Op, SignedCheckpoint, parse_verifier_key, verifier_key,
};
use carrier_proto::pb::{self, control_request::Request, control_response::Response};
use serde_json::{Value, json};

use crate::control::Target;
use crate::ledger::LedgerDir;
use crate::render;

/// The ledger to audit, verified, with its latest checkpoint.
struct Audited {
    state: LedgerState,
    entries: Vec<Vec<u8>>,
    checkpoint: SignedCheckpoint,
}

fn audited(at: &LedgerDir, target: &Target) -> anyhow::Result<Audited> {
    let entries = crate::ledger::entries_of(at, target)?;
    let state = carrier_proto::ledger::replay(&entries)?;
    let note = match target.socket() {
        Some(_) => {
            let request = Request::Entries(pb::EntriesRequest { from: 0, max: 0 });
            let Response::Entries(reply) = target.request(request)? else { bail!("unexpected reply from carrierd") };
            reply.checkpoint
        }
        None => carrier_daemon::ledger::LedgerStore::read_checkpoint(&at.path()?)?.note().to_vec(),
    };
    let checkpoint = verify(&state, &note)?;
    // The entries we were handed must be the ones the checkpoint signs.
    if state.tree().root_at(checkpoint.size()) != Some(checkpoint.root()) {
        bail!("the ledger's entries do not have the root its checkpoint signs: do not trust this copy");
    }
    Ok(Audited { state, entries, checkpoint })
}

/// Checks `note` is signed by the log key; the genesis's witnesses'
/// cosignatures are kept (a sequencer's newest checkpoint may not have its
/// quorum yet: the witnesses cosign it after it is signed).
fn verify(state: &LedgerState, note: &[u8]) -> anyhow::Result<SignedCheckpoint> {
    let network = state.network().context("the ledger has no genesis")?;
    Ok(SignedCheckpoint::open(note, &network.trust())?)
}

pub(crate) fn checkpoint(at: &LedgerDir, target: &Target) -> anyhow::Result<()> {
    let audited = audited(at, target)?;
    print!("{}", audited.checkpoint.text());
    Ok(())
}

pub(crate) fn audit(at: &LedgerDir, target: &Target, since: &Path, json: bool) -> anyhow::Result<()> {
    let saved =
        std::fs::read(since).with_context(|| format!("cannot read the saved checkpoint {}", since.display()))?;
    let audited = audited(at, target)?;
    let old = verify(&audited.state, &saved).context("the saved checkpoint is not this log's")?;
    let new = &audited.checkpoint;
    if old.size() > new.size() {
        bail!(
            "the saved checkpoint has {} entries, more than the log's {}: this copy is behind",
            old.size(),
            new.size()
        );
    }
    let proof = audited.state.tree().consistency_proof(old.size(), new.size())?;
    if verify_consistency(old.size(), old.root(), new.size(), new.root(), &proof).is_err() {
        bail!(
            "EQUIVOCATION: the saved checkpoint of {} entries is not a prefix of the log's {}; both are signed by the log key",
            old.size(),
            new.size()
        );
    }
    let added: Vec<Entry> =
        audited.entries[old.size() as usize..].iter().map(|b| Entry::decode(b)).collect::<Result<_, _>>()?;
    if !json {
        println!("the log only grew: {} entries then, {} now ({} added)", old.size(), new.size(), added.len());
    }
    render::entries_from(&audited.state, old.size() as usize, &added, json);
    Ok(())
}

/// The DID an entry is about.
fn subject(op: &Op) -> Option<Did> {
    match op {
        Op::Genesis { .. } | Op::Witnesses { .. } => None,
        Op::Handover { sequencer, .. } => Some(*sequencer),
        Op::RegisterDevice { did, .. }
        | Op::RegisterApp { did, .. }
        | Op::RotateKeys { did, .. }
        | Op::Revoke { did, .. } => Some(*did),
    }
}

/// Checks evidence of a fork with the log key alone: the ledger's genesis
/// (a directory, or a daemon), or the verifier key.
pub(crate) fn evidence(
    at: &LedgerDir,
    target: &Target,
    file: &Path,
    verifier_key: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read the evidence {}", file.display()))?;
    let (network, log_key) = match verifier_key {
        Some(vkey) => parse_verifier_key(vkey)?,
        None => {
            let entries = crate::ledger::entries_of(at, target)?;
            let genesis = entries.first().context("the ledger is empty")?;
            let state = carrier_proto::ledger::replay(std::slice::from_ref(genesis))?;
            let network = state.network().context("the ledger has no genesis")?;
            (network.id, network.log_key)
        }
    };
    let trust = carrier_proto::ledger::LogTrust::log_only(network, log_key);
    let fork = Fork::decode_text(&text, &trust)
        .with_context(|| format!("the evidence in {} does not hold: no fork is shown", file.display()))?;
    let (first, second) = (fork.first(), fork.second());
    if json {
        println!(
            "{}",
            json!({
                "holds": true,
                "first": { "size": first.size(), "root": first.root().to_hex(), "note": first.text() },
                "second": { "size": second.size(), "root": second.root().to_hex(), "note": second.text() },
            })
        );
    } else {
        println!(
            "evidence holds: the log key signed a checkpoint of {} entries (root {}) and one of {} entries (root {}) that does not extend it",
            first.size(),
            first.root().to_hex(),
            second.size(),
            second.root().to_hex()
        );
    }
    Ok(())
}

/// Checks evidence that the log broke a promise, with the log keys the
/// ledger (a directory, or a daemon's) names, past and present.
pub(crate) fn broken_promise(at: &LedgerDir, target: &Target, file: &Path, json: bool) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read the evidence {}", file.display()))?;
    let entries = crate::ledger::entries_of(at, target)?;
    let state = carrier_proto::ledger::replay(&entries)?;
    let network = state.network().context("the ledger has no genesis")?;
    let broken = carrier_proto::ledger::BrokenPromise::decode_text(&text, &network.id, &state.log_keys())
        .with_context(|| format!("the evidence in {} does not hold: no broken promise is shown", file.display()))?;
    let promise = broken.promise();
    let (index, deadline_ms) = match promise.word() {
        carrier_proto::ledger::Word::Promise { index, deadline_ms } => (*index, *deadline_ms),
        carrier_proto::ledger::Word::Refused(_) => (0, 0),
    };
    let checkpoint = broken.checkpoint();
    if json {
        println!(
            "{}",
            json!({
                "holds": true,
                "request": promise.leaf().to_hex(),
                "index": index,
                "deadline_ms": deadline_ms,
                "checkpoint": { "size": checkpoint.size(), "root": checkpoint.root().to_hex(), "note": checkpoint.text() },
            })
        );
    } else {
        println!(
            "evidence holds: the log promised request {} at index {index} by {deadline_ms} ms, and its checkpoint of {} entries (root {}) shows otherwise",
            promise.leaf().to_hex(),
            checkpoint.size(),
            checkpoint.root().to_hex()
        );
    }
    Ok(())
}

pub(crate) fn prove(at: &LedgerDir, target: &Target, did: Did, out: Option<PathBuf>) -> anyhow::Result<()> {
    let audited = audited(at, target)?;
    let size = audited.checkpoint.size();
    let (index, bytes) = audited.entries[..size as usize]
        .iter()
        .enumerate()
        .rev()
        .find(|(_, bytes)| Entry::decode(bytes).is_ok_and(|e| subject(e.op()) == Some(did)))
        .with_context(|| format!("{did} has no entry in this ledger"))?;
    let proof = audited.state.tree().inclusion_proof(index as u64, size)?;
    let network = audited.state.network().context("the ledger has no genesis")?;
    let bundle = json!({
        "did": did.to_string(),
        "index": index,
        "entry": base64::engine::general_purpose::STANDARD.encode(bytes),
        "proof": proof.iter().map(EntryHash::to_hex).collect::<Vec<_>>(),
        "checkpoint": audited.checkpoint.text(),
        "verifier_key": verifier_key(&network.id, &network.log_key),
    });
    let text = format!("{bundle:#}\n");
    match out {
        Some(path) => {
            std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
            println!("wrote the inclusion proof of {did}'s entry {index} to {}", path.display());
        }
        None => print!("{text}"),
    }
    Ok(())
}

pub(crate) fn check_proof(file: &Path, key: &str) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let bundle: Value =
        serde_json::from_str(&text).context("the proof is not JSON made by `carrierctl ledger prove`")?;
    let field = |name: &str| bundle[name].as_str().with_context(|| format!("the proof has no {name:?}"));
    let (network, log_key) = parse_verifier_key(key)?;
    // The log key alone: cosignatures need the genesis's witness keys.
    let trust = carrier_proto::ledger::LogTrust::log_only(network, log_key);
    let checkpoint = SignedCheckpoint::open(field("checkpoint")?.as_bytes(), &trust)
        .context("the proof's checkpoint is not signed by that log key")?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(field("entry")?).context("the entry is not base64")?;
    let entry = Entry::decode(&bytes)?;
    let did: Did = field("did")?.parse()?;
    if subject(entry.op()) != Some(did) || !entry.verify_signature() {
        bail!("the proof's entry is not a signed entry about {did}");
    }
    let index = bundle["index"].as_u64().context("the proof has no index")?;
    let proof = bundle["proof"]
        .as_array()
        .context("the proof has no hashes")?
        .iter()
        .map(|h| h.as_str().and_then(EntryHash::from_hex))
        .collect::<Option<Vec<_>>>()
        .context("a proof hash is not 64 hex digits")?;
    verify_inclusion(index, checkpoint.size(), leaf_hash(&bytes), checkpoint.root(), &proof)
        .context("the inclusion proof does not hold: the entry is not in that log")?;
    println!(
        "proof OK: {did}'s entry {index} ({}) is in the log of {} entries the log key signed",
        entry.op().name(),
        checkpoint.size()
    );
    Ok(())
}
