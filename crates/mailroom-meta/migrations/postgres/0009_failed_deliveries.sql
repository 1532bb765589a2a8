-- A delivery whose content a consistency check found missing or damaged is marked 'failed'
-- by `mailroom fsck --repair` (terminal, with an event).
ALTER TABLE deliveries DROP CONSTRAINT deliveries_state_check;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_state_check CHECK (state IN (
    'stored', 'checking', 'delivered', 'picked-up',
    'acknowledged', 'recalled', 'expired', 'quarantined', 'deleted', 'failed'
));
