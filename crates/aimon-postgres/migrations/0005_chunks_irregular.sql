-- aimon PostgreSQL schema, version 5: an index of the chunks whose summary the server may not
-- aggregate as it stands (`schema::CHUNKS_IRREGULAR_INDEX`, which creates it on new stores):
-- fragments, sums scaled against overflow, windows with a negative value. The one-statement
-- history asks it whether its range has any, instead of aggregating a flag over every chunk.
-- Native mode only: a TimescaleDB store has no `chunks` table, and a store migrating from
-- version 3 or older gets the table and the index from the driver after the migrations.
DO $do$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_class c
               WHERE c.relname = 'chunks' AND c.relkind = 'p'
                 AND c.relnamespace = pg_catalog.current_schema()::regnamespace) THEN
        CREATE INDEX IF NOT EXISTS chunks_irregular
            ON chunks (tsid, window_start) WHERE seq > 0 OR sum_scaled OR min < 0;
    END IF;
END
$do$;
