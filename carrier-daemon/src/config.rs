//! The daemon's configuration: one TOML file whose every key is optional
//! and has a documented default. An unknown key or a bad value stops
//! start-up with an error that names the key.
//!
//! ```toml
//! listen = "0.0.0.0:7640"             # UDP address for links
//! bootstrap = ["/ip4/192.0.2.1/udp/7640/quic-v1/noise"]
//! data_dir = "/var/lib/carrier"      # default: per mode, see paths.rs
//! runtime_dir = "/run/carrier"        # control socket; default: per mode
//!
//! [limits]
//! handshake_timeout_ms = 5000
//! max_handshakes = 256
//! max_handshakes_per_ip = 16
//! handshakes_per_ip_per_s = 8
//! max_links = 512
//!
//! [messaging]
//! max_message_bytes = 1048576         # largest message; bigger data goes over streams
//! default_ttl_s = 604800              # how long a message is retried (7 days)
//! max_outbox_messages = 16384         # per sending app, waiting for delivery
//! max_outbox_bytes = 67108864         # the same, in bytes (256 charged per message)
//! max_inbox_messages = 16384          # per local app, waiting for it to take them
//! max_inbox_bytes = 33554432          # the same, in bytes (one sending app: a quarter)
//! mailbox_blobs_per_recipient = 4096  # kept for one offline device, as a mailbox node
//! mailbox_bytes_per_recipient = 16777216  # the same, in bytes (one depositor: a quarter)
//! mailbox_blobs_per_sender = 16384    # kept from one depositing device
//! mailbox_bytes_per_sender = 67108864     # the same, in bytes
//! in_memory = false                   # benchmarks only: the message store in memory
//!
//! [log]
//! level = "info"                      # a tracing filter, e.g. "carrier_daemon=debug"
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use libp2p::Multiaddr;
use serde::Deserialize;

use crate::link::LinkLimits;
use crate::overlay::relay::RelayLimits;
use crate::overlay::reservations::ReservationPolicy;
use crate::overlay::transport::parse_addr;

/// UDP port a daemon listens on unless told otherwise.
pub const DEFAULT_PORT: u16 = 7640;

/// The highest `messaging.max_message_bytes` accepted: bigger data belongs
/// on a stream.
pub const MAX_MESSAGE_LIMIT: usize = 64 << 20;

/// Why the configuration was refused.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this configuration (unknown key,
    /// wrong type, bad address); the message names the key and line.
    #[error("config {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What and where.
        message: String,
    },
    /// A value parsed but makes no sense.
    #[error("config {path}: {key}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// UDP address links listen on.
    pub listen: SocketAddr,
    /// Peers to join the network through.
    pub bootstrap: Vec<String>,
    /// Where the identity and ledger live; default depends on the mode.
    pub data_dir: Option<PathBuf>,
    /// Where the control socket lives; default depends on the mode.
    pub runtime_dir: Option<PathBuf>,
    /// Resource limits.
    pub limits: Limits,
    /// App messaging.
    pub messaging: Messaging,
    /// The ledger.
    pub ledger: LedgerConfig,
    /// Devices behind NAT, and relaying for them.
    pub nat: Nat,
    /// Logging.
    pub log: Log,
}

/// `[nat]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Nat {
    /// When to keep reservations on relays: "auto" (once probes say no
    /// address of ours is reachable), "always" or "never".
    pub reservations: String,
    /// Punch direct paths over relayed links (DCUtR, and port guessing
    /// behind a NAT that maps a new port per destination); off, relayed
    /// links stay relayed.
    pub hole_punching: bool,
    /// Reservations a relay holds at once (only devices whose ledger role
    /// is "relay" serve circuits).
    pub relay_max_reservations: usize,
    /// Circuits a relay carries at once.
    pub relay_max_circuits: usize,
    /// Circuits one device may have open through a relay.
    pub relay_max_circuits_per_peer: usize,
    /// How long one circuit may stay up, in seconds.
    pub relay_max_circuit_duration_s: u64,
    /// How many bytes one circuit may carry each way.
    pub relay_max_circuit_bytes: u64,
}

