#!/usr/bin/env bash
# Builds the images the test fixtures' container tier runs in CI, from this machine's own Debian
# binaries: there is no image registry here. Each image is a root filesystem holding the server
# binaries, the libraries `ldd` lists and the loader, imported with `docker import`.
#
# Every image is named under a loopback registry (127.0.0.1:5999/aimon/…), so that a pull of an
# image that is missing fails fast against 127.0.0.1 and never reaches out.
#
# Needs DOCKER_HOST (see .ci/docker.bash) and the packages redis-server, postgresql-15, influxdb
# and victoria-metrics. Prints `export AIMON_TEST_<BACKEND>_IMAGE=…` for each image built.
set -euo pipefail

REGISTRY=127.0.0.1:5999/aimon
WORK=$(mktemp -d /tmp/aimon-images.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

# The upstream version of a Debian package, as an image tag: no epoch, no Debian revision, and
# `-` for what a tag cannot hold (influxdb is 1.6.7~rc0, victoria-metrics 1.79.5+ds1).
package_version() {
    local v
    v=$(dpkg-query -W -f='${Version}' "$1")
    v=${v#*:}
    v=${v%-*}
    echo "${v//[^A-Za-z0-9_.-]/-}"
}

# Copies files into the root filesystem $1 at their own paths, following symlinks (`cp -L`:
# /usr/bin/redis-server is a link, and Redis picks its mode from argv[0]), with every library
# `ldd` lists for them and the loader.
add_files() {
    local root=$1
    shift
    local file lib
    for file in "$@"; do
        mkdir -p "$root$(dirname "$file")"
        cp -L "$file" "$root$file"
        ldd "$file" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' \
            | while read -r lib; do
                if [ ! -e "$root$lib" ]; then
                    mkdir -p "$root$(dirname "$lib")"
                    cp -L "$lib" "$root$lib"
                fi
            done
    done
}

# A root filesystem with /bin/sh (dash), /tmp and a root user.
new_root() {
    local root="$WORK/$1"
    mkdir -p "$root/tmp" "$root/etc" "$root/bin"
    chmod 1777 "$root/tmp"
    add_files "$root" /bin/dash
    mv "$root/bin/dash" "$root/bin/sh"
    echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
    echo 'root:x:0:' >"$root/etc/group"
    echo "$root"
}

# Imports the root filesystem $1 as image $2 with the `docker import --change` lines that follow.
import() {
    local root=$1 image=$2
    shift 2
    local changes=()
    local change
    for change in "$@"; do changes+=(--change "$change"); done
    tar -C "$root" -c . | docker import "${changes[@]}" - "$image" >/dev/null
    echo "built $image ($(du -sh "$root" | cut -f1))" >&2
}

# Redis: redis-server (also the Sentinel: `redis-server sentinel.conf --sentinel`), redis-cli
# for the topology setup, and sh for the Sentinel's writable configuration file.
redis_image() {
    local root image
    root=$(new_root redis)
    add_files "$root" /usr/bin/redis-server /usr/bin/redis-cli
    image="$REGISTRY/redis:$(package_version redis-server)"
    import "$root" "$image" 'ENV PATH=/usr/bin:/bin' 'WORKDIR /tmp' 'CMD ["redis-server"]'
    echo "export AIMON_TEST_REDIS_IMAGE=$image"
}

# PostgreSQL: initdb and postgres, their libraries (pkglibdir without the LLVM JIT), share/,
# the time zones, a `postgres` user and an entrypoint that runs initdb once, then
# `postgres -D $PGDATA "$@"`: the same arguments the official image takes.
postgres_image() {
    local root image bin lib share so
    bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
    lib=$("$bin/pg_config" --pkglibdir)
    share=$("$bin/pg_config" --sharedir)
    root=$(new_root postgres)
    add_files "$root" "$bin/initdb" "$bin/postgres"
    for so in "$lib"/*.so; do
        case "$so" in *llvmjit*) continue ;; esac
        add_files "$root" "$so"
    done
    mkdir -p "$root$share" "$root/usr/share"
    cp -a "$share/." "$root$share/"
    rm -rf "$root$share/man"
    cp -a /usr/share/zoneinfo "$root/usr/share/zoneinfo"
    echo 'postgres:x:999:999:PostgreSQL:/var/lib/postgresql:/bin/sh' >>"$root/etc/passwd"
    echo 'postgres:x:999:' >>"$root/etc/group"
    mkdir -p "$root/var/lib/postgresql" "$root/var/run/postgresql"
    chown 999:999 "$root/var/lib/postgresql" "$root/var/run/postgresql"
    cat >"$root/entrypoint" <<SCRIPT
#!/bin/sh
set -e
if [ ! -s "\$PGDATA/PG_VERSION" ]; then
    initdb -D "\$PGDATA" -U postgres --auth=trust -E UTF8 --no-locale --no-sync >/dev/null
fi
exec postgres -D "\$PGDATA" "\$@"
SCRIPT
    chmod 755 "$root/entrypoint"
    image="$REGISTRY/postgres:$(package_version "postgresql-$(basename "$(dirname "$bin")")")"
    import "$root" "$image" "ENV PATH=$bin:/usr/bin:/bin" 'ENV PGDATA=/var/lib/postgresql/data' \
        'ENV TZ=UTC' 'USER postgres' 'ENTRYPOINT ["/entrypoint"]'
    echo "export AIMON_TEST_POSTGRES_IMAGE=$image"
}

# InfluxDB 1.x: influxd, configured by INFLUXDB_* environment variables (as the official image).
influxdb_image() {
    local root image
    root=$(new_root influxdb)
    add_files "$root" /usr/bin/influxd
    image="$REGISTRY/influxdb:$(package_version influxdb)"
    import "$root" "$image" 'ENV PATH=/usr/bin:/bin' 'CMD ["influxd", "run"]'
    echo "export AIMON_TEST_INFLUXDB_IMAGE=$image"
}

# VictoriaMetrics: the binary as the entrypoint, flags as the command (as the official image).
victoria_metrics_image() {
    local root image
    root=$(new_root victoria-metrics)
    add_files "$root" /usr/bin/victoria-metrics
    image="$REGISTRY/victoria-metrics:$(package_version victoria-metrics)"
    import "$root" "$image" 'ENTRYPOINT ["/usr/bin/victoria-metrics"]'
    echo "export AIMON_TEST_VICTORIA_METRICS_IMAGE=$image"
}

redis_image
postgres_image
influxdb_image
victoria_metrics_image
