//! The NAT lab as a test: devices behind routers of every NAT kind (in
//! network namespaces, `tests/lab`), a bootstrap device and a relay on the
//! public side. Every pair links by DID and exchanges a message, through the
//! relay where nothing else works; pairs with a direct path end direct.
//! Prints the matrix (`-- --nocapture`). Needs root; otherwise it says why
//! and passes without running.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod lab;
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use carrier_sdk::{AppIdentity, Client, Receipt};
use lab::{BOOTSTRAP_IP, Lab, NatKind, PORT, RELAY_IP};
use serde_json::Value;
use support::{Daemon, add_relay, app_socket, carrierctl, provision_with_apps, socket, until_routed};

/// How long a pair may take to go direct after it linked.
const DIRECT_WAIT: Duration = Duration::from_secs(15);

fn json(args: &[&str]) -> Value {
    serde_json::from_str(&carrierctl(args)).unwrap()
}

fn did(dir: &Path) -> String {
    json(&["status", "--socket", &socket(dir), "--json"])["did"].as_str().unwrap().to_owned()
}

/// The path of `from`'s link to `to`, if linked.
fn path(from: &Path, to: &str) -> Option<String> {
    let peers = json(&["peers", "--socket", &socket(from), "--json"]);
    let peer = peers.as_array()?.iter().find(|p| p["did"] == to)?.clone();
    peer["path"].as_str().map(str::to_owned)
}

/// Whether the devices behind `a` and `b` must end direct: unless both map
/// a new port per destination. One such NAT beside one that lets in only
/// the ports it has sent to is crossed by port guessing.
fn direct_possible(a: NatKind, b: NatKind) -> bool {
    !matches!((a, b), (NatKind::Symmetric, NatKind::Symmetric))
}

