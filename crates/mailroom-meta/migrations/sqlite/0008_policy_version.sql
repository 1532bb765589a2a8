-- The policy version: a number every change to what the Hub caches (accounts' kind, state,
-- access and token generation; groups and their members; routes) moves on, in the same
-- transaction, whichever process makes the change. Each unit of work reads it inside its own
-- transaction and uses its cached policy only while the numbers are equal. Triggers, not the
-- Rust code, move it, so no writer can forget.
CREATE TABLE policy_version (
    -- Always 1: the table holds one row.
    id INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL CHECK (version >= 0)
) STRICT;

INSERT INTO policy_version (id, version) VALUES (1, 0);

CREATE TRIGGER policy_account_added AFTER INSERT ON accounts
BEGIN UPDATE policy_version SET version = version + 1 WHERE id = 1; END;

CREATE TRIGGER policy_account_removed AFTER DELETE ON accounts
BEGIN UPDATE policy_version SET version = version + 1 WHERE id = 1; END;

CREATE TRIGGER policy_account_changed AFTER UPDATE OF kind, disabled, access, token_epoch ON accounts
BEGIN UPDATE policy_version SET version = version + 1 WHERE id = 1; END;

CREATE TRIGGER policy_group_added AFTER INSERT ON groups
BEGIN UPDATE policy_version SET version = version + 1 WHERE id = 1; END;

CREATE TRIGGER policy_group_removed AFTER DELETE ON groups
BEGIN UPDATE policy_version SET version = version + 1 WHERE id = 1; END;

CREATE TRIGGER policy_member_added AFTER INSERT ON group_members
BEGIN UPDATE policy_version SET version = version + 1 WHERE id = 1; END;

CREATE TRIGGER policy_member_removed AFTER DELETE ON group_members
BEGIN UPDATE policy_version SET version = version + 1 WHERE id = 1; END;

CREATE TRIGGER policy_route_added AFTER INSERT ON routes
BEGIN UPDATE policy_version SET version = version + 1 WHERE id = 1; END;

CREATE TRIGGER policy_route_changed AFTER UPDATE ON routes
BEGIN UPDATE policy_version SET version = version + 1 WHERE id = 1; END;

CREATE TRIGGER policy_route_removed AFTER DELETE ON routes
BEGIN UPDATE policy_version SET version = version + 1 WHERE id = 1; END;
