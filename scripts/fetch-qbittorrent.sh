#!/usr/bin/env bash
# Fetches a qBittorrent 5.x from Debian's own packages and caches it outside the work tree, so the
# tests can start it next to the system's 4.5.2 (bookworm) without touching the system's packages.
#
#   scripts/fetch-qbittorrent.sh 5.3.0      # prints the path of a `qbittorrent-nox` that runs it
#
# How: apt downloads the package with its whole dependency closure (an empty dpkg status, so libc
# comes too), checked against Debian's signatures, into a private apt directory; every .deb is unpacked with dpkg-deb into one root; a
# wrapper `exec`s that root's own loader with that root's libraries, so the PID the tests start
# is qBittorrent's own. About 40 MB and a minute per version, once: later runs find the cache.
# Fails with one line that says what is missing.
set -euo pipefail

version=${1:?usage: fetch-qbittorrent.sh VERSION}
case "$version" in
    # version | Debian suites to read | target release | exact Debian version (a reproducible bed)
    5.3.0) suites="trixie trixie-backports"; target=trixie-backports; debian_version="5.3.0-1~bpo13+1" ;;
    5.1.0) suites="trixie"; target=trixie; debian_version="5.1.0-2" ;;
    *) echo "missing: no recipe for qBittorrent $version (known: 5.3.0, 5.1.0; 4.5.2 is Debian bookworm's own)" >&2; exit 1 ;;
esac

cache=${QBIT_CONSUMER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/qbit-consumer}
dir=$cache/qbittorrent-$version
wrapper=$dir/bin/qbittorrent-nox
if [ -x "$wrapper" ] && "$wrapper" --version 2>/dev/null | grep -q "v$version\$"; then
    echo "$wrapper"
    exit 0
fi

for tool in apt-get dpkg-deb; do
    command -v "$tool" >/dev/null 2>&1 || { echo "missing: $tool (qBittorrent $version comes from Debian's packages)" >&2; exit 1; }
done
# The machine's own Debian mirror (QBIT_CONSUMER_DEBIAN_MIRROR names another).
mirror=${QBIT_CONSUMER_DEBIAN_MIRROR:-$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)}
[ -n "$mirror" ] || mirror=$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
[ -n "$mirror" ] || { echo "missing: a Debian mirror in /etc/apt/sources.list.d/debian.sources (needed to fetch qBittorrent $version)" >&2; exit 1; }

work=$dir.partial
rm -rf "$work"
mkdir -p "$work"/{lists/partial,cache/archives/partial,root,bin}
: > "$work/status"
# Signed by Debian's archive keys, which bookworm's debian-archive-keyring holds for trixie too.
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
[ -r "$keyring" ] || { echo "missing: $keyring, to check Debian's signatures (apt-get install debian-archive-keyring)" >&2; exit 1; }
for suite in $suites; do echo "deb [signed-by=$keyring] $mirror $suite main"; done > "$work/sources.list"
apt=(apt-get -q
     -o "Dir::Etc::sourcelist=$work/sources.list" -o Dir::Etc::sourceparts=- -o "Dir::State::lists=$work/lists"
     -o "Dir::Cache=$work/cache" -o "Dir::State::status=$work/status" -o Debug::NoLocking=1
     -o APT::Install-Recommends=0 -o APT::Sandbox::User=root)
if ! "${apt[@]}" --error-on=any update >"$work/apt.log" 2>&1; then
    echo "missing: Debian's $suites package lists from $mirror (qBittorrent $version; log: $work/apt.log)" >&2
    exit 1
fi
if ! "${apt[@]}" -y -t "$target" install --download-only "qbittorrent-nox=$debian_version" >>"$work/apt.log" 2>&1; then
    echo "missing: qbittorrent-nox $debian_version in Debian $target from $mirror (log: $work/apt.log)" >&2
    exit 1
fi
for deb in "$work"/cache/archives/*.deb; do dpkg-deb -x "$deb" "$work/root"; done
rm -rf "$work/cache" "$work/lists"
# The machine's architecture names the library folder and the loader (x86_64, aarch64, ...).
libs=$(cd "$work/root" && ls -d usr/lib/*-linux-gnu* 2>/dev/null | head -1 || true)
loader=$(cd "$work/root" && ls usr/lib64/ld-linux*.so.* usr/lib/ld-linux*.so.* 2>/dev/null | head -1 || true)
[ -n "$libs" ] && [ -n "$loader" ] || { echo "missing: a loader and libraries in the unpacked qBittorrent $version ($work/root)" >&2; exit 1; }

cat > "$work/bin/qbittorrent-nox" <<EOF
#!/bin/sh
# qBittorrent $version from Debian's packages (Debian $debian_version), run with its own loader and libraries.
R="$dir/root"
L="\$R/$libs"
QT_PLUGIN_PATH="\$L/qt6/plugins" exec "\$R/$loader" --library-path "\$L:\$L/libproxy" "\$R/usr/bin/qbittorrent-nox" "\$@"
EOF
chmod +x "$work/bin/qbittorrent-nox"
rm -rf "$dir"
mv "$work" "$dir"
if ! "$wrapper" --version 2>/dev/null | grep -q "v$version\$"; then
    echo "missing: qBittorrent $version unpacked in $dir does not run ($("$wrapper" --version 2>&1 | tail -1))" >&2
    exit 1
fi
echo "$wrapper"
