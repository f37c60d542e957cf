//! `carrierctl status|peers|routes|connect|disconnect` and the client side of
//! `ledger publish`: one request to the running daemon over its control
//! socket, one response, printed as a table or JSON.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use carrier_daemon::ipc::control::Connection;
use carrier_daemon::paths::{CONTROL_SOCKET, Mode, Paths};
use carrier_proto::pb::{self, control_request::Request, control_response::Response};
use clap::Args;
use serde_json::json;

/// Which daemon to talk to.
#[derive(Args)]
pub(crate) struct Target {
    /// Control socket [default: $XDG_RUNTIME_DIR/carrier/control.sock, or
    /// /run/carrier/control.sock with --system].
    #[arg(long, value_name = "PATH", global = true)]
    socket: Option<PathBuf>,
    /// Talk to the system daemon.
    #[arg(long, global = true)]
    system: bool,
}

impl Target {
    /// The control socket given with `--socket`, if any.
    pub(crate) fn socket(&self) -> Option<&PathBuf> {
        self.socket.as_ref()
    }

    fn path(&self) -> anyhow::Result<PathBuf> {
        if let Some(path) = &self.socket {
            return Ok(path.clone());
        }
        let mode = if self.system { Mode::System } else { Mode::User };
        Ok(Paths::for_mode(mode)?.runtime_dir.join(CONTROL_SOCKET))
    }

    async fn connect(&self) -> anyhow::Result<Connection> {
        let path = self.path()?;
        let stream = tokio::net::UnixStream::connect(&path).await.map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                anyhow::anyhow!("carrierd is not running (no control socket at {})", path.display())
            }
            std::io::ErrorKind::PermissionDenied => anyhow::anyhow!(
                "{} belongs to another user; run carrierctl as the user that runs carrierd",
                path.display()
            ),
            _ => anyhow::Error::new(e).context(format!("cannot open {}", path.display())),
        })?;
        Ok(Connection::new(stream))
    }

    /// Sends one request and returns the response, or the daemon's error.
    pub(crate) fn request(&self, request: Request) -> anyhow::Result<Response> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(async {
            let mut connection = self.connect().await?;
            connection.write(&pb::ControlRequest { id: 1, request: Some(request) }).await?;
            let reply = tokio::time::timeout(Duration::from_secs(30), connection.read::<pb::ControlResponse>())
                .await
                .context("carrierd did not answer within 30 s")??;
            match reply.and_then(|r| r.response) {
                // The daemon refuses clients of other users by closing.
                None => bail!("carrierd closed the connection (is the control socket another user's?)"),
                Some(Response::Error(message)) => bail!("carrierd: {message}"),
                Some(response) => Ok(response),
            }
        })
    }
}

/// Prints every event the daemon reports until it stops or we are killed.
pub(crate) fn watch(target: &Target, as_json: bool) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let mut connection = target.connect().await?;
        connection.write(&pb::ControlRequest { id: 1, request: Some(Request::Watch(pb::WatchRequest {})) }).await?;
        while let Some(reply) = connection.read::<pb::ControlResponse>().await? {
            match reply.response {
                Some(Response::Event(e)) if as_json => {
                    println!("{}", json!({ "kind": e.kind, "did": e.did, "height": e.height }))
                }
                Some(Response::Event(e)) if e.kind == "ledger" => println!("ledger  height {}", e.height),
                Some(Response::Event(e)) => println!("{:<9} {}", e.kind, e.did),
                Some(Response::Error(message)) => bail!("carrierd: {message}"),
                _ => {}
            }
        }
        println!("carrierd closed the connection");
        Ok(())
    })
}

pub(crate) fn counters(target: &Target, as_json: bool) -> anyhow::Result<()> {
    let Response::Counters(c) = target.request(Request::Counters(pb::CountersRequest {}))? else {
        bail!("unexpected reply")
    };
    let mut values: Vec<(String, u64)> = c.values.into_iter().collect();
    values.sort();
    if as_json {
        println!("{}", json!(values.into_iter().collect::<std::collections::BTreeMap<_, _>>()));
        return Ok(());
    }
    let rows: Vec<[String; 2]> = values.into_iter().map(|(name, value)| [name, value.to_string()]).collect();
    crate::render::table(["COUNTER", "VALUE"], &rows);
    Ok(())
}

