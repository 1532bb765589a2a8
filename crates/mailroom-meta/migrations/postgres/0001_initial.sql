-- The Mailroom system of record on PostgreSQL: the schema SQLite reaches with its migrations
-- 0001 to 0012, in one file. Later changes come as 0002 and on, never as edits of this one
-- (`schema_migrations` keeps its SHA-256).
--
-- Conventions, the same as on SQLite, so both stores answer alike:
-- * Times are bigint nanoseconds since the Unix epoch, UTC: they round-trip exactly and sort
--   as numbers. Sizes, sequence numbers and counters are bigint too.
-- * Ids are text (UUIDs hyphenated, blob ids 32 hex digits), as SQLite stores them.
-- * Text that is compared or sorted is COLLATE "C": byte order, as SQLite's BINARY collation,
--   whatever the locale the database was created with.
-- * Labels are the `as_str` forms of the `mailroom-core` enums; CHECK constraints keep unknown
--   labels out (except in `events`, as on SQLite).
-- * Invariants live in the schema where SQL can say them; the Rust code checks them too, to
--   give a clear message, but the database is the last word.

-- Accounts and groups share one namespace because both appear as /outbox/<name>. Every name is
-- a row here first, so the primary key refuses a second account or group of the same name, and
-- routes can reference either kind.
CREATE TABLE principals (
    name text COLLATE "C" NOT NULL PRIMARY KEY,
    kind text COLLATE "C" NOT NULL CHECK (kind IN ('account', 'group')),
    -- Target of the (name, kind) foreign keys below.
    UNIQUE (name, kind)
);

CREATE TABLE accounts (
    name text COLLATE "C" NOT NULL PRIMARY KEY,
    -- Always 'account'. With the composite foreign key it ties this row to a principal of
    -- kind 'account', so an account and a group can never share one name.
    principal_kind text COLLATE "C" NOT NULL DEFAULT 'account' CHECK (principal_kind = 'account'),
    kind text NOT NULL CHECK (kind IN ('client', 'admin')),
    disabled boolean NOT NULL,
    -- Argon2id PHC string; NULL when password login is off for the account.
    password_hash text,
    created bigint NOT NULL,
    -- Required factors, networks, certificate subject, rights and limits, as one JSON object
    -- (see convert::access_to_json), kept as text: the store compares it as written.
    access text NOT NULL DEFAULT '{}',
    -- TOTP: the base32 secret, the last accepted time step (a code works once), and the
    -- SHA-256 of each unused recovery code as a JSON array.
    totp_secret text,
    totp_last_step bigint,
    totp_recovery text NOT NULL DEFAULT '[]',
    -- The generation of the account's tokens: a token issued under an older one is refused.
    token_epoch bigint NOT NULL DEFAULT 0 CHECK (token_epoch >= 0),
    FOREIGN KEY (name, principal_kind) REFERENCES principals (name, kind) ON DELETE CASCADE
);

-- SSH public keys, in the order the account lists them.
CREATE TABLE account_keys (
    account text COLLATE "C" NOT NULL REFERENCES accounts (name) ON DELETE CASCADE,
    position bigint NOT NULL CHECK (position >= 0),
    algorithm text NOT NULL,
    -- The key in SSH wire encoding.
    blob bytea NOT NULL,
    comment text NOT NULL,
    PRIMARY KEY (account, position)
);

CREATE TABLE groups (
    name text COLLATE "C" NOT NULL PRIMARY KEY,
    -- Always 'group'; see accounts.principal_kind.
    principal_kind text COLLATE "C" NOT NULL DEFAULT 'group' CHECK (principal_kind = 'group'),
    FOREIGN KEY (name, principal_kind) REFERENCES principals (name, kind) ON DELETE CASCADE
);

-- Members are accounts, never groups: groups do not nest.
CREATE TABLE group_members (
    group_name text COLLATE "C" NOT NULL REFERENCES groups (name) ON DELETE CASCADE,
    member text COLLATE "C" NOT NULL REFERENCES accounts (name) ON DELETE CASCADE,
    PRIMARY KEY (group_name, member)
);