/// The `after_ms=` field of a log line.
fn after_ms(line: &str) -> u64 {
    let field = line.split("after_ms=").nth(1).unwrap_or("");
    field.split(|c: char| !c.is_ascii_digit()).next().and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// Whether a link between devices `x` and `y` must start relayed: unless
/// one of them can be reached directly (a full cone).
fn relayed_first(kinds: &[NatKind], x: usize, y: usize) -> bool {
    kinds[x] != NatKind::FullCone && kinds[y] != NatKind::FullCone
}

/// How a pair ended up linked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// Direct from the start (one side lets anyone in).
    Direct,
    /// Relayed first; a punched direct link replaced it this long after
    /// the relayed link came up (first contact), by hole punching or by
    /// port guessing.
    Punched(Duration, &'static str),
    /// Still through the relay.
    Relayed,
}

struct Outcome {
    kinds: (NatKind, NatKind),
    /// How long `carrierctl connect` took (next to nothing if the two were
    /// linked already, as devices that route for each other often are).
    connect: Duration,
    delivered: bool,
    path: Route,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pair_behind_any_two_nats_links_and_exchanges_a_message() {
    if let Some(reason) = lab::unavailable() {
        println!("nat lab skipped: {reason}");
        return;
    }
    // Two devices behind each kind, each behind a router of its own.
    let kinds: Vec<NatKind> = NatKind::ALL.iter().flat_map(|k| [*k, *k]).collect();
    let lab = Lab::new(&kinds).unwrap();
    let root = tempfile::tempdir().unwrap();
    let app_counts: Vec<usize> = std::iter::once(0).chain(kinds.iter().map(|_| 1)).collect();
    let (dirs, apps) = provision_with_apps(root.path(), 1 + kinds.len(), &app_counts);
    let relay_dir = add_relay(root.path(), &dirs);
    let public = lab.public();
    let bootstrap = Daemon::start_in(&public, &dirs[0], &format!("{BOOTSTRAP_IP}:{PORT}"), None, "");
    let relay = Daemon::start_in(&public, &relay_dir, &format!("{RELAY_IP}:{PORT}"), Some(&bootstrap.addr), "");
    let devices: Vec<Daemon> = (0..kinds.len())
        .map(|i| {
            let listen = format!("{}:{PORT}", lab.device_ip(i));
            Daemon::start_in(&lab.device(i), &dirs[i + 1], &listen, Some(&bootstrap.addr), "")
        })
        .collect();
    relay.wait_for("relay service status");
    for (i, device) in devices.iter().enumerate() {
        match kinds[i] {
            // Reachable from outside: probes confirm it, no relay needed.
            NatKind::FullCone => device.wait_for("address confirmed reachable from outside"),
            // Not reachable: it keeps a reservation on the relay.
            _ => device.wait_for("reachable through a relay at this address"),
        };
    }
    // Every device has joined: the bootstrap device routes to all of them
    // and the relay, so a lookup by DID finds each.
    until_routed(&dirs[0], kinds.len() + 1, Duration::from_secs(30));
    let device_dirs = &dirs[1..];
    let dids: Vec<String> = device_dirs.iter().map(|d| did(d)).collect();
    // `carrierctl status` says what the probes found.
    for (i, dir) in device_dirs.iter().enumerate() {
        let status = json(&["status", "--socket", &socket(dir), "--json"]);
        let want = if kinds[i] == NatKind::FullCone { "public" } else { "private" };
        assert_eq!(status["nat"], want, "device {i} behind {}: {status}", kinds[i].name());
        let circuit = status["listen"].to_string().contains("p2p-circuit");
        assert_eq!(circuit, want == "private", "device {i}: circuit addresses {}", status["listen"]);
        // The bootstrap device and the relay saw it at one port, or two.
        let mapping = if kinds[i] == NatKind::Symmetric { "endpoint-dependent" } else { "endpoint-independent" };
        assert_eq!(status["mapping"], mapping, "device {i} behind {}: {status}", kinds[i].name());
        assert_eq!(status["mapped"].as_str().unwrap().split(':').next(), Some(lab.router_ip(i).as_str()), "{status}");
    }
    let mut clients = Vec::new();
    for (i, dir) in device_dirs.iter().enumerate() {
        let identity = AppIdentity::load_or_create(&apps[i + 1][0]).unwrap();
        clients.push(Client::connect_as(identity, app_socket(dir)).await.unwrap());
    }
    let mut inboxes: Vec<_> = clients.iter().map(Client::messages).collect();
    let mut outcomes = Vec::new();
    for a in 0..NatKind::ALL.len() {
        for b in a..NatKind::ALL.len() {
            // The first device behind kind a, the second behind kind b.
            let (x, y) = (2 * a, 2 * b + 1);
            let started = Instant::now();
            carrierctl(&["connect", &dids[y], "--socket", &socket(&device_dirs[x])]);
            let linked = started.elapsed();
            let (sender, inbox) = (&clients[x], &mut inboxes[y]);
            let receipt = sender.submit(&clients[y].did(), b"across the NATs".to_vec()).await.unwrap();
            let delivered = tokio::time::timeout(Duration::from_secs(30), receipt).await.ok().and_then(Result::ok)
                == Some(Receipt::Delivered);
            let heard = tokio::time::timeout(Duration::from_secs(5), inbox.next()).await.ok().flatten();
            let delivered = delivered && heard.is_some_and(|m| m.payload == b"across the NATs");
            // Either end logs the switch, with the time since the relayed
            // link came up (first contact).
            let switched =
                |line: &str, other: &str| line.contains("direct link replaces the relayed one") && line.contains(other);
            let line = devices[x]
                .line_within(|l| switched(l, &dids[y]), DIRECT_WAIT)
                .or_else(|| devices[y].line_within(|l| switched(l, &dids[x]), Duration::ZERO));
            let path = match (line, path(&device_dirs[x], &dids[y]).as_deref()) {
                (Some(line), _) => {
                    // What port guessing did for the pair, if anything.
                    let mut how = "hole punch";
                    for (device, other) in [(&devices[x], &dids[y]), (&devices[y], &dids[x])] {
                        let guess = |l: &str| l.contains("port guess") && l.contains(other.as_str());
                        while let Some(line) = device.line_within(guess, Duration::ZERO) {
                            println!("{} ↔ {}: {line}", kinds[x].name(), kinds[y].name());
                            if line.contains("port guess hit") {
                                how = "port guess";
                            }
                        }
                    }
                    Route::Punched(Duration::from_millis(after_ms(&line)), how)
                }
                // Linked directly from the start: one side is reachable.
                (None, Some("direct")) if !relayed_first(&kinds, x, y) => Route::Direct,
                (None, Some("relayed")) => Route::Relayed,
                (None, other) => panic!("{x} ↔ {y}: link path {other:?}"),
            };
            if path == Route::Relayed && direct_possible(kinds[x], kinds[y]) {
                // Say why, for whoever reads the failure.
                for (i, device) in [(x, &devices[x]), (y, &devices[y])] {
                    while let Some(line) =
                        device.line_within(|l| l.contains("punch") || l.contains("port guess"), Duration::ZERO)
                    {
                        println!("device {i} ({}): {line}", kinds[i].name());
                    }
                }
            }
            outcomes.push(Outcome { kinds: (kinds[x], kinds[y]), connect: linked, delivered, path });
        }
    }
    print_matrix(&outcomes);
    for o in &outcomes {
        let (a, b) = (o.kinds.0.name(), o.kinds.1.name());
        assert!(o.delivered, "{a} ↔ {b}: no message exchanged");
        if direct_possible(o.kinds.0, o.kinds.1) {
            assert_ne!(o.path, Route::Relayed, "{a} ↔ {b}: a direct path is possible but the link stayed relayed");
        }
    }
    // Revoke a device with punched (direct) links and one with relayed
    // links: every other device cuts both kinds.
    let revoked = [2usize, 5];
    let (key, ledger) = (root.path().join("admin/registrar.key"), root.path().join("admin/ledger"));
    let (key, ledger) = (key.to_str().unwrap(), ledger.to_str().unwrap());
    for &i in &revoked {
        carrierctl(&["ledger", "revoke", "--ledger", ledger, "--key", key, &dids[i]]);
    }
    carrierctl(&["ledger", "publish", "--ledger", ledger, "--socket", &socket(&dirs[0])]);
    for (i, device) in devices.iter().enumerate().filter(|(i, _)| !revoked.contains(i)) {
        // Each revocation, by name: one may be logged twice (the ledger's
        // update is checked per DID and for every link).
        for &r in &revoked {
            let cut = |l: &str| l.contains("revoked: links closed") && l.contains(&dids[r]);
            device.line_within(cut, Duration::from_secs(30)).unwrap_or_else(|| panic!("device {i} never cut {r}"));
        }
        let peers = carrierctl(&["peers", "--socket", &socket(&device_dirs[i]), "--json"]);
        for &r in &revoked {
            assert!(!peers.contains(&dids[r]), "device {i} is still linked to revoked device {r}: {peers}");
        }
    }
    for daemon in devices.into_iter().chain([relay, bootstrap]) {
        assert!(daemon.terminate().success());
    }
}

fn print_matrix(outcomes: &[Outcome]) {
    println!("\nNAT lab: every pair linked by DID and exchanged a message");
    let header = ["A", "B", "connect ms", "message", "path", "to direct ms", "how"];
    println!(
        "{:<16} {:<16} {:>10} {:>8} {:>8} {:>16}  {}",
        header[0], header[1], header[2], header[3], header[4], header[5], header[6]
    );
    for o in outcomes {
        let (path, to_direct, how) = match o.path {
            Route::Direct => ("direct", "0 (no relay)".to_owned(), "-"),
            Route::Punched(after, how) => ("punched", after.as_millis().to_string(), how),
            Route::Relayed => ("relayed", "-".to_owned(), "-"),
        };
        let message = if o.delivered { "yes" } else { "NO" };
        let (a, b) = (o.kinds.0.name(), o.kinds.1.name());
        println!("{a:<16} {b:<16} {:>10} {message:>8} {path:>8} {to_direct:>16}  {how}", o.connect.as_millis());
    }
    let possible = outcomes.iter().filter(|o| direct_possible(o.kinds.0, o.kinds.1)).count();
    let direct = outcomes.iter().filter(|o| o.path != Route::Relayed).count();
    let mut punched: Vec<Duration> =
        outcomes.iter().filter_map(|o| if let Route::Punched(d, _) = o.path { Some(d) } else { None }).collect();
    punched.sort();
    let p50 = punched.get(punched.len().saturating_sub(1) / 2).map(|d| format!("{} ms", d.as_millis()));
    println!(
        "direct: {direct} of {} pairs, {possible} of which have a direct path; punched: {}, p50 from first contact to direct: {}",
        outcomes.len(),
        punched.len(),
        p50.unwrap_or_else(|| "-".into())
    );
}

/// Sends `word` on `stream` and waits for it to come back.
async fn round(stream: &mut carrier_sdk::AppStream, word: &[u8; 5]) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(word).await.unwrap();
    let mut back = [0u8; 5];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut back)).await.unwrap().unwrap();
    assert_eq!(&back, word);
}

