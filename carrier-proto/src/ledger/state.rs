//! The ledger's current state: who is registered, with which keys, and
//! whether they are still active; and the Merkle tree of every entry.
//!
//! [`LedgerState`] takes entries one at a time and applies an entry only if
//! every rule holds; otherwise it stays as it was and names the broken rule.
//! Lookups go through a hash index, so `resolve` costs the same for ten
//! entries or ten million. Where an entry sits is the sequencer's choice;
//! whether it may sit anywhere is this module's.

use foldhash::{HashMap, HashSet};

use super::checkpoint::LogTrust;
use super::entry::{Entry, EntryHash, Op};
use super::error::Rejection;
use super::genesis::{Quotas, WitnessPolicy};
use super::merkle::MerkleTree;
use crate::identity::{Did, Identity, NoisePublicKey, PublicKeys, SigningPublicKey};

/// Size and Merkle root of a ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Head {
    /// Number of entries (the next entry's index).
    pub height: u64,
    /// RFC 6962 root of those entries; zero for an empty ledger.
    pub root: EntryHash,
}

/// The network a ledger belongs to, fixed by its genesis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    /// Name, for people.
    pub name: String,
    /// Hash of the genesis entry: the network's identity.
    pub id: EntryHash,
    /// Keys allowed to register devices.
    pub registrars: Vec<SigningPublicKey>,
    /// The key that orders the log and signs its checkpoints.
    pub log_key: SigningPublicKey,
    /// Limits on every author.
    pub quotas: Quotas,
    /// Who cosigns checkpoints, and how many must.
    pub witnesses: WitnessPolicy,
}

impl Network {
    /// What this network's checkpoints are checked against.
    pub fn trust(&self) -> LogTrust<'_> {
        LogTrust {
            network: self.id,
            log_key: self.log_key,
            witnesses: &self.witnesses.witnesses,
            quorum: self.witnesses.quorum(),
        }
    }
}

/// Device or app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// A device running a daemon.
    Device {
        /// Roles granted at registration.
        roles: Vec<String>,
    },
    /// An app hosted on `device`.
    App {
        /// The hosting device.
        device: Did,
        /// Name for people.
        name: String,
    },
}

/// A revocation as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// Sequence number of the revoking entry.
    pub seq: u64,
    /// The reason given.
    pub reason: String,
}

/// What the ledger holds for one DID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Device or app.
    pub subject: Subject,
    /// Current keys.
    pub keys: PublicKeys,
    /// Sequence number of the registering entry.
    pub registered_at: u64,
    /// Set once revoked; never cleared.
    pub revoked: Option<Revocation>,
}

/// Whether a DID may hold links now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Registered and not revoked.
    Active,
    /// Revoked itself.
    Revoked(Revocation),
    /// An app whose hosting device is revoked.
    HostRevoked(Did),
    /// Revoked by a request its author signed, seen before the log
    /// sequenced it (see [`SeenRevocations`](super::SeenRevocations)).
    RevokedUnsequenced {
        /// The reason the request gives.
        reason: String,
    },
}

/// The answer to "who is this DID?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution<'a> {
    /// The DID asked about.
    pub did: Did,
    /// Its record.
    pub record: &'a Record,
    /// Its effective status.
    pub status: Status,
}

impl Resolution<'_> {
    /// Registered, not revoked, and (for apps) hosted by an active device.
    pub fn is_active(&self) -> bool {
        self.status == Status::Active
    }
}

