//! `carrierctl ledger submit|pending|sequence`, and `--submit` on the
//! writing commands: authors' signed requests handed to a running daemon,
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

use crate::control::Target;
use crate::ledger::LedgerDir;

/// How a request line starts.
pub(crate) const REQUEST_PREFIX: &str = "carrier-request:";
/// How long `--wait` waits.
const WAIT: Duration = Duration::from_secs(60);

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The one-line form of a signed request.
pub(crate) fn request_text(entry: &Entry) -> String {
    format!("{REQUEST_PREFIX}{}", B64.encode(entry.encoded()))
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
        let state = if held.refused.is_empty() { "waiting".to_owned() } else { format!("refused: {}", held.refused) };
        let since = crate::render::time(held.since_ms);
        values.push(json!({
            "leaf_hash": entry.hash().to_hex(), "op": entry.op().name(), "since": since,
            "since_ms": held.since_ms, "state": state, "request": request_text(&entry),
        }));
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
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64)?;
    let results = store.sequence(&mut Sequencer::new(log, None), entries.clone(), now)?;
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
    crate::ledger::publish(&dir, target, refused)
}
