//! Sealed mailbox blobs (`carrier_proto::mailbox::open`) for the fixture
//! device D0 in the fixture network:
//!
//! - mode 0: the input (after a 1-byte small limit) as a blob; nobody can seal to D0 without the
//!   harness, so it opens only if it is one of the seeds' (which D1 sealed
//!   for D0): then the sender is D1's Noise key;
//! - mode 1: D1 (or another fixture identity) seals the fuzzer's plaintext;
//!   it opens to the same plaintext and sender, is refused over a smaller
//!   limit, and does not open for another device or network;
//! - mode 2: a sealed blob with one byte altered, or cut short, or with
//!   bytes appended: it does not open.
//!
//! Input: mode (1 byte), then the mode's data.

#![no_main]

use carrier_fuzz::{Input, fixture};
use carrier_proto::ledger::EntryHash;
use carrier_proto::mailbox::{self, MailboxError};
use libfuzzer_sys::fuzz_target;

/// The largest plaintext the harness opens (the daemon's limit is larger;
/// this keeps the fuzzer fast).
const MAX: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let mut input = Input(data);
    let pool = f.pool();
    match input.u8() % 3 {
        0 => {
            let limit = usize::from(input.u8());
            let blob = input.rest();
            if let Ok(opened) = mailbox::open(&f.d0, &f.network, blob, MAX) {
                assert_eq!(opened.sender, f.d1.noise_key(), "a blob no fixture sealed opened");
                assert_eq!(mailbox::open(&f.d0, &f.network, blob, opened.plaintext.len()), Ok(opened));
            }
            let _ = mailbox::open(&f.d0, &f.network, blob, limit);
        }
        1 => {
            let sender = pool[usize::from(input.u8()) % pool.len()];
            let plaintext = input.rest();
            let blob = mailbox::seal(sender, &f.d0.did(), &f.d0.noise_key(), &f.network, plaintext)
                .expect("sealing to a fixture key");
            let opened = mailbox::open(&f.d0, &f.network, &blob, plaintext.len()).expect("an honest blob opens");
            assert_eq!((opened.sender, &opened.plaintext[..]), (sender.noise_key(), plaintext));
            if !plaintext.is_empty() {
                assert_eq!(
                    mailbox::open(&f.d0, &f.network, &blob, plaintext.len() - 1),
                    Err(MailboxError::TooLarge { len: plaintext.len(), max: plaintext.len() - 1 })
                );
            }
            assert!(mailbox::open(&f.d1b, &f.network, &blob, MAX).is_err(), "opened by another device");
            assert!(mailbox::open(&f.d0, &EntryHash([9; 32]), &blob, MAX).is_err(), "opened in another network");
        }
        _ => {
            let how = input.u8();
            let (at, flip) = (usize::from(input.u16()), input.u8() | 1);
            let tail = input.part();
            let plaintext = input.rest();
            let mut blob = mailbox::seal(&f.d1, &f.d0.did(), &f.d0.noise_key(), &f.network, plaintext)
                .expect("sealing to a fixture key");
            match how % 3 {
                0 => {
                    let at = at % blob.len();
                    blob[at] ^= flip;
                }
                1 => blob.truncate(at % blob.len()),
                _ if tail.is_empty() => return,
                _ => blob.extend_from_slice(tail),
            }
            assert!(mailbox::open(&f.d0, &f.network, &blob, MAX).is_err(), "an altered blob opened");
        }
    }
});