pub(crate) fn status(target: &Target, as_json: bool) -> anyhow::Result<()> {
    let Response::Status(s) = target.request(Request::Status(pb::StatusRequest {}))? else { bail!("unexpected reply") };
    let (height, root) = s.head.map(|h| (h.height, hex(&h.root))).unwrap_or_default();
    if as_json {
        let value = json!({
            "did": s.did, "network": s.network, "network_id": s.network_id, "uptime_ms": s.uptime_ms,
            "listen": s.listen_addrs, "ledger": { "height": height, "root": root, "checkpoint": s.checkpoint, "sequencer": s.sequencer, "frozen": !s.alarm.is_empty(), "checkpoint_age_s": s.checkpoint_age_s, "checkpoint_stale": s.checkpoint_stale, "broken_promises": s.broken_promises },
            "registered": s.registered,
            "peers": s.peers, "routes": s.routes, "alarm": s.alarm, "apps": s.apps,
            "nat": s.nat, "mapping": s.mapping, "mapped": s.mapped,
            "probed": s.probed.iter().map(|p| json!({ "addr": p.addr, "reachable": p.reachable, "by": p.by, "detail": p.detail, "age_ms": p.age_ms })).collect::<Vec<_>>(),
        });
        println!("{value}");
        return Ok(());
    }
    let waiting = if s.registered { "" } else { " (waiting for registration)" };
    println!("did:      {}{waiting}", s.did);
    println!("network:  {} ({})", s.network, s.network_id);
    println!("uptime:   {}", humantime::format_duration(Duration::from_secs(s.uptime_ms / 1000)));
    let (relayed, direct): (Vec<&String>, Vec<&String>) =
        s.listen_addrs.iter().partition(|a| a.contains("/p2p-circuit"));
    println!("listen:   {}", direct.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(", "));
    for addr in relayed {
        println!("relayed:  {addr}");
    }
    let sequencing = if s.sequencer { " (this daemon sequences it)" } else { "" };
    println!("ledger:   {height} entries, Merkle root {root}{sequencing}");
    println!("peers:    {}", s.peers);
    println!("routes:   {}", s.routes);
    println!("nat:      {}", s.nat);
    match s.mapping.as_str() {
        "endpoint-independent" => println!("mapping:  one port for every peer, seen at {}", s.mapped),
        "endpoint-dependent" => println!("mapping:  a new port per peer (symmetric NAT) at {}", s.mapped),
        _ => println!("mapping:  unknown (no peer has said where it sees us)"),
    }
    for p in &s.probed {
        let age = humantime::format_duration(Duration::from_secs(p.age_ms / 1000));
        match p.reachable {
            true => println!("          {} reachable (dialed back by {}, {age} ago)", p.addr, p.by),
            false => println!("          {} not reachable: {} ({age} ago)", p.addr, p.detail),
        }
    }
    println!("apps:     {} connected", s.apps.len());
    for app in &s.apps {
        println!("          {app}");
    }
    for line in &s.broken_promises {
        println!("BROKEN:   the sequencer broke a promise: {line} (evidence in the ledger directory)");
    }
    if s.checkpoint_stale {
        println!(
            "STALE:    no fresh checkpoint for {} (the sequencer may be gone)",
            humantime::format_duration(Duration::from_secs(s.checkpoint_age_s))
        );
    }
    if !s.alarm.is_empty() {
        println!("ALARM:    {}", s.alarm);
    }
    Ok(())
}

pub(crate) fn peers(target: &Target, as_json: bool) -> anyhow::Result<()> {
    let Response::Peers(p) = target.request(Request::Peers(pb::PeersRequest {}))? else { bail!("unexpected reply") };
    if as_json {
        let list: Vec<_> = p
            .peers
            .iter()
            .map(|p| json!({ "did": p.did, "peer_id": p.peer_id, "addr": p.addr, "path": p.path, "rtt_us": p.rtt_us, "connected_ms": p.connected_ms, "bytes_in": p.bytes_in, "bytes_out": p.bytes_out }))
            .collect();
        println!("{}", serde_json::Value::Array(list));
        return Ok(());
    }
    let rows: Vec<[String; 7]> = p
        .peers
        .iter()
        .map(|p| {
            let rtt = if p.rtt_us == 0 { "-".into() } else { format!("{:.1} ms", p.rtt_us as f64 / 1e3) };
            let since = humantime::format_duration(Duration::from_secs(p.connected_ms / 1000)).to_string();
            [p.did.clone(), p.addr.clone(), p.path.clone(), rtt, since, p.bytes_in.to_string(), p.bytes_out.to_string()]
        })
        .collect();
    crate::render::table(["DID", "ADDRESS", "PATH", "RTT", "CONNECTED", "BYTES IN", "BYTES OUT"], &rows);
    Ok(())
}

pub(crate) fn routes(target: &Target, as_json: bool) -> anyhow::Result<()> {
    let Response::Routes(r) = target.request(Request::Routes(pb::RoutesRequest {}))? else { bail!("unexpected reply") };
    if as_json {
        let list: Vec<_> =
            r.routes.iter().map(|r| json!({ "peer_id": r.peer_id, "did": r.did, "addrs": r.addrs })).collect();
        println!("{}", serde_json::Value::Array(list));
        return Ok(());
    }
    let rows: Vec<[String; 3]> =
        r.routes.iter().map(|r| [r.did.clone(), r.peer_id.clone(), r.addrs.join(" ")]).collect();
    crate::render::table(["DID", "PEER ID", "ADDRESSES"], &rows);
    Ok(())
}

pub(crate) fn connect(target: &Target, did: &str, addr: Option<String>) -> anyhow::Result<()> {
    let via = addr.as_ref().map(|a| format!(" at {a}")).unwrap_or_default();
    target.request(Request::Connect(pb::ConnectRequest { did: did.into(), addr: addr.unwrap_or_default() }))?;
    println!("linked to {did}{via}");
    Ok(())
}

pub(crate) fn disconnect(target: &Target, did: &str) -> anyhow::Result<()> {
    target.request(Request::Disconnect(pb::DisconnectRequest { did: did.into() }))?;
    println!("disconnected from {did}");
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
