-- aimon PostgreSQL schema, version 4: samples as chunks (aimon_core::chunk), tag sets interned.
--
-- Native mode only changes its samples: the closed windows (`chunks::WINDOW`, ten minutes,
-- epoch-aligned) of each (series, tag set) are one row of `chunks` each, the samples encoded
-- in `data` and their summary in columns; the open window's samples stay rows of a slim
-- `samples` table (tag set id, time, value) written by COPY. Both tables are created by the
-- driver for the store's mode (`schema::NATIVE_SAMPLES`, `schema::NATIVE_CHUNKS`), partitioned
-- like the old samples table; the crate docs ("Samples as chunks") explain the layout.

-- The tag-set registry numbers its rows: samples and chunks name their tag set by `tsid`.
-- `head_window` is a lower bound of the windows this tag set has rows of in `samples` (NULL:
-- none), so that a write knows which rows to seal once their window has closed.
ALTER TABLE series_tagsets ADD COLUMN tsid bigint GENERATED ALWAYS AS IDENTITY;
ALTER TABLE series_tagsets ADD CONSTRAINT series_tagsets_tsid_key UNIQUE (tsid);
ALTER TABLE series_tagsets ADD COLUMN head_window timestamptz;

-- The rows of a natively partitioned store of an older version are kept aside, partitions and
-- their registry included, until the driver has re-encoded them as chunks (one transaction a
-- partition, `chunks::migrate_legacy_samples`), which drops them. A TimescaleDB store keeps
-- its hypertable: TimescaleDB compresses it itself.
DO $do$
DECLARE
    part record;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_class c
               WHERE c.relname = 'samples' AND c.relkind = 'p'
                 AND c.relnamespace = pg_catalog.current_schema()::regnamespace) THEN
        FOR part IN
            SELECT c.relname FROM pg_catalog.pg_inherits i
            JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
            JOIN pg_catalog.pg_class p ON p.oid = i.inhparent
            WHERE p.relname = 'samples'
              AND p.relnamespace = pg_catalog.current_schema()::regnamespace
        LOOP
            EXECUTE pg_catalog.format('ALTER TABLE %I RENAME TO %I', part.relname,
                                      'legacy_' || part.relname);
        END LOOP;
        -- Their indexes too: the new tables' partitions take the same names.
        FOR part IN
            SELECT ic.relname FROM pg_catalog.pg_index x
            JOIN pg_catalog.pg_class ic ON ic.oid = x.indexrelid
            JOIN pg_catalog.pg_class t ON t.oid = x.indrelid
            WHERE t.relnamespace = pg_catalog.current_schema()::regnamespace
              AND (t.relname = 'samples' OR t.relname LIKE 'legacy\_samples\_p%')
        LOOP
            EXECUTE pg_catalog.format('ALTER INDEX %I RENAME TO %I', part.relname,
                                      'legacy_' || part.relname);
        END LOOP;
        ALTER TABLE samples RENAME TO legacy_samples;
        DELETE FROM sample_partitions;
    END IF;
END
$do$;
