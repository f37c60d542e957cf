//! Key files (`identity::keyfile::decode`): what a daemon or app reads from
//! disk at start-up. A file that decodes re-encodes to one that decodes to
//! the same identity (kind and keys).

#![no_main]

use carrier_proto::identity::keyfile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(identity) = keyfile::decode(data) else { return };
    let again = keyfile::decode(&keyfile::encode(&identity)).expect("a re-encoded key file decodes");
    assert_eq!(again.kind(), identity.kind());
    assert_eq!(again.public_keys(), identity.public_keys());
    assert_eq!(again.noise_key_signature(), identity.noise_key_signature());
});
