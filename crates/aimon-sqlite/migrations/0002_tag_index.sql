-- aimon SQLite schema, version 2: an index of tag sets, so tag-filtered reads find their
-- series and tag sets through B-trees instead of decoding the tags of every sample.
--
-- Both tables hold candidates, never answers: `samples` stays the truth and every read still
-- checks `samples.tags` (by equality with a matching tag set). Invariant: every (series_id,
-- tags) present in `samples` has a `series_tagsets` row whose `last_ts` is at least its
-- newest sample's `ts`, and every tag set there has all its pairs in `tagset_pairs`. Rows may
-- outlive their samples until `apply_retention` prunes them.

-- Every distinct (series, tag set) written, with an upper bound of the newest timestamp written
-- under it (writes round it up past the next whole hour, so it changes rarely).
CREATE TABLE series_tagsets (
    series_id TEXT    NOT NULL,
    tags      TEXT    NOT NULL,
    last_ts   INTEGER NOT NULL,
    PRIMARY KEY (series_id, tags)
) WITHOUT ROWID;
CREATE INDEX series_tagsets_tags ON series_tagsets (tags);

-- The decoded (key, value) pairs of every distinct tag set (as json_each decodes them).
CREATE TABLE tagset_pairs (
    "key"   TEXT NOT NULL,
    "value" TEXT NOT NULL,
    tags    TEXT NOT NULL,
    PRIMARY KEY ("key", "value", tags)
) WITHOUT ROWID;
CREATE INDEX tagset_pairs_tags ON tagset_pairs (tags, "key");

-- Backfill from the samples written before this migration.
INSERT INTO series_tagsets (series_id, tags, last_ts)
    SELECT series_id, tags, max(ts) FROM samples GROUP BY series_id, tags;
INSERT OR IGNORE INTO tagset_pairs ("key", "value", tags)
    SELECT j.key, j.value, t.tags
    FROM (SELECT DISTINCT tags FROM series_tagsets) AS t, json_each(t.tags) AS j;
