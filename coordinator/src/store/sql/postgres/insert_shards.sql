-- Inserts the shards of run $1 in the order given, so shard ids follow the submitted order.
INSERT INTO shards (run_id, key)
SELECT $1, s.key
FROM unnest($2::text[]) WITH ORDINALITY AS s (key, n)
ORDER BY s.n
RETURNING id, key
