#!/usr/bin/env bash
# Install test: installs the Debian package into a throwaway Debian 12 root
# (debootstrap, minbase) and starts the service there the way
# carrierd.service would. It checks that
#   - apt installs the package with its dependencies, the postinst creates
#     the `carrier` user and group, and the unit is enabled;
#   - the unit's ExecStartPre, run as `carrier`, makes the device identity
#     in /var/lib/carrier (device.key owned by carrier, mode 0600);
#   - after the README's steps to join a network (the admin's genesis and
#     register-device, the ledger and its checkpoint copied in as
#     `carrier`), the unit's
#     ExecStart (`carrierd run --system`, with the installed
#     /etc/carrier/carrierd.toml) starts as `carrier`, with the state and
#     runtime directories made as systemd makes them, and sends READY=1 to
#     NOTIFY_SOCKET;
#   - `carrierctl status --system`, run as `carrier`, answers over
#     /run/carrier/control.sock with the device's DID and network, and the
#     socket refuses root;
#   - nothing the daemon made belongs to root;
#   - SIGTERM stops the daemon with STOPPING=1 and exit status 0.
# systemd does not run in the root: a policy-rc.d keeps the package from
# starting the service, and this script plays the service manager.
#
# Usage (as root): packaging/install-test.sh [path/to/carrier_*.deb]
# Without an argument it builds the package with cargo-deb first. Needs
# debootstrap (installed with apt-get if missing), python3 and access to
# deb.debian.org. The downloaded base system is kept in target/install-test/
# and reused for a week.
set -euo pipefail
cd "$(dirname "$0")/.."

suite=bookworm
mirror=http://deb.debian.org/debian
ready_timeout=60 # s, from start to READY=1
stop_timeout=20  # s, from SIGTERM to exit
service_path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

say() { printf '== %s\n' "$*"; }

[ "$(id -u)" = 0 ] || { echo "install test: must run as root (debootstrap, chroot)" >&2; exit 1; }

apt_install_host() { # command package
  command -v "$1" >/dev/null && return
  say "installing $2 on the host"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}
apt_install_host debootstrap debootstrap
apt_install_host python3 python3-minimal

