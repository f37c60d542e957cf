//! A NAT lab in Linux network namespaces: a "public" segment, and devices
//! each behind a router of its own that does NAT with nftables.
//!
//! ```text
//!                 public segment (198.51.100.0/24, TEST-NET-2), one bridge
//!        bootstrap .2 ─┐   relay .3 ─┐      (both in the public namespace)
//!                      └──── br ─────┴──── router 1 (.11) ─ 10.0.1.0/24 ─ device 1
//!                                 └─────── router 2 (.12) ─ 10.0.2.0/24 ─ device 2 …
//! ```
//!
//! Only addresses assigned inside these namespaces are used: the public
//! side is in a documentation range, the private sides in 10/8, and no
//! namespace has a route to anywhere else. Everything is deleted when the
//! [`Lab`] is dropped.

#![allow(dead_code)]

use std::process::Command;

/// How a router maps and filters UDP (RFC 4787 terms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NatKind {
    /// Endpoint-independent mapping and filtering ("full cone"): the
    /// device's port is mapped to the same port for every destination, and
    /// anyone may send to it.
    FullCone,
    /// Endpoint-independent mapping, address- and port-dependent filtering
    /// ("port-restricted cone", what most home routers do): only a peer the
    /// device has sent to may answer.
    PortRestricted,
    /// A new random port for every destination, and the same filtering.
    Symmetric,
}

impl NatKind {
    pub(crate) const ALL: [NatKind; 3] = [NatKind::FullCone, NatKind::PortRestricted, NatKind::Symmetric];

    pub(crate) fn name(self) -> &'static str {
        match self {
            NatKind::FullCone => "full-cone",
            NatKind::PortRestricted => "port-restricted",
            NatKind::Symmetric => "symmetric",
        }
    }

    /// The router's nftables ruleset: `wan` faces the public segment,
    /// `device` is the one device behind it, listening on `port`.
    ///
    /// Unsolicited packets to the router itself are dropped in `input`:
    /// a dropped packet's conntrack entry is never confirmed, so a peer's
    /// punch that arrives before ours does not take the mapping our own
    /// packets need (Linux would otherwise move us to another port, and
    /// the mapping would not be endpoint-independent).
    fn ruleset(self, wan: &str, device: &str, port: u16) -> String {
        let masquerade = match self {
            NatKind::Symmetric => "masquerade fully-random",
            _ => "masquerade",
        };
        let (forward, inbound) = match self {
            NatKind::FullCone => (
                format!("iifname \"{wan}\" udp dport {port} dnat to {device}"),
                format!("iifname \"{wan}\" ip daddr {device} udp dport {port} accept"),
            ),
            _ => (String::new(), String::new()),
        };
        format!(
            "table ip lab {{
  chain lab_pre {{
    type nat hook prerouting priority dstnat;
    {forward}
  }}
  chain lab_post {{
    type nat hook postrouting priority srcnat;
    oifname \"{wan}\" {masquerade}
  }}
  chain lab_input {{
    type filter hook input priority filter; policy drop;
    ct state established,related accept
    iifname != \"{wan}\" accept
  }}
  chain lab_forward {{
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    iifname != \"{wan}\" accept
    {inbound}
  }}
}}
"
        )
    }
}

/// The public segment's prefix.
pub(crate) const PUBLIC_NET: &str = "198.51.100";
/// Where the bootstrap device listens.
pub(crate) const BOOTSTRAP_IP: &str = "198.51.100.2";
/// Where the relay listens.
pub(crate) const RELAY_IP: &str = "198.51.100.3";
/// The port every device listens on.
pub(crate) const PORT: u16 = 7640;

/// The namespaces of one lab; deleted on drop.
pub(crate) struct Lab {
    prefix: String,
    namespaces: Vec<String>,
    /// The NAT in front of each device.
    pub(crate) kinds: Vec<NatKind>,
}

/// Why the lab cannot run here, if it cannot.
pub(crate) fn unavailable() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    if uid.as_deref() != Some("0") {
        return Some("needs root (network namespaces and nftables)".into());
    }
    for (tool, args) in [("ip", ["-V"]), ("nft", ["--version"])] {
        if !Command::new(tool).args(args).output().is_ok_and(|o| o.status.success()) {
            return Some(format!("`{tool}` is not installed (apt-get install iproute2 nftables)"));
        }
    }
    let probe = format!("carrier-lab-probe-{}", std::process::id());
    match run("ip", &["netns", "add", &probe]) {
        Ok(()) => {
            let _ = run("ip", &["netns", "del", &probe]);
            None
        }
        Err(e) => Some(format!("cannot make network namespaces here: {e}")),
    }
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program).args(args).output().map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{program} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

fn nft(netns: &str, ruleset: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["netns", "exec", netns, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("nft: {e}"))?;
    child.stdin.take().ok_or("nft: no stdin")?.write_all(ruleset.as_bytes()).map_err(|e| format!("nft: {e}"))?;
    let out = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
    if out.status.success() { Ok(()) } else { Err(format!("nft: {}\n{ruleset}", String::from_utf8_lossy(&out.stderr))) }
}

