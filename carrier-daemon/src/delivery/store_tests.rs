//! The message store on a real file: what survives reopening, idempotent
//! keys, and records that do not decode.

use carrier_proto::identity::{Identity, IdentityKind};

use super::*;

fn app() -> Did {
    Identity::generate(IdentityKind::App).did()
}

fn outgoing(from: &Did, to: &Did, payload: &[u8], key: &[u8]) -> pb::StoredOutgoing {
    let envelope = pb::Envelope {
        from_app: from.key_bytes(),
        to_app: to.key_bytes(),
        payload: payload.to_vec(),
        ..Default::default()
    };
    pb::StoredOutgoing { envelope: Some(envelope), to_device: to.key_bytes(), key: key.to_vec() }
}

#[test]
fn what_was_committed_survives_reopening_with_the_same_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("messages.redb");
    let (from, to) = (app(), app());
    let id = MessageId { epoch: [5; 16], seq: 9 };
    let (epoch, seqs) = {
        let (mut store, loaded) = MessageStore::open(&path).unwrap();
        let ops = [
            Op::Enqueue { outgoing: outgoing(&from, &to, b"one", b""), from_app: from },
            Op::Enqueue { outgoing: outgoing(&from, &to, b"two", b""), from_app: from },
        ];
        let applied = store.apply(&ops).unwrap();
        let incoming = pb::StoredIncoming {
            envelope: Some(pb::Envelope { payload: b"in".to_vec(), ..Default::default() }),
            from_device: to.key_bytes(),
            received_at_ms: 1,
        };
        let ops = [
            Op::Settle {
                seq: 1,
                from_app: from,
                outcome: pb::Outcome::Delivered,
                detail: String::new(),
                now_ms: 5,
                key: Vec::new(),
            },
            Op::Hold {
                delivery: 7,
                incoming,
                from_app: to,
                to_app: from,
                replay: id.to_bytes().to_vec(),
                handed: false,
            },
        ];
        store.apply(&ops).unwrap();
        (loaded.epoch, applied)
    };
    assert_eq!(
        seqs,
        vec![Applied::Enqueued { seq: 1, duplicate: false }, Applied::Enqueued { seq: 2, duplicate: false }]
    );
    let (mut store, loaded) = MessageStore::open(&path).unwrap();
    assert_eq!(loaded.epoch, epoch, "message ids keep their epoch across restarts");
    let outbox: Vec<_> =
        loaded.outbox.iter().map(|(seq, o)| (*seq, o.envelope.as_ref().unwrap().payload.clone())).collect();
    assert_eq!(outbox, vec![(2, b"two".to_vec())], "the settled message left the outbox");
    assert_eq!(loaded.inbox.len(), 1);
    assert_eq!(loaded.inbox[0].0, 7);
    assert_eq!(loaded.next_delivery, 8);
    assert_eq!(loaded.replay.get(&(to, from)), PairState::decode(&id.to_bytes()).as_ref());
    assert_eq!(
        store.sent(1).unwrap(),
        Some(Known::Settled { from_app: from.key_bytes(), outcome: 1, detail: String::new() })
    );
    assert_eq!(store.sent(2).unwrap(), Some(Known::Pending));
    assert_eq!(store.sent(3).unwrap(), None);
    // Seqs go on from where they were.
    let applied = store.apply(&[Op::Enqueue { outgoing: outgoing(&from, &to, b"3", b""), from_app: from }]).unwrap();
    assert_eq!(applied, vec![Applied::Enqueued { seq: 3, duplicate: false }]);
}