# The package: given, or built as check-deb.sh builds it.
if [ $# -ge 1 ]; then
  deb=$(realpath -- "$1")
else
  command -v cargo-deb >/dev/null || cargo install cargo-deb --locked
  deb=$(cargo deb -p carrier-daemon --locked | tail -n 1)
fi
[ -f "$deb" ] || { echo "install test: no package at '$deb'" >&2; exit 1; }
say "package $deb"

cache=$PWD/target/install-test
mkdir -p "$cache"
run=$(mktemp -d "$cache/run.XXXXXX")
root=$run/root
daemon="" listener="" timer="" ended="" installed=""

cleanup() {
  local pid
  for pid in $daemon $listener $timer; do kill -KILL "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if mountpoint -q "$root/proc" 2>/dev/null; then umount "$root/proc" || umount -l "$root/proc" || true; fi
  if mountpoint -q "$root/proc" 2>/dev/null; then
    echo "install test: $root/proc is still mounted; leaving $run in place" >&2
  else
    rm -rf --one-file-system "$run"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

show_log() { # file title
  [ -s "$1" ] || return 0
  printf -- '---- %s (%s)\n' "$2" "${1#"$run"/}" >&2
  cat "$1" >&2
}
fail() {
  echo "install test: FAILED: $*" >&2
  [ -n "$installed" ] || show_log "$run/apt.log" "apt-get install"
  show_log "$run/init.log" "ExecStartPre"
  show_log "$run/notify.log" "notify socket"
  show_log "$run/carrierd.out" "carrierd stdout"
  show_log "$run/carrierd.log" "carrierd log"
  exit 1
}

# Commands inside the root with a clean environment, as root.
in_root() { env -i PATH="$service_path" HOME=/root DEBIAN_FRONTEND=noninteractive chroot "$root" "$@"; }

# -- the root ---------------------------------------------------------------
tarball=$cache/debootstrap-$suite-minbase.tgz
find "$tarball" -mtime +7 -delete 2>/dev/null || true
start=$SECONDS
if [ ! -f "$tarball" ]; then
  say "debootstrap: downloading $suite (minbase) from $mirror"
  rm -f "$tarball.part"
  debootstrap --variant=minbase --make-tarball="$tarball.part" "$suite" "$run/download" "$mirror" \
    >"$run/debootstrap.log" 2>&1 || { cat "$run/debootstrap.log" >&2; fail "debootstrap --make-tarball"; }
  mv "$tarball.part" "$tarball"
fi
say "debootstrap: unpacking $suite (minbase) into $root"
debootstrap --variant=minbase --unpack-tarball="$tarball" "$suite" "$root" "$mirror" \
  >"$run/debootstrap.log" 2>&1 || { cat "$run/debootstrap.log" >&2; fail "debootstrap --unpack-tarball"; }
say "debootstrap took $((SECONDS - start)) s"
mount -t proc proc "$root/proc"

# -- install ----------------------------------------------------------------
say "apt-get install ./$(basename "$deb") (no service manager: policy-rc.d refuses starts)"
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 755 "$root/usr/sbin/policy-rc.d"
cp "$deb" "$root/tmp/"
{ in_root apt-get update -qq &&
  in_root apt-get install -y --no-install-recommends "/tmp/$(basename "$deb")"; } >"$run/apt.log" 2>&1 ||
  fail "apt-get install of the package failed"
# shellcheck disable=SC2016 # dpkg-query's format, not the shell's
[ "$(in_root dpkg-query -W -f='${Status}' carrier)" = "install ok installed" ] || fail "dpkg does not list carrier as installed"

passwd=$(in_root getent passwd carrier) || fail "the postinst did not create user carrier"
in_root getent group carrier >/dev/null || fail "the postinst did not create group carrier"
echo "  user: $passwd"
[ -L "$root/etc/systemd/system/multi-user.target.wants/carrierd.service" ] || fail "carrierd.service is not enabled"
installed=1

# -- the service, as the installed unit describes it -------------------------
unit=$root/usr/lib/systemd/system/carrierd.service
[ -f "$unit" ] || fail "no unit at ${unit#"$root"}"
unit_value() { # key: its one value in [Service]
  local values
  values=$(sed -n "/^\[Service\]/,/^\[/ s/^$1=//p" "$unit")
  if [ -z "$values" ] || [ "$(wc -l <<<"$values")" != 1 ]; then fail "carrierd.service: expected one $1="; fi
  printf '%s\n' "$values"
}
user=$(unit_value User)
group=$(unit_value Group)
umask=$(unit_value UMask)
exec_start_pre=$(unit_value ExecStartPre)
exec_start=$(unit_value ExecStart)
home=$(cut -d: -f6 <<<"$passwd")
notify_socket=/run/systemd/notify
read -ra exec_start_pre <<<"$exec_start_pre"
read -ra exec_start <<<"$exec_start"

# As the service's user: the way `sudo -u carrier` runs a command (umask
# 022), and the way systemd runs the unit's commands (its UMask=,
# NOTIFY_SOCKET); both with a clean environment.
user_cmd=(env -i PATH="$service_path" HOME="$home" USER="$user" LOGNAME="$user")
service_cmd=("${user_cmd[@]}" NOTIFY_SOCKET="$notify_socket")
user_cmd+=(chroot --userspec="$user:$group" "$root")
service_cmd+=(chroot --userspec="$user:$group" "$root")
as_user() { (umask 0022 && exec "${user_cmd[@]}" "$@"); }
as_service() { (umask "$umask" && exec "${service_cmd[@]}" "$@"); }

# What systemd makes before it starts the service: StateDirectory= and
# RuntimeDirectory=, owned by User=/Group=, with their modes.
make_service_dirs() {
  local kind base dir mode
  for kind in State:/var/lib Runtime:/run; do
    base=${kind#*:} kind=${kind%%:*}
    dir=$base/$(unit_value "${kind}Directory")
    mode=$(unit_value "${kind}DirectoryMode")
    install -d -m "$mode" "$root$dir"
    chmod "$mode" "$root$dir"
    in_root chown "$user:$group" "$dir"
  done
}

say "first start: ExecStartPre as $user: ${exec_start_pre[*]}"
make_service_dirs
as_service "${exec_start_pre[@]}" >"$run/init.log" 2>&1 || fail "ExecStartPre failed"
did=$(sed -n 's/^did: *//p' "$run/init.log")
card=$(sed -n 's/^card: *//p' "$run/init.log")
[[ $did == did:carrier:* && $card == carrier-card:* ]] || fail "ExecStartPre printed no DID and card"
echo "  device $did"
[ "$(in_root stat -c '%U:%G %a' /var/lib/carrier/device.key)" = "$user:$group 600" ] ||
  fail "device.key is $(in_root stat -c '%U:%G %a' /var/lib/carrier/device.key), not $user:$group 600"

say "joining a network, as the README's install section does"
# The device's DID (idempotent), its card to the admin.
again=$(as_user carrierd init --system --if-missing) || fail "carrierd init --system --if-missing failed"
grep -qF "$did" <<<"$again" || fail "a second init changed the identity: $again"
[ "$(in_root cat /var/lib/carrier/device.card)" = "$card" ] || fail "device.card does not hold the printed card"
# The admin (root, elsewhere in the root) makes the network and registers the device.
in_root carrierctl keygen --kind registrar --out /root/admin/registrar.key >/dev/null
in_root carrierctl ledger genesis --ledger /root/admin/ledger --network install-test --key /root/admin/registrar.key >/dev/null
in_root carrierctl ledger register-device --ledger /root/admin/ledger --key /root/admin/registrar.key "$card" >/dev/null
install -m 644 "$root/root/admin/ledger/ledger.log" "$root/tmp/ledger.log"
install -m 644 "$root/root/admin/ledger/checkpoint" "$root/tmp/checkpoint"
# The device's owner copies the ledger (log and signed checkpoint, never the
# log key) in as the service's user.
as_user mkdir -p /var/lib/carrier/ledger
as_user cp /tmp/ledger.log /tmp/checkpoint /var/lib/carrier/ledger/

# The notify socket: systemd's path, bound by a listener that waits for one
# state (READY=1, STOPPING=1) and exits 0 when it arrives, 1 on timeout.
mkdir -p "$root${notify_socket%/*}"
mkfifo "$run/bound"
listen_for() { # state seconds; returns once the socket is bound
  python3 - "$root$notify_socket" "$1" "$2" >"$run/bound" 2>>"$run/notify.log" <<'EOF' &
import os, socket, sys, time
path, want, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
os.chdir(os.path.dirname(path))  # a short name: sun_path holds 107 bytes
name = os.path.basename(path)
if os.path.lexists(name):
    os.unlink(name)
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.bind(name)
os.chmod(name, 0o666)  # as /run/systemd/notify: services send as their own user
print("bound", flush=True)
deadline = time.monotonic() + timeout
while (left := deadline - time.monotonic()) > 0:
    sock.settimeout(left)
    try:
        message = sock.recv(4096).decode(errors="replace")
    except socket.timeout:
        break
    print(f"received {message!r}", file=sys.stderr, flush=True)
    if want in message.split("\n"):
        sys.exit(0)
print(f"no {want} within {timeout:g} s", file=sys.stderr)
sys.exit(1)
EOF
  listener=$!
  local line=""
  read -r -t 10 line <"$run/bound" || true
  [ "$line" = bound ] || fail "the notify listener did not start"
}

say "start: ExecStartPre, then ExecStart as $user: ${exec_start[*]}"
make_service_dirs
as_service "${exec_start_pre[@]}" >>"$run/init.log" 2>&1 || fail "ExecStartPre failed on the second start"
listen_for READY=1 "$ready_timeout"
start=$SECONDS
# Not through as_service: $! must be carrierd itself, for SIGTERM.
(umask "$umask" && exec "${service_cmd[@]}" "${exec_start[@]}") >"$run/carrierd.out" 2>"$run/carrierd.log" &
daemon=$!
status=0
wait -n -p ended "$listener" "$daemon" || status=$?
if [ "$ended" = "$daemon" ]; then
  daemon=""
  fail "carrierd exited with status $status before it reported READY=1"
fi
listener=""
[ "$status" = 0 ] || fail "carrierd did not report READY=1 within $ready_timeout s"
echo "  READY=1 after $((SECONDS - start)) s"

say "carrierctl status --system as $user"
status_out=$(as_user carrierctl status --system 2>&1) || fail "carrierctl status failed: $status_out"
mapfile -t status_lines <<<"$status_out"
printf '  %s\n' "${status_lines[@]}"
grep -qx "did: *$did" <<<"$status_out" || fail "carrierctl status does not name $did"
grep -q "^network: *install-test " <<<"$status_out" || fail "carrierctl status does not name the network"
grep -q "^ledger: *2 entries" <<<"$status_out" || fail "carrierctl status does not show the 2-entry ledger"
grep -qx "did $did" "$run/carrierd.out" || fail "carrierd did not print its DID"
if refused=$(in_root carrierctl status --system 2>&1); then fail "root's carrierctl got an answer: $refused"; fi

check_owners() {
  local sock others
  [ "$(in_root stat -c '%U:%G %a' /var/lib/carrier)" = "$user:$group 700" ] || fail "/var/lib/carrier is not $user:$group 700"
  [ "$(in_root stat -c '%U:%G %a' /var/lib/carrier/device.key)" = "$user:$group 600" ] || fail "device.key is not $user:$group 600"
  others=$(in_root find /var/lib/carrier /run/carrier ! -user "$user" -printf '%u %p\n')
  [ -z "$others" ] || fail "files of other users in the service's directories: $others"
  if [ "${1:-}" = running ]; then
    sock=$(in_root stat -c '%U:%G %a %F' /run/carrier/control.sock) || fail "no /run/carrier/control.sock"
    [ "$sock" = "$user:$group 600 socket" ] || fail "control.sock is $sock, not $user:$group 600 socket"
    sock=$(in_root stat -c '%U:%G %a %F' /run/carrier/app.sock) || fail "no /run/carrier/app.sock"
    [ "$sock" = "$user:$group 660 socket" ] || fail "app.sock is $sock, not $user:$group 660 socket (group $group's apps)"
  fi
}
check_owners running
echo "  files in /var/lib/carrier and /run/carrier belong to $user"

say "SIGTERM"
listen_for STOPPING=1 "$stop_timeout"
kill -TERM "$daemon" 2>/dev/null || fail "carrierd was gone before SIGTERM"
sleep "$stop_timeout" &
timer=$!
status=0
wait -n -p ended "$daemon" "$timer" || status=$?
[ "$ended" = "$daemon" ] || fail "carrierd did not stop within $stop_timeout s of SIGTERM"
daemon=""
kill "$timer" 2>/dev/null || true
wait "$timer" 2>/dev/null || true
timer=""
[ "$status" = 0 ] || fail "carrierd exited with status $status after SIGTERM"
wait "$listener" || fail "carrierd did not report STOPPING=1"
listener=""
grep -q "carrierd stopped" "$run/carrierd.log" || fail "carrierd did not log that it stopped"
check_owners
echo "  STOPPING=1, exit status 0"

echo "install test: ok ($((SECONDS)) s)"