-- Deleting an account removes its memberships: find them without a scan.
CREATE INDEX group_members_member ON group_members (member);

-- One rule per (from, to); either side is an account or a group. The foreign keys make a rule
-- for a name that does not exist impossible, so a rule can never wait for a future account.
CREATE TABLE routes (
    from_name text COLLATE "C" NOT NULL REFERENCES principals (name) ON DELETE CASCADE,
    to_name text COLLATE "C" NOT NULL REFERENCES principals (name) ON DELETE CASCADE,
    effect text NOT NULL CHECK (effect IN ('allow', 'deny')),
    PRIMARY KEY (from_name, to_name)
);

-- Deleting an account or group removes the rules that name it on either side.
CREATE INDEX routes_to_name ON routes (to_name);

-- Deliveries keep their sender and recipient as plain names, without foreign keys: they are the
-- record of what happened and outlive the accounts they name.
CREATE TABLE deliveries (
    -- UUID v7, hyphenated.
    id text COLLATE "C" NOT NULL PRIMARY KEY,
    batch_id text COLLATE "C" NOT NULL,
    sender text COLLATE "C" NOT NULL,
    recipient text COLLATE "C" NOT NULL,
    -- The outbox folder written to: the recipient, or the group it fanned out from.
    target text COLLATE "C" NOT NULL,
    name text COLLATE "C" NOT NULL,
    size bigint NOT NULL CHECK (size >= 0),
    sha256 text NOT NULL,
    -- 32 lower-case hex digits: the blob store's id of the content.
    blob_id text COLLATE "C" NOT NULL,
    state text COLLATE "C" NOT NULL CHECK (state IN (
        'stored', 'checking', 'delivered', 'picked-up',
        'acknowledged', 'recalled', 'expired', 'quarantined', 'deleted'
    )),
    created bigint NOT NULL,
    updated bigint NOT NULL
);

-- A live name is never taken twice between one sender and one recipient; terminal deliveries
-- keep their names without blocking a new file of the same name. It also serves an inbox, one
-- sender's folder in it, one file, a recipient's quota and retention. The live states here
-- must match `DeliveryState::LIVE` (a unit test checks).
CREATE UNIQUE INDEX deliveries_live_name
    ON deliveries (recipient, sender, name)
    WHERE state IN ('stored', 'checking', 'delivered', 'picked-up');

-- An outbox, one of its folders, one file, a free name for a new upload or a rename.
CREATE INDEX deliveries_live_outbox ON deliveries (sender, target, name)
    WHERE state IN ('stored', 'checking', 'delivered', 'picked-up');

-- Whether a blob is still referenced, and the start-up sweep's live set.
CREATE INDEX deliveries_live_blob ON deliveries (blob_id)
    WHERE state IN ('stored', 'checking', 'delivered', 'picked-up');

-- The receipts of a sender, in every state: /sent, /sent/<recipient>, a receipt by name.
CREATE INDEX deliveries_sender_history ON deliveries (sender, recipient, name);

-- The deliveries of an upload waiting for their check, and the quarantine (its list, and
-- whether a blob is still kept for it). Both stay small.
CREATE INDEX deliveries_checking_batch ON deliveries (batch_id)
    WHERE state = 'checking';

CREATE INDEX deliveries_quarantined_blob ON deliveries (blob_id)
    WHERE state = 'quarantined';

-- Small blobs kept in the metadata store: their content commits in the same transaction as
-- the deliveries that reference them. A row lives while a delivery that keeps it (live or
-- quarantined) references its blob id; the transition that ends the last one deletes it.
CREATE TABLE inline_blobs (
    blob_id text COLLATE "C" NOT NULL PRIMARY KEY,
    content bytea NOT NULL
);

