//! Writes the seed corpora, `fuzz/corpus/<target>/<name>`, from the
//! fixture network (`carrier_fuzz::fixture`) with the project's own
//! encoders: real frames, handshake messages, entries, checkpoint notes,
//! proofs, evidence, blobs, invitations, cards, key files and socket
//! requests, in the input layout each target documents.
//!
//! Run from `fuzz/`: `cargo run --example seeds` (it replaces the
//! seed files it writes, and leaves any other file alone). Seeds holding a
//! Noise message (handshakes, mailbox blobs) differ from run to run: Noise
//! ephemeral keys are random.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use carrier_daemon::ledger::{Ledger, sync_entries};
use carrier_fuzz::{BASE, BINDING, Fixture, fixture, parts, served};
use carrier_proto::frame;
use carrier_proto::handshake::circuit;
use carrier_proto::handshake::{Initiator, Refusal};
use carrier_proto::identity::{Identity, keyfile};
use carrier_proto::ledger::{Consent, Fetch, Fork, Invite, verifier_key};
use carrier_proto::messaging::{NONCE_LEN, sign_challenge};
use carrier_proto::{mailbox, nat, pb};
use prost::Message;

struct Seeds {
    root: PathBuf,
    total: usize,
}

impl Seeds {
    fn write(&mut self, target: &str, name: &str, bytes: impl AsRef<[u8]>) {
        let bytes = bytes.as_ref();
        assert!(bytes.len() < 8 * 1024, "seed {target}/{name} is {} bytes", bytes.len());
        let dir = self.root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
        self.total += bytes.len();
    }
}

fn framed<M: Message>(messages: &[M]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in messages {
        frame::encode_message(m, usize::MAX, &mut out).unwrap();
    }
    out
}

fn payload(did: &Identity, keys: &Identity, checkpoint: &[u8]) -> Vec<u8> {
    pb::HandshakePayload {
        did: did.did().to_string(),
        signing_key: keys.signing_key().as_bytes().to_vec(),
        noise_key_signature: keys.noise_key_signature().to_vec(),
        checkpoint: checkpoint.to_vec(),
    }
    .encode_to_vec()
}

fn with(head: &[u8], tail: impl AsRef<[u8]>) -> Vec<u8> {
    [head, tail.as_ref()].concat()
}

/// Index of an identity in `Fixture::pool`.
fn at(f: &Fixture, id: &Identity) -> u8 {
    f.pool().iter().position(|p| p.signing_key() == id.signing_key()).unwrap() as u8
}

