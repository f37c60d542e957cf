//! What a genesis fixes besides its keys: the quotas every author is held
//! to, and the witnesses whose cosignatures make a checkpoint count.
//!
//! Quotas added after the first release are encoded as 0 for "the
//! default", so geneses made before them keep their exact bytes (and so
//! their hash, the network id); [`Quotas`] answers with the number in force.

use super::cosignature::WitnessKey;
use super::entry::{EntryError, MAX_LIST_LEN};
use crate::identity::SigningPublicKey;
use crate::pb;

/// Apps a device may register over its life, unless the genesis says.
pub const DEFAULT_MAX_APPS_PER_DEVICE: u32 = 64;
/// Requests sequenced per minute for one subject (a device and its apps),
/// unless the genesis says.
pub const DEFAULT_MAX_REQUESTS_PER_MINUTE: u32 = 60;
/// Requests sequenced per day for one subject: a device that registers and
/// rotates its apps now and then stays far below it; a device in a loop
/// stops growing the ledger after this many.
pub const DEFAULT_MAX_REQUESTS_PER_DAY: u32 = 1_000;
/// Key rotations sequenced per day for one DID: a routine rotation is rare,
/// a compromised key is rotated once or twice.
pub const DEFAULT_MAX_ROTATIONS_PER_DAY: u32 = 10;
/// Requests sequenced per minute for one registrar: an admin registering a
/// fleet from a script.
pub const DEFAULT_REGISTRAR_REQUESTS_PER_MINUTE: u32 = 600;
/// Requests sequenced per day for one registrar.
pub const DEFAULT_REGISTRAR_REQUESTS_PER_DAY: u32 = 50_000;
/// Longest a signed request lives before the sequencer refuses it: long
/// enough to wait out a sequencer's day away, short enough that a captured
/// request cannot be played back next month.
pub const DEFAULT_MAX_REQUEST_LIFETIME_S: u32 = 7 * 24 * 3600;
/// Most witnesses a genesis may name.
pub const MAX_WITNESSES: usize = MAX_LIST_LEN;

/// The limits a genesis sets on every author, as encoded (0: the default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    /// Apps ever registered under one device.
    pub max_apps_per_device: u32,
    /// Requests sequenced per minute for one subject.
    pub max_requests_per_minute: u32,
    /// Requests sequenced per day for one subject (0: the default).
    pub max_requests_per_day: u32,
    /// Rotations sequenced per day for one DID (0: the default).
    pub max_rotations_per_day: u32,
    /// Requests sequenced per minute for one registrar (0: the default).
    pub registrar_requests_per_minute: u32,
    /// Requests sequenced per day for one registrar (0: the default).
    pub registrar_requests_per_day: u32,
    /// Longest a request may live, in seconds (0: the default).
    pub max_request_lifetime_s: u32,
    /// Registrars that must sign a handover of sequencing, unless the
    /// current log key countersigns (0: one).
    pub handover_quorum: u32,
}

impl Default for Quotas {
    fn default() -> Self {
        Self {
            max_apps_per_device: DEFAULT_MAX_APPS_PER_DEVICE,
            max_requests_per_minute: DEFAULT_MAX_REQUESTS_PER_MINUTE,
            max_requests_per_day: 0,
            max_rotations_per_day: 0,
            registrar_requests_per_minute: 0,
            registrar_requests_per_day: 0,
            max_request_lifetime_s: 0,
            handover_quorum: 0,
        }
    }
}

fn or(value: u32, default: u32) -> u32 {
    if value == 0 { default } else { value }
}

impl Quotas {
    /// Registrars that must sign a handover, in force.
    pub fn handover_quorum(&self) -> usize {
        or(self.handover_quorum, 1) as usize
    }

    /// Requests per day for one subject, in force.
    pub fn requests_per_day(&self) -> u32 {
        or(self.max_requests_per_day, DEFAULT_MAX_REQUESTS_PER_DAY)
    }

    /// Rotations per day for one DID, in force.
    pub fn rotations_per_day(&self) -> u32 {
        or(self.max_rotations_per_day, DEFAULT_MAX_ROTATIONS_PER_DAY)
    }

    /// Requests per minute for one registrar, in force.
    pub fn registrar_per_minute(&self) -> u32 {
        or(self.registrar_requests_per_minute, DEFAULT_REGISTRAR_REQUESTS_PER_MINUTE)
    }

    /// Requests per day for one registrar, in force.
    pub fn registrar_per_day(&self) -> u32 {
        or(self.registrar_requests_per_day, DEFAULT_REGISTRAR_REQUESTS_PER_DAY)
    }

