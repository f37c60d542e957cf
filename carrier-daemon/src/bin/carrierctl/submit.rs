//! `carrierctl ledger submit|pending|sequence|publish`, and `--submit` /
//! `--out` on the writing commands: authors' signed requests handed to a running daemon,
//! which sequences them (if it holds the log key) or holds them for the
//! sequencer; and the admin's offline ledger directory sequencing what a
//! daemon holds.
//!
//! A request travels as one line: `carrier-request:` and the encoded entry
//! in base64url.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine;
use carrier_proto::identity::IdentityKind;
use carrier_proto::keystore;
use carrier_proto::ledger::{Entry, Rejection, Sequencer};
use carrier_proto::pb::{self, control_request::Request, control_response::Response, submit_result::Result as Outcome};
use serde_json::json;

use std::path::{Path, PathBuf};

use carrier_daemon::ledger::LedgerStore;
use carrier_proto::identity::Identity;
use carrier_proto::ledger::{EntryHash, Op};
use clap::Args;

use crate::control::Target;
use crate::ledger::LedgerDir;

/// Entries per publish request (well under the control frame limit).
const PUBLISH_BATCH: u64 = 500;
/// How a request line starts.
pub(crate) const REQUEST_PREFIX: &str = "carrier-request:";
/// How long `--wait` waits.
const WAIT: Duration = Duration::from_secs(60);

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The one-line form of a signed request.
pub(crate) fn request_text(entry: &Entry) -> String {
    format!("{REQUEST_PREFIX}{}", B64.encode(entry.encoded()))
}

/// Where a signed request goes, instead of the ledger directory.
#[derive(Args)]
pub(crate) struct How {
    /// Hand the signed request to the running daemon (`--socket`, `--system`
    /// or the user daemon), which sequences it or forwards it to the
    /// sequencer, instead of sequencing it in a ledger directory.
    #[arg(long)]
    submit: bool,
    /// With --submit: wait until the request is sequenced or refused.
    #[arg(long, requires = "submit")]
    wait: bool,
    /// Write the signed request to FILE, for `carrierctl ledger submit`
    /// elsewhere.
    #[arg(long, value_name = "FILE", conflicts_with = "submit")]
    out: Option<PathBuf>,
}

impl How {
    /// True when the request is sequenced in a ledger directory (neither
    /// submitted nor written to a file).
    pub(crate) fn in_directory(&self) -> bool {
        !self.submit && self.out.is_none()
    }
}

/// Signs `op` as `signer`'s request and, as `how` says, sequences it in
/// the ledger directory, submits it to the daemon, or writes it to a file.
pub(crate) fn write(at: &LedgerDir, how: &How, target: &Target, signer: &Identity, op: Op) -> anyhow::Result<()> {
    if !how.submit && how.out.is_none() {
        return crate::ledger::sign_and_append(at, signer, op);
    }
    let entry = Entry::sign(network_id(at, how, target)?, crate::ledger::now_ms(), op, signer);
    match &how.out {
        Some(path) => {
            let text = format!("{}\n", request_text(&entry));
            std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
            println!(
                "wrote the signed {} request to {}; hand it to any daemon with `carrierctl ledger submit`",
                entry.op().name(),
                path.display()
            );
            Ok(())
        }
        None => submit(target, entry, how.wait),
    }
}

/// The network id: the ledger directory's, or the daemon's when submitting.
pub(crate) fn network_id(at: &LedgerDir, how: &How, target: &Target) -> anyhow::Result<EntryHash> {
    if how.submit || (how.out.is_some() && at.ledger.is_none()) {
        let Response::Status(status) = target.request(Request::Status(pb::StatusRequest {}))? else {
            bail!("unexpected reply from carrierd")
        };
        return EntryHash::from_hex(&status.network_id).context("the daemon's ledger has no network yet");
    }
    Ok(at.open_store()?.state().network().context("the ledger has no genesis")?.id)
}

/// A request given inline (`carrier-request:…`) or as a file holding one.
pub(crate) fn read_request(arg: &str) -> anyhow::Result<Entry> {
    let text = if arg.starts_with(REQUEST_PREFIX) {
        arg.to_owned()
    } else {
        std::fs::read_to_string(arg)
            .with_context(|| format!("{arg} is neither a request nor a readable request file"))?
    };
    parse_request(text.trim())
}

/// Hands the directory's entries the daemon lacks to it, a batch at a
/// time, each with a consistency proof to the directory's checkpoint.
pub(crate) fn publish(dir: &Path, target: &Target, refused: Vec<pb::Refusal>) -> anyhow::Result<()> {
    let (state, checkpoint) = LedgerStore::verify(dir)?;
    let entries = LedgerStore::read_all(dir)?;
    let Response::Status(status) = target.request(Request::Status(pb::StatusRequest {}))? else {
        bail!("unexpected reply from carrierd")
    };
    let mut from = status.head.map(|h| h.height).unwrap_or(0);
    let size = checkpoint.size();
    let mut appended = 0;
    loop {
        let end = size.min(from + PUBLISH_BATCH);
        let batch = entries[from.min(size) as usize..end.max(from.min(size)) as usize].to_vec();
        let proof = match end < size && !batch.is_empty() {
            true => state.tree().consistency_proof(end, size)?.iter().map(|h| h.0.to_vec()).collect(),
            false => Vec::new(),
        };
        // The daemon takes a larger checkpoint only once it is proven to
        // extend its own: our tree's root at its size, and the proof.
        let (prefix_root, prefix_proof) = match state.tree().root_at(from) {
            Some(root) if from > 0 && from < size => {
                (root.0.to_vec(), state.tree().consistency_proof(from, size)?.iter().map(|h| h.0.to_vec()).collect())
            }
            Some(root) if from > 0 => (root.0.to_vec(), Vec::new()),
            _ => (Vec::new(), Vec::new()),
        };
        let request = pb::PublishRequest {
            entries: batch,
            from,
            checkpoint: checkpoint.note().to_vec(),
            proof,
            refused: refused.clone(),
            prefix_root,
            prefix_proof,
        };
        let Response::Publish(reply) = target.request(Request::Publish(request))? else {
            bail!("unexpected reply from carrierd")
        };
        appended += reply.appended;
        let height = reply.head.map(|h| h.height).unwrap_or(0);
        if height >= size || reply.appended == 0 {
            println!("published: the daemon took {appended} new entries; its ledger height is {height}");
            return Ok(());
        }
        from = height;
    }
}

