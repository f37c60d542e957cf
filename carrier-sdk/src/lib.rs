//! Client library for apps that talk through their local Carrier daemon:
//! messages and byte streams to other apps, on this device or any other
//! device of the network, without opening a network socket.
//!
//! ```text
//!  your app ──app socket──▶ carrierd ══QUIC+Noise══▶ carrierd ──app socket──▶ their app
//! ```
//!
//! An app has an identity of its own (an Ed25519 key, made on first use and
//! kept with mode 0600 in the app's data directory), and is addressed by
//! its DID. Before it can connect, its device registers it on the ledger,
//! with the app's consent to that device ([`AppIdentity::consent`], or the
//! app's key file where the device's owner holds it):
//!
//! ```text
//! carrierctl ledger register-app --name chat --consent <the app's consent> <the app's card>
//! ```
//!
//! In five minutes:
//!
//! - [`Client::connect`] proves the app's key to its daemon;
//! - [`Client::send`] sends bytes to another app and returns a [`Receipt`]:
//!   `Delivered` once that app took them, or `Failed` with a [`Reason`];
//!   [`Client::submit`] queues without waiting, for many messages at once.
//!   The daemon has a message on disk before it accepts it
//!   ([`PendingReceipt::accepted`]), and retries across broken links and
//!   restarts until delivered or its time to live passes; an app that
//!   reconnects asks for earlier receipts with [`Client::receipt_states`];
//! - [`Client::messages`] yields the [`Message`]s sent to this app, in order
//!   and at most once per sender;
//! - [`Client::open_stream`] and [`Client::listen`] give full-duplex byte
//!   streams ([`AppStream`]: tokio `AsyncRead + AsyncWrite`);
//! - [`Client::set_access`] and the allow list of `listen` decide who may
//!   reach the app (default: any app the ledger shows as active);
//! - [`forward`] exposes a local TCP port as a service, and the reverse.
//!
//! ```no_run
//! use carrier_sdk::{AllowList, Client, ClientOptions, Did, Receipt};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # async fn demo() -> Result<(), carrier_sdk::SdkError> {
//! let client = Client::connect(ClientOptions::new("chat")).await?;
//! println!("I am {}", client.did());
//!
//! let friend = Did::parse("did:carrier:z6Mk…").expect("a DID");
//! match client.send(&friend, "hello").await? {
//!     Receipt::Delivered => println!("delivered"),
//!     Receipt::Failed(failure) => println!("not delivered: {failure}"),
//! }
//!
//! let mut messages = client.messages();
//! while let Some(message) = messages.next().await {
//!     println!("{} says {}", message.from_app, String::from_utf8_lossy(&message.payload));
//! }
//!
//! // Streams: one side listens, the other opens.
//! let mut listener = client.listen("echo", &AllowList::any_active()).await?;
//! let mut stream = client.open_stream(&friend, "echo").await?;
//! stream.write_all(b"ping").await?;
//! stream.shutdown().await?; // half-close: we are done writing
//! let mut answer = Vec::new();
//! stream.read_to_end(&mut answer).await?;
//! # let _ = listener.accept().await?;
//! # Ok(())
//! # }
//! ```
//!
//! The daemon's app socket is found through `$CARRIER_APP_SOCKET`, then the
//! user daemon's runtime directory, then `/run/carrier/app.sock` (system
//! daemon; the app's user must be in group `carrier`).

#![forbid(unsafe_code)]

mod client;
mod error;
pub mod forward;
mod identity;
mod message;
mod session;
mod stream;
mod wire;

pub use carrier_proto::identity::Did;
pub use carrier_proto::ledger::Consent;
pub use client::{Client, ClientOptions, Messages, PendingReceipt, SOCKET_ENV, default_socket};
pub use error::SdkError;
pub use identity::{APP_KEY_FILE, AppIdentity};
pub use message::{AllowList, Failure, Message, MessageId, Reason, Receipt, ReceiptState, SendOptions};
pub use stream::{AppStream, Listener};
