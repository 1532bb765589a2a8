-- The audit trail becomes a hash chain: each event stores the hash of the event before it and
-- its own, `hash = SHA-256(prev_hash || canonical bytes of the event and its seq)` (see
-- `mailroom_core::audit`). The store computes both inside the write transaction that inserts
-- the event, so the chain follows the commit order.
--
-- SQL cannot compute SHA-256, so events recorded before this migration keep NULL hashes.
-- `audit_chain` remembers where they end: verify skips events up to `legacy_through` and
-- treats an unhashed event after it as tampering (otherwise blanking every hash would make
-- the whole trail look "legacy"). The first chained event links to the genesis hash, 64 zeros.
ALTER TABLE events ADD COLUMN prev_hash TEXT;
ALTER TABLE events ADD COLUMN hash TEXT;

CREATE TABLE audit_chain (
    -- Always 1: the table holds one row.
    id INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    -- The highest seq recorded before the chain began; 0 on a database created with it.
    legacy_through INTEGER NOT NULL CHECK (legacy_through >= 0)
) STRICT;

INSERT INTO audit_chain (id, legacy_through)
    SELECT 1, COALESCE(MAX(seq), 0) FROM events;
