-- Folder listings ask for the live deliveries of one pair: with the state in the index they
-- seek those rows instead of filtering a pair's whole history (bench/: delivery latency and
-- small downloads grew round after round as acknowledged deliveries accumulated).
-- /inbox/<sender> of a recipient.
CREATE INDEX deliveries_recipient_sender_state ON deliveries (recipient, sender, state);
-- /outbox/<target> of a sender.
CREATE INDEX deliveries_sender_target_state ON deliveries (sender, target, state);