/// Reads a request line.
pub(crate) fn parse_request(text: &str) -> anyhow::Result<Entry> {
    let body = text.strip_prefix(REQUEST_PREFIX).context("a request starts with carrier-request:")?;
    let bytes = B64.decode(body).context("the request is not base64url")?;
    let entry = Entry::decode(&bytes)?;
    if !entry.verify_signature() {
        bail!("the request's signature does not verify: it was altered");
    }
    Ok(entry)
}

fn submit_once(target: &Target, entry: &Entry) -> anyhow::Result<Outcome> {
    let request = Request::Submit(pb::SubmitRequest { entries: vec![entry.encoded().to_vec()] });
    let Response::Submit(reply) = target.request(request)? else { bail!("unexpected reply from carrierd") };
    reply.results.into_iter().next().and_then(|r| r.result).context("carrierd gave no result")
}

/// Hands `entry` to the daemon; with `wait`, until it is sequenced or refused.
pub(crate) fn submit(target: &Target, entry: Entry, wait: bool) -> anyhow::Result<()> {
    let name = entry.op().name();
    let started = Instant::now();
    let mut said_pending = false;
    loop {
        match submit_once(target, &entry)? {
            Outcome::Index(index) => {
                println!("sequenced: {name} is entry {index}");
                return Ok(());
            }
            Outcome::Refused(rule) => bail!("the sequencer refused the {name} request: {rule}"),
            Outcome::Pending(_) if !wait => {
                println!(
                    "pending: the daemon holds the {name} request for the sequencer (see `carrierctl ledger pending`)"
                );
                return Ok(());
            }
            Outcome::Pending(_) => {
                if !said_pending {
                    eprintln!("waiting for the sequencer to take the {name} request…");
                    said_pending = true;
                }
                if started.elapsed() > WAIT {
                    bail!("the {name} request is still pending after {WAIT:?}; it stays with the daemon");
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Lists the requests the daemon holds.
pub(crate) fn pending(target: &Target, as_json: bool) -> anyhow::Result<()> {
    let Response::Pending(list) = target.request(Request::Pending(pb::PendingRequest {}))? else {
        bail!("unexpected reply from carrierd")
    };
    let mut rows = Vec::new();
    let mut values = Vec::new();
    for held in &list.entries {
        let entry = Entry::decode(&held.entry)?;
        let state = match (held.refused.is_empty(), held.promised) {
            (false, _) => format!("refused: {}", held.refused),
            (true, true) => {
                format!("promised: index {} by {}", held.promised_index, crate::render::time(held.promised_by_ms))
            }
            (true, false) => "waiting".to_owned(),
        };
        let since = crate::render::time(held.since_ms);
        let mut value = json!({
            "leaf_hash": entry.hash().to_hex(), "op": entry.op().name(), "since": since,
            "since_ms": held.since_ms, "state": state, "request": request_text(&entry),
        });
        if held.promised {
            value["promised_index"] = json!(held.promised_index);
            value["promised_by_ms"] = json!(held.promised_by_ms);
        }
        values.push(value);
        rows.push([entry.hash().to_hex()[..16].to_owned(), entry.op().name().to_owned(), since, state]);
    }
    if as_json {
        println!("{}", serde_json::Value::Array(values));
    } else if rows.is_empty() {
        println!("no requests pending");
    } else {
        crate::render::table(["REQUEST", "OP", "SINCE", "STATE"], &rows);
    }
    Ok(())
}

/// Sequences what the daemon holds with the directory's log key, then
/// publishes the result to it, with the refusals.
pub(crate) fn sequence(at: &LedgerDir, target: &Target) -> anyhow::Result<()> {
    let Response::Pending(list) = target.request(Request::Pending(pb::PendingRequest {}))? else {
        bail!("unexpected reply from carrierd")
    };
    let entries = list
        .entries
        .iter()
        .filter(|p| p.refused.is_empty())
        .map(|p| Entry::decode(&p.entry))
        .collect::<Result<Vec<_>, _>>()?;
    if entries.is_empty() {
        println!("no requests pending at the daemon");
        return Ok(());
    }
    let dir = at.path()?;
    let log_path = dir.join("log.key");
    let log = keystore::load_kind(&log_path, IdentityKind::Log)
        .with_context(|| format!("this ledger directory cannot sequence: no log key at {}", log_path.display()))?;
    let mut store = at.open_store()?;
    let results = store.sequence(&mut Sequencer::new(log, None), entries.clone(), crate::ledger::now_ms())?;
    drop(store);
    let mut refused = Vec::new();
    for (entry, result) in entries.iter().zip(results) {
        match result {
            Ok(index) | Err(Rejection::AlreadyInLog(index)) => {
                println!("sequenced {} as entry {index}", entry.op().name())
            }
            Err(rejection) => {
                println!("refused {}: {rejection}", entry.op().name());
                refused.push(pb::Refusal { leaf_hash: entry.hash().0.to_vec(), reason: rejection.to_string() });
            }
        }
    }
    publish(&dir, target, refused)
}
