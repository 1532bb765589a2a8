-- Pages of the inbox and of the sent items, sorted by date, name or size: one index per
-- order, ending with the id that breaks ties, so a page is a seek and a short walk, not a
-- sort of the whole mailbox. The inbox lists delivered and picked-up deliveries, which are
-- live, so its indexes are partial like the other live indexes (the live states here must
-- match `DeliveryState::LIVE`). By sender, the inbox walks deliveries_live_name; by
-- recipient, the sent items walk deliveries_sender_history.

CREATE INDEX deliveries_live_inbox_created ON deliveries (recipient, created, id)
    WHERE state IN ('stored', 'checking', 'delivered', 'picked-up');

CREATE INDEX deliveries_live_inbox_name ON deliveries (recipient, name, id)
    WHERE state IN ('stored', 'checking', 'delivered', 'picked-up');

CREATE INDEX deliveries_live_inbox_size ON deliveries (recipient, size, id)
    WHERE state IN ('stored', 'checking', 'delivered', 'picked-up');

CREATE INDEX deliveries_sent_created ON deliveries (sender, created, id);

CREATE INDEX deliveries_sent_name ON deliveries (sender, name, id);

CREATE INDEX deliveries_sent_size ON deliveries (sender, size, id);