#[test]
fn a_key_used_before_names_the_earlier_message_until_its_receipt_is_pruned() {
    let (mut store, _) = MessageStore::in_memory().unwrap();
    let (from, other, to) = (app(), app(), app());
    let send = |from: &Did, key: &[u8]| Op::Enqueue { outgoing: outgoing(from, &to, b"x", key), from_app: *from };
    let applied = store.apply(&[send(&from, b"k"), send(&from, b"k"), send(&other, b"k")]).unwrap();
    assert_eq!(
        applied,
        vec![
            Applied::Enqueued { seq: 1, duplicate: false },
            Applied::Enqueued { seq: 1, duplicate: true },
            Applied::Enqueued { seq: 2, duplicate: false },
        ],
        "a key is per app"
    );
    let settle = Op::Settle {
        seq: 1,
        from_app: from,
        outcome: pb::Outcome::Delivered,
        detail: String::new(),
        now_ms: 1,
        key: b"k".to_vec(),
    };
    store.apply(&[settle, send(&from, b"k")]).unwrap();
    assert_eq!(store.apply(&[send(&from, b"k")]).unwrap(), vec![Applied::Enqueued { seq: 1, duplicate: true }]);
    // Once the other message of its outbox record is settled too (until
    // then its receipt is kept whatever its age).
    let other_settled = Op::Settle {
        seq: 2,
        from_app: other,
        outcome: pb::Outcome::Delivered,
        detail: String::new(),
        now_ms: 1,
        key: b"k".to_vec(),
    };
    store.apply(&[other_settled]).unwrap();
    store.apply(&[Op::Prune { now_ms: 2 + RECEIPT_RETENTION_MS }]).unwrap();
    assert_eq!(store.sent(1).unwrap(), None, "pruned");
    assert_eq!(store.apply(&[send(&from, b"k")]).unwrap(), vec![Applied::Enqueued { seq: 3, duplicate: false }]);
}

#[test]
fn a_refusal_is_remembered_for_a_retry() {
    let (mut store, _) = MessageStore::in_memory().unwrap();
    let from = app();
    let id = MessageId { epoch: [1; 16], seq: 4 };
    assert_eq!(store.refusal(&from, &id).unwrap(), None);
    let refuse = Op::Refuse { from_app: from, id, outcome: pb::Outcome::Refused, detail: "no".into(), now_ms: 1 };
    store.apply(&[refuse]).unwrap();
    assert_eq!(store.refusal(&from, &id).unwrap(), Some((pb::Outcome::Refused as i32, "no".into())));
    assert_eq!(store.refusal(&app(), &id).unwrap(), None, "another sender's message");
}

#[test]
fn a_record_that_does_not_decode_is_skipped_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("messages.redb");
    {
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(OUTBOX).unwrap().insert(1, [0xff, 0xff, 0xff].as_slice()).unwrap();
        txn.commit().unwrap();
    }
    let (_, loaded) = MessageStore::open(&path).unwrap();
    assert!(loaded.outbox.is_empty());
    drop(loaded);
    let db = Database::create(&path).unwrap();
    let txn = db.begin_read().unwrap();
    assert!(txn.open_table(OUTBOX).unwrap().get(1).unwrap().is_some(), "never deleted");
}

#[test]
fn a_message_held_and_taken_in_one_batch_leaves_no_inbox_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("messages.redb");
    let (from, to) = (app(), app());
    let hold = |delivery: u64, seq: u64| Op::Hold {
        delivery,
        incoming: pb::StoredIncoming {
            envelope: Some(pb::Envelope { payload: vec![delivery as u8], seq, ..Default::default() }),
            from_device: to.key_bytes(),
            received_at_ms: 1,
        },
        from_app: from,
        to_app: to,
        replay: MessageId { epoch: [3; 16], seq }.to_bytes().to_vec(),
        handed: false,
    };
    {
        let (mut store, _) = MessageStore::open(&path).unwrap();
        // 1 is taken in the batch that holds it; 2 stays; 3 is taken in
        // the next batch.
        store.apply(&[hold(1, 10), hold(2, 11), Op::Taken { deliveries: vec![1] }, hold(3, 12)]).unwrap();
        store.apply(&[Op::Taken { deliveries: vec![3] }]).unwrap();
    }
    let (_, loaded) = MessageStore::open(&path).unwrap();
    let inbox: Vec<u64> = loaded.inbox.iter().map(|(d, _)| *d).collect();
    assert_eq!(inbox, vec![2]);
    assert_eq!(loaded.next_delivery, 4);
    let last = PairState::decode(&MessageId { epoch: [3; 16], seq: 12 }.to_bytes());
    assert_eq!(loaded.replay.get(&(from, to)), last.as_ref(), "the pair's last");
}

