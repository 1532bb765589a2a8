-- Nodes and their live sessions, so that every `mailroom serve` sharing the metadata counts and
-- lists every node's sessions (an account's `max_sessions` holds across the cluster) and can
-- ask the node that holds a session to close it. With the embedded engines there is one node.
--
-- A node writes its heartbeat every second or so; one whose heartbeat is older than 15 s is
-- dead, and its sessions no longer count. Rows here are not history: a node deletes its own
-- sessions' rows as they end and its own row when it stops, and a starting node forgets the
-- nodes dead for more than an hour, with their sessions.
CREATE TABLE nodes (
    -- UUID v4, hyphenated: new at every start of a node.
    id TEXT NOT NULL PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL CHECK (pid >= 0),
    started INTEGER NOT NULL,
    heartbeat INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- One row per live session of a node. Not foreign keys: a login never fails because its node's
-- row is late or its account just went (the node closes such a session at its next check).
CREATE TABLE live_sessions (
    node TEXT NOT NULL,
    -- The session's id on its node.
    id INTEGER NOT NULL CHECK (id >= 0),
    account TEXT NOT NULL,
    protocol TEXT NOT NULL,
    source TEXT,
    started INTEGER NOT NULL,
    -- NULL while the session may run; the reason given once another process asked its node
    -- to close it.
    closing TEXT,
    PRIMARY KEY (node, id)
) STRICT, WITHOUT ROWID;

-- A login counts its account's sessions.
CREATE INDEX live_sessions_by_account ON live_sessions (account);