impl Lab {
    /// A public segment with the bootstrap and relay addresses, and one
    /// device namespace behind a router of `kinds[i]` for each `i`.
    pub(crate) fn new(kinds: &[NatKind]) -> Result<Self, String> {
        // Unique per lab: tests in one process (`cargo test`) run at once.
        static LABS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = LABS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let prefix = format!("cl{}x{n}", std::process::id() % 100_000);
        let mut lab = Lab { prefix, namespaces: Vec::new(), kinds: kinds.to_vec() };
        let public = lab.public();
        lab.add_namespace(&public)?;
        let ns = |name: &str| ["-n", name].map(str::to_owned);
        let ip = |netns: &str, args: &[&str]| {
            let mut all: Vec<String> = ns(netns).to_vec();
            all.extend(args.iter().map(|a| (*a).to_owned()));
            run("ip", &all.iter().map(String::as_str).collect::<Vec<_>>())
        };
        ip(&public, &["link", "add", "name", "br0", "type", "bridge"])?;
        ip(&public, &["link", "set", "br0", "up"])?;
        for addr in [BOOTSTRAP_IP, RELAY_IP] {
            ip(&public, &["addr", "add", &format!("{addr}/24"), "dev", "br0"])?;
        }
        for (i, kind) in kinds.iter().enumerate() {
            let n = i + 1;
            let (router, device) = (lab.router(i), lab.device(i));
            lab.add_namespace(&router)?;
            lab.add_namespace(&device)?;
            // WAN: router ⇄ public bridge.
            let (wan, port) = (format!("w{n}"), format!("p{n}"));
            run(
                "ip",
                &["link", "add", &wan, "netns", &router, "type", "veth", "peer", "name", &port, "netns", &public],
            )?;
            ip(&public, &["link", "set", &port, "master", "br0", "up"])?;
            ip(&router, &["addr", "add", &format!("{}/24", lab.router_ip(i)), "dev", &wan])?;
            ip(&router, &["link", "set", &wan, "up"])?;
            // LAN: router ⇄ device.
            let (lan, dev) = (format!("l{n}"), format!("d{n}"));
            run(
                "ip",
                &["link", "add", &lan, "netns", &router, "type", "veth", "peer", "name", &dev, "netns", &device],
            )?;
            ip(&router, &["addr", "add", &format!("10.0.{n}.1/24"), "dev", &lan])?;
            ip(&router, &["link", "set", &lan, "up"])?;
            ip(&device, &["addr", "add", &format!("10.0.{n}.2/24"), "dev", &dev])?;
            ip(&device, &["link", "set", &dev, "up"])?;
            ip(&device, &["route", "add", "default", "via", &format!("10.0.{n}.1")])?;
            run("ip", &["netns", "exec", &router, "sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
            nft(&router, &kind.ruleset(&wan, &lab.device_ip(i), PORT))?;
        }
        Ok(lab)
    }

    /// Drops, at device `i`'s router, everything it would forward to `ip`
    /// (until [`unblock`](Self::unblock)): a path that is not there yet.
    pub(crate) fn block(&self, i: usize, ip: &str) -> Result<(), String> {
        let ruleset = format!(
            "table ip lab_block {{\n  chain lab_block_forward {{\n    type filter hook forward priority -10;\n    ip daddr {ip} drop\n  }}\n}}\n"
        );
        nft(&self.router(i), &ruleset)
    }

    /// Lifts [`block`](Self::block).
    pub(crate) fn unblock(&self, i: usize) -> Result<(), String> {
        nft(&self.router(i), "delete table ip lab_block\n")
    }

    fn add_namespace(&mut self, name: &str) -> Result<(), String> {
        run("ip", &["netns", "add", name])?;
        self.namespaces.push(name.to_owned());
        run("ip", &["-n", name, "link", "set", "lo", "up"])
    }

    /// The public segment's namespace (bootstrap and relay run here).
    pub(crate) fn public(&self) -> String {
        format!("{}-pub", self.prefix)
    }

    fn router(&self, i: usize) -> String {
        format!("{}-r{}", self.prefix, i + 1)
    }

    /// Device `i`'s namespace.
    pub(crate) fn device(&self, i: usize) -> String {
        format!("{}-d{}", self.prefix, i + 1)
    }

    /// The public address of device `i`'s router.
    pub(crate) fn router_ip(&self, i: usize) -> String {
        format!("{PUBLIC_NET}.{}", 11 + i)
    }

    /// Device `i`'s own (private) address.
    pub(crate) fn device_ip(&self, i: usize) -> String {
        format!("10.0.{}.2", i + 1)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for name in self.namespaces.iter().rev() {
            let _ = run("ip", &["netns", "del", name]);
        }
    }
}