#[test]
fn a_store_with_a_row_per_message_is_moved_to_records_and_pages_losing_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("messages.redb");
    let (from, to) = (app(), app());
    {
        // The first layout: one outbox row and one receipt row per message.
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut rows = txn.open_table(OUTBOX_ROWS).unwrap();
            for seq in [4u64, 9] {
                let mut value = Vec::new();
                outgoing(&from, &to, &[seq as u8], b"").encode(&mut value).unwrap();
                rows.insert(seq, value.as_slice()).unwrap();
            }
            let receipt =
                pb::StoredReceipt { from_app: from.key_bytes(), outcome: 1, settled_at_ms: 1, ..Default::default() };
            txn.open_table(RECEIPT_ROWS).unwrap().insert(3, receipt.encode_to_vec().as_slice()).unwrap();
            txn.open_table(META).unwrap().insert("next_seq", 10u64.to_be_bytes().as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let (mut store, loaded) = MessageStore::open(&path).unwrap();
    let outbox: Vec<(u64, u64, Vec<u8>)> = loaded
        .outbox
        .iter()
        .map(|(seq, o)| (*seq, o.envelope.as_ref().unwrap().seq, o.envelope.as_ref().unwrap().payload.clone()))
        .collect();
    assert_eq!(outbox, vec![(4, 4, vec![4]), (9, 9, vec![9])]);
    assert_eq!(store.sent(4).unwrap(), Some(Known::Pending));
    assert_eq!(
        store.sent(3).unwrap(),
        Some(Known::Settled { from_app: from.key_bytes(), outcome: 1, detail: String::new() })
    );
    // Settling a moved message works as for any other, and sticks.
    let settle = Op::Settle {
        seq: 4,
        from_app: from,
        outcome: pb::Outcome::Delivered,
        detail: String::new(),
        now_ms: 2,
        key: Vec::new(),
    };
    store.apply(&[settle]).unwrap();
    drop(store);
    let (store, loaded) = MessageStore::open(&path).unwrap();
    assert_eq!(loaded.outbox.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(), vec![9]);
    assert!(matches!(store.sent(4).unwrap(), Some(Known::Settled { .. })));
    assert_eq!(store.outbox_records(), 1, "one outbox record left (seq 4's went when it settled)");
}

#[test]
fn a_batch_record_goes_only_when_its_last_message_settles() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("messages.redb");
    let (from, to) = (app(), app());
    let settle = |seq| Op::Settle {
        seq,
        from_app: from,
        outcome: pb::Outcome::Delivered,
        detail: String::new(),
        now_ms: 2,
        key: Vec::new(),
    };
    {
        let (mut store, _) = MessageStore::open(&path).unwrap();
        let ops: Vec<Op> =
            (0..100u8).map(|i| Op::Enqueue { outgoing: outgoing(&from, &to, &[i], b""), from_app: from }).collect();
        store.apply(&ops).unwrap();
        // Out of order, twice for some, over two transactions.
        let first: Vec<Op> = (1..=100).rev().filter(|s| s % 3 != 0).map(settle).collect();
        store.apply(&first).unwrap();
        store.apply(&[settle(2), settle(5)]).unwrap();
        assert_eq!(store.outbox_records(), 1);
    }
    let (mut store, loaded) = MessageStore::open(&path).unwrap();
    let pending: Vec<u64> = loaded.outbox.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(pending, (1..=100).filter(|s| s % 3 == 0).collect::<Vec<_>>());
    let rest: Vec<Op> = pending.iter().map(|s| settle(*s)).collect();
    store.apply(&rest).unwrap();
    assert_eq!(store.outbox_records(), 0, "the record is gone with its last message");
    assert!(matches!(store.sent(99).unwrap(), Some(Known::Settled { .. })));
    drop(store);
    let (_, loaded) = MessageStore::open(&path).unwrap();
    assert!(loaded.outbox.is_empty());
}

#[test]
fn a_receipt_outlives_its_retention_while_its_record_holds_a_pending_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("messages.redb");
    let (from, to) = (app(), app());
    {
        let (mut store, _) = MessageStore::open(&path).unwrap();
        let ops: Vec<Op> =
            (0..2u8).map(|i| Op::Enqueue { outgoing: outgoing(&from, &to, &[i], b""), from_app: from }).collect();
        store.apply(&ops).unwrap();
        let refused = Op::Settle {
            seq: 1,
            from_app: from,
            outcome: pb::Outcome::Refused,
            detail: "not allowed".into(),
            now_ms: 1,
            key: Vec::new(),
        };
        store.apply(&[refused]).unwrap();
        // Past the retention, seq 2 (same record) still pending.
        store.apply(&[Op::Prune { now_ms: 2 + RECEIPT_RETENTION_MS }]).unwrap();
    }
    let (store, loaded) = MessageStore::open(&path).unwrap();
    let pending: Vec<u64> = loaded.outbox.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(pending, vec![2], "a message told it was refused came back to be sent again");
    assert!(
        matches!(store.sent(1).unwrap(), Some(Known::Settled { outcome, .. }) if outcome == pb::Outcome::Refused as i32)
    );
}

