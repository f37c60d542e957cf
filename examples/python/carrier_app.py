#!/usr/bin/env python3
"""A Carrier app in Python, written from proto/carrier/v1/*.proto alone.

    carrier_app.py card    --key-dir DIR
    carrier_app.py send    --key-dir DIR --to DID [--id N] [--socket PATH] PAYLOAD
    carrier_app.py receive --key-dir DIR [--socket PATH]

`card` loads the app key in DIR/app.key (the file the Rust SDK keeps), or
makes one, and prints the app's DID and card; the device's admin registers
the card with `carrierctl ledger register-app`. `send` authenticates on the
daemon's app socket, sends PAYLOAD to the app DID, prints the receipt and
exits 0 only if it says DELIVERED. `receive` waits for one message, prints
it and acknowledges it.

The Python bindings are generated from proto/ (see README.md) into
`gen/` next to this file, or into the directory given by --bindings or
$CARRIER_PY_BINDINGS.
"""

import argparse
import os
import socket
import stat
import struct
import sys

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

# Signature domain tags (app.proto, identity.proto).
APP_AUTH_TAG = b"carrier/v1/app-auth\0"
NOISE_KEY_TAG = b"carrier/v1/noise-key\0"
# Text forms.
DID_PREFIX = "did:carrier:z"
CARD_PREFIX = "carrier-card:"
ED25519_MULTICODEC = b"\xed\x01"
# Key files: magic, then a KeyFile message (identity.proto).
KEY_FILE_NAME = "app.key"
KEY_FILE_MAGIC = b"CARRKEY\n"
KEY_FILE_VERSION = 1
CARD_VERSION = 1
# Frames: a 4-byte big-endian length, then the message. Until the welcome
# says the daemon's message limit, no event is bigger than this.
HELLO_MAX_FRAME = 64 * 1024
FRAME_OVERHEAD = 64 * 1024
NONCE_LEN = 32

pb = None  # carrier.v1.app_pb2, once loaded
identity_pb = None  # carrier.v1.identity_pb2


class Failed(Exception):
    """Something went wrong; the message says what, for people."""


# --- the generated bindings ----------------------------------------------


def load_bindings(directory):
    global pb, identity_pb
    sys.path.insert(0, os.path.abspath(directory))
    try:
        from carrier.v1 import app_pb2, identity_pb2
    except ImportError as error:
        raise Failed(
            f"no Python bindings in {directory} ({error}); generate them from the repository root with\n"
            f"  python3 -m grpc_tools.protoc -I proto --python_out={directory} proto/carrier/v1/*.proto"
        )
    pb, identity_pb = app_pb2, identity_pb2


# --- base58btc, DIDs and cards ------------------------------------------------

B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def b58encode(data):
    number = int.from_bytes(data, "big")
    out = ""
    while number:
        number, digit = divmod(number, 58)
        out = B58_ALPHABET[digit] + out
    zeros = len(data) - len(data.lstrip(b"\0"))
    return "1" * zeros + out


