//! Two apps exchanging lines of text through their daemons.
//!
//! ```text
//! cargo run -p carrier-sdk --example chat -- [--dir APP_DIR] [--socket APP_SOCKET] [PEER_DID]
//! ```
//!
//! On first run it prints the app's card; register it under the device
//! with its consent (`carrierctl ledger register-app --name chat --app-key
//! DIR/app.key CARD`) and publish the
//! ledger. Every message that arrives is printed with who sent it; with a
//! PEER_DID, every line typed goes to that app (until end of input), and
//! without one the app only listens (until interrupted).

use std::path::PathBuf;

use carrier_sdk::{AppIdentity, Client, Did, Receipt};
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (mut dir, mut socket, mut peer) = (None, None, None);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--dir" => dir = args.next().map(PathBuf::from),
            "--socket" => socket = args.next().map(PathBuf::from),
            did => peer = Some(Did::parse(did)?),
        }
    }
    let identity = AppIdentity::load_or_create(&match dir {
        Some(dir) => dir,
        None => AppIdentity::default_dir("carrier-chat")?,
    })?;
    println!("app {}\ncard {}", identity.did(), identity.card());
    let client = Client::connect_as(identity, socket.unwrap_or_else(carrier_sdk::default_socket)).await?;
    println!("connected through device {}", client.device());

    let mut messages = client.messages();
    let printing = tokio::spawn(async move {
        while let Some(message) = messages.next().await {
            println!("<{}> {}", message.from_app, String::from_utf8_lossy(&message.payload));
        }
    });
    let Some(peer) = peer else {
        // Only listening.
        printing.await?;
        return Ok(());
    };
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        match client.send(&peer, line).await? {
            Receipt::Delivered => {}
            Receipt::Failed(failure) => eprintln!("not delivered: {failure}"),
        }
    }
    Ok(())
}
