# Everyday commands. `just` installs with `cargo install just` or `pip install rust-just`;
# nothing in the README's quick start needs it.

# Unit tests and the conformance suite against every backend that needs no server.
test:
    cargo test --workspace

# The conformance suite against every backend this machine can start; none may be skipped.
test-all:
    AIMON_REQUIRE=all cargo test --workspace --all-features

# The main job: simulate a fleet of AI agents into the embedded default store.
demo *ARGS:
    cargo run --release -p aimon-cli -- demo {{ARGS}}

# Ingest and query throughput of one store, compared with the raw tool where there is one.
bench STORAGE="sqlite://./bench.db" SAMPLES="1000000" BATCH="5000":
    cargo run --release -p aimon-cli -- bench --storage {{STORAGE}} --samples {{SAMPLES}} --batch {{BATCH}}

# Start the real servers of docker/compose.yaml (needs a Docker engine).
services-up:
    docker compose -f docker/compose.yaml up -d --wait

services-down:
    docker compose -f docker/compose.yaml down -v

# Pull the pinned images the fixtures' container tier runs (the fixtures themselves never pull).
services-pull:
    docker compose -f docker/compose.yaml pull

# The Redis, PostgreSQL and InfluxDB suites and the v2 write tests in containers only, as CI runs
# them (on Linux: the containers use host networking).
test-containers:
    AIMON_TEST_VIA=containers:redis,redis-cluster,redis-sentinel,postgres,influxdb,victoria-metrics \
        cargo test -p aimon-integration-tests --test redis --test redis_cluster --test redis_sentinel \
        --test postgres --test influxdb --test influxdb_v2

# The fixture URLs for the servers of docker/compose.yaml, as shell exports.
services-env:
    @echo 'export AIMON_TEST_REDIS_URL=redis://127.0.0.1:16379'
    @echo 'export AIMON_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:15433/postgres'
    @echo 'export AIMON_TEST_TIMESCALE_URL=timescale://aimon:aimon@127.0.0.1:15432/aimon'
    @echo 'export AIMON_TEST_INFLUXDB_URL=influxdb://127.0.0.1:18086/aimon'
    @echo 'export AIMON_TEST_VICTORIA_METRICS_URL=http://127.0.0.1:18428'
    @echo 'export AIMON_TEST_QDRANT_URL=qdrant://127.0.0.1:16334?rest_port=16333'

lint:
    cargo clippy --workspace --all-targets -- -D warnings
    cargo fmt --all -- --check
