//! Compiles `proto/carrier/v1/*.proto` into Rust with prost, using protox so
//! no system `protoc` is needed.

use std::path::PathBuf;

const FILES: &[&str] = &[
    "carrier/v1/identity.proto",
    "carrier/v1/ledger.proto",
    "carrier/v1/handshake.proto",
    "carrier/v1/control.proto",
    "carrier/v1/sync.proto",
    "carrier/v1/state.proto",
    "carrier/v1/app.proto",
    "carrier/v1/messaging.proto",
    "carrier/v1/store.proto",
    "carrier/v1/mailbox.proto",
    "carrier/v1/nat.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../proto");
    for file in FILES {
        println!("cargo:rerun-if-changed={}", root.join(file).display());
    }
    let descriptors = protox::compile(FILES, [&root])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
