//! What each control request does: plain `async fn`s from a request to a
//! response, over the daemon's overlay and ledger.

use std::sync::Arc;
use std::time::Instant;

use carrier_proto::identity::Did;
use carrier_proto::ledger::{Answer, Entry, EntryHash, Head, Judgement, Kind, Status};
use carrier_proto::nat::Mapping;
use carrier_proto::pb::{self, control_request::Request, control_response::Response};

use tokio::sync::broadcast;

use super::Connection;
use crate::delivery::Delivery;
use crate::ledger::{ExtendError, Ledger, SubmitError, Taken, answer_proofs};
use crate::link::LinkContext;
use crate::overlay::{Overlay, OverlayError, OverlayEvent};
use crate::protocols::ledger_submit::{SubmitOutcome, Submitter};

/// Most ledger entries in one answer (a few hundred KiB).
const MAX_ENTRIES: u32 = 1_000;

/// Why a control request failed; sent back as the response's error text.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// A DID in the request does not parse.
    #[error("{text:?} is not a DID: {reason}")]
    BadDid {
        /// What was sent.
        text: String,
        /// Why it is not a DID.
        reason: String,
    },
    /// The overlay could not do it (or has stopped).
    #[error(transparent)]
    Overlay(#[from] OverlayError),
    /// The DID is not on the ledger.
    #[error("{0} is not on the ledger")]
    NotOnLedger(Did),
    /// An address in the request does not parse.
    #[error("{0:?} is not a multiaddr (e.g. /ip4/192.0.2.7/udp/7640/quic-v1/noise)")]
    BadAddr(String),
    /// The device at the address is another one than asked for.
    #[error("the device at that address is {linked}, not {wanted}")]
    OtherPeer {
        /// Whom the request named.
        wanted: Did,
        /// Who answered.
        linked: Did,
    },
    /// A published entry does not decode.
    #[error("entry {index}: {reason}")]
    BadEntry {
        /// Its place in the request.
        index: usize,
        /// Why.
        reason: String,
    },
    /// The published entries could not be taken.
    #[error("published entries refused: {0}")]
    Extend(#[from] ExtendError),
    /// Submitted requests could not be taken.
    #[error("requests not taken: {0}")]
    Submit(String),
    /// The published checkpoint contradicts the daemon's.
    #[error("the published checkpoint contradicts this daemon's: the alarm is raised and the evidence saved")]
    Equivocation,
    /// The ledger refused a published entry.
    #[error("entry {index}: {source}")]
    Refused {
        /// Its place in the request.
        index: usize,
        /// The rule it broke, or the storage failure.
        source: SubmitError,
    },
    /// A request this loop does not answer one at a time.
    #[error("watch is served by the connection loop")]
    NotHere,
}

/// Answers control requests for one daemon.
pub struct Handler {
    did: Did,
    started: Instant,
    overlay: Overlay,
    ledger: Arc<dyn Ledger>,
    links: Arc<LinkContext>,
    delivery: Arc<Delivery>,
    submitter: Arc<Submitter>,
}

fn head(head: Head) -> pb::LedgerHead {
    pb::LedgerHead { height: head.height, root: head.root.0.to_vec() }
}

impl Handler {
    /// A handler for the daemon with these parts.
    pub(crate) fn new(
        overlay: Overlay,
        links: Arc<LinkContext>,
        delivery: Arc<Delivery>,
        submitter: Arc<Submitter>,
    ) -> Self {
        let (did, ledger) = (links.did(), Arc::clone(&links.ledger));
        Self { did, started: Instant::now(), overlay, ledger, links, delivery, submitter }
    }

    /// Streams events to a watcher until it goes away.
    pub async fn watch(&self, connection: &mut Connection, id: u64) {
        let mut overlay = self.overlay.events();
        let mut ledger = self.ledger.subscribe();
        // First the current ledger height, so the watcher knows it is
        // subscribed and where the ledger stands.
        let current = pb::Event { kind: "ledger".into(), did: String::new(), height: self.ledger.head().height };
        if connection.write(&pb::ControlResponse { id, response: Some(Response::Event(current)) }).await.is_err() {
            return;
        }
        let mut frozen = self.ledger.alarm().is_some();
        let mut broken = self.ledger.broken_promises().len();
        loop {
            let event = tokio::select! {
                event = overlay.recv() => match event {
                    Ok(OverlayEvent::PeerUp(did)) => pb::Event { kind: "peer_up".into(), did: did.to_string(), height: 0 },
                    Ok(OverlayEvent::PeerDown(did)) => pb::Event { kind: "peer_down".into(), did: did.to_string(), height: 0 },
                    Ok(OverlayEvent::Revoked(did)) => pb::Event { kind: "revoked".into(), did: did.to_string(), height: 0 },
                    Ok(OverlayEvent::Rotated(did)) => pb::Event { kind: "rotated".into(), did: did.to_string(), height: 0 },
                    Ok(OverlayEvent::Routable(_)) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                update = ledger.recv() => match update {
                    // The first update after the alarm says so, once.
                    Ok(update) if !frozen && self.ledger.alarm().is_some() => {
                        frozen = true;
                        pb::Event { kind: "frozen".into(), did: String::new(), height: update.head.height }
                    }
                    // A broken promise newly known here says so, once.
                    Ok(update) if self.ledger.broken_promises().len() > broken => {
                        broken = self.ledger.broken_promises().len();
                        pb::Event { kind: "promise_broken".into(), did: String::new(), height: update.head.height }
                    }
                    Ok(update) => pb::Event { kind: "ledger".into(), did: String::new(), height: update.head.height },
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            };
            let message = pb::ControlResponse { id, response: Some(Response::Event(event)) };
            if connection.write(&message).await.is_err() {
                return;
            }
        }
    }

    /// Answers one request; failures become an error response.
    pub async fn answer(&self, request: pb::ControlRequest) -> pb::ControlResponse {
        let response = match request.request {
            Some(request) => self.dispatch(request).await.unwrap_or_else(|e| Response::Error(e.to_string())),
            None => Response::Error("empty request: this carrierctl may be newer than the daemon".into()),
        };
        pb::ControlResponse { id: request.id, response: Some(response) }
    }

    async fn dispatch(&self, request: Request) -> Result<Response, ControlError> {
        match request {
            Request::Status(_) => self.status().await,
            Request::Peers(_) => self.peers().await,
            Request::Routes(_) => self.routes().await,
            Request::Connect(c) => {
                let did = parse_did(&c.did)?;
                if c.addr.is_empty() {
                    self.overlay.connect(did).await?;
                } else {
                    let addr = c.addr.parse().map_err(|_| ControlError::BadAddr(c.addr.clone()))?;
                    let linked = self.overlay.dial(addr).await?;
                    if linked != did {
                        return Err(ControlError::OtherPeer { wanted: did, linked });
                    }
                }
                Ok(Response::Done(pb::Done {}))
            }
            Request::Disconnect(d) => {
                self.overlay.disconnect(parse_did(&d.did)?).await?;
                Ok(Response::Done(pb::Done {}))
            }
            Request::Resolve(r) => self.resolve(parse_did(&r.did)?),
            Request::Publish(p) => self.publish(p),
            Request::Submit(submit) => self.submit(submit.entries),
            Request::Pending(_) => {
                let network = self.ledger.network().map(|n| n.id);
                let keys = self.ledger.log_keys();
                let promise = |bytes: &[u8]| {
                    let answer = carrier_proto::ledger::SequencerAnswer::decode(bytes, &network?, &keys).ok()?;
                    match *answer.word() {
                        carrier_proto::ledger::Word::Promise { index, deadline_ms } => Some((index, deadline_ms)),
                        carrier_proto::ledger::Word::Refused(_) => None,
                    }
                };
                let entries = self
                    .submitter
                    .pending()
                    .into_iter()
                    .map(|p| {
                        let promised = p.promise.as_deref().and_then(promise);
                        pb::PendingEntry {
                            entry: p.entry.encoded().to_vec(),
                            since_ms: p.since_ms,
                            refused: p.refused.unwrap_or_default(),
                            promised: promised.is_some(),
                            promised_index: promised.map_or(0, |(index, _)| index),
                            promised_by_ms: promised.map_or(0, |(_, by)| by),
                        }
                    })
                    .collect();
                Ok(Response::Pending(pb::PendingList { entries }))
            }
            Request::Counters(_) => {
                Ok(Response::Counters(pb::Counters { values: self.links.counters().snapshot().into_iter().collect() }))
            }
            Request::Watch(_) => Err(ControlError::NotHere),
            Request::Entries(e) => Ok(Response::Entries(pb::Entries {
                entries: self.ledger.entries(e.from, e.max.min(MAX_ENTRIES) as usize),
                head: Some(head(self.ledger.head())),
                checkpoint: self.ledger.checkpoint().map(|c| c.note().to_vec()).unwrap_or_default(),
            })),
        }
    }

    async fn status(&self) -> Result<Response, ControlError> {
        let peers = self.overlay.peers().await?.len() as u32;
        let routes = self.overlay.routes().await?.len() as u32;
        let (network, network_id) = self.ledger.network().map(|n| (n.name, n.id.to_hex())).unwrap_or_default();
        let ledger_head = self.ledger.head();
        let (mapping, mapped) = match self.overlay.reachability().mapping() {
            Mapping::Independent(addr) => ("endpoint-independent", addr.to_string()),
            Mapping::Dependent(ip) => ("endpoint-dependent", ip.to_string()),
            Mapping::Unknown => ("unknown", String::new()),
        };
        let (checkpoint_age_s, checkpoint_stale) = self.ledger.freshness().unwrap_or_default();
        let broken_promises = self.ledger.broken_promises().iter().map(describe_broken).collect();
        Ok(Response::Status(pb::Status {
            broken_promises,
            checkpoint_age_s,
            checkpoint_stale,
            mapping: mapping.to_owned(),
            mapped,
            did: self.did.to_string(),
            network,
            network_id,
            uptime_ms: self.started.elapsed().as_millis() as u64,
            // Our own address, then the circuit addresses relays hold for us.
            listen_addrs: std::iter::once(self.overlay.listen_addr().clone())
                .chain(self.overlay.reachability().relayed())
                .map(|addr| addr.to_string())
                .collect(),
            head: Some(head(ledger_head)),
            peers,
            routes,
            alarm: self.ledger.alarm().unwrap_or_default(),
            apps: self.delivery.connected_apps().iter().map(Did::to_string).collect(),
            checkpoint: self.ledger.checkpoint().map(|c| c.text().to_owned()).unwrap_or_default(),
            sequencer: self.ledger.is_sequencer(),
            registered: self.ledger.standing(&self.did).is_some_and(|s| s.is_active_device()),
            nat: self.overlay.reachability().nat().name().to_owned(),
            probed: self
                .overlay
                .reachability()
                .probed()
                .into_iter()
                .map(|(addr, p)| pb::ProbedAddr {
                    addr: addr.to_string(),
                    reachable: p.reachable,
                    by: p.by.map(|d| d.to_string()).unwrap_or_default(),
                    detail: p.detail,
                    age_ms: p.age.as_millis() as u64,
                })
                .collect(),
        }))
    }

    async fn peers(&self) -> Result<Response, ControlError> {
        let peers = self.overlay.peers().await?;
        let peers = peers
            .into_iter()
            .map(|p| {
                let (bytes_in, bytes_out) = self.links.traffic(&p.did);
                let path = if p.relayed() { "relayed" } else { "direct" };
                pb::Peer {
                    did: p.did.to_string(),
                    peer_id: p.peer_id,
                    path: path.into(),
                    addr: p.addr,
                    rtt_us: p.rtt.map(|d| d.as_micros() as u64).unwrap_or(0),
                    connected_ms: p.since.elapsed().as_millis() as u64,
                    bytes_in,
                    bytes_out,
                }
            })
            .collect();
        Ok(Response::Peers(pb::Peers { peers }))
    }

    async fn routes(&self) -> Result<Response, ControlError> {
        let routes = self.overlay.routes().await?;
        let routes = routes
            .into_iter()
            .map(|r| pb::Route {
                peer_id: r.peer_id,
                did: r.did.map(|d| d.to_string()).unwrap_or_default(),
                addrs: r.addrs,
            })
            .collect();
        Ok(Response::Routes(pb::Routes { routes }))
    }

    fn resolve(&self, did: Did) -> Result<Response, ControlError> {
        let standing = self.ledger.standing(&did).ok_or(ControlError::NotOnLedger(did))?;
        let (kind, device, roles) = match standing.kind {
            Kind::Device => ("device", String::new(), self.ledger.roles(&did)),
            Kind::App { host } => ("app", host.to_string(), Vec::new()),
        };
        let status = match &standing.status {
            Status::Active => "active".to_owned(),
            Status::Revoked(rev) => format!("revoked at entry {}", rev.seq),
            Status::HostRevoked(host) => format!("revoked with its device {host}"),
            Status::RevokedUnsequenced { reason } => format!("revoked, not yet sequenced ({reason})"),
        };
        Ok(Response::Resolve(pb::ResolveReply {
            did: did.to_string(),
            kind: kind.into(),
            active: standing.is_active(),
            status,
            device,
            roles,
        }))
    }

    /// Takes the entries a sequencer made, proven against its checkpoint.
    /// A checkpoint the daemon has already, or an older one consistent with
    /// it, changes nothing; one that contradicts ours raises the alarm.
    /// Takes authors' signed requests for the sequencer.
    fn submit(&self, entries: Vec<Vec<u8>>) -> Result<Response, ControlError> {
        let entries = entries
            .iter()
            .enumerate()
            .map(|(i, bytes)| {
                Entry::decode(bytes).map_err(|e| ControlError::BadEntry { index: i, reason: e.to_string() })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let outcomes = self.submitter.submit(entries).map_err(|e| ControlError::Submit(e.to_string()))?;
        Ok(Response::Submit(pb::SubmitReply { results: outcomes.iter().map(SubmitOutcome::to_pb).collect() }))
    }

    fn publish(&self, publish: pb::PublishRequest) -> Result<Response, ControlError> {
        for refusal in &publish.refused {
            if let Ok(hash) = refusal.leaf_hash.as_slice().try_into().map(EntryHash) {
                self.submitter.refuse(&hash, &refusal.reason);
            }
        }
        let mut catch_up = match self.ledger.judge(&publish.checkpoint).map_err(ExtendError::from)? {
            Judgement::Fetch(catch_up) => catch_up,
            Judgement::Adopt(theirs) => {
                self.ledger.adopt(&theirs);
                return Ok(Response::Publish(pb::PublishReply { appended: 0, head: Some(head(self.ledger.head())) }));
            }
            Judgement::Nothing => {
                return Ok(Response::Publish(pb::PublishReply { appended: 0, head: Some(head(self.ledger.head())) }));
            }
            Judgement::Fork(fork) => {
                self.ledger.raise_alarm(&fork, "carrierctl ledger publish");
                return Err(ControlError::Equivocation);
            }
        };
        // The tool sends what it computed for the size it last saw; if the
        // ledger moved since, it asks again from the new size.
        let bad = || ControlError::BadEntry { index: 0, reason: "a proof hash is not 32 bytes".into() };
        let (proof, prefix) =
            answer_proofs(&publish.proof, &publish.prefix_root, &publish.prefix_proof).ok_or_else(bad)?;
        let appended = match catch_up.fetch(self.ledger.head().height) {
            Some(fetch) if fetch.from == publish.from => {
                let prefix = prefix.as_ref().map(|(root, proof)| (*root, proof.as_slice()));
                match self.ledger.take(&mut catch_up, Answer { entries: &publish.entries, proof: &proof, prefix })? {
                    Taken::Applied(n) => n as u32,
                    Taken::Fork(fork) => {
                        self.ledger.raise_alarm(&fork, "carrierctl ledger publish");
                        return Err(ControlError::Equivocation);
                    }
                }
            }
            _ => 0,
        };
        Ok(Response::Publish(pb::PublishReply { appended, head: Some(head(self.ledger.head())) }))
    }
}

fn parse_did(text: &str) -> Result<Did, ControlError> {
    Did::parse(text).map_err(|e| ControlError::BadDid { text: text.to_owned(), reason: e.to_string() })
}

/// One line on a broken promise, for `carrierctl status`.
fn describe_broken(broken: &carrier_proto::ledger::BrokenPromise) -> String {
    let promise = broken.promise();
    let (index, deadline_ms) = match promise.word() {
        carrier_proto::ledger::Word::Promise { index, deadline_ms } => (*index, *deadline_ms),
        carrier_proto::ledger::Word::Refused(_) => (0, 0),
    };
    format!(
        "request {} promised at index {index} by {deadline_ms} ms; a checkpoint of {} entries shows otherwise",
        promise.leaf(),
        broken.checkpoint().size()
    )
}
