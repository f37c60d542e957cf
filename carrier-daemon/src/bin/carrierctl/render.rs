//! How `carrierctl ledger` prints entries and resolutions: aligned tables
//! for people, JSON for scripts.

use std::time::{Duration, UNIX_EPOCH};

use carrier_proto::identity::{Did, SigningPublicKey};
use carrier_proto::ledger::{Entry, LedgerState, Op, Resolution, Status, Subject};
use serde_json::{Value, json};

/// Prints every entry.
pub(crate) fn entries(state: &LedgerState, entries: &[Entry], as_json: bool) {
    entries_from(state, 0, entries, as_json);
}

/// Like [`entries`], for entries from index `first` on.
pub(crate) fn entries_from(state: &LedgerState, first: usize, entries: &[Entry], as_json: bool) {
    if as_json {
        let list: Vec<Value> = entries.iter().enumerate().map(|(i, e)| entry_json(state, first + i, e)).collect();
        println!("{}", Value::Array(list));
        return;
    }
    let rows: Vec<[String; 5]> = entries
        .iter()
        .enumerate()
        .map(|(index, e)| {
            let body = e.body();
            [
                (first + index).to_string(),
                time(body.time_ms),
                e.op().name().to_owned(),
                subject(e.op()),
                signer(state, body.signer),
            ]
        })
        .collect();
    table(["INDEX", "TIME", "OP", "SUBJECT", "SIGNER"], &rows);
}

fn entry_json(state: &LedgerState, index: usize, entry: &Entry) -> Value {
    use base64::Engine;
    let body = entry.body();
    let op = match entry.op() {
        Op::Genesis { network, registrars, log_key, quotas, witnesses } => json!({
            "network": network,
            "registrars": registrars.iter().map(|k| Did::from_signing_key(*k).to_string()).collect::<Vec<_>>(),
            "log_key": Did::from_signing_key(*log_key).to_string(),
            "witnesses": witnesses.witnesses.iter().map(|w| w.vkey()).collect::<Vec<_>>(),
            "witness_quorum": witnesses.quorum,
            "max_apps_per_device": quotas.max_apps_per_device,
            "max_requests_per_minute": quotas.max_requests_per_minute,
            "max_requests_per_day": quotas.requests_per_day(),
            "max_rotations_per_day": quotas.rotations_per_day(),
            "registrar_requests_per_minute": quotas.registrar_per_minute(),
            "registrar_requests_per_day": quotas.registrar_per_day(),
            "max_request_lifetime_s": quotas.request_lifetime_ms() / 1000,
            "handover_quorum": quotas.handover_quorum(),
        }),
        Op::RegisterDevice { did, keys, roles } => json!({
            "did": did.to_string(), "noise_key": keys.noise.to_string(), "roles": roles,
        }),
        Op::RegisterApp { did, keys, device, name, .. } => json!({
            "did": did.to_string(), "noise_key": keys.noise.to_string(), "device": device.to_string(), "name": name,
        }),
        Op::RotateKeys { did, keys } => json!({
            "did": did.to_string(),
            "signing_key": Did::from_signing_key(keys.signing).to_string(),
            "noise_key": keys.noise.to_string(),
        }),
        Op::Revoke { did, reason } => json!({ "did": did.to_string(), "reason": reason }),
        Op::Handover { log_key, sequencer, approvals } => json!({
            "log_key": Did::from_signing_key(*log_key).to_string(),
            "sequencer": sequencer.to_string(),
            "approvals": approvals.iter().map(|a| signer(state, a.key)).collect::<Vec<_>>(),
        }),
        Op::Witnesses { policy, approvals } => json!({
            "witnesses": policy.witnesses.iter().map(|w| w.vkey()).collect::<Vec<_>>(),
            "quorum": policy.quorum,
            "approvals": approvals.iter().map(|a| signer(state, a.key)).collect::<Vec<_>>(),
        }),
    };
    json!({
        "index": index,
        "leaf_hash": entry.hash().to_hex(),
        "encoded": base64::engine::general_purpose::STANDARD.encode(entry.encoded()),
        "time_ms": body.time_ms,
        "time": time(body.time_ms),
        "signer": signer(state, body.signer),
        "op": entry.op().name(),
        "details": op,
    })
}