/// The verified state of a ledger: its head and an index of every DID.
#[derive(Debug, Clone, Default)]
pub struct LedgerState {
    network: Option<Network>,
    records: HashMap<Did, Record>,
    /// Every signing key ever registered or rotated to, so no key is reused.
    used_signing_keys: HashSet<SigningPublicKey>,
    /// Likewise for Noise keys.
    used_noise_keys: HashSet<NoisePublicKey>,
    /// Whose current signing key each key is, so a peer known only by its
    /// key (a libp2p peer id) maps back to its DID.
    current_keys: HashMap<SigningPublicKey, Did>,
    /// The Merkle tree of every entry, so the log can be proved at any size.
    tree: MerkleTree,
    /// Where each entry sits, by leaf hash, so a retried request is known.
    positions: HashMap<EntryHash, u64>,
    /// Apps each device has ever registered, for the genesis quota.
    apps_registered: HashMap<Did, u32>,
    /// The log keys that signed before a handover, oldest first: their
    /// checkpoints and promises still count as the log's word.
    past_log_keys: Vec<SigningPublicKey>,
    /// Where each change of the log's trust (a handover, a change of
    /// witnesses) sits, oldest first.
    handover_indices: Vec<u64>,
}

impl LedgerState {
    /// An empty ledger, waiting for its genesis.
    pub fn new() -> Self {
        Self::default()
    }

    /// Size and root.
    pub fn head(&self) -> Head {
        Head { height: self.tree.len(), root: if self.tree.is_empty() { EntryHash::ZERO } else { self.tree.root() } }
    }

    /// Number of entries (the next entry's index); cheaper than
    /// [`head`](Self::head), which hashes the root.
    pub fn height(&self) -> u64 {
        self.tree.len()
    }

    /// The Merkle tree of every entry.
    pub fn tree(&self) -> &MerkleTree {
        &self.tree
    }

    /// Where `entry_hash` sits in the log, if it does.
    pub fn position(&self, entry_hash: &EntryHash) -> Option<u64> {
        self.positions.get(entry_hash).copied()
    }

    /// The network, once genesis is applied.
    pub fn network(&self) -> Option<&Network> {
        self.network.as_ref()
    }

    /// Where the changes of the log's trust (handovers, changes of
    /// witnesses) sit in the log, oldest first.
    pub fn handover_indices(&self) -> &[u64] {
        &self.handover_indices
    }

    /// Every log key this ledger has had, the current one last.
    pub fn log_keys(&self) -> Vec<SigningPublicKey> {
        let mut keys = self.past_log_keys.clone();
        keys.extend(self.network.as_ref().map(|n| n.log_key));
        keys
    }

    /// Number of registered DIDs (any status).
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True before any device or app is registered.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Every registered DID and its record, in no particular order.
    pub fn records(&self) -> impl Iterator<Item = (&Did, &Record)> {
        self.records.iter()
    }

    /// The leaf hash of entry `index`, if the ledger has it.
    pub fn entry_hash(&self, index: u64) -> Option<EntryHash> {
        self.tree.leaf(index)
    }

    /// The DID whose current signing key is `key`, if any.
    pub fn did_of_key(&self, key: &SigningPublicKey) -> Option<Did> {
        self.current_keys.get(key).copied()
    }

    /// The DID on this ledger whose first key is `bytes` (the compact form
    /// messages carry); no curve-point check is needed for a known key.
    pub fn find_did(&self, bytes: &[u8]) -> Option<Did> {
        let key: [u8; 32] = bytes.try_into().ok()?;
        self.records.get_key_value(&Did::unchecked(key)).map(|(did, _)| *did)
    }

