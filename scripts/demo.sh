#!/usr/bin/env bash
# A scripted walkthrough of provisioning a Carrier network on the embedded
# ledger, with the real binaries, in a throwaway directory:
# genesis → device identities → registration → an app → rotation →
# revocation → verification, and what tampering does to the ledger.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --quiet --release -p carrier-daemon --bins
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
run carrierctl ledger register-app --ledger admin/ledger --key laptop/device.key --name chat "$(field card <<<"$app_out")"

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
echo
echo "demo finished: the ledger caught the tampering."
