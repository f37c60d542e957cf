//! Sealing and opening, and every way a blob should fail to open.

use super::*;
use crate::identity::IdentityKind;

fn device() -> Identity {
    Identity::generate(IdentityKind::Device)
}

const NET: EntryHash = EntryHash([9; 32]);

#[test]
fn a_sealed_blob_opens_for_its_recipient_and_names_the_sender() {
    let (sender, recipient) = (device(), device());
    for len in [0, 1, 1000, CHUNK, CHUNK + 1, 300_000] {
        let plaintext: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let blob = seal(&sender, &recipient.did(), &recipient.noise_key(), &NET, &plaintext).unwrap();
        let opened = open(&recipient, &NET, &blob, 1 << 20).unwrap();
        assert_eq!(opened, Opened { sender: sender.noise_key(), plaintext }, "{len} bytes");
    }
}

#[test]
fn a_blob_opens_nowhere_else() {
    let (sender, recipient, other) = (device(), device(), device());
    let blob = seal(&sender, &recipient.did(), &recipient.noise_key(), &NET, b"secret").unwrap();
    assert_eq!(open(&other, &NET, &blob, 1 << 20), Err(MailboxError::DoesNotOpen), "another device");
    assert_eq!(
        open(&recipient, &EntryHash([8; 32]), &blob, 1 << 20),
        Err(MailboxError::DoesNotOpen),
        "another network"
    );
    // Sealed to the right key but for another DID (a mailbox replaying it).
    let misbound = seal(&sender, &other.did(), &recipient.noise_key(), &NET, b"secret").unwrap();
    assert_eq!(open(&recipient, &NET, &misbound, 1 << 20), Err(MailboxError::DoesNotOpen));
}

#[test]
fn any_altered_byte_or_cut_makes_it_fail() {
    let (sender, recipient) = (device(), device());
    let blob = seal(&sender, &recipient.did(), &recipient.noise_key(), &NET, &vec![5; 70_000]).unwrap();
    for i in (0..blob.len()).step_by(997) {
        let mut altered = blob.clone();
        altered[i] ^= 0x40;
        assert!(open(&recipient, &NET, &altered, 1 << 20).is_err(), "byte {i} altered");
    }
    for cut in [1, 10, blob.len() / 2, blob.len() - 1] {
        assert!(open(&recipient, &NET, &blob[..cut], 1 << 20).is_err(), "cut at {cut}");
    }
    let mut longer = blob.clone();
    longer.extend_from_slice(&[0, 0, 0, 1, 7]);
    assert!(open(&recipient, &NET, &longer, 1 << 20).is_err(), "a part added");
    assert_eq!(open(&recipient, &NET, b"", 1 << 20), Err(MailboxError::Malformed("empty")));
}

#[test]
fn a_blob_over_the_limit_is_refused_before_it_is_decrypted() {
    let (sender, recipient) = (device(), device());
    let blob = seal(&sender, &recipient.did(), &recipient.noise_key(), &NET, &vec![0; 5000]).unwrap();
    assert_eq!(open(&recipient, &NET, &blob, 4096), Err(MailboxError::TooLarge { len: 5000, max: 4096 }));
    assert_ne!(blob_id(&blob), blob_id(&blob[1..]));
}
