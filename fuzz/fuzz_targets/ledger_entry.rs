//! Ledger entries (`carrier_proto::ledger::Entry::decode` and
//! `decode_known`): an entry that decodes is its input byte for byte
//! (canonical form), decodes again to itself, is also taken by
//! `decode_known` (which skips only the curve-point checks), and its hash is
//! the RFC 6962 leaf hash of its bytes. The decoded entry is then put to the
//! fixture ledger's rules (`LedgerState::append` on a copy), which must not
//! panic whatever it says.

#![no_main]

use carrier_fuzz::fixture;
use carrier_proto::ledger::{Entry, merkle};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let known = Entry::decode_known(data);
    let entry = match Entry::decode(data) {
        Ok(entry) => entry,
        Err(_) => return,
    };
    assert_eq!(entry.encoded(), data, "a decoded entry is not its input");
    assert_eq!(Entry::decode(entry.encoded()).as_ref(), Ok(&entry));
    assert_eq!(known.as_ref(), Ok(&entry), "decode_known refused what decode took");
    assert_eq!(entry.hash(), merkle::leaf_hash(data));
    let _ = format!("{entry:?} {}", entry.op().name());

    let f = fixture();
    let signed = entry.verify_signature();
    let mut state = f.state.clone();
    let appended = state.append(entry);
    if appended.is_ok() {
        assert!(signed, "an entry with a bad signature was appended");
        assert_eq!(state.height(), f.state.height() + 1);
    } else {
        assert_eq!(state.head(), f.state.head(), "a refused entry changed the ledger");
    }
});
