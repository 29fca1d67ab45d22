#!/bin/sh
# Build the arm64 package and prove it on arm64 under emulation (not part of .ci/run: slow).
#   deploy/check-arm64.sh [--base DIR] [--deb FILE]   (--deb: test that package, skip the build)
# 1. an arm64 Debian 12 root (debootstrap, once; kept in build/deb-base-arm64 or --base)
# 2. the arm64 .deb built inside an overlay of it: venv from PyPI's aarch64 wheels, the
#    Cython parser compiled by the root's own gcc (deploy/build-deb.sh --arch arm64)
# 3. that .deb installed with dpkg into a fresh overlay (maintainer scripts run emulated),
#    `schwebe config validate` and the fast test subset below run there against the
#    installed /opt/schwebe/current, never against this checkout's code.
# Needs root, debootstrap, qemu-user-static and binfmt_misc (the qemu-aarch64 handler).
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/.." && pwd)
BASE="$SRC/build/deb-base-arm64"
DEB=""
while [ $# -gt 0 ]; do
    case $1 in
        --base) BASE=$2; shift 2 ;;
        --deb) DEB=$(cd "$(dirname "$2")" && pwd)/$(basename "$2"); shift 2 ;;
        *) echo "check-arm64: unknown argument '$1'" >&2; exit 2 ;;
    esac
done
# The subset: parsing (compiled parser against its pure-Python twin), buffer and crash
# safety, config, LoRaWAN crypto, sensor decoders, parking, the GWMP server and the
# daemon's READY/SIGTERM path. Left out: tests needing mosquitto, chromium, pyzmq, the
# serial stack's timing-heavy runs, and the slow marker.
SUBSET="test_frames.py test_frames_differential.py test_buffer.py test_config.py
test_decode.py test_lorawan_fast.py test_sensor_decoders.py test_parking_spots.py
test_parking_sessions.py test_gwmp_server.py test_run_daemon.py test_remote_sealed.py
test_datadir_lock.py test_verdict.py"
TEST_DEPS="pytest>=8 pytest-asyncio>=0.24 pytest-timeout>=2.3 hypothesis>=6.100"

say() { echo "check-arm64: $*" >&2; }
[ "$(id -u)" -eq 0 ] || { say "needs root (debootstrap, chroot, mount)"; exit 2; }
for t in debootstrap dpkg-deb; do
    command -v $t >/dev/null || { say "$t missing: apt-get install debootstrap qemu-user-static"; exit 2; }
done
[ -e /proc/sys/fs/binfmt_misc/status ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || update-binfmts --enable qemu-aarch64 2>/dev/null || true
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || {
    say "no qemu-aarch64 binfmt handler: apt-get install qemu-user-static binfmt-support"; exit 2; }

START=$(date +%s)
if [ ! -x "$BASE/usr/bin/python3.11" ]; then
    say "debootstrapping arm64 bookworm into $BASE"
    rm -rf "$BASE.partial"
    debootstrap --arch=arm64 --variant=minbase \
        --include=python3,python3-venv,python3-dev,gcc,libc6-dev,systemd,adduser,ca-certificates \
        bookworm "$BASE.partial" http://deb.debian.org/debian >/dev/null
    mv "$BASE.partial" "$BASE"
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/schwebe-arm64.XXXXXX")
MOUNTS=""
cleanup() {
    for m in $MOUNTS; do umount -l "$m" 2>/dev/null || true; done
    rm -rf --one-file-system "$WORK"
}
trap cleanup EXIT
overlay() {  # overlay NAME: a throwaway copy of the base in $WORK/NAME/root
    mkdir -p "$WORK/$1/u" "$WORK/$1/w" "$WORK/$1/root"
    mount -t overlay overlay -o "lowerdir=$BASE,upperdir=$WORK/$1/u,workdir=$WORK/$1/w" "$WORK/$1/root"
    MOUNTS="$WORK/$1/root $MOUNTS"
}

if [ -z "$DEB" ]; then
    overlay build
    T0=$(date +%s)
    DEB=$("$HERE/build-deb.sh" --arch arm64 --root "$WORK/build/root" --fast --out "$SRC/dist")
    say "built $DEB in $(( $(date +%s) - T0 )) s"
fi

overlay test
R="$WORK/test/root"
T0=$(date +%s)
# The root's own (arm64) dpkg installs it: this machine's dpkg refuses a foreign architecture.
cp "$DEB" "$R/tmp/schwebe.deb"
chroot "$R" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
    dpkg -i /tmp/schwebe.deb >/dev/null
say "installed in $(( $(date +%s) - T0 )) s"
file "$R/opt/schwebe/current/lib/python3.11/site-packages/gateway/frames/"_frames_c*.so 2>/dev/null \
    | sed 's/^.*: /check-arm64: compiled parser: /' >&2 || true
mount -t proc proc "$R/proc"; MOUNTS="$R/proc $MOUNTS"
mount --bind /dev "$R/dev"; MOUNTS="$R/dev $MOUNTS"
mount --bind /dev/pts "$R/dev/pts"; MOUNTS="$R/dev/pts $MOUNTS"
cp /etc/resolv.conf "$R/etc/resolv.conf"
cp "${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}" "$R/tmp/ca.crt"
in_root() { chroot "$R" env -i PATH=/usr/bin:/bin HOME=/root PIP_CERT=/tmp/ca.crt "$@"; }
in_root uname -m | sed 's/^/check-arm64: uname -m in the root: /' >&2
in_root /usr/sbin/chroot --userspec=schwebe:schwebe / /usr/bin/schwebe config validate /etc/schwebe/schwebe.toml

# A test venv that sees the installed application (a .pth into its site-packages) plus
# the test tools; the tests are copied without the gateway/ sources beside them.
in_root /usr/bin/python3.11 -m venv /tmp/testenv
echo /opt/schwebe/current/lib/python3.11/site-packages \
    > "$R/tmp/testenv/lib/python3.11/site-packages/schwebe-installed.pth"
# shellcheck disable=SC2086
in_root /tmp/testenv/bin/pip install -q --disable-pip-version-check $TEST_DEPS
mkdir -p "$R/tmp/check"
cp -a "$SRC/tests" "$SRC/deploy" "$SRC/pyproject.toml" "$R/tmp/check/"
# tests that start `.venv/bin/python` of the checkout get the test venv
ln -s /tmp/testenv "$R/tmp/check/.venv"
T0=$(date +%s)
set +e
# shellcheck disable=SC2046
in_root sh -c "cd /tmp/check && /tmp/testenv/bin/python -m pytest -q -p no:cacheprovider \
    $(for f in $SUBSET; do printf 'tests/%s ' "$f"; done)" > "$WORK/pytest.log" 2>&1
RC=$?
set -e
tail -15 "$WORK/pytest.log"
say "tests: exit $RC in $(( $(date +%s) - T0 )) s; whole check $(( $(date +%s) - START )) s"
exit $RC
