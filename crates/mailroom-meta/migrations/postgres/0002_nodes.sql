-- Nodes and their live sessions, as SQLite's migration 0013: every node counts and lists every
-- node's sessions (an account's `max_sessions` holds across the cluster) and can ask the node
-- that holds a session to close it.
--
-- A node writes its heartbeat every second or so; one whose heartbeat is older than 15 s is
-- dead, and its sessions no longer count. Rows here are not history: a node deletes its own
-- sessions' rows as they end and its own row when it stops, and a starting node forgets the
-- nodes dead for more than an hour, with their sessions.
CREATE TABLE nodes (
    -- UUID v4, hyphenated: new at every start of a node.
    id text COLLATE "C" NOT NULL PRIMARY KEY,
    host text NOT NULL,
    pid bigint NOT NULL CHECK (pid >= 0),
    started bigint NOT NULL,
    heartbeat bigint NOT NULL
);

-- One row per live session of a node. Not foreign keys: a login never fails because its node's
-- row is late or its account just went (the node closes such a session at its next check).
CREATE TABLE live_sessions (
    node text COLLATE "C" NOT NULL,
    -- The session's id on its node.
    id bigint NOT NULL CHECK (id >= 0),
    account text COLLATE "C" NOT NULL,
    protocol text NOT NULL,
    source text,
    started bigint NOT NULL,
    -- NULL while the session may run; the reason given once another process asked its node
    -- to close it.
    closing text,
    PRIMARY KEY (node, id)
);

-- A login counts its account's sessions.
CREATE INDEX live_sessions_by_account ON live_sessions (account);

-- Nodes listen on the channel `mailroom_sessions` (LISTEN/NOTIFY) and check their sessions at
-- once when told: a session asked to close (the payload names its node), and any change of
-- accounts, groups, members, routes (the policy version moves) or bans (payload `*`). A
-- notification is sent when its transaction commits, and never by one rolled back; several
-- alike in one transaction are sent once. A node that missed one finds the change at its next
-- check, within a second.
CREATE FUNCTION live_session_closing() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('mailroom_sessions', NEW.node);
    RETURN NULL;
END;
$$;

CREATE TRIGGER live_session_asked_to_close AFTER UPDATE OF closing ON live_sessions
    FOR EACH ROW WHEN (OLD.closing IS NULL AND NEW.closing IS NOT NULL)
    EXECUTE FUNCTION live_session_closing();

CREATE FUNCTION sessions_may_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('mailroom_sessions', '*');
    RETURN NULL;
END;
$$;

CREATE TRIGGER sessions_policy_moved AFTER UPDATE ON policy_version
    FOR EACH STATEMENT EXECUTE FUNCTION sessions_may_change();
CREATE TRIGGER sessions_bans_changed AFTER INSERT OR UPDATE OR DELETE ON bans
    FOR EACH STATEMENT EXECUTE FUNCTION sessions_may_change();
