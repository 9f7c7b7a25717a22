-- aimon PostgreSQL schema, version 1. Runs inside the configured schema (the connection's
-- search_path names it). Every text column compares by bytes (COLLATE "C"), as aimon's
-- semantics want; times are timestamptz (microseconds, like aimon).

-- The key of a tag set in indexes: its SHA-256. A btree entry holds at most ~2.7 KB, and a tag
-- value may be 16 KiB of text that does not compress, so the tags themselves are never
-- indexed. (convert_to is STABLE only because it reads the encoding name; with 'UTF8' fixed
-- its result never changes, so the wrapper may be IMMUTABLE, as a generated column needs.)
CREATE FUNCTION tags_key(tags text) RETURNS bytea
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT pg_catalog.sha256(pg_catalog.convert_to($1, 'UTF8')) $$;

-- One row per series (a metric id). `sid` is the compact key samples refer to; a series that
-- is removed and written again gets a new one, so orphaned samples never come back.
CREATE TABLE series (
    sid         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id          text COLLATE "C" NOT NULL UNIQUE,
    name        text COLLATE "C" NOT NULL,
    "type"      text COLLATE "C" NOT NULL,
    description text COLLATE "C",
    unit        text COLLATE "C",
    metadata    text NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);
CREATE INDEX series_name ON series (name);
CREATE INDEX series_updated_at ON series (updated_at);

-- The samples partitions aimon created (native mode), with their bounds: what retention drops
-- and what writes look up before creating one.
CREATE TABLE sample_partitions (
    name       text COLLATE "C" PRIMARY KEY,
    start_time timestamptz NOT NULL,
    end_time   timestamptz NOT NULL,
    CHECK (start_time < end_time)
);
CREATE INDEX sample_partitions_end_time ON sample_partitions (end_time);

-- Alerts by id; severity is its rank (info 0 .. critical 4) so it orders. Labels are jsonb for
-- containment and key lookups; annotations and metadata are JSON text, kept exactly.
CREATE TABLE alerts (
    id              text COLLATE "C" NOT NULL PRIMARY KEY,
    name            text COLLATE "C" NOT NULL,
    description     text COLLATE "C",
    severity        integer NOT NULL,
    source          text COLLATE "C" NOT NULL,
    status          text COLLATE "C" NOT NULL,
    start_time      timestamptz NOT NULL,
    end_time        timestamptz,
    acknowledged_by text COLLATE "C",
    acknowledged_at timestamptz,
    resolved_by     text COLLATE "C",
    resolved_at     timestamptz,
    labels          jsonb NOT NULL,
    annotations     text NOT NULL,
    metadata        text NOT NULL,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);
CREATE INDEX alerts_status_start_time ON alerts (status, start_time);
CREATE INDEX alerts_severity_start_time ON alerts (severity, start_time);
CREATE INDEX alerts_start_time ON alerts (start_time);
CREATE INDEX alerts_source ON alerts (source);
CREATE INDEX alerts_updated_at ON alerts (updated_at);
CREATE INDEX alerts_labels ON alerts USING gin (labels jsonb_path_ops);

-- The latest state of each agent.
CREATE TABLE agent_states (
    agent_id       text COLLATE "C" NOT NULL PRIMARY KEY,
    id             text COLLATE "C" NOT NULL,
    status         text COLLATE "C" NOT NULL,
    metrics        text NOT NULL,
    last_heartbeat timestamptz NOT NULL,
    metadata       text NOT NULL,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL
);
CREATE INDEX agent_states_last_heartbeat ON agent_states (last_heartbeat);
CREATE INDEX agent_states_status_last_heartbeat ON agent_states (status, last_heartbeat);

-- Every distinct (series, tag set) written, with its tags decoded (GIN-indexed) and an upper
-- bound of its newest sample's time (rounded up past the next whole hour, so a series writing
-- in order updates its row once an hour). Tag filters and group_by read tags here instead of
-- decoding every sample's JSON. Rows are candidates, never answers: samples stay the truth,
-- and apply_retention prunes rows whose bound has expired (and the rows of removed series,
-- by cascade).
CREATE TABLE series_tagsets (
    sid        bigint NOT NULL REFERENCES series (sid) ON DELETE CASCADE,
    tags       text COLLATE "C" NOT NULL,
    tags_jsonb jsonb NOT NULL,
    last_bound timestamptz NOT NULL,
    tags_key   bytea NOT NULL GENERATED ALWAYS AS (tags_key(tags)) STORED,
    PRIMARY KEY (sid, tags_key)
);
CREATE INDEX series_tagsets_tags ON series_tagsets USING gin (tags_jsonb jsonb_path_ops);
CREATE INDEX series_tagsets_last_bound ON series_tagsets (last_bound);
