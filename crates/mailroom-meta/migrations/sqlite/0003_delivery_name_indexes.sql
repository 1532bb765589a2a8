-- The lookups by name that every transfer makes, each answered from an index instead of a
-- scan of everything a sender or a recipient ever had (measured by bench/: small-file rates
-- fell round after round as deliveries accumulated).
-- An inbox file, a receipt, a sender's folder in an inbox: recipient, sender, name.
CREATE INDEX deliveries_recipient_sender_name ON deliveries (recipient, sender, name);
-- A free name for a new upload: sender, name.
CREATE INDEX deliveries_sender_name ON deliveries (sender, name);
-- An outbox folder and an outbox file: sender, target, name (its prefix replaces the old
-- (sender, target) index).
CREATE INDEX deliveries_sender_target_name ON deliveries (sender, target, name);
DROP INDEX deliveries_sender_target;
