-- A delivery whose content a consistency check found missing or damaged is marked 'failed'
-- by `mailroom fsck --repair` (terminal, with an event). SQLite cannot change a CHECK
-- constraint in place, so the table is rebuilt with the same columns and rows, and its
-- indexes are made again, as 0012 did.

CREATE TABLE deliveries_next (
    -- UUID v7, hyphenated.
    id TEXT NOT NULL PRIMARY KEY,
    batch_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    recipient TEXT NOT NULL,
    -- The outbox folder written to: the recipient, or the group it fanned out from.
    target TEXT NOT NULL,
    name TEXT NOT NULL,
    size INTEGER NOT NULL CHECK (size >= 0),
    sha256 TEXT NOT NULL,
    -- 32 lower-case hex digits: the blob store's id of the content.
    blob_id TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN (
        'stored', 'checking', 'delivered', 'picked-up',
        'acknowledged', 'recalled', 'expired', 'quarantined', 'deleted', 'failed'
    )),
    created INTEGER NOT NULL,
    updated INTEGER NOT NULL,
    e2e INTEGER NOT NULL DEFAULT 0 CHECK (e2e IN (0, 1))
) STRICT;

INSERT INTO deliveries_next
    (id, batch_id, sender, recipient, target, name, size, sha256, blob_id, state, created,
     updated, e2e)
    SELECT id, batch_id, sender, recipient, target, name, size, sha256, blob_id, state, created,
           updated, e2e
    FROM deliveries;

DROP TABLE deliveries;

ALTER TABLE deliveries_next RENAME TO deliveries;

-- The indexes as they were. The live states here must match `DeliveryState::LIVE`.
CREATE UNIQUE INDEX deliveries_live_name
    ON deliveries (recipient, sender, name)
    WHERE state IN ('stored', 'checking', 'delivered', 'picked-up');

CREATE INDEX deliveries_live_outbox ON deliveries (sender, target, name)
    WHERE state IN ('stored', 'checking', 'delivered', 'picked-up');

CREATE INDEX deliveries_live_blob ON deliveries (blob_id)
    WHERE state IN ('stored', 'checking', 'delivered', 'picked-up');

CREATE INDEX deliveries_sender_history ON deliveries (sender, recipient, name);

CREATE INDEX deliveries_checking_batch ON deliveries (batch_id)
    WHERE state = 'checking';

CREATE INDEX deliveries_quarantined_blob ON deliveries (blob_id)
    WHERE state = 'quarantined';
