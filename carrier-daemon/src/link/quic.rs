//! QUIC endpoint configuration: TLS 1.3 with a throwaway self-signed
//! certificate that authenticates nobody.
//!
//! Authentication is the Noise handshake's job (see `handshake.rs`); TLS
//! here gives QUIC its encryption and an exporter whose keying material the
//! handshake binds to. The server certificate's signature over the TLS
//! transcript is still checked, so the exporter belongs to whoever holds the
//! certificate key on the other end of this very connection. One crypto
//! provider (ring) is used throughout, chosen explicitly.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use carrier_proto::handshake::PROTOCOL;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// Server name used in every TLS ClientHello; certificates are not checked
/// against it.
pub const SERVER_NAME: &str = "carrier";
/// ALPN of a newcomer's join connection (see `join.rs`).
pub(crate) const JOIN_ALPN: &[u8] = b"carrier-join/1";

/// Why an endpoint could not be set up.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum QuicSetupError {
    /// Making the throwaway certificate failed.
    #[error("cannot make the TLS certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// quinn refused the TLS configuration.
    #[error("QUIC TLS configuration: {0}")]
    Quic(String),
    /// The UDP socket could not be bound.
    #[error("cannot bind UDP {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn transport_config() -> Arc<quinn::TransportConfig> {
    let mut config = quinn::TransportConfig::default();
    config.keep_alive_interval(Some(Duration::from_secs(10)));
    config.max_idle_timeout(Some(quinn::VarInt::from_u32(30_000).into()));
    config.max_concurrent_bidi_streams(quinn::VarInt::from_u32(256));
    config.max_concurrent_uni_streams(quinn::VarInt::from_u32(0));
    Arc::new(config)
}

/// Server side: a fresh self-signed certificate, ALPN `carrier/1`.
pub(crate) fn server_config() -> Result<quinn::ServerConfig, QuicSetupError> {
    // Ed25519: the cheapest certificate signature for the peer to check.
    let signing_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
    let cert = rcgen::CertificateParams::new(vec![SERVER_NAME.to_owned()])?.self_signed(&signing_key)?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(signing_key.serialize_der()));
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key)?;
    tls.alpn_protocols = vec![PROTOCOL.to_vec(), JOIN_ALPN.to_vec()];
    let crypto =
        quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(|e| QuicSetupError::Quic(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(transport_config());
    Ok(config)
}

/// Client side: accepts any certificate (see the module docs), ALPN `carrier/1`.
pub(crate) fn client_config() -> Result<quinn::ClientConfig, QuicSetupError> {
    client_config_for(PROTOCOL)
}

/// Client side of a newcomer's join connection.
pub fn join_client_config() -> Result<quinn::ClientConfig, QuicSetupError> {
    client_config_for(JOIN_ALPN)
}

/// True if `connection` is a newcomer's join connection.
pub(crate) fn is_join(connection: &quinn::Connection) -> bool {
    connection
        .handshake_data()
        .and_then(|data| data.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|data| data.protocol)
        .is_some_and(|alpn| alpn == JOIN_ALPN)
}

fn client_config_for(alpn: &[u8]) -> Result<quinn::ClientConfig, QuicSetupError> {
    let provider = provider();
    let verifier = Arc::new(AnyCertificate(provider.signature_verification_algorithms));
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    tls.alpn_protocols = vec![alpn.to_vec()];
    let crypto =
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| QuicSetupError::Quic(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport_config());
    Ok(config)
}

/// A quinn endpoint that both listens and dials on one UDP socket.
pub fn endpoint(addr: SocketAddr) -> Result<quinn::Endpoint, QuicSetupError> {
    let mut endpoint =
        quinn::Endpoint::server(server_config()?, addr).map_err(|source| QuicSetupError::Bind { addr, source })?;
    endpoint.set_default_client_config(client_config()?);
    Ok(endpoint)
}

/// [`endpoint`], plus a second handle on its UDP socket: hole punching
/// sends a few datagrams of its own from the listening port (see
/// `overlay::punch`), so the NAT in front of us lets the peer's connection
/// in.
pub fn punching_endpoint(addr: SocketAddr) -> Result<(quinn::Endpoint, std::net::UdpSocket), QuicSetupError> {
    let bind = |source| QuicSetupError::Bind { addr, source };
    let socket = std::net::UdpSocket::bind(addr).map_err(bind)?;
    let punch = socket.try_clone().map_err(bind)?;
    let runtime = quinn::default_runtime().ok_or_else(|| QuicSetupError::Quic("no async runtime for QUIC".into()))?;
    let mut endpoint = quinn::Endpoint::new(quinn::EndpointConfig::default(), Some(server_config()?), socket, runtime)
        .map_err(bind)?;
    endpoint.set_default_client_config(client_config()?);
    Ok((endpoint, punch))
}

/// A quinn endpoint that only dials, on a port of its own: for a dial that
/// must not leave from the listening port (an AutoNAT dial-back must test
/// the address, not a path the NAT has already opened for us).
pub fn client_endpoint(addr: SocketAddr) -> Result<quinn::Endpoint, QuicSetupError> {
    let mut endpoint = quinn::Endpoint::client(addr).map_err(|source| QuicSetupError::Bind { addr, source })?;
    endpoint.set_default_client_config(client_config()?);
    Ok(endpoint)
}

/// A quinn endpoint that only dials, on a socket bound already: port
/// guessing dials from the one of its sockets whose NAT mapping the peer's
/// probe reached (`overlay::port_guess`).
pub fn client_endpoint_on(socket: std::net::UdpSocket) -> Result<quinn::Endpoint, QuicSetupError> {
    // Only for the error message.
    let addr = socket.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let runtime = quinn::default_runtime().ok_or_else(|| QuicSetupError::Quic("no async runtime for QUIC".into()))?;
    let mut endpoint = quinn::Endpoint::new(quinn::EndpointConfig::default(), None, socket, runtime)
        .map_err(|source| QuicSetupError::Bind { addr, source })?;
    endpoint.set_default_client_config(client_config()?);
    Ok(endpoint)
}

/// Accepts whatever certificate the server shows, but checks that the
/// server's handshake signature was made with that certificate's key.
#[derive(Debug)]
struct AnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Only TLS 1.3 is enabled.
        Err(rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls12NotOffered))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}
