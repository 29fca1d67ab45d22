#!/bin/sh
# Build the Schwebe Debian package with dpkg-deb (README "Deploy" says why not debhelper).
#   deploy/build-deb.sh [--arch amd64|arm64] [--root DIR] [--version V] [--out DIR] [--fast]
# --fast compresses with gzip -1 instead of xz (tests and CI: a minute less, a third larger).
# The venv is built for the package's architecture: on this machine for its own
# architecture, else inside --root, a debootstrapped root of that architecture (run under
# qemu-user-static through binfmt_misc) that has python3-venv, python3-dev and gcc.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/.." && pwd)
ARCH=$(dpkg --print-architecture)
ROOT="" VERSION="" OUT="$SRC/dist" COMPRESS="-Zxz -z6"
while [ $# -gt 0 ]; do
    case $1 in
        --arch) ARCH=$2; shift 2 ;;
        --root) ROOT=$2; shift 2 ;;
        --version) VERSION=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --fast) COMPRESS="-Zgzip -z1"; shift ;;
        *) echo "build-deb: unknown argument '$1' (see the head of $0)" >&2; exit 2 ;;
    esac
done
[ -n "$VERSION" ] || VERSION=$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$SRC/pyproject.toml" | head -1)
HOST_ARCH=$(dpkg --print-architecture)
if [ "$ARCH" != "$HOST_ARCH" ] && [ -z "$ROOT" ]; then
    echo "build-deb: --arch $ARCH on a $HOST_ARCH machine needs --root, an $ARCH debootstrap root (deploy/check-arm64.sh makes one)" >&2
    exit 2
fi
PREFIX=/opt/schwebe/releases/$VERSION
WORK=$(mktemp -d "${TMPDIR:-/tmp}/schwebe-deb.XXXXXX")
trap 'rm -rf "$WORK"; [ -z "$ROOT" ] || rm -rf "$ROOT/tmp/schwebe-build"' EXIT
PKG="$WORK/pkg"
mkdir -p "$PKG"

# A clean copy of the tracked sources: no .venv, no in-place extension from `make install`.
mkdir -p "$WORK/src"
if git -C "$SRC" rev-parse --git-dir >/dev/null 2>&1; then
    (cd "$SRC" && git ls-files -z --cached --others --exclude-standard | xargs -0 tar -cf - 2>/dev/null) \
        | tar -xf - -C "$WORK/src"
else
    (cd "$SRC" && tar --exclude=.venv --exclude=build --exclude=dist --exclude='*.so' -cf - .) \
        | tar -xf - -C "$WORK/src"
fi
sed -i "s/^version *= *\".*\"/version = \"$VERSION\"/" "$WORK/src/pyproject.toml"
sed -i "s/^__version__ = \".*\"/__version__ = \"$VERSION\"/" "$WORK/src/gateway/__init__.py"

if [ -z "$ROOT" ]; then
    sh "$HERE/mkvenv.sh" "$WORK/src" "$PKG" "$PREFIX"
else
    B="$ROOT/tmp/schwebe-build"
    rm -rf "$B"; mkdir -p "$B"
    cp -a "$WORK/src" "$B/src"
    cp "$HERE/mkvenv.sh" "$B/"
    cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
    [ -e "$ROOT/etc/ssl/certs/ca-certificates.crt" ] || { echo "build-deb: $ROOT lacks ca-certificates" >&2; exit 1; }
    mountpoint -q "$ROOT/proc" || mount -t proc proc "$ROOT/proc"
    # pip in the root trusts what this machine trusts (a proxy's CA included).
    cp "${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}" "$B/ca.crt"
    chroot "$ROOT" env -i PATH=/usr/bin:/bin HOME=/root PIP_CERT=/tmp/schwebe-build/ca.crt \
        sh /tmp/schwebe-build/mkvenv.sh \
        /tmp/schwebe-build/src /tmp/schwebe-build/stage "$PREFIX"
    umount "$ROOT/proc" 2>/dev/null || true
    mkdir -p "$PKG/opt/schwebe/releases"
    mv "$B/stage$PREFIX" "$PKG$PREFIX"
fi

# Files around the venv.
install -d "$PKG/usr/bin" "$PKG/etc/schwebe/packet-forwarder" "$PKG/etc/schwebe/concentratord" "$PKG/lib/systemd/system" \
    "$PKG/lib/udev/rules.d" "$PKG/usr/share/doc/schwebe/examples" "$PKG/DEBIAN"
ln -s /opt/schwebe/current/bin/schwebe "$PKG/usr/bin/schwebe"
install -m 0640 "$HERE/schwebe.example.toml" "$PKG/etc/schwebe/schwebe.toml"
install -m 0644 "$HERE/packet-forwarder/global_conf.json" "$PKG/etc/schwebe/packet-forwarder/global_conf.json"
install -m 0644 "$HERE/packet-forwarder/concentratord.toml" "$PKG/etc/schwebe/concentratord/concentratord.toml"
install -m 0644 "$HERE/schwebe.service" "$HERE/packet-forwarder/schwebe-lora-pkt-fwd.service" \
    "$HERE/packet-forwarder/schwebe-concentratord.service" "$PKG/lib/systemd/system/"
install -m 0644 "$HERE/udev/60-schwebe.rules" "$PKG/lib/udev/rules.d/"
install -m 0644 "$SRC/README.md" "$HERE/debian/copyright" "$PKG/usr/share/doc/schwebe/"
install -m 0644 "$HERE/journald/schwebe-journald.conf" "$HERE/udev/61-schwebe-local.rules.example" \
    "$PKG/usr/share/doc/schwebe/examples/"
for s in postinst prerm postrm; do
    sed "s#@VERSION@#$VERSION#g" "$HERE/debian/$s" > "$PKG/DEBIAN/$s"
    chmod 0755 "$PKG/DEBIAN/$s"
done
find "$PKG/etc" -type f | sed "s#^$PKG##" | sort > "$PKG/DEBIAN/conffiles"
SIZE=$(du -sk --exclude=DEBIAN "$PKG" | cut -f1)
sed -e "s#@VERSION@#$VERSION#" -e "s#@ARCH@#$ARCH#" -e "s#@SIZE@#$SIZE#" \
    "$HERE/debian/control" > "$PKG/DEBIAN/control"
mkdir -p "$OUT"
DEB="$OUT/schwebe_${VERSION}_${ARCH}.deb"
# shellcheck disable=SC2086
dpkg-deb --root-owner-group $COMPRESS --build "$PKG" "$DEB" >/dev/null
echo "$DEB"