impl Default for Nat {
    fn default() -> Self {
        let relay = RelayLimits::default();
        Self {
            reservations: "auto".into(),
            hole_punching: true,
            relay_max_reservations: relay.max_reservations,
            relay_max_circuits: relay.max_circuits,
            relay_max_circuits_per_peer: relay.max_circuits_per_peer,
            relay_max_circuit_duration_s: relay.max_circuit_duration.as_secs(),
            relay_max_circuit_bytes: relay.max_circuit_bytes,
        }
    }
}

/// `[ledger]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerConfig {
    /// The network's log key file: set on exactly one daemon, which then
    /// sequences every request and signs checkpoints. Never set it while
    /// the admin's ledger directory sequences too.
    pub sequencer_key: Option<PathBuf>,
    /// A witness key file (`carrierctl keygen --kind witness`): the daemon
    /// then cosigns the network's checkpoints that extend what it cosigned
    /// before. The genesis must name the key, and the ledger must give this
    /// device the role `witness`, for its cosignatures to count.
    pub witness_key: Option<PathBuf>,
    /// The sequencer dates its checkpoint anew this often while nothing
    /// changes (witnesses cosign the new date), so a quiet log can be told
    /// from a frozen one.
    pub fresh_checkpoint_s: u64,
    /// A daemon whose newest checkpoint is older than this warns (log,
    /// `carrierctl status`, the `ledger_checkpoint_stale` counter).
    pub stale_checkpoint_s: u64,
    /// As the sequencer: the deadline its signed promises give, in seconds
    /// (1 to 60): the checkpoint that shows a sequenced request must be
    /// dated no later than this after the request came.
    pub promise_deadline_s: u64,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        Self {
            sequencer_key: None,
            witness_key: None,
            fresh_checkpoint_s: 600,
            stale_checkpoint_s: 3600,
            promise_deadline_s: 60,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)),
            bootstrap: Vec::new(),
            data_dir: None,
            runtime_dir: None,
            limits: Limits::default(),
            messaging: Messaging::default(),
            ledger: LedgerConfig::default(),
            nat: Nat::default(),
            log: Log::default(),
        }
    }
}

/// `[limits]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// How long a link handshake may take.
    pub handshake_timeout_ms: u64,
    /// Handshakes in flight at once.
    pub max_handshakes: usize,
    /// Handshakes in flight at once from one IP address.
    pub max_handshakes_per_ip: usize,
    /// New handshakes one IP address may start per second, on average.
    pub handshakes_per_ip_per_s: u32,
    /// Links at once.
    pub max_links: u32,
}

impl Default for Limits {
    fn default() -> Self {
        let link = LinkLimits::default();
        Self {
            handshake_timeout_ms: link.handshake_timeout.as_millis() as u64,
            max_handshakes: link.max_handshakes,
            max_handshakes_per_ip: link.max_handshakes_per_ip,
            handshakes_per_ip_per_s: link.handshakes_per_ip_per_s,
            max_links: 512,
        }
    }
}

/// `[messaging]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Messaging {
    /// Largest message payload this daemon carries or accepts.
    pub max_message_bytes: usize,
    /// Seconds a message is retried when its app names no time to live.
    pub default_ttl_s: u64,
    /// Messages one sending app may have waiting for delivery.
    pub max_outbox_messages: usize,
    /// Bytes (256 per message on top of its payload) one sending app may
    /// have waiting for delivery.
    pub max_outbox_bytes: usize,
    /// Messages held for one local app until it takes them.
    pub max_inbox_messages: usize,
    /// Bytes held for one local app until it takes them.
    pub max_inbox_bytes: usize,
    /// Sealed blobs kept, as a mailbox node, for one offline device.
    pub mailbox_blobs_per_recipient: usize,
    /// Bytes of sealed blobs kept, as a mailbox node, for one offline device.
    pub mailbox_bytes_per_recipient: usize,
    /// Sealed blobs kept from one depositing device.
    pub mailbox_blobs_per_sender: usize,
    /// Bytes of sealed blobs kept from one depositing device.
    pub mailbox_bytes_per_sender: usize,
    /// Keeps the message store in memory: nothing survives a restart. For
    /// benchmarks that compare with the durable store; never in service.
    pub in_memory: bool,
}

