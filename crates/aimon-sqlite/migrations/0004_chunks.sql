-- aimon SQLite schema, version 4: samples as chunks (aimon_core::chunk), tag sets interned.
--
-- A sample no longer has a row of its own. The samples of one (series, tag set) within one
-- window (`chunks::WINDOW`, four hours, epoch-aligned) are encoded together in `chunks.data`, with
-- their summary in columns next to it. A window holds one chunk row once sealed, or a few
-- fragments (`seq` 1, 2, …) while it is the newest window of its tag set; a later fragment
-- overwrites an earlier one's samples at the same timestamp. The crate docs ("Schema")
-- explain the design and its measurements.

-- Every distinct (series, tag set) written, numbered: chunks name their tag set by `id`.
CREATE TABLE series_tagsets_v4 (
    id        INTEGER PRIMARY KEY,
    series_id TEXT NOT NULL,
    tags      TEXT NOT NULL,
    UNIQUE (series_id, tags)
);
INSERT INTO series_tagsets_v4 (series_id, tags)
    SELECT series_id, tags FROM series_tagsets ORDER BY series_id, tags;
DROP TABLE series_tagsets;
ALTER TABLE series_tagsets_v4 RENAME TO series_tagsets;
CREATE INDEX series_tagsets_tags ON series_tagsets (tags);

-- Values (`sum`, `min`, …) are columns without a declared type, as `samples.value` was, so
-- every f64 (even -0.0) is kept bit for bit. `check` is the CRC-32 of the summary
-- (`aimon_core::chunk::Summary::checksum`), checked before the summary is trusted; `data`
-- carries its own.
CREATE TABLE chunks (
    tagset       INTEGER NOT NULL,
    window_start INTEGER NOT NULL,
    seq          INTEGER NOT NULL,
    count        INTEGER NOT NULL,
    first_ts     INTEGER NOT NULL,
    last_ts      INTEGER NOT NULL,
    sum, sum_comp, sum_scaled INTEGER NOT NULL, "min", "max", first, last,
    "check"      INTEGER NOT NULL,
    data         BLOB NOT NULL,
    UNIQUE (tagset, window_start, seq)
);
CREATE INDEX chunks_last_ts ON chunks (last_ts);

-- The rows of older versions are re-encoded as chunks by the driver when it opens the file
-- (one transaction, `chunks::migrate_legacy_samples`), then this table is dropped.
ALTER TABLE samples RENAME TO legacy_samples;
