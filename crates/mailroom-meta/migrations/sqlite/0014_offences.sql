-- The defender's scores, kept where every node sees them: one row per offence (a refused
-- login, a connection that never logged in, a protocol error), against an address or an
-- account (`bans.subject`'s keys). A subject's score is the sum of its offences within the
-- window; reaching the threshold bans it in the same transaction, and its offences go.
--
-- Rows are pruned by the units that add them: those older than the window, and those beyond
-- the newest `max_tracked` in the order of addition (ids are never reused: AUTOINCREMENT), a
-- few per unit, so the table stays bounded however many addresses offend.
CREATE TABLE offences (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    -- An address, or `account:<name>`.
    subject TEXT NOT NULL,
    at INTEGER NOT NULL,
    weight INTEGER NOT NULL CHECK (weight > 0)
) STRICT;

-- A subject's score within the window.
CREATE INDEX offences_by_subject ON offences (subject, at);

-- The oldest offences, for pruning.
CREATE INDEX offences_by_time ON offences (at);