impl Default for Messaging {
    fn default() -> Self {
        Self {
            max_message_bytes: crate::delivery::DEFAULT_MAX_MESSAGE,
            default_ttl_s: crate::delivery::DEFAULT_TTL.as_secs(),
            max_outbox_messages: crate::delivery::DEFAULT_MAX_OUTBOX_MESSAGES,
            max_outbox_bytes: crate::delivery::DEFAULT_MAX_OUTBOX_BYTES,
            max_inbox_messages: crate::delivery::DEFAULT_MAX_INBOX_MESSAGES,
            max_inbox_bytes: crate::delivery::DEFAULT_MAX_INBOX_BYTES,
            mailbox_blobs_per_recipient: crate::delivery::DEFAULT_MAILBOX_BLOBS_PER_RECIPIENT,
            mailbox_bytes_per_recipient: crate::delivery::DEFAULT_MAILBOX_BYTES_PER_RECIPIENT,
            mailbox_blobs_per_sender: crate::delivery::DEFAULT_MAILBOX_BLOBS_PER_SENDER,
            mailbox_bytes_per_sender: crate::delivery::DEFAULT_MAILBOX_BYTES_PER_SENDER,
            in_memory: false,
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// A `tracing` filter (`RUST_LOG` syntax); `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for Log {
    fn default() -> Self {
        Self { level: "info".into() }
    }
}

impl Config {
    /// Reads `path`. A missing file gives the defaults when `optional`.
    pub fn load(path: &Path, optional: bool) -> Result<Self, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(path, &text),
            Err(e) if optional && e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(ConfigError::Read { path: path.to_owned(), source }),
        }
    }

