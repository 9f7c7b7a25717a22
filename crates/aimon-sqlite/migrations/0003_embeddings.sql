-- aimon SQLite schema, version 3: items may carry their own embedding for similarity search.
-- A BLOB of little-endian IEEE-754 f32 values (4 bytes each), NULL when the item has none;
-- it round-trips every f32 bit for bit.
ALTER TABLE alerts ADD COLUMN embedding BLOB;
ALTER TABLE agent_states ADD COLUMN embedding BLOB;
