//! Invitations (`carrier_proto::ledger::Invite::parse`): an invitation that
//! parses names a genesis its registrar signed, re-encodes with `to_line` to
//! one that parses to the same invitation, and its network id is its
//! genesis's hash. Invalid UTF-8 is read lossily (a line pasted by a person
//! arrives as text).

#![no_main]

use carrier_proto::ledger::{Invite, Op};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(invite) = Invite::parse(&text) else { return };
    assert!(invite.genesis.verify_signature());
    assert!(matches!(invite.genesis.op(), Op::Genesis { .. }));
    assert_eq!(invite.network_id(), invite.genesis.hash());
    assert!(!invite.bootstrap.is_empty());
    let line = invite.to_line();
    assert_eq!(Invite::parse(&line).as_ref(), Ok(&invite), "to_line does not round-trip");
    assert_eq!(Invite::new(invite.genesis.clone(), invite.bootstrap.clone()).as_ref(), Ok(&invite));
});