-- The audit trail, append-only and hash-chained (see `mailroom_core::audit`). `seq` is the
-- commit order and the order events are read in; the store sets it explicitly, inside the write
-- transaction that holds the store's advisory lock, so that the hash can cover it. Labels here
-- carry no CHECK: new event kinds and protocols come with new releases.
CREATE TABLE events (
    seq bigint NOT NULL PRIMARY KEY,
    -- UUID v7, hyphenated; also in the log line of the action, so the two join.
    id text COLLATE "C" NOT NULL UNIQUE,
    time bigint NOT NULL,
    kind text NOT NULL,
    actor text COLLATE "C" NOT NULL,
    -- The peer address, when the action came over the network.
    source text COLLATE "C",
    protocol text NOT NULL,
    object text NOT NULL,
    outcome text NOT NULL,
    detail text NOT NULL,
    prev_hash text,
    hash text
);

-- `since` queries, retention and export by time.
CREATE INDEX events_time ON events (time);

-- The activity of one account, newest first, without a scan.
CREATE INDEX events_actor ON events (actor, seq);

CREATE TABLE audit_chain (
    -- Always 1: the table holds one row.
    id integer NOT NULL PRIMARY KEY CHECK (id = 1),
    -- The highest seq recorded before the chain began: always 0 here, as the chain is as old
    -- as the PostgreSQL schema.
    legacy_through bigint NOT NULL CHECK (legacy_through >= 0),
    -- The highest seq ever used (SQLite's `sqlite_sequence`): moved on in the transaction that
    -- records, so a seq is never used twice, even after the newest row went.
    last_seq bigint NOT NULL CHECK (last_seq >= 0)
);

INSERT INTO audit_chain (id, legacy_through, last_seq) VALUES (1, 0, 0);

-- One row per banned subject: an address, or 'account:<name>'. Kept after the ban ends so the
-- next ban of the same subject lasts longer (level).
CREATE TABLE bans (
    subject text COLLATE "C" NOT NULL PRIMARY KEY,
    until bigint NOT NULL,
    level bigint NOT NULL CHECK (level >= 1),
    reason text NOT NULL,
    created bigint NOT NULL
);

-- One row per live bearer token, access or refresh. Only the SHA-256 of the token is kept.
-- Tokens of one login share `session`.
CREATE TABLE tokens (
    hash text COLLATE "C" NOT NULL PRIMARY KEY,
    kind text NOT NULL CHECK (kind IN ('access', 'refresh')),
    session text COLLATE "C" NOT NULL,
    account text COLLATE "C" NOT NULL,
    scope text NOT NULL CHECK (scope IN ('client', 'admin')),
    epoch bigint NOT NULL,
    source text,
    protocol text NOT NULL,
    created bigint NOT NULL,
    expires bigint NOT NULL
);
CREATE INDEX tokens_session ON tokens (session);
CREATE INDEX tokens_account ON tokens (account);
CREATE INDEX tokens_expires ON tokens (expires);

-- The policy version: a number every change to what the Hub caches (accounts' kind, state,
-- access and token generation; groups and their members; routes) moves on, in the same
-- transaction, whichever client makes the change. Triggers, not the Rust code, move it, so no
-- writer can forget.
CREATE TABLE policy_version (
    -- Always 1: the table holds one row.
    id integer NOT NULL PRIMARY KEY CHECK (id = 1),
    version bigint NOT NULL CHECK (version >= 0)
);

INSERT INTO policy_version (id, version) VALUES (1, 0);

CREATE FUNCTION policy_version_moves() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE policy_version SET version = version + 1 WHERE id = 1;
    RETURN NULL;
END
$$;

CREATE TRIGGER policy_account_added AFTER INSERT ON accounts
    FOR EACH ROW EXECUTE FUNCTION policy_version_moves();
CREATE TRIGGER policy_account_removed AFTER DELETE ON accounts
    FOR EACH ROW EXECUTE FUNCTION policy_version_moves();
CREATE TRIGGER policy_account_changed AFTER UPDATE OF kind, disabled, access, token_epoch
    ON accounts FOR EACH ROW EXECUTE FUNCTION policy_version_moves();
CREATE TRIGGER policy_group_added AFTER INSERT ON groups
    FOR EACH ROW EXECUTE FUNCTION policy_version_moves();
CREATE TRIGGER policy_group_removed AFTER DELETE ON groups
    FOR EACH ROW EXECUTE FUNCTION policy_version_moves();
CREATE TRIGGER policy_member_added AFTER INSERT ON group_members
    FOR EACH ROW EXECUTE FUNCTION policy_version_moves();
CREATE TRIGGER policy_member_removed AFTER DELETE ON group_members
    FOR EACH ROW EXECUTE FUNCTION policy_version_moves();
CREATE TRIGGER policy_route_added AFTER INSERT ON routes
    FOR EACH ROW EXECUTE FUNCTION policy_version_moves();
CREATE TRIGGER policy_route_changed AFTER UPDATE ON routes
    FOR EACH ROW EXECUTE FUNCTION policy_version_moves();
CREATE TRIGGER policy_route_removed AFTER DELETE ON routes
    FOR EACH ROW EXECUTE FUNCTION policy_version_moves();

-- The job queue: the work that rules make of events (webhooks, mails). A job is inserted in
-- the transaction that records its event. A job that runs is leased, not locked: the worker
-- moves `due` to the end of its lease and counts the attempt in one commit. `id` is the
-- idempotency key a receiver sees.
CREATE TABLE jobs (
    id text COLLATE "C" NOT NULL PRIMARY KEY,
    rule text NOT NULL,
    -- `webhook:<url>` or `email:<address>`.
    handler text NOT NULL,
    -- The event it acts on (events.id; not a foreign key, so the audit trail stays
    -- append-only and free of cascades).
    event text NOT NULL,
    state text COLLATE "C" NOT NULL CHECK (state IN ('queued', 'done', 'dead', 'dropped')),
    attempts bigint NOT NULL CHECK (attempts >= 0),
    due bigint NOT NULL,
    created bigint NOT NULL,
    updated bigint NOT NULL,
    last_error text
);

-- The worker's question, "which queued jobs are due", read from the queued jobs only.
CREATE INDEX jobs_queued_by_due ON jobs (due, id) WHERE state = 'queued';

-- The queue's depth, which every unit that queues jobs reads against the bound: one row kept
-- by triggers in the changing transaction (as policy_version is), so the read costs the same
-- with ten jobs waiting or a hundred thousand.
CREATE TABLE job_depth (
    -- Always 1: the table holds one row.
    id integer NOT NULL PRIMARY KEY CHECK (id = 1),
    queued bigint NOT NULL CHECK (queued >= 0)
);

INSERT INTO job_depth (id, queued) VALUES (1, 0);

-- Moves the depth by the trigger's argument (+1 or -1).
CREATE FUNCTION job_depth_moves() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE job_depth SET queued = queued + TG_ARGV[0]::bigint WHERE id = 1;
    RETURN NULL;
END
$$;

CREATE TRIGGER job_depth_queued AFTER INSERT ON jobs
    FOR EACH ROW WHEN (NEW.state = 'queued') EXECUTE FUNCTION job_depth_moves('1');
CREATE TRIGGER job_depth_left AFTER UPDATE OF state ON jobs
    FOR EACH ROW WHEN (OLD.state = 'queued' AND NEW.state <> 'queued')
    EXECUTE FUNCTION job_depth_moves('-1');
CREATE TRIGGER job_depth_requeued AFTER UPDATE OF state ON jobs
    FOR EACH ROW WHEN (OLD.state <> 'queued' AND NEW.state = 'queued')
    EXECUTE FUNCTION job_depth_moves('1');
CREATE TRIGGER job_depth_removed AFTER DELETE ON jobs
    FOR EACH ROW WHEN (OLD.state = 'queued') EXECUTE FUNCTION job_depth_moves('-1');