    /// Looks a DID up in O(1).
    pub fn resolve(&self, did: &Did) -> Option<Resolution<'_>> {
        let record = self.records.get(did)?;
        Some(Resolution { did: *did, record, status: self.status(record) })
    }

    fn status(&self, record: &Record) -> Status {
        if let Some(revocation) = &record.revoked {
            return Status::Revoked(revocation.clone());
        }
        if let Subject::App { device, .. } = &record.subject {
            let host_revoked = self.records.get(device).is_none_or(|host| host.revoked.is_some());
            if host_revoked {
                return Status::HostRevoked(*device);
            }
        }
        Status::Active
    }

    /// Signs `op` as a request for this ledger's network (a genesis, if it
    /// has none yet), dated `now_ms`.
    pub fn next_entry(&self, op: Op, now_ms: u64, signer: &Identity) -> Entry {
        let network = self.network.as_ref().map_or(EntryHash::ZERO, |n| n.id);
        Entry::sign(network, now_ms, op, signer)
    }

    /// Verifies `entry`'s signature and applies it if every rule holds.
    pub fn append(&mut self, entry: Entry) -> Result<(), Rejection> {
        self.append_with(entry, |_| Ok::<(), Rejection>(()))
    }

    /// Like [`append`](Self::append), but runs `persist` between the checks
    /// and the change, so a store can make the entry durable first: if
    /// `persist` fails, the state stays as it was.
    pub fn append_with<E: From<Rejection>>(
        &mut self,
        entry: Entry,
        persist: impl FnOnce(&Entry) -> Result<(), E>,
    ) -> Result<(), E> {
        if !entry.verify_signature() {
            return Err(Rejection::BadSignature.into());
        }
        self.check(&entry)?;
        persist(&entry)?;
        self.commit(&entry);
        Ok(())
    }

    /// Applies an entry whose signature the caller has verified already
    /// (batch verification during replay).
    pub(crate) fn apply_signed(&mut self, entry: &Entry) -> Result<(), Rejection> {
        self.check_with(entry, Points::Check)?;
        self.commit(entry);
        Ok(())
    }

    /// Applies an entry this ledger verified when it was first appended
    /// (a store re-opening a log whose root matches its checkpoint): every
    /// rule but the signature and the curve-point checks, which depend on
    /// the entry's bytes alone and cannot have changed.
    pub(crate) fn apply_known(&mut self, entry: &Entry) -> Result<(), Rejection> {
        self.check_with(entry, Points::Known)?;
        self.commit(entry);
        Ok(())
    }

    /// Checks `entry` as the next entry would be: its signature and every
    /// rule (the author's authority, the subject's standing). Changes
    /// nothing.
    pub fn check_request(&self, entry: &Entry) -> Result<(), Rejection> {
        if !entry.verify_signature() {
            return Err(Rejection::BadSignature);
        }
        self.check(entry)
    }

    /// Checks every rule except the signature. Changes nothing.
    fn check(&self, entry: &Entry) -> Result<(), Rejection> {
        self.check_with(entry, Points::Check)
    }

    fn check_with(&self, entry: &Entry, points: Points) -> Result<(), Rejection> {
        let body = entry.body();
        if let Some(at) = self.position(&entry.hash()) {
            return Err(Rejection::AlreadyInLog(at));
        }
        let signer = body.signer;
        let unauthorized = || Rejection::Unauthorized { signer: Did::from_signing_key(signer) };
        let Some(network) = &self.network else {
            return match &body.op {
                Op::Genesis { registrars, log_key, witnesses, .. } => {
                    check_genesis(signer, registrars, log_key)?;
                    check_witnesses(witnesses, registrars, log_key)
                }
                _ => Err(Rejection::NotGenesis),
            };
        };
        if body.network_id != network.id {
            return Err(Rejection::WrongNetwork { expected: network.id, found: body.network_id });
        }
        if signer == network.log_key {
            return Err(Rejection::LogKeyAuthors);
        }
        let registrar = network.registrars.contains(&signer);
        match &body.op {
            Op::Genesis { .. } => Err(Rejection::GenesisNotFirst),
            Op::RegisterDevice { did, keys, .. } => {
                if !registrar {
                    return Err(unauthorized());
                }
                self.check_new(did, keys, points)
            }
            Op::RegisterApp { did, keys, device, consent, .. } => {
                if !consent.verify(&keys.signing, device, &network.id) {
                    return Err(Rejection::NoConsent(*did));
                }
                let host = self.active(device)?;
                if !matches!(host.subject, Subject::Device { .. }) {
                    return Err(Rejection::NotADevice(*device));
                }
                if host.keys.signing != signer {
                    return Err(Rejection::NotHostDevice { signer: Did::from_signing_key(signer), device: *device });
                }
                let max = network.quotas.max_apps_per_device;
                if self.apps_registered.get(device).copied().unwrap_or(0) >= max {
                    return Err(Rejection::TooManyApps { device: *device, max });
                }
                self.check_new(did, keys, points)
            }
            Op::RotateKeys { did, keys } => {
                let record = self.active(did)?;
                if !self.may_act_on(record, signer, registrar) {
                    return Err(unauthorized());
                }
                self.check_unused(keys, points)
            }
            Op::Revoke { did, .. } => {
                let record = self.active(did)?;
                if !self.may_act_on(record, signer, registrar) {
                    return Err(unauthorized());
                }
                Ok(())
            }
            Op::Witnesses { policy, approvals } => {
                check_witnesses(policy, &network.registrars, &network.log_key)?;
                super::handover::check_witness_change(network, &signer, policy, approvals)
            }
            Op::Handover { log_key, sequencer, approvals } => super::handover::check(
                network,
                &signer,
                (log_key, sequencer, approvals),
                |key| self.used_signing_keys.contains(key),
                |did| self.active(did).is_ok_and(|r| matches!(r.subject, Subject::Device { .. })),
            ),
        }
    }

    /// Applies an entry that [`check`](Self::check) accepted.
    fn commit(&mut self, entry: &Entry) {
        let body = entry.body();
        let index = self.tree.len();
        match &body.op {
            Op::Genesis { network, registrars, log_key, quotas, witnesses } => {
                self.used_signing_keys.extend(registrars.iter().copied());
                self.used_signing_keys.insert(*log_key);
                self.used_signing_keys.extend(witnesses.witnesses.iter().map(|w| w.key()));
                self.network = Some(Network {
                    name: network.clone(),
                    id: entry.hash(),
                    registrars: registrars.clone(),
                    log_key: *log_key,
                    quotas: *quotas,
                    witnesses: witnesses.clone(),
                });
            }
            Op::RegisterDevice { did, keys, roles } => {
                self.insert(*did, keys, index, Subject::Device { roles: roles.clone() });
            }
            Op::RegisterApp { did, keys, device, name, .. } => {
                *self.apps_registered.entry(*device).or_default() += 1;
                self.insert(*did, keys, index, Subject::App { device: *device, name: name.clone() });
            }
            Op::RotateKeys { did, keys } => {
                self.used_signing_keys.insert(keys.signing);
                self.used_noise_keys.insert(keys.noise);
                if let Some(record) = self.records.get_mut(did) {
                    self.current_keys.remove(&record.keys.signing);
                    record.keys = *keys;
                }
                self.current_keys.insert(keys.signing, *did);
            }
            Op::Revoke { did, reason } => {
                if let Some(record) = self.records.get_mut(did) {
                    record.revoked = Some(Revocation { seq: index, reason: reason.clone() });
                }
            }
            Op::Witnesses { policy, .. } => {
                self.handover_indices.push(index);
                if let Some(network) = &mut self.network {
                    network.witnesses = policy.clone();
                }
            }
            Op::Handover { log_key, .. } => {
                self.used_signing_keys.insert(*log_key);
                self.handover_indices.push(index);
                if let Some(network) = &mut self.network {
                    self.past_log_keys.push(network.log_key);
                    network.log_key = *log_key;
                }
            }
        }
        self.positions.insert(entry.hash(), index);
        self.tree.push(entry.hash());
    }

    /// The record of `did` if it is registered and active.
    fn active(&self, did: &Did) -> Result<&Record, Rejection> {
        let record = self.records.get(did).ok_or(Rejection::UnknownDid(*did))?;
        match self.status(record) {
            Status::Active => Ok(record),
            Status::Revoked(_) => Err(Rejection::Revoked(*did)),
            Status::HostRevoked(device) => Err(Rejection::Revoked(device)),
            Status::RevokedUnsequenced { .. } => Err(Rejection::Revoked(*did)),
        }
    }

    /// A DID's own key, its hosting device's key, or a registrar may rotate
    /// or revoke it.
    fn may_act_on(&self, record: &Record, signer: SigningPublicKey, registrar: bool) -> bool {
        if registrar || record.keys.signing == signer {
            return true;
        }
        match &record.subject {
            Subject::App { device, .. } => self.records.get(device).is_some_and(|host| host.keys.signing == signer),
            Subject::Device { .. } => false,
        }
    }

    fn check_new(&self, did: &Did, keys: &PublicKeys, points: Points) -> Result<(), Rejection> {
        if self.records.contains_key(did) {
            return Err(Rejection::AlreadyRegistered(*did));
        }
        if did.signing_key() != keys.signing {
            return Err(Rejection::DidKeyMismatch(*did));
        }
        self.check_unused(keys, points)
    }

    fn check_unused(&self, keys: &PublicKeys, points: Points) -> Result<(), Rejection> {
        if points == Points::Check {
            if let Some(why) = keys.signing.weakness() {
                return Err(Rejection::UntrustedKey { which: "signing", why });
            }
            if !keys.noise.is_contributory() {
                return Err(Rejection::UntrustedKey {
                    which: "noise",
                    why: "a point of small order (non-contributory)",
                });
            }
        }
        if self.used_signing_keys.contains(&keys.signing) || self.used_noise_keys.contains(&keys.noise) {
            return Err(Rejection::KeyReused);
        }
        Ok(())
    }

    fn insert(&mut self, did: Did, keys: &PublicKeys, seq: u64, subject: Subject) {
        self.used_signing_keys.insert(keys.signing);
        self.used_noise_keys.insert(keys.noise);
        self.current_keys.insert(keys.signing, did);
        self.records.insert(did, Record { subject, keys: *keys, registered_at: seq, revoked: None });
    }
}

