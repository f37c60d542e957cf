//! What a hostile registered peer can make delivery keep: every quota
//! counts records as well as bytes, one party gets a share of a box and
//! never all of it, and nothing is kept past its time.

use super::*;
use crate::delivery::inbox::expiry;
use crate::delivery::{DEFAULT_MAX_INBOX_MESSAGES, DEFAULT_MAX_OUTBOX_MESSAGES, Parties};
use crate::protocols::mailbox::Keeper;
use pb::mailbox_answer::Answer as A;

/// Zero-length messages cost their record: a flood of them stops at the
/// sender's share of the inbox, and another sending app still gets in.
#[tokio::test]
async fn empty_messages_hit_the_count_and_other_senders_still_get_in() {
    let mut h = Harness::new().await;
    let (from, to) = (h.app_a.did(), h.app_b.did());
    // The share in records, or in bytes at the overhead each record costs,
    // whichever is less (the harness's byte limits are small).
    let overhead = super::super::quota::RECORD_OVERHEAD;
    let bytes = h.b.delivery.config.max_inbox_bytes / SHARE;
    let share = (DEFAULT_MAX_INBOX_MESSAGES / SHARE).min(bytes / overhead);
    let mut held = 0;
    for _ in 0..share + 100 {
        let envelope = h.envelope(&from, &to, b"");
        match h.arrive(h.a.device, envelope).await {
            Ok(_) => held += 1,
            Err(Outcome::QueueFull) => break,
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!(held, share, "one sending app holds its share of the inbox, empty or not");
    let (_, from_a) = h.b.delivery.lock_held().usage_of(&to, &from);
    assert_eq!(from_a.bytes, share * overhead);
    // B's other app sends to the same recipient: it has a share of its own.
    let (b2, b) = (h.app_b2.did(), h.app_b.did());
    let envelope = h.envelope(&b2, &b, b"still here");
    assert!(h.arrive(h.b.device, envelope).await.is_ok());
}

/// The outbox counts messages too: an app may not queue a million empty ones.
#[tokio::test]
async fn the_outbox_counts_messages_not_only_bytes() {
    let h = Harness::new().await;
    let (from, to) = (h.app_b.did(), h.app_a.did());
    let (tx, mut answers) = mpsc::unbounded_channel();
    let limit = DEFAULT_MAX_OUTBOX_MESSAGES;
    for request in 0..limit as u64 + 1 {
        let sink = ReceiptSink { tx: tx.clone(), request };
        h.b.delivery.send(from, to, Vec::new(), SendOptions::default(), sink);
    }
    // The last one is refused at once; the others were accepted.
    let refused = loop {
        let answer = tokio::time::timeout(Duration::from_secs(30), answers.recv()).await.unwrap().unwrap();
        if let Answer::Receipt { request, verdict: Err(failure), id: None } = answer {
            break (request, failure.outcome);
        }
    };
    assert_eq!(refused, (limit as u64, Outcome::QueueFull));
}

/// A message whose time to live passed is refused on arrival; one held
/// past it is dropped and its sender hears EXPIRED. An expiry of 0 or far
/// in the future is capped.
#[tokio::test]
async fn nothing_is_held_past_its_time() {
    let now = now();
    assert_eq!(expiry(now - 1, now), None);
    assert_eq!(expiry(0, now), expiry(u64::MAX, now));
    assert!(expiry(0, now).unwrap() <= now + 31 * 24 * 3_600_000);
    let mut h = Harness::new().await;
    let (from, to) = (h.app_a.did(), h.app_b.did());
    let mut stale = h.envelope(&from, &to, b"old");
    stale.expires_at_ms = now - 1;
    assert_eq!(h.arrive(h.a.device, stale).await.err(), Some(Outcome::Expired));
    let mut soon = h.envelope(&from, &to, b"soon");
    soon.expires_at_ms = now + 60_000;
    let progress = h.arrive(h.a.device, soon).await.unwrap();
    h.b.delivery.expire_inbox(now + 60_001);
    assert_eq!(await_verdict(progress).await.unwrap_err().outcome, Outcome::Expired);
    assert_eq!(h.b.delivery.lock_held().usage_of(&to, &from).0.records, 0);
}

fn deposit(h: &Harness, blob: Vec<u8>, expires_at_ms: u64) -> pb::Deposit {
    pb::Deposit { recipient: h.a.device.key_bytes(), blob, expires_at_ms, ..Default::default() }
}

/// One depositor fills its share of a recipient's box; another sender's
/// blob is still stored.
#[tokio::test]
async fn one_depositor_cannot_fill_a_mailbox() {
    let h = Harness::new().await;
    let node = &h.b.delivery;
    let far = now() + 3_600_000;
    let mut kept = 0;
    for i in 0..100u32 {
        match node.deposit(h.b.device, deposit(&h, i.to_be_bytes().to_vec(), far)).await.answer {
            Some(A::Deposited(_)) => kept += 1,
            Some(A::Refused(r)) if r.reason == pb::mailbox_refused::Reason::Quota as i32 => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(kept, 4, "a depositor's share of one box");
    // Another device (signing as the origin of its own blob) still gets in.
    let network = h.b.ledger.network().unwrap().id;
    let mut theirs = deposit(&h, b"from A".to_vec(), far);
    let id = carrier_proto::mailbox::blob_id(&theirs.blob);
    theirs.origin = h.a.device.key_bytes();
    theirs.origin_signature =
        carrier_proto::mailbox::sign_deposit(h.a.delivery.ctx.identity(), &network, &h.a.device, &id, far).to_vec();
    // Pushed by B's own device (as a rebalancing node would): charged to A.
    let answer = node.deposit(h.b.device, theirs).await.answer;
    assert!(matches!(answer, Some(A::Deposited(_))), "{answer:?}");
    let charged = node.lock_mailbox().kept_for(&h.a.device).iter().filter(|k| k.depositor == h.a.device).count();
    assert_eq!(charged, 1, "a pushed blob is charged to its signed origin");
    // A forged origin signature is charged to the pusher, whose share is used up.
    let mut forged = deposit(&h, b"forged".to_vec(), far);
    forged.origin = h.a.device.key_bytes();
    forged.origin_signature = vec![7; 64];
    let answer = node.deposit(h.b.device, forged).await.answer;
    assert!(matches!(answer, Some(A::Refused(_))), "{answer:?}");
    // An expired blob is not kept.
    let answer = node.deposit(h.b.device, deposit(&h, b"late".to_vec(), now() - 1)).await.answer;
    assert!(matches!(answer, Some(A::Refused(r)) if r.reason == pb::mailbox_refused::Reason::Expired as i32));
}

/// A stream is cut on both devices as soon as each one's ledger revokes
/// either app, or rotates its key; streams between others go on.
#[tokio::test]
async fn a_revocation_or_rotation_cuts_the_streams_of_the_app() {
    let mut h = Harness::new().await;
    let (a, b, b2) = (h.app_a.did(), h.app_b.did(), h.app_b2.did());
    let key = |id: &Identity| id.signing_key();
    let at_b = |remote_app, remote_device, remote_key, local: &Identity| Parties {
        local_app: local.did(),
        local_key: key(local),
        remote_app,
        remote_device,
        remote_key,
    };
    let doomed = h.b.delivery.track_stream(at_b(a, h.a.device, key(&h.app_a), &h.app_b));
    let rotated = h.b.delivery.track_stream(at_b(b2, h.b.device, key(&h.app_b2), &h.app_b));
    let spared = h.b.delivery.track_stream(at_b(b, h.b.device, key(&h.app_b), &h.app_b2));
    assert_eq!(h.b.delivery.live_streams(), 3);
    h.revoke(a);
    assert_eq!(h.b.delivery.live.enforce(&*h.b.delivery.ledger, &h.b.device), 1);
    assert!(doomed.cut().is_cancelled());
    // b2's key rotated: its stream with b goes, and so does b's other one
    // (b2 at the far end); nothing else was live.
    let new_keys = Identity::generate(IdentityKind::App);
    let entry = h.net.rotate(b2, new_keys.public_keys());
    h.a.ledger.append(entry.clone()).unwrap();
    h.b.ledger.append(entry).unwrap();
    h.b.delivery.live.enforce(&*h.b.delivery.ledger, &h.b.device);
    assert!(rotated.cut().is_cancelled() && spared.cut().is_cancelled());
    // A stream tracked after the change is cut at once.
    let late = h.b.delivery.track_stream(at_b(a, h.a.device, key(&h.app_a), &h.app_b));
    assert!(late.cut().is_cancelled());
    drop((doomed, rotated, spared, late));
    assert_eq!(h.b.delivery.live_streams(), 0);
}
