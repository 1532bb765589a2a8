-- Fewer, smaller indexes on deliveries. Every index is a B-tree page that each new delivery
-- dirties, and each dirty page is a WAL frame written, checksummed and synced in the commit
-- of the upload's close (bench/: 24 frames per 4 KiB file before this migration). Nearly
-- every lookup a transfer makes asks for live deliveries, so the indexes it uses hold the live
-- ones only (partial indexes on the live states, which the queries name literally): they stay
-- small whatever the history, and an ended delivery leaves them. The live states here must
-- match `DeliveryState::LIVE`, as in `deliveries_live_name`.

-- Replaced by the partial indexes below.
DROP INDEX deliveries_recipient_state;
DROP INDEX deliveries_state_blob;
DROP INDEX deliveries_recipient_sender_name;
DROP INDEX deliveries_sender_name;
DROP INDEX deliveries_sender_target_name;
DROP INDEX deliveries_recipient_sender_state;
DROP INDEX deliveries_sender_target_state;

-- An inbox, one sender's folder in it, one file, a recipient's quota and retention:
-- `deliveries_live_name` (recipient, sender, name), the unique index of 0001, serves them.

-- An outbox, one of its folders, one file, a free name for a new upload or a rename.
CREATE INDEX deliveries_live_outbox ON deliveries (sender, target, name)
    WHERE state IN ('stored', 'checking', 'delivered', 'picked-up');

-- Whether a blob is still referenced, and the start-up sweep's live set.
CREATE INDEX deliveries_live_blob ON deliveries (blob_id)
    WHERE state IN ('stored', 'checking', 'delivered', 'picked-up');

-- The receipts of a sender, in every state: /sent, /sent/<recipient>, a receipt by name.
CREATE INDEX deliveries_sender_history ON deliveries (sender, recipient, name);