def b58decode(text):
    number = 0
    for char in text:
        digit = B58_ALPHABET.find(char)
        if digit < 0:
            raise ValueError(f"{char!r} is not a base58 character")
        number = number * 58 + digit
    zeros = len(text) - len(text.lstrip("1"))
    body = number.to_bytes((number.bit_length() + 7) // 8, "big")
    return b"\0" * zeros + body


def did_from_key(key):
    """did:carrier:z + base58btc(0xed 0x01 + the 32-byte Ed25519 key)."""
    return DID_PREFIX + b58encode(ED25519_MULTICODEC + key)


def compact_did(did):
    """The 32 key bytes a DID is made from: how DIDs travel on the message path."""
    if not did.startswith(DID_PREFIX):
        raise Failed(f"{did!r} is not a Carrier DID: it must start with {DID_PREFIX!r}")
    try:
        raw = b58decode(did[len(DID_PREFIX):])
    except ValueError as error:
        raise Failed(f"{did!r} is not a Carrier DID: {error}")
    if not raw.startswith(ED25519_MULTICODEC) or len(raw) != 34:
        raise Failed(f"{did!r} is not a Carrier DID: it must hold 0xed 0x01 and a 32-byte key")
    return raw[2:]


class AppKey:
    """An app identity: an Ed25519 signing key and an X25519 Noise key."""

    def __init__(self, signing_secret, noise_secret):
        self.signing = Ed25519PrivateKey.from_private_bytes(signing_secret)
        self.signing_secret = signing_secret
        self.noise_secret = noise_secret
        self.public = self.signing.public_key().public_bytes_raw()
        self.did = did_from_key(self.public)

    def sign(self, tag, message):
        return self.signing.sign(tag + message)

    def card(self):
        noise_public = X25519PrivateKey.from_private_bytes(self.noise_secret).public_key().public_bytes_raw()
        card = identity_pb.Card(
            version=CARD_VERSION,
            kind=identity_pb.IDENTITY_KIND_APP,
            signing_key=self.public,
            noise_key=noise_public,
            noise_key_signature=self.sign(NOISE_KEY_TAG, noise_public),
        )
        return CARD_PREFIX + b58encode(card.SerializeToString())


def load_key(key_dir):
    path = os.path.join(key_dir, KEY_FILE_NAME)
    try:
        with open(path, "rb") as file:
            mode = os.fstat(file.fileno()).st_mode
            data = file.read(1025)
    except FileNotFoundError:
        raise Failed(f"no key file at {path}; make one with: {sys.argv[0]} card --key-dir {key_dir}")
    if mode & 0o077:
        raise Failed(f"key file {path} is readable by group or others; fix it with: chmod 600 {path}")
    if not data.startswith(KEY_FILE_MAGIC) or len(data) > 1024:
        raise Failed(f"{path} is not a Carrier key file")
    message = identity_pb.KeyFile()
    try:
        message.ParseFromString(data[len(KEY_FILE_MAGIC):])
    except Exception as error:
        raise Failed(f"{path} is damaged: {error}")
    if message.version != KEY_FILE_VERSION:
        raise Failed(f"{path} is key file version {message.version}; this client reads version {KEY_FILE_VERSION}")
    if message.kind != identity_pb.IDENTITY_KIND_APP:
        kind = identity_pb.IdentityKind.Name(message.kind).removeprefix("IDENTITY_KIND_").lower()
        raise Failed(f"{path} holds a {kind} key, but an app key is needed here")
    if len(message.signing_secret) != 32 or len(message.noise_secret) != 32:
        raise Failed(f"{path} is damaged: its secrets are not 32 bytes each")
    return AppKey(message.signing_secret, message.noise_secret)


def create_key(key_dir):
    """Makes a key and writes DIR/app.key (mode 0600) the way the SDK does."""
    key = AppKey(os.urandom(32), os.urandom(32))
    message = identity_pb.KeyFile(
        version=KEY_FILE_VERSION,
        kind=identity_pb.IDENTITY_KIND_APP,
        signing_secret=key.signing_secret,
        noise_secret=key.noise_secret,
    )
    os.makedirs(key_dir, mode=0o700, exist_ok=True)
    path = os.path.join(key_dir, KEY_FILE_NAME)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IRUSR | stat.S_IWUSR)
    with os.fdopen(fd, "wb") as file:
        file.write(KEY_FILE_MAGIC + message.SerializeToString())
    return key


# --- the app socket -----------------------------------------------------------


