//! A Python app on real `carrierd` processes: examples/python/carrier_app.py,
//! a client written from proto/ alone with bindings generated here by
//! grpcio-tools, reads the app key the SDK made and shows the SDK's DID and
//! card, makes a key whose card Rust accepts, authenticates on the app
//! socket, and sends a message to an SDK app on another daemon, printing its
//! receipt. Without python3 and the packages in
//! examples/python/requirements.txt the test is skipped, except under CI
//! (`$CI` set), where that fails it.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use carrier_proto::identity::{Card, IdentityKind};
use carrier_sdk::{AppIdentity, Client};
use support::{Reaped, app_socket, mesh, provision_with_apps};

/// Every wait in this test ends with a failure, never a hang.
const WAIT: Duration = Duration::from_secs(60);

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

/// The interpreter: `$PYTHON`, else `python3`.
fn interpreter() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Whether python3 and the client's packages are here. If not, that fails
/// the test under CI and skips it elsewhere.
fn python_ready() -> bool {
    let probe = Command::new(interpreter()).args(["-c", "import grpc_tools, cryptography"]).output();
    let missing = match probe {
        Ok(out) if out.status.success() => return true,
        Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        Err(error) => format!("{}: {error}", interpreter()),
    };
    let hint = "install them with: pip install -r examples/python/requirements.txt";
    assert!(
        std::env::var_os("CI").is_none(),
        "CI runs the Python client test, but python3 or its packages are missing ({missing}); {hint}"
    );
    eprintln!("skipping the Python client test: python3 or its packages are missing ({missing}); {hint}");
    false
}

/// What one run of the interpreter printed, and whether it exited 0.
struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let exit = if self.ok { "0" } else { "non-zero" };
        write!(f, "exited {exit}\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr)
    }
}

/// Runs the interpreter with `args`; killed if it outlasts [`WAIT`].
fn python(args: &[String]) -> Run {
    let child = Command::new(interpreter())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Reaped(child);
    let (tx, texts) = mpsc::channel();
    let pipes =
        [Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>, Box::new(child.stderr.take().unwrap())];
    for (i, mut pipe) in pipes.into_iter().enumerate() {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            let _ = tx.send((i, text));
        });
    }
    // Both pipes close when the interpreter exits.
    let mut out = [String::new(), String::new()];
    for _ in 0..2 {
        let (i, text) = texts.recv_timeout(WAIT).unwrap_or_else(|_| panic!("{args:?} did not finish within {WAIT:?}"));
        out[i] = text;
    }
    let ok = child.wait().unwrap().success();
    let [stdout, stderr] = out;
    Run { ok, stdout, stderr }
}

/// `python3 -m grpc_tools.protoc -I proto --python_out=OUT proto/carrier/v1/*.proto`.
fn generate_bindings(out: &Path) {
    let proto = workspace().join("proto");
    let mut files: Vec<String> = std::fs::read_dir(proto.join("carrier/v1"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "proto"))
        .map(|path| path.to_str().unwrap().to_owned())
        .collect();
    files.sort();
    std::fs::create_dir_all(out).unwrap();
    let mut args: Vec<String> = ["-m", "grpc_tools.protoc", "-I", proto.to_str().unwrap()].map(String::from).into();
    args.push(format!("--python_out={}", out.display()));
    args.extend(files);
    let run = python(&args);
    assert!(run.ok, "generating the Python bindings failed: {run}");
}

/// Runs `carrier_app.py --bindings BINDINGS ARGS…` off the async workers.
async fn carrier_app(bindings: &Path, args: &[&str]) -> Run {
    let script = workspace().join("examples/python/carrier_app.py");
    let mut all = vec![script.to_str().unwrap().to_owned(), "--bindings".into(), bindings.to_str().unwrap().to_owned()];
    all.extend(args.iter().map(|arg| (*arg).to_owned()));
    tokio::task::spawn_blocking(move || python(&all)).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_app_sends_a_message_to_an_sdk_app_on_another_daemon() {
    if !python_ready() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let bindings = root.path().join("bindings");
    generate_bindings(&bindings);
    let (dirs, apps) = provision_with_apps(root.path(), 2, &[1, 1]);
    let _daemons = mesh(&dirs);
    let (python_dir, socket) = (apps[0][0].to_str().unwrap(), app_socket(&dirs[0]));
    let socket = socket.to_str().unwrap();

    // The Python client reads the key file the SDK made: same DID, same card.
    let sdk_view = AppIdentity::load_or_create(&apps[0][0]).unwrap();
    let shown = carrier_app(&bindings, &["card", "--key-dir", python_dir]).await;
    assert!(shown.ok, "{shown}");
    assert!(shown.stdout.contains(&format!("did: {}\n", sdk_view.did())), "not the SDK's DID: {shown}");
    assert!(shown.stdout.contains(&format!("card: {}\n", sdk_view.card())), "not the SDK's card: {shown}");

    // An SDK app on the other device receives.
    let receiver =
        Client::connect_as(AppIdentity::load_or_create(&apps[1][0]).unwrap(), app_socket(&dirs[1])).await.unwrap();
    let mut inbox = receiver.messages();
    let to = receiver.did().to_string();
    let sent = carrier_app(
        &bindings,
        &["send", "--key-dir", python_dir, "--socket", socket, "--to", &to, "--id", "7", "hello from python"],
    )
    .await;
    assert!(sent.ok && sent.stdout.contains("receipt for request 7: DELIVERED"), "{sent}");
    let message = tokio::time::timeout(WAIT, inbox.next()).await.expect("no message arrived").expect("session open");
    assert_eq!(message.payload, b"hello from python");
    assert_eq!(message.from_app, sdk_view.did());

    // A key the Python client makes has a card Rust accepts...
    let stranger_dir = root.path().join("stranger");
    let stranger_dir = stranger_dir.to_str().unwrap();
    let made = carrier_app(&bindings, &["card", "--key-dir", stranger_dir]).await;
    assert!(made.ok, "{made}");
    let field = |name: &str| made.stdout.lines().find_map(|l| l.strip_prefix(name)).map(str::to_owned);
    let (stranger, card) = (field("did: ").expect("no DID"), field("card: ").expect("no card"));
    let card = Card::parse(&card).unwrap();
    assert_eq!((card.kind(), card.did().to_string()), (IdentityKind::App, stranger.clone()));

    // ...but until it is registered, messages to it have nowhere to go
    // (exit 1, with the receipt), and it cannot get in itself.
    let lost = carrier_app(
        &bindings,
        &["send", "--key-dir", python_dir, "--socket", socket, "--to", &stranger, "--id", "8", "anyone?"],
    )
    .await;
    assert!(!lost.ok && lost.stdout.contains("receipt for request 8: UNKNOWN_RECIPIENT"), "{lost}");
    let refused =
        carrier_app(&bindings, &["send", "--key-dir", stranger_dir, "--socket", socket, "--to", &to, "let me in"])
            .await;
    assert!(!refused.ok && refused.stderr.contains("UNAUTHENTICATED"), "{refused}");
    assert!(refused.stderr.contains("not registered"), "{refused}");
}