    /// Parses and checks configuration text read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let config: Config =
            toml::from_str(text).map_err(|e| ConfigError::Parse { path: path.to_owned(), message: e.to_string() })?;
        let invalid =
            |key: String, reason: &str| ConfigError::Invalid { path: path.to_owned(), key, reason: reason.into() };
        config.bootstrap_addrs().map_err(|(i, reason)| invalid(format!("bootstrap[{i}]"), reason))?;
        if config.limits.handshake_timeout_ms == 0 {
            return Err(invalid("limits.handshake_timeout_ms".into(), "must be more than 0"));
        }
        let limits = &config.limits;
        if limits.max_handshakes == 0
            || limits.max_handshakes_per_ip == 0
            || limits.handshakes_per_ip_per_s == 0
            || limits.max_links == 0
        {
            return Err(invalid("limits".into(), "limits must be more than 0"));
        }
        if !(1..=MAX_MESSAGE_LIMIT).contains(&config.messaging.max_message_bytes) {
            return Err(invalid("messaging.max_message_bytes".into(), "must be from 1 to 67108864 (64 MiB)"));
        }
        let messaging = &config.messaging;
        if !(1..=crate::delivery::MAX_TTL.as_secs()).contains(&messaging.default_ttl_s) {
            return Err(invalid("messaging.default_ttl_s".into(), "must be from 1 to 2592000 (30 days)"));
        }
        // Room for at least one message of the largest size, with its
        // overhead, in every byte quota (a sending app's share included).
        let one = crate::delivery::quota_cost(messaging.max_message_bytes);
        if messaging.max_outbox_bytes < one || messaging.max_inbox_bytes < one {
            return Err(invalid(
                "messaging".into(),
                "max_outbox_bytes and max_inbox_bytes must be at least max_message_bytes + 256",
            ));
        }
        let counts = [
            messaging.max_outbox_messages,
            messaging.max_inbox_messages,
            messaging.mailbox_blobs_per_recipient,
            messaging.mailbox_blobs_per_sender,
        ];
        if counts.contains(&0) {
            return Err(invalid("messaging".into(), "message and blob counts must be more than 0"));
        }
        config.reservation_policy().map_err(|reason| invalid("nat.reservations".into(), &reason))?;
        let nat = &config.nat;
        if nat.relay_max_reservations == 0
            || nat.relay_max_circuits == 0
            || nat.relay_max_circuits_per_peer == 0
            || nat.relay_max_circuit_duration_s == 0
            || nat.relay_max_circuit_bytes == 0
        {
            return Err(invalid("nat".into(), "relay limits must be more than 0"));
        }
        if !(1..=60).contains(&config.ledger.promise_deadline_s) {
            return Err(invalid("ledger.promise_deadline_s".into(), "must be from 1 to 60"));
        }
        tracing_subscriber::EnvFilter::try_new(&config.log.level)
            .map_err(|_| invalid("log.level".into(), "not a log filter (try \"info\" or \"carrier_daemon=debug\")"))?;
        Ok(config)
    }

    /// The bootstrap addresses, checked to be Carrier link addresses.
    pub fn bootstrap_addrs(&self) -> Result<Vec<Multiaddr>, (usize, &'static str)> {
        self.bootstrap
            .iter()
            .enumerate()
            .map(|(i, text)| {
                let addr: Multiaddr = text.parse().map_err(|_| (i, "not a multiaddr"))?;
                parse_addr(&addr).ok_or((i, "not a Carrier address (/ip4/…/udp/…/quic-v1/noise)"))?;
                Ok(addr)
            })
            .collect()
    }

    /// The messaging settings this configuration asks for, with the store
    /// at `store` (`None`, or `in_memory` set: in memory).
    pub fn messaging_config(&self, store: Option<PathBuf>) -> crate::delivery::MessagingConfig {
        let store = store.filter(|_| !self.messaging.in_memory);
        crate::delivery::MessagingConfig {
            max_message: self.messaging.max_message_bytes,
            default_ttl: Duration::from_secs(self.messaging.default_ttl_s),
            max_outbox_messages: self.messaging.max_outbox_messages,
            max_outbox_bytes: self.messaging.max_outbox_bytes,
            max_inbox_messages: self.messaging.max_inbox_messages,
            max_inbox_bytes: self.messaging.max_inbox_bytes,
            mailbox_blobs_per_recipient: self.messaging.mailbox_blobs_per_recipient,
            mailbox_bytes_per_recipient: self.messaging.mailbox_bytes_per_recipient,
            mailbox_blobs_per_sender: self.messaging.mailbox_blobs_per_sender,
            mailbox_bytes_per_sender: self.messaging.mailbox_bytes_per_sender,
            store,
        }
    }

    /// When to keep relay reservations.
    pub fn reservation_policy(&self) -> Result<ReservationPolicy, String> {
        self.nat.reservations.parse()
    }

    /// What this device grants as a relay, if its ledger role is "relay".
    pub fn relay_limits(&self) -> RelayLimits {
        RelayLimits {
            max_reservations: self.nat.relay_max_reservations,
            max_circuits: self.nat.relay_max_circuits,
            max_circuits_per_peer: self.nat.relay_max_circuits_per_peer,
            max_circuit_duration: Duration::from_secs(self.nat.relay_max_circuit_duration_s),
            max_circuit_bytes: self.nat.relay_max_circuit_bytes,
            ..RelayLimits::default()
        }
    }

    /// The link limits this configuration asks for.
    pub fn link_limits(&self) -> LinkLimits {
        LinkLimits {
            handshake_timeout: Duration::from_millis(self.limits.handshake_timeout_ms),
            max_handshakes: self.limits.max_handshakes,
            max_handshakes_per_ip: self.limits.max_handshakes_per_ip,
            handshakes_per_ip_per_s: self.limits.handshakes_per_ip_per_s,
            ..LinkLimits::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("test.toml"), text)
    }

    #[test]
    fn empty_file_gives_defaults() {
        let config = parse("").unwrap();
        assert_eq!(config.listen.port(), DEFAULT_PORT);
        assert!(config.bootstrap.is_empty());
        assert_eq!(config.limits.max_handshakes_per_ip, LinkLimits::default().max_handshakes_per_ip);
    }

    #[test]
    fn reads_every_key() {
        let config = parse(
            r#"
            listen = "127.0.0.1:9000"
            bootstrap = ["/ip4/127.0.0.1/udp/9001/quic-v1/noise"]
            data_dir = "/tmp/carrier"
            [limits]
            handshake_timeout_ms = 1500
            max_handshakes = 10
            max_handshakes_per_ip = 2
            max_links = 20
            [messaging]
            max_message_bytes = 4096
            [nat]
            reservations = "always"
            relay_max_circuits = 3
            [log]
            level = "debug"
            "#,
        )
        .unwrap();
        assert_eq!(config.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(config.bootstrap_addrs().unwrap().len(), 1);
        assert_eq!(config.link_limits().handshake_timeout, Duration::from_millis(1500));
        assert_eq!(config.limits.max_links, 20);
        assert_eq!(config.messaging_config(None).max_message, 4096);
        assert_eq!(config.data_dir, Some(PathBuf::from("/tmp/carrier")));
        assert_eq!(config.reservation_policy(), Ok(ReservationPolicy::Always));
        assert_eq!(config.relay_limits().max_circuits, 3);
    }

    #[test]
    fn rejects_unknown_keys_by_name() {
        let err = parse("lisen = \"127.0.0.1:1\"").unwrap_err().to_string();
        assert!(err.contains("lisen"), "{err}");
        let err = parse("[limits]\nmax_peers = 3").unwrap_err().to_string();
        assert!(err.contains("max_peers"), "{err}");
    }

    #[test]
    fn rejects_bad_values_by_name() {
        let err = parse("listen = \"nowhere\"").unwrap_err().to_string();
        assert!(err.contains("listen"), "{err}");
        let err = parse("bootstrap = [\"/ip4/1.2.3.4/tcp/1\"]").unwrap_err().to_string();
        assert!(err.contains("bootstrap[0]") && err.contains("Carrier address"), "{err}");
        let err = parse("[limits]\nhandshake_timeout_ms = 0").unwrap_err().to_string();
        assert!(err.contains("limits.handshake_timeout_ms"), "{err}");
        let err = parse("[limits]\nmax_links = -1").unwrap_err().to_string();
        assert!(err.contains("max_links"), "{err}");
        let err = parse("[messaging]\nmax_message_bytes = 0").unwrap_err().to_string();
        assert!(err.contains("messaging.max_message_bytes"), "{err}");
        let err = parse("[nat]\nreservations = \"sometimes\"").unwrap_err().to_string();
        assert!(err.contains("nat.reservations") && err.contains("always"), "{err}");
        let err = parse("[nat]\nrelay_max_circuits = 0").unwrap_err().to_string();
        assert!(err.contains("nat"), "{err}");
        let err = parse("[log]\nlevel = \"[[[\"").unwrap_err().to_string();
        assert!(err.contains("log.level"), "{err}");
    }

    /// The packaged default configuration documents every key with its
    /// default: with the comments removed it must parse to the defaults.
    #[test]
    fn packaged_default_file_documents_the_defaults() {
        let text = include_str!("../../packaging/carrierd.toml");
        parse(text).unwrap();
        let uncommented: String = text
            .lines()
            .map(|l| l.strip_prefix('#').filter(|rest| rest.contains(" = ")).unwrap_or(l))
            .map(|l| format!("{l}\n"))
            .collect();
        let config = parse(&uncommented.replace("[\"/ip4/192.0.2.10/udp/7640/quic-v1/noise\"]", "[]")).unwrap();
        let defaults = Config::default();
        assert_eq!(config.listen, defaults.listen);
        assert_eq!(config.link_limits().handshake_timeout, defaults.link_limits().handshake_timeout);
        assert_eq!(config.limits.max_handshakes, defaults.limits.max_handshakes);
        assert_eq!(config.limits.max_handshakes_per_ip, defaults.limits.max_handshakes_per_ip);
        assert_eq!(config.limits.max_links, defaults.limits.max_links);
        assert_eq!(config.messaging.max_message_bytes, defaults.messaging.max_message_bytes);
        assert_eq!(config.log.level, defaults.log.level);
        assert_eq!(config.reservation_policy(), defaults.reservation_policy());
        assert_eq!(config.nat.hole_punching, defaults.nat.hole_punching);
        assert_eq!(config.relay_limits(), defaults.relay_limits());
        assert_eq!(config.data_dir, Some(PathBuf::from("/var/lib/carrier")));
        assert_eq!(config.runtime_dir, Some(PathBuf::from("/run/carrier")));
    }

    #[test]
    fn missing_file_is_an_error_unless_optional() {
        let missing = Path::new("/nonexistent/carrierd.toml");
        assert!(Config::load(missing, true).is_ok());
        assert!(matches!(Config::load(missing, false), Err(ConfigError::Read { .. })));
    }
}