    /// Longest a request may live, in milliseconds.
    pub fn request_lifetime_ms(&self) -> u64 {
        u64::from(or(self.max_request_lifetime_s, DEFAULT_MAX_REQUEST_LIFETIME_S)) * 1000
    }

    pub(super) fn to_pb(self, genesis: &mut pb::Genesis) {
        genesis.max_apps_per_device = self.max_apps_per_device;
        genesis.max_requests_per_minute = self.max_requests_per_minute;
        genesis.max_requests_per_day = self.max_requests_per_day;
        genesis.max_rotations_per_day = self.max_rotations_per_day;
        genesis.registrar_requests_per_minute = self.registrar_requests_per_minute;
        genesis.registrar_requests_per_day = self.registrar_requests_per_day;
        genesis.max_request_lifetime_s = self.max_request_lifetime_s;
        genesis.handover_quorum = self.handover_quorum;
    }

    pub(super) fn from_pb(g: &pb::Genesis) -> Result<Self, EntryError> {
        if g.max_apps_per_device == 0 {
            return Err(EntryError::ZeroQuota("max_apps_per_device"));
        }
        if g.max_requests_per_minute == 0 {
            return Err(EntryError::ZeroQuota("max_requests_per_minute"));
        }
        Ok(Self {
            max_apps_per_device: g.max_apps_per_device,
            max_requests_per_minute: g.max_requests_per_minute,
            max_requests_per_day: g.max_requests_per_day,
            max_rotations_per_day: g.max_rotations_per_day,
            registrar_requests_per_minute: g.registrar_requests_per_minute,
            registrar_requests_per_day: g.registrar_requests_per_day,
            max_request_lifetime_s: g.max_request_lifetime_s,
            handover_quorum: g.handover_quorum,
        })
    }
}

/// The witnesses a genesis names, and how many must cosign a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WitnessPolicy {
    /// Their keys, in the genesis's order.
    pub witnesses: Vec<WitnessKey>,
    /// Cosignatures a checkpoint needs (0: none, the single-machine default).
    pub quorum: u32,
}

impl WitnessPolicy {
    /// Cosignatures a checkpoint needs.
    pub fn quorum(&self) -> usize {
        self.quorum as usize
    }

    pub(super) fn to_pb(&self, genesis: &mut pb::Genesis) {
        genesis.witnesses = self.witnesses_pb();
        genesis.witness_quorum = self.quorum;
    }

    /// The witnesses as they travel.
    pub(super) fn witnesses_pb(&self) -> Vec<pb::Witness> {
        self.witnesses
            .iter()
            .map(|w| pb::Witness { name: w.name().to_owned(), key: w.key().as_bytes().to_vec() })
            .collect()
    }

    pub(super) fn from_pb(
        g: &pb::Genesis,
        key: impl Fn(&[u8]) -> Result<SigningPublicKey, EntryError>,
    ) -> Result<Self, EntryError> {
        Self::from_parts(&g.witnesses, g.witness_quorum, key)
    }

    /// A policy from its witnesses and quorum as they travel.
    pub(super) fn from_parts(
        witnesses: &[pb::Witness],
        quorum: u32,
        key: impl Fn(&[u8]) -> Result<SigningPublicKey, EntryError>,
    ) -> Result<Self, EntryError> {
        if witnesses.len() > MAX_WITNESSES {
            return Err(EntryError::ListLength { what: "witnesses", len: witnesses.len() });
        }
        let witnesses = witnesses
            .iter()
            .map(|w| WitnessKey::new(&w.name, key(&w.key)?).map_err(|e| EntryError::Witness(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        if quorum as usize > witnesses.len() {
            return Err(EntryError::Witness(format!(
                "a quorum of {quorum} out of {} witnesses can never be met",
                witnesses.len()
            )));
        }
        Ok(Self { witnesses, quorum })
    }

    /// What registrars approving this policy in place of `replacing` sign,
    /// for `network`: an approval holds for that one change only, so it
    /// cannot bring an older policy back later.
    pub fn approval_message(&self, network: &super::EntryHash, replacing: &WitnessPolicy) -> Vec<u8> {
        let mut message = network.0.to_vec();
        for policy in [replacing, self] {
            message.extend_from_slice(&u16::try_from(policy.witnesses.len()).unwrap_or(u16::MAX).to_be_bytes());
            for witness in &policy.witnesses {
                let name = witness.name().as_bytes();
                message.extend_from_slice(&u16::try_from(name.len()).unwrap_or(u16::MAX).to_be_bytes());
                message.extend_from_slice(name);
                message.extend_from_slice(witness.key().as_bytes());
            }
            message.extend_from_slice(&policy.quorum.to_be_bytes());
        }
        message
    }
}
