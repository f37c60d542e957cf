#!/usr/bin/env bash
# A scripted walkthrough with the real binaries, in a throwaway directory:
# 1. provisioning a network on the embedded ledger: genesis → device
#    identities → registration → an app → rotation → revocation →
#    verification, and what tampering does to the ledger;
# 2. three daemons on loopback: the first sequences the ledger, the other
#    two join from one invitation line (`carrierd init --invite`), wait for
#    their registration and are admitted; apps registered through their own
#    daemons exchange a message and a stream (the SDK's chat and echo
#    examples), and every daemon shuts down cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --quiet --release -p carrier-daemon -p carrier-sdk --bins --examples
bin="$PWD/target/release"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$'; printf ' %q' "$@"; printf '\n'; "$@"; }
flip_byte() { # file offset: xor one byte with 1, using only coreutils
  local byte
  byte=$(od -An -tu1 -j "$2" -N1 "$1" | tr -d ' ')
  printf "$(printf '\\%03o' $((byte ^ 1)))" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}
field() { sed -n "s/^$1: *//p"; }
carrierctl() { "$bin/carrierctl" "$@"; }
carrierd() { "$bin/carrierd" "$@"; }

step "The admin makes a registrar key and the network's genesis"
run carrierctl keygen --kind registrar --out admin/registrar.key
run carrierctl ledger genesis --ledger admin/ledger --network demo --key admin/registrar.key

step "Two devices make their identities; each prints a card"
laptop_out=$(carrierd init --data-dir laptop); echo "$laptop_out"
phone_out=$(carrierd init --data-dir phone); echo "$phone_out"
laptop=$(field did <<<"$laptop_out"); phone=$(field did <<<"$phone_out")

step "The admin registers both devices from their cards"
run carrierctl ledger register-device --ledger admin/ledger --key admin/registrar.key --role relay laptop/device.card
run carrierctl ledger register-device --ledger admin/ledger --key admin/registrar.key phone/device.card

step "An app on the laptop gets a key; the laptop registers it"
app_out=$(carrierctl keygen --kind app --out apps/chat.key); echo "$app_out"
run carrierctl ledger register-app --ledger admin/ledger --key laptop/device.key --app-key apps/chat.key --name chat "$(field card <<<"$app_out")"

step "The phone rotates its keys (signed with its current key)"
next_out=$(carrierctl keygen --kind device --out phone/next.key)
run carrierctl ledger rotate --ledger admin/ledger --key phone/device.key "$phone" "$(field card <<<"$next_out")"

step "The laptop is lost: the admin revokes it, and its app with it"
run carrierctl ledger revoke --ledger admin/ledger --key admin/registrar.key --reason "lost on a train" "$laptop"
app=$(field did <<<"$app_out")
run carrierctl ledger resolve --ledger admin/ledger "$app"

step "The whole ledger, and its verification from genesis"
run carrierctl ledger show --ledger admin/ledger
run carrierctl ledger verify --ledger admin/ledger

step "One flipped byte in the stored ledger, and verify names the entry"
flip_byte admin/ledger/ledger.log 60
printf '$ carrierctl ledger verify --ledger admin/ledger\n'
if carrierctl ledger verify --ledger admin/ledger; then
  echo "tampering went unnoticed: this is a bug" >&2; exit 1
fi
echo "the ledger caught the tampering."

step "Three daemons on loopback: one sequences, two join from an invitation line"
carrierctl keygen --kind registrar --out net/registrar.key >/dev/null
carrierctl ledger genesis --ledger net/ledger --network loopback --key net/registrar.key
carrierd init --data-dir net/n1 >/dev/null
carrierctl ledger register-device --ledger net/ledger --key net/registrar.key net/n1/device.card >/dev/null
# n1 runs the network's sequencer: it holds the log key from now on (and the
# admin's directory no longer sequences: never both).
mkdir -p net/n1/ledger && cp net/ledger/ledger.log net/ledger/checkpoint net/n1/ledger/
mv net/ledger/log.key net/n1/log.key

# wait_for FILE TEXT [COUNT]: until FILE has COUNT lines containing TEXT (10 s at most).
wait_for() {
  local tries=0
  until [ "$(grep -c -- "$2" "$1" 2>/dev/null || true)" -ge "${3:-1}" ]; do
    tries=$((tries + 1))
    if [ "$tries" -gt 100 ]; then echo "timed out waiting for '$2' in $1" >&2; exit 1; fi
    sleep 0.1
  done
}

