-- Scanning before delivery: a quarantined delivery keeps its content (an operator may release
-- it), and an operator may delete it, which is a state of its own ('deleted'). SQLite cannot
-- change a CHECK constraint in place, so the table is rebuilt with the same columns and rows,
-- and its indexes are made again.

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
        'acknowledged', 'recalled', 'expired', 'quarantined', 'deleted'
    )),
    created INTEGER NOT NULL,
    updated INTEGER NOT NULL
) STRICT;

INSERT INTO deliveries_next
    (id, batch_id, sender, recipient, target, name, size, sha256, blob_id, state, created, updated)
    SELECT id, batch_id, sender, recipient, target, name, size, sha256, blob_id, state, created, updated
    FROM deliveries;

DROP TABLE deliveries;

ALTER TABLE deliveries_next RENAME TO deliveries;

-- The indexes of 0001 and 0009, as they were. The live states here must match
-- `DeliveryState::LIVE`.
CREATE UNIQUE INDEX deliveries_live_name
    ON deliveries (recipient, sender, name)
    WHERE state IN ('stored', 'checking', 'delivered', 'picked-up');

CREATE INDEX deliveries_live_outbox ON deliveries (sender, target, name)
    WHERE state IN ('stored', 'checking', 'delivered', 'picked-up');

CREATE INDEX deliveries_live_blob ON deliveries (blob_id)
    WHERE state IN ('stored', 'checking', 'delivered', 'picked-up');

CREATE INDEX deliveries_sender_history ON deliveries (sender, recipient, name);

-- New: the deliveries of an upload waiting for their check (the check job names the batch),
-- and the quarantine (its list, and whether a blob is still kept for it). Both stay small.
CREATE INDEX deliveries_checking_batch ON deliveries (batch_id)
    WHERE state = 'checking';

CREATE INDEX deliveries_quarantined_blob ON deliveries (blob_id)
    WHERE state = 'quarantined';