class AppSocket:
    """Length-prefixed AppRequest frames out, AppEvent frames in."""

    def __init__(self, path, timeout):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except OSError as error:
            raise Failed(f"cannot connect to the app socket {path}: {error.strerror or error}")
        self.max_frame = HELLO_MAX_FRAME

    def send(self, request):
        body = request.SerializeToString()
        self.sock.sendall(struct.pack(">I", len(body)) + body)

    def _read_exactly(self, n):
        data = b""
        while len(data) < n:
            try:
                chunk = self.sock.recv(n - len(data))
            except socket.timeout:
                raise Failed("the daemon went quiet (timed out)")
            if not chunk:
                return None
            data += chunk
        return data

    def read(self):
        """The next event, or None once the daemon has closed the connection."""
        header = self._read_exactly(4)
        if header is None:
            return None
        (length,) = struct.unpack(">I", header)
        if length > self.max_frame:
            raise Failed(f"the daemon sent a frame of {length} bytes, over the limit of {self.max_frame}")
        body = self._read_exactly(length)
        if body is None:
            raise Failed("the daemon closed the connection inside a frame")
        event = pb.AppEvent()
        try:
            event.ParseFromString(body)
        except Exception as error:
            raise Failed(f"the daemon sent a frame that does not decode: {error}")
        return event

    def close(self):
        """Half-closes, then waits for the daemon to end the session: when
        this returns, the daemon no longer counts this app as connected."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
            while self.sock.recv(65536):
                pass
        except OSError:
            pass
        self.sock.close()


def enum_name(enum, value):
    """The name of an enum value; a number this client does not know stays a number."""
    try:
        return enum.Name(value)
    except ValueError:
        return str(value)


def describe_error(error):
    return f"{enum_name(pb.AppErrorCode, error.code)}: {error.message}"


def expect(conn, kind, who):
    """The next event, which must be `kind`; an error event or a close fails."""
    event = conn.read()
    if event is None:
        raise Failed(f"the daemon closed the connection before its {kind}")
    if event.WhichOneof("event") == "error":
        raise Failed(f"the daemon refused {who}: {describe_error(event.error)}")
    if event.WhichOneof("event") != kind:
        raise Failed(f"expected a {kind}, got {event.WhichOneof('event')}")
    return event


def open_session(path, key, timeout):
    """Challenge, signed hello, welcome: returns the socket and the welcome."""
    conn = AppSocket(path, timeout)
    challenge = expect(conn, "challenge", "the connection").challenge
    if len(challenge.nonce) != NONCE_LEN:
        raise Failed(f"the challenge nonce is {len(challenge.nonce)} bytes, not {NONCE_LEN}")
    # Signed: the tag, the 32 nonce bytes, then the device DID as UTF-8 text.
    signature = key.sign(APP_AUTH_TAG, challenge.nonce + challenge.device.encode("utf-8"))
    hello = pb.AppHello(app=key.did, signature=signature, session=pb.SessionPurpose())
    conn.send(pb.AppRequest(id=0, hello=hello))
    welcome = expect(conn, "welcome", key.did).welcome
    conn.max_frame = welcome.max_message + FRAME_OVERHEAD
    print(f"session open: app {welcome.app} on device {welcome.device}", file=sys.stderr, flush=True)
    return conn, welcome


def send(args, key):
    if not 1 <= args.id < 2**64:
        raise Failed("--id must be from 1 to 2^64-1 (events with id 0 answer no request)")
    to = compact_did(args.to)
    payload = args.payload.encode("utf-8")
    conn, welcome = open_session(args.socket, key, args.timeout)
    try:
        if len(payload) > welcome.max_message:
            raise Failed(f"the payload is {len(payload)} bytes, over the daemon's limit of {welcome.max_message}")
        conn.send(pb.AppRequest(id=args.id, send=pb.SendMessage(to=to, payload=payload)))
        while True:
            event = conn.read()
            if event is None:
                raise Failed("the daemon closed the connection before the receipt")
            kind = event.WhichOneof("event")
            if kind == "accepted" and event.id == args.id:
                # On the daemon's disk: it retries until delivered or expired.
                print(f"accepted as message id {event.accepted.message_id.hex()}", flush=True)
                continue
            if kind == "receipt" and event.id == args.id:
                receipt = event.receipt
                line = f"receipt for request {event.id}: {enum_name(pb.Outcome, receipt.outcome)}"
                if receipt.detail:
                    line += f" ({receipt.detail})"
                if receipt.message_id:
                    line += f" message id {receipt.message_id.hex()}"
                print(line, flush=True)
                return 0 if receipt.outcome == pb.DELIVERED else 1
            if kind == "error":
                # With our id: this request failed; with id 0: the daemon is closing the session.
                raise Failed(f"the daemon answered request {event.id} with {describe_error(event.error)}")
            # Anything else (a message sent to us, say) is not ours to handle here.
    finally:
        conn.close()


def receive(args, key):
    conn, _ = open_session(args.socket, key, args.timeout)
    try:
        print("waiting for a message", flush=True)
        while True:
            event = conn.read()
            if event is None:
                raise Failed("the daemon closed the connection")
            if event.WhichOneof("event") == "error":
                raise Failed(f"the daemon closed the session: {describe_error(event.error)}")
            if event.WhichOneof("event") == "message":
                message = event.message
                sender = did_from_key(message.from_app)
                print(f"message from {sender}: {message.payload.decode('utf-8', 'replace')}", flush=True)
                # Taken: the sender's receipt says DELIVERED once the daemon has this.
                conn.send(pb.AppRequest(id=0, ack=pb.AckDeliveries(deliveries=[message.delivery])))
                return 0
    finally:
        conn.close()


def main():
    parser = argparse.ArgumentParser(description="A Carrier app in Python.")
    here = os.path.dirname(os.path.abspath(__file__))
    parser.add_argument(
        "--bindings",
        default=os.environ.get("CARRIER_PY_BINDINGS", os.path.join(here, "gen")),
        help="where the generated carrier/v1/*_pb2.py are (default: $CARRIER_PY_BINDINGS, else gen/ here)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    card = commands.add_parser("card", help="print the app's DID and card, making its key if there is none")
    card.add_argument("--key-dir", required=True, help="directory of the app key (app.key)")
    for name, text in [("send", "send one message and print its receipt"), ("receive", "take one message")]:
        command = commands.add_parser(name, help=text)
        command.add_argument("--key-dir", required=True, help="directory of the app key (app.key)")
        command.add_argument(
            "--socket", default=os.environ.get("CARRIER_APP_SOCKET"), help="the app socket (default: $CARRIER_APP_SOCKET)"
        )
        command.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the daemon")
        if name == "send":
            command.add_argument("--to", required=True, help="the recipient app's DID (did:carrier:z...)")
            command.add_argument("--id", type=int, default=1, help="the request id the receipt comes back with")
            command.add_argument("payload", help="the message, sent as UTF-8")
    args = parser.parse_args()
    try:
        load_bindings(args.bindings)
        if args.command == "card":
            try:
                key = load_key(args.key_dir)
            except Failed:
                if os.path.exists(os.path.join(args.key_dir, KEY_FILE_NAME)):
                    raise
                key = create_key(args.key_dir)
            print(f"did: {key.did}")
            print(f"card: {key.card()}")
            return 0
        if not args.socket:
            raise Failed("no app socket: pass --socket or set CARRIER_APP_SOCKET")
        key = load_key(args.key_dir)
        return send(args, key) if args.command == "send" else receive(args, key)
    except Failed as error:
        print(f"carrier_app: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"carrier_app: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
