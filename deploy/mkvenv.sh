#!/bin/sh
# Build the application's virtual environment for one release slot, on the machine (or in the
# chroot) whose architecture it is for.  Usage: mkvenv.sh SRC STAGE PREFIX
#   SRC     a clean copy of the source tree
#   STAGE   staging root: the venv lands in STAGE/PREFIX
#   PREFIX  where it will live on the gateway, e.g. /opt/schwebe/releases/0.1.0
# Venvs are not relocatable: shebangs and activate scripts name their directory, so they are
# rewritten from STAGE/PREFIX to PREFIX, and bytecode is compiled with STAGE stripped.
set -eu
SRC=$1 STAGE=$2 PREFIX=$3
PY=/usr/bin/python3.11   # Debian 12's interpreter: the one the package depends on
VENV="$STAGE$PREFIX"
rm -rf "$VENV"
"$PY" -m venv "$VENV"
# A failed Cython build must fail the package, never ship the pure-Python twin by accident.
SCHWEBE_REQUIRE_EXTENSIONS=1 PYTHONWARNINGS=ignore "$VENV/bin/python" -m pip install -q \
    --disable-pip-version-check --no-warn-script-location "$SRC[concentratord]"
"$VENV/bin/python" -c 'import gateway.frames._frames_c' \
    || { echo "mkvenv: the compiled frame parser does not import" >&2; exit 1; }
# setuptools builds it with -g: the debug sections are most of its size.
if command -v strip >/dev/null; then
    find "$VENV/lib" -path '*/gateway/*' -name '*.so' -exec strip --strip-debug {} +
fi
# The gateway never installs into its own venv: pip and setuptools are dead weight there.
"$VENV/bin/python" -m pip uninstall -q -y pip setuptools >/dev/null 2>&1 || true
rm -f "$VENV"/bin/pip "$VENV"/bin/pip3* "$VENV"/bin/Activate.ps1
for f in "$VENV"/bin/*; do
    [ -L "$f" ] && continue
    if head -c 2 "$f" | grep -q '#!' || grep -qI "$VENV" "$f"; then
        sed -i "s#$VENV#$PREFIX#g" "$f"
    fi
done
sed -i "s#$VENV#$PREFIX#g" "$VENV/pyvenv.cfg"
find "$VENV" -name __pycache__ -type d -prune -exec rm -rf {} +
"$VENV/bin/python" -m compileall -q -j 0 -s "$STAGE" "$VENV/lib" >/dev/null
