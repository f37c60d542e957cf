//! Port forwarding over app streams.
//!
//! - [`expose`]: on the device with the TCP service, joins every stream a
//!   [`Listener`] takes to a new TCP connection to `target`.
//! - [`forward_local`]: on the device that wants to use it, accepts TCP
//!   connections on `local` and joins each to a new stream to the remote
//!   app's service.
//!
//! ```text
//!  tcp client ─▶ forward_local(127.0.0.1:8080) ══app stream══▶ expose(listener) ─▶ 127.0.0.1:80
//! ```
//!
//! Both run until their listener fails; each connection has its own task,
//! and either direction closes on its own (half-close passes through).

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};

use crate::{AppStream, Client, Did, Listener, SdkError};

/// Joins every stream `listener` takes (from [`Client::listen`], whose
/// allow list says who may use it) to a new TCP connection to `target`.
pub async fn expose(mut listener: Listener, target: SocketAddr) -> Result<(), SdkError> {
    loop {
        let stream = listener.accept().await?;
        tokio::spawn(async move {
            match TcpStream::connect(target).await {
                Ok(tcp) => join(stream, tcp).await,
                // Dropping the stream tells the opener the service is down.
                Err(_) => drop(stream),
            }
        });
    }
}

/// Accepts TCP connections on `listener` and joins each to a new stream to
/// `service` of app `to`.
pub async fn forward_local(client: &Client, listener: TcpListener, to: Did, service: &str) -> Result<(), SdkError> {
    loop {
        let (tcp, _) = listener.accept().await?;
        let (client, service) = (client.clone(), service.to_owned());
        tokio::spawn(async move {
            if let Ok(stream) = client.open_stream(&to, &service).await {
                join(stream, tcp).await;
            }
        });
    }
}

async fn join(mut stream: AppStream, mut tcp: TcpStream) {
    let _ = tokio::io::copy_bidirectional(&mut stream, &mut tcp).await;
}

/// Binds `addr` for [`forward_local`].
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, SdkError> {
    Ok(TcpListener::bind(addr).await?)
}
