//! A stream echo service, and a client for it.
//!
//! ```text
//! cargo run -p carrier-sdk --example echo -- serve [--dir APP_DIR] [--socket APP_SOCKET]
//! cargo run -p carrier-sdk --example echo -- send SERVER_DID TEXT [--dir APP_DIR] [--socket APP_SOCKET]
//! ```
//!
//! `serve` listens on service "echo" and writes every stream's bytes back;
//! `send` opens a stream to it, writes TEXT, half-closes, and prints what
//! comes back.

use std::path::PathBuf;

use carrier_sdk::{AllowList, AppIdentity, Client, Did};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (mut dir, mut socket, mut rest) = (None, None, Vec::new());
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--dir" => dir = args.next().map(PathBuf::from),
            "--socket" => socket = args.next().map(PathBuf::from),
            _ => rest.push(arg),
        }
    }
    let identity = AppIdentity::load_or_create(&match dir {
        Some(dir) => dir,
        None => AppIdentity::default_dir("carrier-echo")?,
    })?;
    let client = Client::connect_as(identity, socket.unwrap_or_else(carrier_sdk::default_socket)).await?;
    match rest.as_slice() {
        [command] if command == "serve" => {
            let mut listener = client.listen("echo", &AllowList::any_active()).await?;
            println!("echo service of {} is up", client.did());
            loop {
                let mut stream = listener.accept().await?;
                tokio::spawn(async move {
                    let (mut read, mut write) = tokio::io::split(&mut stream);
                    let copied = tokio::io::copy(&mut read, &mut write).await;
                    let _ = write.shutdown().await;
                    if let Ok(bytes) = copied {
                        println!("echoed {bytes} bytes");
                    }
                });
            }
        }
        [command, server, text] if command == "send" => {
            let server = Did::parse(server)?;
            let mut stream = client.open_stream(&server, "echo").await?;
            stream.write_all(text.as_bytes()).await?;
            stream.shutdown().await?;
            let mut back = String::new();
            stream.read_to_string(&mut back).await?;
            println!("{back}");
            Ok(())
        }
        _ => Err("usage: echo serve | echo send SERVER_DID TEXT  [--dir APP_DIR] [--socket APP_SOCKET]".into()),
    }
}