fn main() {
    let f = fixture();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut s = Seeds { root, total: 0 };
    let verdict = pb::Verdict { admitted: true }.encode_to_vec();
    let hash = |h: &carrier_proto::ledger::EntryHash| h.0.to_vec();
    let hashes = |p: Vec<carrier_proto::ledger::EntryHash>| p.iter().map(|h| h.0.to_vec()).collect::<Vec<_>>();

    // frame: max, four chunk sizes, stream.
    let stream = [frame::encode(b"first"), frame::encode(b""), frame::encode(b"third frame")].concat();
    s.write("frame", "three", with(&[64, 1, 3, 7, 64], &stream));
    s.write(
        "frame",
        "oversized",
        with(&[16, 2, 2, 2, 2], [frame::encode(b"ok"), 17u32.to_be_bytes().to_vec()].concat()),
    );
    s.write("frame", "truncated", with(&[64, 5, 5, 5, 5], &frame::encode(b"hello")[..6]));

    // handshake_frame: a stream of handshake frames.
    let (_, hello_ik) = Initiator::start(&f.dialer(), &BINDING, &f.state, Some(f.d0.did())).unwrap();
    let (_, hello_xx) = Initiator::start_xx(&f.dialer(), &BINDING, None).unwrap();
    use carrier_proto::handshake::frame as hs;
    s.write("handshake_frame", "hello_ik", hs::encode(&hello_ik));
    s.write(
        "handshake_frame",
        "payload_verdict",
        [hs::encode(&hello_xx), hs::encode(&payload(&f.d1, &f.d1b, f.base_checkpoint.note())), hs::encode(&verdict)]
            .concat(),
    );

    // handshake_messages: mode, identity, data.
    s.write("handshake_messages", "0_hello_ik", with(&[0, 0], parts([&hello_ik])));
    s.write("handshake_messages", "0_hello_xx", with(&[0, 0], parts([&hello_xx])));
    s.write("handshake_messages", "1_message2", with(&[1, 0x80], [7u8; 96]));
    let d1_payload = payload(&f.d1, &f.d1b, f.base_checkpoint.note());
    s.write(
        "handshake_messages",
        "2_ik_d1",
        with(&[2, at(f, &f.d1b)], [parts([&d1_payload]), verdict.clone()].concat()),
    );
    s.write("handshake_messages", "2_ik_revoked", with(&[2, at(f, &f.d2)], parts([payload(&f.d2, &f.d2, b"")])));
    s.write("handshake_messages", "2_ik_app", with(&[2, at(f, &f.a0)], parts([payload(&f.a0, &f.a0, b"")])));
    s.write(
        "handshake_messages",
        "2_ik_stranger",
        with(&[2, at(f, &f.stranger)], parts([payload(&f.stranger, &f.stranger, b"")])),
    );
    s.write("handshake_messages", "2_ik_stale_key", with(&[2, at(f, &f.d1)], parts([payload(&f.d1, &f.d1, b"")])));
    s.write("handshake_messages", "3_xx_d1", with(&[3, at(f, &f.d1b)], &d1_payload));
    let d0_payload = payload(&f.d0, &f.d0, f.checkpoint.note());
    s.write(
        "handshake_messages",
        "4_xx_d0",
        with(&[4, at(f, &f.d0), 1], [parts([&d0_payload]), verdict.clone()].concat()),
    );
    s.write("handshake_messages", "5_ik_d0", with(&[5, 0], &d0_payload));
    s.write("handshake_messages", "6_verdict", with(&[6, 0], &verdict));
    s.write("handshake_messages", "7_honest_ik", [7, 0, 1]);
    s.write("handshake_messages", "7_honest_xx", [7, 0, 0]);

    // circuit_frame: even = a frame body; odd = session operations.
    s.write("circuit_frame", "message", with(&[0], circuit::message(b"noise")));
    s.write("circuit_frame", "refusal", with(&[0], circuit::refusal(Refusal::Revoked)));
    let ops = [
        with(&[0], parts([b"hello"])),
        with(&[0x80], parts([b"and back"])),
        with(&[0], parts([b""])),
        with(&[1], [parts([b"altered"]), vec![0, 3, 0x10]].concat()),
    ]
    .concat();
    s.write("circuit_frame", "session", with(&[1], ops));
    s.write(
        "circuit_frame",
        "session_forged",
        with(
            &[1],
            [with(&[0], parts([b"x"])), with(&[2], parts([[[0u8, 20].as_slice(), &[1u8; 20]].concat()]))].concat(),
        ),
    );

    // checkpoint_note: notes and key texts.
    s.write("checkpoint_note", "base", f.base_checkpoint.note());
    s.write("checkpoint_note", "full", f.checkpoint.note());
    s.write("checkpoint_note", "forked", f.forked.note());
    s.write("checkpoint_note", "verifier_key", verifier_key(&f.network, &f.log.signing_key()));
    s.write("checkpoint_note", "witness_vkey", f.witness_key.vkey());
    let cosignature_line = f.checkpoint.text().lines().last().unwrap().to_owned();
    s.write("checkpoint_note", "cosignature_line", cosignature_line);

    // ledger_entry: every entry of the log.
    for (i, e) in f.entries.iter().enumerate() {
        s.write("ledger_entry", &format!("entry_{i}"), e);
    }

    // ledger_batch: flags, then records of op ‖ entry.
    let records = |range: std::ops::Range<usize>, op: u8| {
        parts(f.entries[range].iter().map(|e| with(&[op], e)).collect::<Vec<_>>())
    };
    s.write("ledger_batch", "next_honest_target", with(&[0], records(BASE..f.entries.len(), 0)));
    s.write("ledger_batch", "next_checkpoint", with(&[1], records(BASE..f.entries.len(), 0)));
    s.write("ledger_batch", "whole_log", with(&[0], records(0..f.entries.len(), 0)));
    // Entry 4 signed anew by the registrar (pool 0) for the fixture network.
    s.write("ledger_batch", "resigned", with(&[0], records(BASE..BASE + 1, 0b11)));
    // Entry 5 (a rotation) signed anew by D0: not allowed.
    s.write("ledger_batch", "resigned_other", with(&[0], records(BASE + 1..BASE + 2, 0b11 | (at(f, &f.d0) << 2))));

    // proofs: even = raw values; odd = a tree from a seed.
    let mut raw = vec![0u8];
    raw.extend_from_slice(&3u64.to_be_bytes());
    raw.extend_from_slice(&8u64.to_be_bytes());
    raw.extend_from_slice(&4u64.to_be_bytes());
    raw.extend_from_slice(&f.state.entry_hash(3).unwrap().0);
    raw.extend_from_slice(&f.state.head().root.0);
    raw.extend_from_slice(&f.base_state.head().root.0);
    for h in f.state.tree().inclusion_proof(3, 8).unwrap() {
        raw.extend_from_slice(&h.0);
    }
    s.write("proofs", "raw_inclusion", raw);
    s.write("proofs", "tree", [vec![1, 0, 100], vec![7; 32], vec![0, 77, 0, 40, 0, 9, 1, 2]].concat());

    // fork_evidence: the forked checkpoint against the full one.
    let fork = Fork::new(
        f.forked.clone(),
        f.checkpoint.clone(),
        f.state.tree().root_at(5).unwrap(),
        f.state.tree().consistency_proof(5, 8).unwrap(),
    )
    .expect("fixture fork evidence");
    s.write("fork_evidence", "evidence", fork.encode());
    s.write("fork_evidence", "evidence_text", fork.to_text());

    // broken_promise: a promise of a request the log never held, at an
    // index another entry holds, shown by the full checkpoint.
    let leaf = carrier_proto::ledger::EntryHash([7; 32]);
    let word = carrier_proto::ledger::Word::Promise { index: 1, deadline_ms: 60_000 };
    let promise = carrier_proto::ledger::SequencerAnswer::sign(&f.log, f.network, leaf, word, 1);
    s.write("broken_promise", "promise", promise.encoded().to_vec());
    let size = f.checkpoint.size();
    let leaf_at_1 = (f.state.entry_hash(1).unwrap(), f.state.tree().inclusion_proof(1, size).unwrap());
    let carrier_proto::ledger::Verdict::Broken(broken) = promise.judge(&f.checkpoint, Some(leaf_at_1)) else {
        panic!("the fixture's promise is not shown broken")
    };
    s.write("broken_promise", "broken", broken.encode());
    s.write("broken_promise", "broken_text", broken.to_text());

    // mailbox_blob: mode, then data.
    let blob = mailbox::seal(&f.d1, &f.d0.did(), &f.d0.noise_key(), &f.network, b"see you").unwrap();
    s.write("mailbox_blob", "0_blob", with(&[0, 3], &blob));
    s.write("mailbox_blob", "1_seal", with(&[1, at(f, &f.d1)], b"a message"));
    s.write("mailbox_blob", "2_altered", with(&[2, 0, 0, 9, 1], [parts([b"tail"]), b"plaintext".to_vec()].concat()));

    // invite, card, key_file: texts and files.
    let invite = Invite::new(f.genesis.clone(), vec!["/ip4/192.0.2.7/udp/7640/quic-v1/noise".into()]).unwrap();
    s.write("invite", "invite", invite.to_line());
    s.write("card", "card", f.d0.card().to_string());
    s.write("card", "app_card", f.a0.card().to_string());
    s.write("card", "did", f.a0.did().to_string());
    s.write("card", "consent", Consent::sign(&f.a0, &f.d0.did(), &f.network).to_string());
    s.write("key_file", "device", keyfile::encode(&f.d0).as_slice());
    s.write("key_file", "log", keyfile::encode(&f.log).as_slice());

    // nat_messages: selector, message.
    let offer = pb::GuessOffer { ip: vec![203, 0, 113, 5], nonce: vec![3; nat::NONCE_LEN] };
    s.write("nat_messages", "offer", with(&[0], offer.encode_to_vec()));
    let offer6 =
        pb::GuessOffer { ip: vec![0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], nonce: vec![3; 16] };
    s.write("nat_messages", "offer_v6", with(&[0], offer6.encode_to_vec()));
    s.write(
        "nat_messages",
        "answer",
        with(&[1], nat::answer(Ok("198.51.100.7:4242".parse().unwrap())).encode_to_vec()),
    );
    s.write("nat_messages", "refused", with(&[1], nat::answer(Err("no mapping".into())).encode_to_vec()));
    s.write("nat_messages", "probe", with(&[2], nat::probe(&[7; nat::NONCE_LEN])));

    // app_request: two chunk sizes, then frames.
    use pb::app_request::Request as A;
    let nonce = [0u8; NONCE_LEN];
    let hello = pb::AppRequest {
        id: 0,
        request: Some(A::Hello(pb::AppHello {
            app: f.a0.did().to_string(),
            signature: sign_challenge(&f.a0, &nonce, &f.d0.did()).to_vec(),
            purpose: Some(pb::app_hello::Purpose::Session(pb::SessionPurpose {})),
        })),
    };
    let session = [
        hello,
        pb::AppRequest {
            id: 1,
            request: Some(A::Send(pb::SendMessage {
                to: f.a1.did().key_bytes(),
                payload: b"hi".to_vec(),
                ttl_ms: 60_000,
                key: b"k1".to_vec(),
            })),
        },
        pb::AppRequest { id: 2, request: Some(A::QueryReceipts(pb::QueryReceipts { message_ids: vec![vec![1; 24]] })) },
        pb::AppRequest {
            id: 3,
            request: Some(A::SetAccess(pb::SetAccess {
                messages: Some(pb::AllowList { any_active: false, dids: vec![f.a1.did().to_string()] }),
            })),
        },
        pb::AppRequest { id: 4, request: Some(A::Listen(pb::Listen { service: "files".into(), allow: None })) },
        pb::AppRequest { id: 5, request: Some(A::Ack(pb::AckDeliveries { deliveries: vec![1, 2] })) },
        pb::AppRequest { id: 6, request: Some(A::Unlisten(pb::Unlisten { service: "files".into() })) },
    ];
    s.write("app_request", "session", with(&[3, 200], framed(&session)));
    let open = pb::AppRequest {
        id: 0,
        request: Some(A::Hello(pb::AppHello {
            app: f.a0.did().to_string(),
            signature: vec![0; 64],
            purpose: Some(pb::app_hello::Purpose::OpenStream(pb::OpenStream {
                to: f.a1.did().to_string(),
                service: "files".into(),
            })),
        })),
    };
    s.write("app_request", "open_stream", with(&[0, 0], framed(&[open])));

    // control_request: two chunk sizes, then frames.
    use pb::control_request::Request as C;
    let control = |id, request| pb::ControlRequest { id, request: Some(request) };
    let base = BASE as u64;
    let publish = pb::PublishRequest {
        entries: f.entries[BASE..].to_vec(),
        from: base,
        checkpoint: f.checkpoint.note().to_vec(),
        proof: vec![],
        refused: vec![pb::Refusal { leaf_hash: vec![1; 32], reason: "quota".into() }],
        prefix_root: hash(&f.base_state.head().root),
        prefix_proof: hashes(f.state.tree().consistency_proof(base, 8).unwrap()),
    };
    let requests = [
        control(1, C::Status(pb::StatusRequest {})),
        control(2, C::Connect(pb::ConnectRequest { did: f.d1.did().to_string(), addr: String::new() })),
        control(3, C::Resolve(pb::ResolveRequest { did: f.a0.did().to_string() })),
        control(4, C::Submit(pb::SubmitRequest { entries: vec![f.entries[4].clone()] })),
        control(5, C::Entries(pb::EntriesRequest { from: 2, max: 3 })),
    ];
    s.write("control_request", "requests", with(&[0, 0], framed(&requests)));
    s.write("control_request", "publish", with(&[9, 100], framed(&[control(6, C::Publish(publish))])));

    // config: the packaged file and a few variations.
    let packaged = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/carrierd.toml"))
        .expect("packaging/carrierd.toml");
    s.write("config", "packaged", packaged);
    s.write(
        "config",
        "full",
        "listen = \"0.0.0.0:7640\"\nbootstrap = [\"/ip4/192.0.2.1/udp/7640/quic-v1/noise\"]\n[limits]\nmax_links = 8\n[messaging]\nmax_message_bytes = 4096\n[log]\nlevel = \"carrier_daemon=debug\"\n",
    );
    s.write("config", "empty", "");

    // sync_messages: selector, message.
    use pb::sync_request::Request as S;
    let fetch = pb::Fetch { from: base, max: 512, tree_size: 8, prove_from: base };
    s.write("sync_messages", "fetch", with(&[0], pb::SyncRequest { request: Some(S::Fetch(fetch)) }.encode_to_vec()));
    s.write(
        "sync_messages",
        "announce",
        with(&[0], pb::SyncRequest { request: Some(S::Announce(f.checkpoint.note().to_vec())) }.encode_to_vec()),
    );
    let mut answer = sync_entries(served(), Fetch { from: base, tree_size: 8, prove_from: base }, 2, 1 << 20);
    answer.checkpoint = f.checkpoint.note().to_vec();
    s.write("sync_messages", "entries", with(&[1], answer.encode_to_vec()));
    let join = pb::JoinRequest { network_id: f.network.0.to_vec(), from: 0, max: 512, tree_size: 0 };
    s.write("sync_messages", "join", with(&[2], join.encode_to_vec()));
    let _ = served().head();

    assert!(s.total < 1 << 20, "seeds total {} bytes", s.total);
    println!("wrote {} bytes of seeds under {}", s.total, s.root.display());
}
