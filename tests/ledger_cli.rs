//! Provisioning a network offline with the real binaries, as an admin would:
//! genesis, device and app registration, rotation, revocation, inspection,
//! verification, and the errors a careless or hostile input must produce.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn run(bin: &str, args: &[&str]) -> Run {
    let path = match bin {
        "carrierctl" => env!("CARGO_BIN_EXE_carrierctl"),
        _ => env!("CARGO_BIN_EXE_carrierd"),
    };
    let Output { status, stdout, stderr } = Command::new(path).args(args).output().unwrap();
    Run { ok: status.success(), stdout: String::from_utf8(stdout).unwrap(), stderr: String::from_utf8(stderr).unwrap() }
}

fn ok(bin: &str, args: &[&str]) -> String {
    let out = run(bin, args);
    assert!(out.ok, "{bin} {args:?} failed:\n{}{}", out.stdout, out.stderr);
    out.stdout
}

fn fails(bin: &str, args: &[&str]) -> String {
    let out = run(bin, args);
    assert!(!out.ok, "{bin} {args:?} should fail but printed:\n{}", out.stdout);
    assert!(out.stderr.starts_with("error: "), "{}", out.stderr);
    out.stderr
}

/// The value after `label:` on a line of `text`.
fn field(text: &str, label: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{label}:")))
        .unwrap_or_else(|| panic!("no {label} in {text}"))
        .trim()
        .to_owned()
}

struct Admin {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Admin {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        let admin = Admin { _dir: dir, root };
        ok("carrierctl", &["keygen", "--kind", "registrar", "--out", &admin.key()]);
        ok(
            "carrierctl",
            &["ledger", "genesis", "--ledger", &admin.ledger(), "--network", "home", "--key", &admin.key()],
        );
        admin
    }

    fn path(&self, rel: &str) -> String {
        self.root.join(rel).to_str().unwrap().to_owned()
    }

    fn key(&self) -> String {
        self.path("admin/registrar.key")
    }

    fn ledger(&self) -> String {
        self.path("admin/ledger")
    }

    fn ledger_cmd(&self, args: &[&str]) -> Vec<String> {
        let mut all = vec!["ledger".to_owned(), args[0].to_owned(), "--ledger".to_owned(), self.ledger()];
        all.extend(args[1..].iter().map(|s| s.to_string()));
        all
    }

    fn ok(&self, args: &[&str]) -> String {
        let all = self.ledger_cmd(args);
        ok("carrierctl", &all.iter().map(String::as_str).collect::<Vec<_>>())
    }

