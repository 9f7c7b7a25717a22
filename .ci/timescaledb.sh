#!/usr/bin/env bash
# CI: builds and installs TimescaleDB 2.26.4 (the last line that supports PostgreSQL 15) from its
# vendored public source release, so the TimescaleDB fixture can start a cluster that preloads it.
# Nothing of TimescaleDB is kept in this repository: the tarball is found outside it.
#
# The tarball: $AIMON_TIMESCALEDB_TARBALL, else <repo>/../shared/vendor/, else /work/shared/vendor/.
# Does nothing when this version's library is already installed; builds in a temporary directory
# it removes; any failure stops CI (the suite requires the `timescale` backend).
set -euo pipefail

VERSION=2.26.4
PG_CONFIG="${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}"
repo="$(cd "$(dirname "$0")/.." && pwd)"

fail() {
    echo "timescaledb.sh: $*" >&2
    exit 1
}

# The packages the build needs (the server headers and pg_config, cmake). Wait for a dpkg lock
# another installer holds instead of failing at once.
apt_install() {
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq "$@"
}
if [ ! -x "$PG_CONFIG" ] || ! command -v cmake >/dev/null 2>&1 \
    || [ ! -f "$("$PG_CONFIG" --includedir-server 2>/dev/null)/postgres.h" ]; then
    apt_install postgresql-server-dev-15 cmake
fi
[ -x "$PG_CONFIG" ] || fail "no pg_config at $PG_CONFIG (postgresql-server-dev-15)"

pkglibdir="$("$PG_CONFIG" --pkglibdir)"
sharedir="$("$PG_CONFIG" --sharedir)"
if [ -f "$pkglibdir/timescaledb-$VERSION.so" ] && [ -f "$pkglibdir/timescaledb.so" ] \
    && [ -f "$sharedir/extension/timescaledb--$VERSION.sql" ]; then
    echo "TimescaleDB $VERSION is installed in $pkglibdir"
    exit 0
fi

tarball=""
for candidate in "${AIMON_TIMESCALEDB_TARBALL:-}" \
    "$repo/../shared/vendor/timescaledb-$VERSION.tar.gz" \
    "/work/shared/vendor/timescaledb-$VERSION.tar.gz"; do
    if [ -n "$candidate" ] && [ -f "$candidate" ]; then
        tarball="$candidate"
        break
    fi
done
if [ -n "${AIMON_TIMESCALEDB_TARBALL:-}" ] && [ "$tarball" != "$AIMON_TIMESCALEDB_TARBALL" ]; then
    fail "AIMON_TIMESCALEDB_TARBALL=$AIMON_TIMESCALEDB_TARBALL is not a file"
fi
[ -n "$tarball" ] || fail "no timescaledb-$VERSION.tar.gz (set AIMON_TIMESCALEDB_TARBALL, or put it in $repo/../shared/vendor/)"

work="$(mktemp -d "${TMPDIR:-/tmp}/aimon-timescaledb.XXXXXX")"
trap 'rm -rf "$work"' EXIT
echo "building TimescaleDB $VERSION from $tarball in $work"
tar -xzf "$tarball" -C "$work"
src="$work/timescaledb-$VERSION"
[ -f "$src/bootstrap" ] || fail "$tarball has no timescaledb-$VERSION/bootstrap"
(
    cd "$src"
    ./bootstrap -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF -DWARNINGS_AS_ERRORS=OFF \
        -DPG_CONFIG="$PG_CONFIG" -DCMAKE_BUILD_TYPE=Release >"$work/bootstrap.log" 2>&1 \
        || { tail -n 50 "$work/bootstrap.log" >&2; fail "bootstrap failed"; }
    make -C build -j2 install >"$work/make.log" 2>&1 \
        || { tail -n 50 "$work/make.log" >&2; fail "make install failed"; }
)
[ -f "$pkglibdir/timescaledb-$VERSION.so" ] || fail "the build installed no $pkglibdir/timescaledb-$VERSION.so"
echo "TimescaleDB $VERSION installed in $pkglibdir"
