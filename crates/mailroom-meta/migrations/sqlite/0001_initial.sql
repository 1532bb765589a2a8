-- The Mailroom system of record on SQLite: accounts, groups, routes, deliveries, audit events.
--
-- Conventions:
-- * Times are INTEGER nanoseconds since the Unix epoch, UTC. They round-trip exactly and sort
--   as numbers (`datetime(created / 1000000000, 'unixepoch')` shows one to a person).
-- * Labels (account kinds, route effects, delivery states, event kinds) are the `as_str` forms
--   of the `mailroom-core` enums; CHECK constraints keep unknown labels out.
-- * Tables are STRICT, so a value of the wrong type is refused instead of stored.
-- * Invariants live in the schema where SQL can say them; the Rust code checks them too, to
--   give a clear message, but the database is the last word.

-- Accounts and groups share one namespace because both appear as /outbox/<name>. Every name is
-- a row here first, so the primary key refuses a second account or group of the same name even
-- if the Rust check were wrong, and routes can reference either kind.
CREATE TABLE principals (
    name TEXT NOT NULL PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('account', 'group')),
    -- Target of the (name, kind) foreign keys below.
    UNIQUE (name, kind)
) STRICT;

CREATE TABLE accounts (
    name TEXT NOT NULL PRIMARY KEY,
    -- Always 'account'. With the composite foreign key it ties this row to a principal of
    -- kind 'account', so an account and a group can never share one name.
    principal_kind TEXT NOT NULL DEFAULT 'account' CHECK (principal_kind = 'account'),
    kind TEXT NOT NULL CHECK (kind IN ('client', 'admin')),
    disabled INTEGER NOT NULL CHECK (disabled IN (0, 1)),
    -- Argon2id PHC string; NULL when password login is off for the account.
    password_hash TEXT,
    created INTEGER NOT NULL,
    FOREIGN KEY (name, principal_kind) REFERENCES principals (name, kind) ON DELETE CASCADE
) STRICT;

-- SSH public keys, in the order the account lists them.
CREATE TABLE account_keys (
    account TEXT NOT NULL REFERENCES accounts (name) ON DELETE CASCADE,
    position INTEGER NOT NULL CHECK (position >= 0),
    algorithm TEXT NOT NULL,
    -- The key in SSH wire encoding.
    blob BLOB NOT NULL,
    comment TEXT NOT NULL,
    PRIMARY KEY (account, position)
) STRICT;

CREATE TABLE groups (
    name TEXT NOT NULL PRIMARY KEY,
    -- Always 'group'; see accounts.principal_kind.
    principal_kind TEXT NOT NULL DEFAULT 'group' CHECK (principal_kind = 'group'),
    FOREIGN KEY (name, principal_kind) REFERENCES principals (name, kind) ON DELETE CASCADE
) STRICT;

-- Members are accounts, never groups: groups do not nest.
CREATE TABLE group_members (
    group_name TEXT NOT NULL REFERENCES groups (name) ON DELETE CASCADE,
    member TEXT NOT NULL REFERENCES accounts (name) ON DELETE CASCADE,
    PRIMARY KEY (group_name, member)
) STRICT;

-- Deleting an account removes its memberships: find them without a scan.
CREATE INDEX group_members_member ON group_members (member);

-- One rule per (from, to); either side is an account or a group. The foreign keys make a rule
-- for a name that does not exist impossible, so a rule can never wait for a future account.
CREATE TABLE routes (
    from_name TEXT NOT NULL REFERENCES principals (name) ON DELETE CASCADE,
    to_name TEXT NOT NULL REFERENCES principals (name) ON DELETE CASCADE,
    effect TEXT NOT NULL CHECK (effect IN ('allow', 'deny')),
    PRIMARY KEY (from_name, to_name)
) STRICT;

-- Deleting an account or group removes the rules that name it on either side.
CREATE INDEX routes_to_name ON routes (to_name);

-- Deliveries keep their sender and recipient as plain names, without foreign keys: they are the
-- record of what happened and outlive the accounts they name.
CREATE TABLE deliveries (
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
        'acknowledged', 'recalled', 'expired', 'quarantined'
    )),
    created INTEGER NOT NULL,
    updated INTEGER NOT NULL
) STRICT;

-- A live name is never taken twice between one sender and one recipient; terminal deliveries
-- keep their names without blocking a new file of the same name. The live states here must
-- match `DeliveryState::LIVE`.
CREATE UNIQUE INDEX deliveries_live_name
    ON deliveries (recipient, sender, name)
    WHERE state IN ('stored', 'checking', 'delivered', 'picked-up');

-- An inbox listing: the recipient's deliveries in the visible states.
CREATE INDEX deliveries_recipient_state ON deliveries (recipient, state);

-- An outbox listing: what a sender wrote to one outbox folder.
CREATE INDEX deliveries_sender_target ON deliveries (sender, target);

-- The start-up sweep's live blob set and the blob-in-use check after a terminal transition.
CREATE INDEX deliveries_state_blob ON deliveries (state, blob_id);

-- The audit trail, append-only. `seq` is the commit order and the order events are read in;
-- AUTOINCREMENT guarantees a sequence number is never reused, even after the newest row goes.
-- Labels here carry no CHECK: new event kinds and protocols come with new releases, and
-- rebuilding the largest table to widen a CHECK is not worth it (reads parse every label).
CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    -- UUID v7, hyphenated; also in the log line of the action, so the two join.
    id TEXT NOT NULL UNIQUE,
    time INTEGER NOT NULL,
    kind TEXT NOT NULL,
    actor TEXT NOT NULL,
    -- The peer address, when the action came over the network.
    source TEXT,
    protocol TEXT NOT NULL,
    object TEXT NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT NOT NULL
) STRICT;

-- `since` queries, retention and export by time.
CREATE INDEX events_time ON events (time);

-- The activity of one account, newest first, without a scan.
CREATE INDEX events_actor ON events (actor, seq);
