# Sourced by .ci/run: a private Docker engine for the test fixtures' container tier.
#
# `docker_start` runs Debian's `dockerd` as a child of this shell with everything under a new
# temporary directory (data root, exec root, pid file, socket) and no bridge network at all, so a
# container can only ever use the host's network (the fixtures listen on 127.0.0.1); it exports
# DOCKER_HOST for the tests. `docker_stop` stops it by its PID and removes what it left.

docker_start() {
    DOCKER_TMP=$(mktemp -d /tmp/aimon-dockerd.XXXXXX)
    mkdir -p "$DOCKER_TMP/data" "$DOCKER_TMP/exec"
    dockerd \
        --data-root "$DOCKER_TMP/data" \
        --exec-root "$DOCKER_TMP/exec" \
        --pidfile "$DOCKER_TMP/dockerd.pid" \
        -H "unix://$DOCKER_TMP/docker.sock" \
        --bridge=none --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false \
        --storage-driver overlay2 \
        >"$DOCKER_TMP/dockerd.log" 2>&1 &
    DOCKERD_PID=$!
    export DOCKER_HOST="unix://$DOCKER_TMP/docker.sock"
    local waited=0
    until docker version >/dev/null 2>&1; do
        if ! kill -0 "$DOCKERD_PID" 2>/dev/null || [ "$waited" -ge 60 ]; then
            echo "dockerd did not start; its log:" >&2
            tail -n 30 "$DOCKER_TMP/dockerd.log" >&2
            return 1
        fi
        sleep 1
        waited=$((waited + 1))
    done
    docker version --format 'dockerd {{.Server.Version}} (API {{.Server.APIVersion}}), client {{.Client.Version}}'
}

docker_stop() {
    [ -n "${DOCKERD_PID:-}" ] || return 0
    kill -TERM "$DOCKERD_PID" 2>/dev/null || true
    local waited=0
    while kill -0 "$DOCKERD_PID" 2>/dev/null && [ "$waited" -lt 30 ]; do
        sleep 1
        waited=$((waited + 1))
    done
    kill -KILL "$DOCKERD_PID" 2>/dev/null || true
    wait "$DOCKERD_PID" 2>/dev/null || true
    # Whatever is still mounted under the temporary directory (the default network namespace,
    # overlay layers of a container killed with the daemon), deepest first.
    awk -v dir="$DOCKER_TMP" 'index($2, dir) == 1 { print $2 }' /proc/mounts | sort -r \
        | while read -r mount; do umount -l "$mount" 2>/dev/null || true; done
    rm -rf "$DOCKER_TMP" /run/docker /run/containerd /etc/docker/key.json
    unset DOCKERD_PID DOCKER_HOST
}
