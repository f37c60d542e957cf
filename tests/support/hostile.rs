//! A small hostile peer for the tests and benchmarks that play the
//! attacker inside: a registered device's key and raw QUIC, speaking the
//! handshake with the project's own state machines but carrying what a
//! stock daemon never would (a padded checkpoint note), or holding join
//! connections open without a word; and the victim's figures (memory,
//! disk) as the kernel reports them.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use carrier_daemon::link::quic;
use carrier_proto::handshake::{ChannelBinding, EXPORTER_LABEL, Initiator, InitiatorStep, Local, Refusal, frame};
use carrier_proto::identity::{Did, Identity};
use carrier_proto::ledger::LedgerState;

use super::Daemon;

/// The UDP address a daemon listens on.
pub(crate) fn addr_of(daemon: &Daemon) -> SocketAddr {
    let (addr, _) = carrier_daemon::overlay::transport::parse_addr(&daemon.addr.parse().unwrap()).unwrap();
    addr
}

/// The hostile peer: links to `to` with `identity` (a registered device's
/// key), carrying `note` in its handshake as its checkpoint, whatever it
/// is. Returns the link, or the close code the victim refused it with.
pub(crate) async fn link_with_note(
    identity: &Identity,
    ledger: &LedgerState,
    to: SocketAddr,
    peer: Did,
    note: &[u8],
) -> Result<quinn::Connection, Option<Refusal>> {
    let endpoint = quic::endpoint("127.0.0.1:0".parse().unwrap()).unwrap();
    // The victim's endpoint may refuse the connection outright (its
    // handshake rate per address): a refusal without a code.
    let Ok(connection) = endpoint.connect(to, quic::SERVER_NAME).unwrap().await else { return Err(None) };
    let mut binding = [0u8; 32];
    connection.export_keying_material(&mut binding, EXPORTER_LABEL, b"").unwrap();
    let network = ledger.network().unwrap().id;
    let local = Local { did: identity.did(), identity, network_id: network, checkpoint: note };
    let started = Initiator::start(&local, &ChannelBinding(binding), ledger, Some(peer));
    let (initiator, hello) =
        started.unwrap_or_else(|e| panic!("{e} with a {}-byte note, frames of {}", note.len(), frame::MAX_FRAME));
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    send.write_all(&frame::encode(&hello)).await.unwrap();
    let mut header = [0u8; frame::FRAME_HEADER];
    let refused = |connection: &quinn::Connection| {
        connection.close_reason().and_then(|reason| match reason {
            quinn::ConnectionError::ApplicationClosed(close) => Refusal::from_code(close.error_code.into_inner()),
            _ => None,
        })
    };
    if recv.read_exact(&mut header).await.is_err() {
        let _ = connection.closed().await;
        return Err(refused(&connection));
    }
    let mut reply = vec![0u8; frame::body_len(header).unwrap()];
    recv.read_exact(&mut reply).await.unwrap();
    match initiator.read_response(&reply, ledger).unwrap() {
        InitiatorStep::Admitted { verdict, .. } => send.write_all(&frame::encode(&verdict)).await.unwrap(),
        InitiatorStep::AwaitVerdict { .. } => panic!("an IK dial awaits no verdict"),
    }
    std::mem::forget(endpoint);
    Ok(connection)
}

/// `note` padded with lines of a key nobody knows, up to about `size` bytes.
pub(crate) fn padded(note: &[u8], size: usize) -> Vec<u8> {
    let mut padded = note.to_vec();
    let line = format!("\u{2014} padding.example {}\n", "A".repeat(96));
    while padded.len() + line.len() <= size {
        padded.extend_from_slice(line.as_bytes());
    }
    padded
}

/// A join client on loopback address `127.0.0.<host>`.
pub(crate) fn join_client(host: u8) -> quinn::Endpoint {
    let mut endpoint = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, host], 0))).unwrap();
    endpoint.set_default_client_config(quic::join_client_config().unwrap());
    endpoint
}

/// Opens `n` join connections to `to` (from eight addresses, under the
/// per-address rate) that never say anything, and one that announces a
/// 4 MiB request and sends it a byte at a time.
pub(crate) async fn idle_join_connections(to: SocketAddr, n: usize) -> Vec<quinn::Connection> {
    let endpoints: Vec<quinn::Endpoint> = (10..18).map(join_client).collect();
    let mut held = Vec::new();
    for i in 0..n {
        let connecting = endpoints[i % endpoints.len()].connect(to, quic::SERVER_NAME).unwrap();
        held.push(tokio::time::timeout(Duration::from_secs(5), connecting).await.unwrap().unwrap());
    }
    let slow = join_client(18).connect(to, quic::SERVER_NAME).unwrap().await.unwrap();
    let (mut send, _recv) = slow.open_bi().await.unwrap();
    tokio::spawn(async move {
        let _ = send.write_all(&(4u32 << 20).to_be_bytes()).await;
        loop {
            if send.write_all(&[0]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    held.push(slow);
    std::mem::forget(endpoints);
    held
}

/// The resident memory of process `pid`, and its peak, in KiB.
pub(crate) fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Bytes of the files in `dir` and below.
pub(crate) fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
