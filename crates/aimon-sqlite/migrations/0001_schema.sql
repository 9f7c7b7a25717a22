-- aimon SQLite schema, version 1. Timestamps are INTEGER microseconds since the Unix epoch;
-- JSON columns are TEXT (tags and labels as aimon_core::model::tags_json, canonical).

-- One row per series (a metric id): its metadata.
CREATE TABLE series (
    id          TEXT    NOT NULL PRIMARY KEY,
    name        TEXT    NOT NULL,
    "type"      TEXT    NOT NULL,
    description TEXT,
    unit        TEXT,
    metadata    TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX series_name ON series (name);
CREATE INDEX series_updated_at ON series (updated_at);

-- Samples keyed by (series, timestamp, tags): a rewrite overwrites the value. `value` holds
-- REAL (f64) values but is declared without a type on purpose: a REAL-affinity column stores
-- integral doubles as integers on disk, which loses the sign of -0.0.
CREATE TABLE samples (
    series_id TEXT    NOT NULL,
    ts        INTEGER NOT NULL,
    tags      TEXT    NOT NULL,
    value             NOT NULL,
    PRIMARY KEY (series_id, ts, tags)
) WITHOUT ROWID;

-- Alerts by id; severity is its rank (info 0 .. critical 4) so it orders.
CREATE TABLE alerts (
    id              TEXT    NOT NULL PRIMARY KEY,
    name            TEXT    NOT NULL,
    description     TEXT,
    severity        INTEGER NOT NULL,
    source          TEXT    NOT NULL,
    status          TEXT    NOT NULL,
    start_time      INTEGER NOT NULL,
    end_time        INTEGER,
    acknowledged_by TEXT,
    acknowledged_at INTEGER,
    resolved_by     TEXT,
    resolved_at     INTEGER,
    labels          TEXT    NOT NULL,
    annotations     TEXT    NOT NULL,
    metadata        TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX alerts_status ON alerts (status);
CREATE INDEX alerts_severity ON alerts (severity);
CREATE INDEX alerts_start_time ON alerts (start_time);
CREATE INDEX alerts_source ON alerts (source);
CREATE INDEX alerts_updated_at ON alerts (updated_at);

-- The latest state of each agent.
CREATE TABLE agent_states (
    agent_id       TEXT    NOT NULL PRIMARY KEY,
    id             TEXT    NOT NULL,
    status         TEXT    NOT NULL,
    metrics        TEXT    NOT NULL,
    last_heartbeat INTEGER NOT NULL,
    metadata       TEXT    NOT NULL,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL
);
CREATE INDEX agent_states_last_heartbeat ON agent_states (last_heartbeat);
CREATE INDEX agent_states_status ON agent_states (status);