pids=()
stop_daemons() { [ ${#pids[@]} -eq 0 ] || kill -TERM "${pids[@]}" 2>/dev/null || true; }
trap 'stop_daemons; rm -rf "$work"' EXIT
start() { # node [extra config line]
  { echo 'listen = "127.0.0.1:0"'; echo "runtime_dir = \"$work/net/$1/run\""; [ -z "${2:-}" ] || echo "$2"; } > "net/$1.toml"
  [ ! -f "net/$1/carrierd.toml" ] || cat "net/$1/carrierd.toml" >> "net/$1.toml"
  RUST_LOG=info "$bin/carrierd" run --config "net/$1.toml" --data-dir "net/$1" > "net/$1.out" 2> "net/$1.log" &
  pids+=($!)
}
start n1 "$(printf '[ledger]\nsequencer_key = "%s"' "$work/net/n1/log.key")"
wait_for net/n1.out "listening on"
ctl1=net/n1/run/control.sock
invite=$(carrierctl invite --socket "$ctl1")
echo "the admin's invitation (one line): ${invite:0:72}…"
for node in n2 n3; do
  run carrierd init --data-dir "net/$node" --invite "$invite" --config "net/$node/carrierd.toml"
  start "$node"
done
wait_for net/n2.log "waiting for registration"
wait_for net/n2.out "listening on" # its control socket is up
run carrierctl status --socket net/n2/run/control.sock
for node in n2 n3; do
  run carrierctl ledger register-device --submit --wait --socket "$ctl1" --key net/registrar.key "net/$node/device.card"
done
for node in n2 n3; do wait_for "net/$node.log" "registered on the ledger"; done
for node in n1 n2 n3; do wait_for "net/$node.log" "peer up" 2; done

# Three apps, each registered by its own device, the request handed to that
# device's daemon and forwarded to the sequencer: an echo service on n1,
# bob on n2 and alice on n3. Their keys sit where the SDK looks (DIR/app.key).
app_did() { # name node: makes the app's key, registers it under node, prints its DID
  local out
  mkdir -p "net/apps/$1"
  out=$(carrierctl keygen --kind app --out "net/apps/$1/app.key")
  carrierctl ledger register-app --submit --wait --socket "net/$2/run/control.sock" --key "net/$2/device.key" \
    --app-key "net/apps/$1/app.key" --name "$1" "$(field card <<<"$out")" >/dev/null
  field did <<<"$out"
}
echo_app=$(app_did echo n1); bob=$(app_did bob n2); alice=$(app_did alice n3)
# Each daemon holds every registration before its apps connect.
for node in n1 n2 n3; do
  until carrierctl ledger resolve --socket "net/$node/run/control.sock" "$alice" >/dev/null 2>&1 \
    && carrierctl ledger resolve --socket "net/$node/run/control.sock" "$bob" >/dev/null 2>&1 \
    && carrierctl ledger resolve --socket "net/$node/run/control.sock" "$echo_app" >/dev/null 2>&1; do sleep 0.1; done
done
run carrierctl ledger show --socket "$ctl1"
run carrierctl ledger checkpoint --socket net/n3/run/control.sock
for node in n1 n2 n3; do
  echo
  echo "$node is $(sed -n 's/^did //p' "net/$node.out")"
  run carrierctl peers --socket "net/$node/run/control.sock"
done
echo
run carrierctl status --socket net/n3/run/control.sock

step "Apps talk through their daemons: a message from alice (n3) to bob (n2)"
"$bin/examples/chat" --dir net/apps/bob --socket net/n2/run/app.sock > net/bob.out 2>&1 &
pids+=($!)
wait_for net/bob.out "connected through device"
printf '$ echo "hi bob" | chat --dir net/apps/alice --socket net/n3/run/app.sock %s\n' "$bob"
echo "hi bob" | "$bin/examples/chat" --dir net/apps/alice --socket net/n3/run/app.sock "$bob" >/dev/null
wait_for net/bob.out "hi bob"
echo "bob's chat printed: $(grep 'hi bob' net/bob.out)"

step "And a stream: alice opens the echo service on n1 by its app's DID"
"$bin/examples/echo" serve --dir net/apps/echo --socket net/n1/run/app.sock > net/echo.out 2>&1 &
pids+=($!)
wait_for net/echo.out "is up"
run "$bin/examples/echo" send "$echo_app" "hello through carrier" --dir net/apps/alice --socket net/n3/run/app.sock

step "SIGTERM: each daemon closes its links with the shutdown code and stops"
stop_daemons
for node in n1 n2 n3; do wait_for "net/$node.log" "carrierd stopped"; done
pids=()
for node in n1 n2 n3; do
  echo "  $node: $(grep -o 'carrierd stopped' "net/$node.log")"
done
echo
echo "demo finished."