    fn fails(&self, args: &[&str]) -> String {
        let all = self.ledger_cmd(args);
        fails("carrierctl", &all.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// `carrierd init` a device in `name/`; returns (did, card, key path).
    fn init_device(&self, name: &str) -> (String, String, String) {
        let out = ok("carrierd", &["init", "--data-dir", &self.path(name)]);
        (field(&out, "did"), field(&out, "card"), self.path(&format!("{name}/device.key")))
    }

    fn resolve(&self, did: &str) -> Value {
        serde_json::from_str(&self.ok(&["resolve", "--json", did])).unwrap()
    }
}

#[test]
fn provisioning_walkthrough() {
    let admin = Admin::new();
    let (laptop, laptop_card, laptop_key) = admin.init_device("laptop");
    admin.ok(&["register-device", "--key", &admin.key(), "--role", "relay", &laptop_card]);
    // The card file written by init works as well as the inline card.
    let (phone, _, phone_key) = admin.init_device("phone");
    admin.ok(&["register-device", "--key", &admin.key(), &admin.path("phone/device.card")]);

    let app = ok("carrierctl", &["keygen", "--kind", "app", "--out", &admin.path("apps/chat.key")]);
    let (app_did, app_card) = (field(&app, "did"), field(&app, "card"));
    let app_key = admin.path("apps/chat.key");
    admin.ok(&["register-app", "--key", &laptop_key, "--app-key", &app_key, "--name", "chat", &app_card]);

    let resolved = admin.resolve(&app_did);
    assert_eq!(resolved["kind"], "app");
    assert_eq!(resolved["device"], laptop.as_str());
    assert_eq!(resolved["active"], true);
    assert_eq!(admin.resolve(&laptop)["roles"][0], "relay");

    // The phone rotates its keys with a new card, signing with its old key.
    let fresh = ok("carrierctl", &["keygen", "--kind", "device", "--out", &admin.path("phone/next.key")]);
    admin.ok(&["rotate", "--key", &phone_key, &phone, &field(&fresh, "card")]);
    assert_eq!(admin.resolve(&phone)["signing_key"], field(&fresh, "did").as_str());
    // The old key has lost its authority.
    let err = admin.fails(&["revoke", "--key", &phone_key, &phone]);
    assert!(err.contains("no authority"), "{err}");

    // Revoking the laptop takes its app with it.
    admin.ok(&["revoke", "--key", &admin.key(), "--reason", "stolen", &laptop]);
    assert_eq!(admin.resolve(&laptop)["active"], false);
    assert_eq!(admin.resolve(&app_did)["active"], false);
    let err = admin.fails(&["rotate", "--key", &laptop_key, &laptop, &laptop_card]);
    assert!(err.contains("revoked"), "{err}");

    let entries: Value = serde_json::from_str(&admin.ok(&["show", "--json"])).unwrap();
    let ops: Vec<&str> = entries.as_array().unwrap().iter().map(|e| e["op"].as_str().unwrap()).collect();
    assert_eq!(ops, ["genesis", "register-device", "register-device", "register-app", "rotate-keys", "revoke"]);
    let table = admin.ok(&["show"]);
    assert!(table.starts_with("INDEX"), "{table}");
    assert_eq!(table.lines().count(), 7);

    let verified = admin.ok(&["verify"]);
    assert!(verified.contains("6 entries"), "{verified}");
    assert!(verified.contains("2 devices, 1 apps, 2 revoked"), "{verified}");
}

#[test]
fn init_refuses_to_overwrite_an_identity() {
    let admin = Admin::new();
    let (did, _, key) = admin.init_device("laptop");
    let before = std::fs::read(&key).unwrap();
    let err = fails("carrierd", &["init", "--data-dir", &admin.path("laptop")]);
    assert!(err.contains("refusing to overwrite") && err.contains(&did), "{err}");
    assert_eq!(std::fs::read(&key).unwrap(), before);
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn refuses_readable_key_files_with_a_fix() {
    let admin = Admin::new();
    std::fs::set_permissions(admin.key(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let (_, card, _) = admin.init_device("laptop");
    let err = admin.fails(&["register-device", "--key", &admin.key(), &card]);
    assert!(err.contains(&format!("chmod 600 {}", admin.key())), "{err}");
}

#[test]
fn refuses_entries_that_break_the_rules() {
    let admin = Admin::new();
    let (_, laptop_card, laptop_key) = admin.init_device("laptop");
    let (_, phone_card, phone_key) = admin.init_device("phone");
    admin.ok(&["register-device", "--key", &admin.key(), &laptop_card]);
    admin.ok(&["register-device", "--key", &admin.key(), &phone_card]);

    // A device key is not a registrar key.
    let err = admin.fails(&["register-device", "--key", &laptop_key, &phone_card]);
    assert!(err.contains("registrar key is needed"), "{err}");
    // Registering twice.
    let err = admin.fails(&["register-device", "--key", &admin.key(), &laptop_card]);
    assert!(err.contains("already registered"), "{err}");
    // A device card offered as an app card. (An app entry signed by another
    // device than its host is refused by the ledger rules; see
    // carrier-proto's `rejects_app_registered_by_another_device`.)
    let chat_key = admin.path("apps/chat.key");
    let err = admin.fails(&["register-app", "--key", &phone_key, "--app-key", &chat_key, "--name", "x", &laptop_card]);
    assert!(err.contains("app card is needed"), "{err}");
    // A forged card.
    let mut forged = laptop_card.clone();
    forged.replace_range(forged.len() - 6.., "111111");
    let err = admin.fails(&["register-device", "--key", &admin.key(), &forged]);
    assert!(err.contains("card"), "{err}");
    // Unknown DIDs are named.
    let stranger = ok("carrierctl", &["keygen", "--kind", "device", "--out", &admin.path("stranger.key")]);
    let err = admin.fails(&["resolve", &field(&stranger, "did")]);
    assert!(err.contains("is not on this ledger"), "{err}");
    let err = admin.fails(&["resolve", "did:carrier:nonsense"]);
    assert!(err.contains("base58btc"), "{err}");
}

#[test]
fn an_app_card_adopted_by_another_device_is_refused() {
    let admin = Admin::new();
    let (laptop, laptop_card, laptop_key) = admin.init_device("laptop");
    let (_, phone_card, phone_key) = admin.init_device("phone");
    admin.ok(&["register-device", "--key", &admin.key(), &laptop_card]);
    admin.ok(&["register-device", "--key", &admin.key(), &phone_card]);
    let shown: Value = serde_json::from_str(&admin.ok(&["show", "--json"])).unwrap();
    let network = shown[0]["leaf_hash"].as_str().unwrap().to_owned();
    // The app's owner consents to the laptop, and publishes card and consent.
    let app = ok("carrierctl", &["keygen", "--kind", "app", "--out", &admin.path("apps/chat.key")]);
    let consent = ok(
        "carrierctl",
        &["consent", "--app-key", &admin.path("apps/chat.key"), "--device", &laptop, "--network", &network],
    );
    let (card, consent) = (field(&app, "card"), field(&consent, "consent"));
    // The phone adopts the card with that consent: refused.
    let err = admin.fails(&["register-app", "--key", &phone_key, "--consent", &consent, "--name", "chat", &card]);
    assert!(err.contains("not") && err.contains("consent"), "{err}");
    // Nor can it go without one, or bring a consent that is not one.
    let err = admin.fails(&["register-app", "--key", &phone_key, "--name", "chat", &card]);
    assert!(err.contains("--app-key") || err.contains("--consent"), "{err}");
    let err =
        admin.fails(&["register-app", "--key", &phone_key, "--consent", "carrier-consent:2g", "--name", "x", &card]);
    assert!(err.contains("base58 of 64 bytes"), "{err}");
    // The laptop it consented to registers it.
    admin.ok(&["register-app", "--key", &laptop_key, "--consent", &consent, "--name", "chat", &card]);
    assert_eq!(admin.resolve(&field(&app, "did"))["device"], laptop);
}

#[test]
fn verify_names_the_damaged_entry() {
    let admin = Admin::new();
    let (_, card, _) = admin.init_device("laptop");
    admin.ok(&["register-device", "--key", &admin.key(), &card]);
    let log = Path::new(&admin.ledger()).join("ledger.log");
    let mut bytes = std::fs::read(&log).unwrap();
    let last = bytes.len() - 20;
    bytes[last] ^= 0x01;
    std::fs::write(&log, &bytes).unwrap();
    let err = admin.fails(&["verify"]);
    assert!(err.contains("entry 1"), "{err}");
    // Damage in the middle is never silently cut by a writer either.
    let (_, card2, _) = admin.init_device("phone");
    bytes[last] ^= 0x01;
    std::fs::write(&log, &bytes).unwrap();
    admin.ok(&["register-device", "--key", &admin.key(), &card2]);
    let mut bytes = std::fs::read(&log).unwrap();
    bytes[40] ^= 0x01;
    std::fs::write(&log, &bytes).unwrap();
    let err = admin.fails(&["register-device", "--key", &admin.key(), &card2]);
    assert!(err.contains("entry 0") && err.contains("damaged"), "{err}");
}

#[test]
fn a_missing_ledger_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("nowhere");
    let err = fails("carrierctl", &["ledger", "show", "--ledger", ledger.to_str().unwrap()]);
    assert!(err.contains("carrierctl ledger genesis"), "{err}");
}

/// An auditor saves a checkpoint, and later proves the log only grew and
/// sees what was added; a third party checks a DID's inclusion proof
/// offline with the verifier key alone, and a tampered proof fails.
#[test]
fn checkpoints_audits_and_inclusion_proofs() {
    let admin = Admin::new();
    let (laptop, laptop_card, _) = admin.init_device("laptop");
    admin.ok(&["register-device", "--key", &admin.key(), &laptop_card]);
    let saved = admin.path("saved.note");
    std::fs::write(&saved, admin.ok(&["checkpoint"])).unwrap();
    assert!(std::fs::read_to_string(&saved).unwrap().contains("\n2\n"), "size 2 after genesis and one device");
    let (phone, phone_card, _) = admin.init_device("phone");
    admin.ok(&["register-device", "--key", &admin.key(), &phone_card]);
    admin.ok(&["revoke", "--key", &admin.key(), "--reason", "lost", &laptop]);

    let audit = admin.ok(&["audit", "--since", &saved]);
    assert!(audit.contains("the log only grew: 2 entries then, 4 now (2 added)"), "{audit}");
    assert!(audit.contains(&phone) && audit.contains("revoke"), "{audit}");
    let added: Value = serde_json::from_str(&admin.ok(&["audit", "--json", "--since", &saved])).unwrap();
    assert_eq!(added.as_array().unwrap().iter().map(|e| e["index"].as_u64().unwrap()).collect::<Vec<_>>(), [2, 3]);
    // A checkpoint of another history (another log key) is not this log's.
    let other = Admin::new();
    let foreign = other.path("foreign.note");
    std::fs::write(&foreign, other.ok(&["checkpoint"])).unwrap();
    assert!(admin.fails(&["audit", "--since", &foreign]).contains("not this log's"));

    let proof = admin.path("laptop.proof");
    admin.ok(&["prove", &laptop, "--out", &proof]);
    let bundle: Value = serde_json::from_str(&std::fs::read_to_string(&proof).unwrap()).unwrap();
    assert_eq!(bundle["index"], 3, "the laptop's latest entry is its revocation");
    let vkey = bundle["verifier_key"].as_str().unwrap().to_owned();
    let checked = ok("carrierctl", &["ledger", "check-proof", "--verifier-key", &vkey, &proof]);
    assert!(checked.contains("proof OK") && checked.contains("(revoke)"), "{checked}");
    // Someone else's verifier key, or a changed proof, fails.
    let other_bundle: Value = serde_json::from_str(&other.ok(&["prove", &other_device(&other)])).unwrap();
    let other_key = other_bundle["verifier_key"].as_str().unwrap();
    let err = fails("carrierctl", &["ledger", "check-proof", "--verifier-key", other_key, &proof]);
    assert!(err.contains("not signed by that log key"), "{err}");
    let mut tampered = bundle.clone();
    tampered["index"] = 2.into();
    std::fs::write(&proof, tampered.to_string()).unwrap();
    let err = fails("carrierctl", &["ledger", "check-proof", "--verifier-key", &vkey, &proof]);
    assert!(err.contains("does not hold"), "{err}");
}

/// Registers a device on `admin`'s ledger; its DID.
fn other_device(admin: &Admin) -> String {
    let (did, card, _) = admin.init_device("other");
    admin.ok(&["register-device", "--key", &admin.key(), &card]);
    did
}

#[test]
fn a_handover_without_a_log_key_file_makes_one_beside_the_registrars_key() {
    let admin = Admin::new();
    let (did, card, _) = admin.init_device("laptop");
    admin.ok(&["register-device", "--key", &admin.key(), &card]);
    let out = admin.path("handover.request");
    let printed = admin.ok(&["handover", "--to", &did, "--key", &admin.key(), "--out", &out]);
    let short: String = did.rsplit(':').next().unwrap().chars().take(16).collect();
    let made = admin.path(&format!("admin/log-{short}.key"));
    assert!(printed.contains(&made), "{printed}");
    assert!(Path::new(&made).exists() && Path::new(&out).exists());
    let mode = std::fs::metadata(&made).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the new log key is private");
    // Sequencing it in the directory is refused: the new sequencer does that.
    let refused = admin.fails(&["handover", "--to", &did, "--key", &admin.key()]);
    assert!(refused.contains("new sequencer"), "{refused}");
}
