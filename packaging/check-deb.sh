#!/usr/bin/env bash
# Builds the Debian package and checks what it holds: both binaries, the
# unit, the sysusers entry, the default configuration as a conffile.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo-deb >/dev/null || cargo install cargo-deb --locked
deb=$(cargo deb -p carrier-daemon --locked | tail -n 1)
[ -f "$deb" ] || { echo "cargo deb did not produce a package" >&2; exit 1; }
echo "built $deb"

contents=$(dpkg-deb -c "$deb" | awk '{print $NF}')
missing=0
for path in ./usr/bin/carrierd ./usr/bin/carrierctl \
            ./usr/lib/systemd/system/carrierd.service \
            ./usr/lib/sysusers.d/carrier.conf \
            ./etc/carrier/carrierd.toml \
            ./usr/share/doc/carrier/README.md; do
  if grep -qx -- "$path" <<<"$contents"; then echo "  has $path"; else echo "  MISSING $path" >&2; missing=1; fi
done
conffiles=$(dpkg-deb -I "$deb" conffiles)
grep -qx /etc/carrier/carrierd.toml <<<"$conffiles" || { echo "  carrierd.toml is not a conffile" >&2; missing=1; }
dpkg-deb -I "$deb" postinst | grep -q systemd-sysusers || { echo "  postinst does not create the user" >&2; missing=1; }
[ "$missing" = 0 ] && echo "package contents: ok"
exit "$missing"
