-- The defender's scores, kept where every node sees them: one row per offence (a refused
-- login, a connection that never logged in, a protocol error), against an address or an
-- account (`bans.subject`'s keys). A subject's score is the sum of its offences within the
-- window, whichever node added them; reaching the threshold bans it in the same transaction,
-- and its offences go.
--
-- Rows are pruned by the units that add them: those older than the window, and those beyond
-- the newest `max_tracked` in the order of addition (the identity's order), a few per unit,
-- so the table stays bounded however many addresses offend.
CREATE TABLE offences (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- An address, or `account:<name>`.
    subject text COLLATE "C" NOT NULL,
    at bigint NOT NULL,
    weight bigint NOT NULL CHECK (weight > 0)
);

-- A subject's score within the window.
CREATE INDEX offences_by_subject ON offences (subject, at);

-- The oldest offences, for pruning.
CREATE INDEX offences_by_time ON offences (at, id);