/// Prints one DID's record.
/// Prints `r`; `live` is the running daemon's word on its standing (active,
/// status), which may be ahead of the log.
pub(crate) fn resolution(r: &Resolution<'_>, live: Option<(bool, String)>, as_json: bool) {
    let (kind, device, name, roles) = match &r.record.subject {
        Subject::Device { roles } => ("device", None, None, roles.clone()),
        Subject::App { device, name } => ("app", Some(device.to_string()), Some(name.clone()), vec![]),
    };
    let status = match &r.status {
        Status::Active => "active".to_owned(),
        Status::Revoked(rev) => format!("revoked at entry {} ({})", rev.seq, rev.reason),
        Status::HostRevoked(device) => format!("revoked with its device {device}"),
        Status::RevokedUnsequenced { reason } => format!("revoked, not yet sequenced ({reason})"),
    };
    let (active, status) = match live {
        Some((active, live)) if active != r.is_active() => (active, live),
        _ => (r.is_active(), status),
    };
    let signing = Did::from_signing_key(r.record.keys.signing).to_string();
    if as_json {
        let value = json!({
            "did": r.did.to_string(),
            "kind": kind,
            "active": active,
            "status": status,
            "signing_key": signing,
            "noise_key": r.record.keys.noise.to_string(),
            "device": device,
            "name": name,
            "roles": roles,
            "registered_at": r.record.registered_at,
        });
        println!("{value}");
        return;
    }
    println!("did:           {}", r.did);
    println!("kind:          {kind}");
    println!("status:        {status}");
    println!("signing key:   {signing}");
    println!("noise key:     {}", r.record.keys.noise);
    if let Some(device) = device {
        println!("device:        {device}");
    }
    if let Some(name) = name {
        println!("name:          {name}");
    }
    if !roles.is_empty() {
        println!("roles:         {}", roles.join(", "));
    }
    println!("registered at: entry {}", r.record.registered_at);
}

/// Prints the summary of a successful verification.
pub(crate) fn verified(state: &LedgerState, took: Duration) {
    let head = state.head();
    let (mut devices, mut apps, mut inactive) = (0, 0, 0);
    for (did, record) in state.records() {
        match record.subject {
            Subject::Device { .. } => devices += 1,
            Subject::App { .. } => apps += 1,
        }
        if state.resolve(did).is_some_and(|r| !r.is_active()) {
            inactive += 1;
        }
    }
    if let Some(network) = state.network() {
        println!("ledger OK: network {:?} (id {})", network.name, network.id);
    }
    println!("{} entries, Merkle root {}", head.height, head.root);
    println!("{devices} devices, {apps} apps, {inactive} revoked");
    let rate = head.height as f64 / took.as_secs_f64().max(1e-9);
    println!("verified in {:.1} ms ({rate:.0} entries/s)", took.as_secs_f64() * 1e3);
}

fn subject(op: &Op) -> String {
    match op {
        Op::Genesis { network, registrars, .. } => format!("{network:?}, registrars: {}", registrars.len()),
        Op::RegisterDevice { did, .. } | Op::RotateKeys { did, .. } | Op::Revoke { did, .. } => did.to_string(),
        Op::RegisterApp { did, name, .. } => format!("{did} ({name})"),
        Op::Handover { sequencer, approvals, .. } => format!("to {sequencer}, {} approvals", approvals.len()),
        Op::Witnesses { policy, approvals } => {
            format!("{} of {} witnesses, {} approvals", policy.quorum, policy.witnesses.len(), approvals.len())
        }
    }
}

/// The signer as a DID, marked when it is a registrar; a rotated key is shown
/// as the key's own DID.
fn signer(state: &LedgerState, key: SigningPublicKey) -> String {
    let did = Did::from_signing_key(key);
    let registrar = state.network().is_some_and(|n| n.registrars.contains(&key));
    if registrar { format!("{did} (registrar)") } else { did.to_string() }
}

pub(crate) fn time(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

pub(crate) fn table<const N: usize>(header: [&str; N], rows: &[[String; N]]) {
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: [&str; N]| {
        let padded: Vec<String> = cells.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header);
    for row in rows {
        line(row.each_ref().map(String::as_str));
    }
}
