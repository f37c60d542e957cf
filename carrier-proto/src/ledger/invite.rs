//! Invitations: the one line (`carrier-invite:…`) that lets a new device
//! find a network and trust its ledger. It carries the genesis, so the
//! newcomer checks every later entry and checkpoint against the registrars
//! and the log key it names; the network id and the log key are repeated,
//! so a damaged or mistyped line is refused rather than half-trusted.

use base64::Engine;
use prost::Message;

use super::entry::{Entry, EntryHash, Op};
use crate::identity::SigningPublicKey;
use crate::pb;

/// How an invitation line starts.
pub const INVITE_PREFIX: &str = "carrier-invite:";
/// Most bootstrap addresses in one invitation.
pub const MAX_BOOTSTRAP: usize = 16;
/// Longest bootstrap address.
const MAX_ADDR_LEN: usize = 256;
/// Longest invitation line.
const MAX_LINE: usize = 16 << 10;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Why a line is not a usable invitation.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InviteError {
    /// Not an invitation line at all.
    #[error("an invitation starts with {INVITE_PREFIX}")]
    NotAnInvite,
    /// Damaged: it does not decode.
    #[error("the invitation is damaged ({0}); ask the admin for the line again")]
    Damaged(String),
    /// Its first entry is not a genesis.
    #[error("the invitation's genesis is not a genesis entry")]
    NotGenesis,
    /// The genesis, the network id and the log key disagree.
    #[error("the invitation's {0} does not match its genesis; ask the admin for the line again")]
    Mismatch(&'static str),
    /// Too many or too long addresses.
    #[error("the invitation needs 1 to {MAX_BOOTSTRAP} bootstrap addresses of at most {MAX_ADDR_LEN} bytes")]
    Bootstrap,
}

/// A checked invitation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invite {
    /// The network's genesis.
    pub genesis: Entry,
    /// Where to reach the network.
    pub bootstrap: Vec<String>,
}

impl Invite {
    /// An invitation to the network `genesis` starts, reached at `bootstrap`.
    pub fn new(genesis: Entry, bootstrap: Vec<String>) -> Result<Self, InviteError> {
        let invite = Self { genesis, bootstrap };
        invite.check()?;
        Ok(invite)
    }

    /// The network id (the genesis's leaf hash).
    pub fn network_id(&self) -> EntryHash {
        self.genesis.hash()
    }

    fn log_key(&self) -> Option<SigningPublicKey> {
        match self.genesis.op() {
            Op::Genesis { log_key, .. } => Some(*log_key),
            _ => None,
        }
    }

    fn check(&self) -> Result<(), InviteError> {
        if self.log_key().is_none() || !self.genesis.verify_signature() {
            return Err(InviteError::NotGenesis);
        }
        let sane = |a: &String| !a.is_empty() && a.len() <= MAX_ADDR_LEN;
        if self.bootstrap.is_empty() || self.bootstrap.len() > MAX_BOOTSTRAP || !self.bootstrap.iter().all(sane) {
            return Err(InviteError::Bootstrap);
        }
        Ok(())
    }

    /// The one-line form.
    pub fn to_line(&self) -> String {
        let message = pb::Invite {
            genesis: self.genesis.encoded().to_vec(),
            network_id: self.network_id().0.to_vec(),
            log_key: self.log_key().map(|k| k.as_bytes().to_vec()).unwrap_or_default(),
            bootstrap: self.bootstrap.clone(),
        };
        format!("{INVITE_PREFIX}{}", B64.encode(message.encode_to_vec()))
    }

    /// Reads and checks a line made by [`to_line`](Self::to_line).
    pub fn parse(line: &str) -> Result<Self, InviteError> {
        let line = line.trim();
        if line.len() > MAX_LINE {
            return Err(InviteError::Damaged("too long".into()));
        }
        let body = line.strip_prefix(INVITE_PREFIX).ok_or(InviteError::NotAnInvite)?;
        let bytes = B64.decode(body).map_err(|e| InviteError::Damaged(e.to_string()))?;
        let message = pb::Invite::decode(bytes.as_slice()).map_err(|e| InviteError::Damaged(e.to_string()))?;
        let genesis = Entry::decode(&message.genesis).map_err(|e| InviteError::Damaged(e.to_string()))?;
        let invite = Self { genesis, bootstrap: message.bootstrap };
        invite.check()?;
        if message.network_id != invite.network_id().0 {
            return Err(InviteError::Mismatch("network id"));
        }
        if invite.log_key().map(|k| k.as_bytes().to_vec()) != Some(message.log_key) {
            return Err(InviteError::Mismatch("log key"));
        }
        Ok(invite)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::testing::TestNetwork;

    fn genesis(net: &TestNetwork) -> Entry {
        // Re-sign the same genesis op: TestNetwork keeps no bytes.
        let Some(network) = net.ledger.network() else { unreachable!() };
        let op = Op::Genesis {
            network: network.name.clone(),
            registrars: network.registrars.clone(),
            log_key: network.log_key,
            quotas: network.quotas,
            witnesses: network.witnesses.clone(),
        };
        crate::ledger::LedgerState::new().next_entry(op, 1, &net.registrar)
    }

    #[test]
    fn a_line_reads_back_and_damage_is_named() {
        let net = TestNetwork::new("invite");
        let invite = Invite::new(genesis(&net), vec!["/ip4/192.0.2.7/udp/4242/quic-v1".into()]).unwrap();
        let line = invite.to_line();
        assert_eq!(Invite::parse(&line).unwrap(), invite);
        assert_eq!(Invite::parse("hello"), Err(InviteError::NotAnInvite));
        let mut damaged = line.clone();
        damaged.truncate(line.len() - 7);
        assert!(Invite::parse(&damaged).is_err());
        // Another network's id beside this genesis.
        let mut message = pb::Invite::decode(B64.decode(&line[INVITE_PREFIX.len()..]).unwrap().as_slice()).unwrap();
        message.network_id = vec![7; 32];
        let forged = format!("{INVITE_PREFIX}{}", B64.encode(message.encode_to_vec()));
        assert_eq!(Invite::parse(&forged), Err(InviteError::Mismatch("network id")));
        assert_eq!(Invite::new(genesis(&net), vec![]), Err(InviteError::Bootstrap));
    }
}