/// A stream that began on a relayed link keeps working when a direct link
/// replaces it; if the direct link fails meanwhile, the relayed one is used
/// again; and the relayed link goes only once its stream has ended.
/// Hole punching is off here, and the port-restricted device's router drops
/// what it would send to the full-cone one, so the switch happens when the
/// test says: the block is lifted and that device dials the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_on_a_relayed_link_outlives_the_switch_to_a_direct_one() {
    if let Some(reason) = lab::unavailable() {
        println!("nat lab skipped: {reason}");
        return;
    }
    let kinds = [NatKind::FullCone, NatKind::PortRestricted];
    let lab = Lab::new(&kinds).unwrap();
    lab.block(1, &lab.router_ip(0)).unwrap();
    let root = tempfile::tempdir().unwrap();
    let (dirs, apps) = provision_with_apps(root.path(), 3, &[0, 1, 1]);
    let relay_dir = add_relay(root.path(), &dirs);
    let public = lab.public();
    let bootstrap = Daemon::start_in(&public, &dirs[0], &format!("{BOOTSTRAP_IP}:{PORT}"), None, "");
    let relay = Daemon::start_in(&public, &relay_dir, &format!("{RELAY_IP}:{PORT}"), Some(&bootstrap.addr), "");
    let no_punching = "[nat]\nhole_punching = false\n";
    let start = |i: usize| {
        let listen = format!("{}:{PORT}", lab.device_ip(i));
        Daemon::start_in(&lab.device(i), &dirs[i + 1], &listen, Some(&bootstrap.addr), no_punching)
    };
    let (open_side, behind) = (start(0), start(1));
    open_side.wait_for("address confirmed reachable from outside");
    let line = behind.wait_for("reachable through a relay at this address");
    let circuit = line.split("address=").nth(1).unwrap().split_whitespace().next().unwrap().to_owned();
    let (x_dir, y_dir) = (&dirs[1], &dirs[2]);
    let (x_did, y_did) = (did(x_dir), did(y_dir));

    // The full-cone device reaches the other only through the relay.
    carrierctl(&["connect", &y_did, "--addr", &circuit, "--socket", &socket(x_dir)]);
    assert_eq!(path(x_dir, &y_did).as_deref(), Some("relayed"));
    let x = Client::connect_as(AppIdentity::load_or_create(&apps[1][0]).unwrap(), app_socket(x_dir)).await.unwrap();
    let y = Client::connect_as(AppIdentity::load_or_create(&apps[2][0]).unwrap(), app_socket(y_dir)).await.unwrap();
    let mut listener = y.listen("echo", &carrier_sdk::AllowList::any_active()).await.unwrap();
    let echo = tokio::spawn(async move {
        while let Ok(mut stream) = listener.accept().await {
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = [0u8; 5];
                while stream.read_exact(&mut buf).await.is_ok() {
                    if stream.write_all(&buf).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let mut stream = x.open_stream(&y.did(), "echo").await.unwrap();
    round(&mut stream, b"hello").await;

    // The other side links directly: the relayed link is retired.
    lab.unblock(1).unwrap();
    let x_addr = format!("/ip4/{}/udp/{PORT}/quic-v1/noise", lab.router_ip(0));
    carrierctl(&["connect", &x_did, "--addr", &x_addr, "--socket", &socket(y_dir)]);
    let replaced = |l: &str| l.contains("direct link replaces the relayed one") && l.contains(&y_did);
    open_side.line_within(replaced, Duration::from_secs(10)).expect("the direct link did not replace the relayed one");
    assert_eq!(path(x_dir, &y_did).as_deref(), Some("direct"));
    // Past the grace, the stream on the relayed link still works.
    tokio::time::sleep(Duration::from_secs(7)).await;
    round(&mut stream, b"again").await;
    let peers = json(&["peers", "--socket", &socket(x_dir), "--json"]);
    let y_peer = peers.as_array().unwrap().iter().find(|p| p["did"] == y_did.as_str()).unwrap()["peer_id"].clone();
    let y_peer = y_peer.as_str().unwrap().to_owned();
    let closed = |l: &str| l.contains("one of the links to a peer closed") && l.contains(&y_peer);
    assert!(open_side.line_within(closed, Duration::ZERO).is_none(), "a link closed while its stream was open");
    // New streams take the direct link.
    let mut direct = x.open_stream(&y.did(), "echo").await.unwrap();
    round(&mut direct, b"fresh").await;
    drop(direct);

    // The direct path fails (the router drops it again) and its link times
    // out: the relayed link, still carrying its stream, is in use again.
    lab.block(1, &lab.router_ip(0)).unwrap();
    let stays = |l: &str| l.contains("the direct link went; the relayed one stays");
    open_side.line_within(stays, Duration::from_secs(60)).expect("the relayed link did not take over again");
    open_side.line_within(closed, Duration::ZERO).expect("the direct link's close was not logged");
    assert_eq!(path(x_dir, &y_did).as_deref(), Some("relayed"));
    round(&mut stream, b"still").await;
    let mut relayed = x.open_stream(&y.did(), "echo").await.unwrap();
    round(&mut relayed, b"relay").await;
    drop(relayed);

    // Direct once more; new streams take it, and once the old stream ends
    // the relayed link goes.
    lab.unblock(1).unwrap();
    carrierctl(&["connect", &x_did, "--addr", &x_addr, "--socket", &socket(y_dir)]);
    open_side
        .line_within(replaced, Duration::from_secs(10))
        .expect("the new direct link did not replace the relayed one");
    let mut direct = x.open_stream(&y.did(), "echo").await.unwrap();
    drop(stream);
    open_side.line_within(closed, Duration::from_secs(10)).expect("the relayed link stayed after its stream ended");
    assert_eq!(path(x_dir, &y_did).as_deref(), Some("direct"));
    round(&mut direct, b"third").await;
    echo.abort();
    for daemon in [open_side, behind, relay, bootstrap] {
        assert!(daemon.terminate().success());
    }
}