/// A message for `to` from `from`, held under `delivery`.
fn held(from: Did, to: Did, delivery: u64, expires_at_ms: u64) -> Op {
    let envelope = pb::Envelope { payload: vec![delivery as u8], seq: delivery, expires_at_ms, ..Default::default() };
    Op::Hold {
        delivery,
        incoming: pb::StoredIncoming { envelope: Some(envelope), from_device: to.key_bytes(), received_at_ms: 1 },
        from_app: from,
        to_app: to,
        replay: MessageId { epoch: [5; 16], seq: delivery }.to_bytes().to_vec(),
        handed: false,
    }
}

fn inbox_of(loaded: &Loaded) -> Vec<u64> {
    loaded.inbox.iter().map(|(d, _)| *d).collect()
}

#[test]
fn an_inbox_record_keeps_what_is_not_taken_across_restarts_and_goes_with_its_last_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("messages.redb");
    let (from, to) = (app(), app());
    {
        let (mut store, _) = MessageStore::open(&path).unwrap();
        store.apply(&(1..=5).map(|d| held(from, to, d, 0)).collect::<Vec<_>>()).unwrap();
        store.apply(&[Op::Taken { deliveries: vec![2, 4] }]).unwrap();
        // Taken twice, or never held: nothing changes.
        store.apply(&[Op::Taken { deliveries: vec![4, 99] }]).unwrap();
        assert_eq!(store.inbox_records(), (1, 1));
    }
    let (mut store, loaded) = MessageStore::open(&path).unwrap();
    assert_eq!(inbox_of(&loaded), vec![1, 3, 5]);
    assert_eq!(loaded.inbox[1].1.envelope.as_ref().unwrap().payload, vec![3]);
    store.apply(&[Op::Taken { deliveries: vec![1] }, held(from, to, 6, 0)]).unwrap();
    store.apply(&[Op::Taken { deliveries: vec![3, 5] }]).unwrap();
    assert_eq!(store.inbox_records(), (1, 0), "the first record and its bits are gone");
    drop(store);
    let (store, loaded) = MessageStore::open(&path).unwrap();
    assert_eq!(inbox_of(&loaded), vec![6]);
    assert_eq!(loaded.next_delivery, 7);
    assert_eq!(store.inbox_records(), (1, 0));
}

#[test]
fn an_inbox_with_a_row_per_message_is_moved_to_records_losing_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("messages.redb");
    let (from, to) = (app(), app());
    {
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut rows = txn.open_table(INBOX_ROWS).unwrap();
            for delivery in [4u64, 9] {
                let Op::Hold { incoming, .. } = held(from, to, delivery, 0) else { unreachable!() };
                rows.insert(delivery, incoming.encode_to_vec().as_slice()).unwrap();
            }
            txn.open_table(META).unwrap().insert("next_delivery", 10u64.to_be_bytes().as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    {
        let (mut store, loaded) = MessageStore::open(&path).unwrap();
        assert_eq!(inbox_of(&loaded), vec![4, 9]);
        assert_eq!(loaded.inbox[1].1.envelope.as_ref().unwrap().payload, vec![9]);
        store.apply(&[Op::Taken { deliveries: vec![4] }]).unwrap();
    }
    let (_, loaded) = MessageStore::open(&path).unwrap();
    assert_eq!(inbox_of(&loaded), vec![9]);
    assert_eq!(loaded.next_delivery, 10);
}

#[test]
fn pruning_drops_held_messages_past_their_time_to_live_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("messages.redb");
    let (from, to) = (app(), app());
    {
        let (mut store, _) = MessageStore::open(&path).unwrap();
        store.apply(&[held(from, to, 1, 50), held(from, to, 2, 0), held(from, to, 3, 500)]).unwrap();
        store.apply(&[Op::Prune { now_ms: 100 }]).unwrap();
    }
    let (_, loaded) = MessageStore::open(&path).unwrap();
    assert_eq!(inbox_of(&loaded), vec![2, 3]);
}
