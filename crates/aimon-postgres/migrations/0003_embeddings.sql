-- aimon PostgreSQL schema, version 3: items may carry their own embedding for similarity
-- search, as float4[] (exactly the f32 values), NULL when the item has none.
ALTER TABLE alerts ADD COLUMN embedding real[];
ALTER TABLE agent_states ADD COLUMN embedding real[];