/// Whether to check that keys are sound curve points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Points {
    /// Check them (every entry seen for the first time).
    Check,
    /// Checked when the entry was first appended (see `apply_known`).
    Known,
}

fn check_genesis(
    signer: SigningPublicKey,
    registrars: &[SigningPublicKey],
    log_key: &SigningPublicKey,
) -> Result<(), Rejection> {
    if registrars.is_empty() {
        return Err(Rejection::NoRegistrars);
    }
    let unique: HashSet<_> = registrars.iter().collect();
    if unique.len() != registrars.len() {
        return Err(Rejection::DuplicateRegistrar);
    }
    if !registrars.contains(&signer) {
        return Err(Rejection::Unauthorized { signer: Did::from_signing_key(signer) });
    }
    if let Some(why) = registrars.iter().find_map(SigningPublicKey::weakness) {
        return Err(Rejection::UntrustedKey { which: "registrar", why });
    }
    if registrars.contains(log_key) {
        return Err(Rejection::LogKeyIsRegistrar);
    }
    if let Some(why) = log_key.weakness() {
        return Err(Rejection::UntrustedKey { which: "log", why });
    }
    Ok(())
}

/// Witness keys are distinct from each other, from the registrars and from
/// the log key (a cosignature does not name its cosigner, so one key must
/// never cosign as two), and so are their names.
fn check_witnesses(
    policy: &WitnessPolicy,
    registrars: &[SigningPublicKey],
    log_key: &SigningPublicKey,
) -> Result<(), Rejection> {
    let keys: HashSet<_> = policy.witnesses.iter().map(|w| w.key()).collect();
    let names: HashSet<_> = policy.witnesses.iter().map(|w| w.name()).collect();
    let shared = keys.contains(log_key) || registrars.iter().any(|r| keys.contains(r));
    if keys.len() != policy.witnesses.len() || names.len() != policy.witnesses.len() || shared {
        return Err(Rejection::DuplicateWitness);
    }
    if let Some(why) = policy.witnesses.iter().find_map(|w| w.key().weakness()) {
        return Err(Rejection::UntrustedKey { which: "witness", why });
    }
    Ok(())
}
