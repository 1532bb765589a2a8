-- Issue 6: bearer tokens of the HTTPS front end.

-- The generation of an account's tokens: a token issued under an older one is refused. The
-- hub moves it on when the password changes or the account is disabled.
ALTER TABLE accounts ADD COLUMN token_epoch INTEGER NOT NULL DEFAULT 0 CHECK (token_epoch >= 0);

-- One row per live token, access or refresh. Only the SHA-256 of the token is kept, so a copy
-- of the database lets nobody in. Tokens of one login share `session`; logout, a kick and a
-- refresh remove rows, and expired rows are swept.
CREATE TABLE tokens (
    hash TEXT NOT NULL PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('access', 'refresh')),
    session TEXT NOT NULL,
    account TEXT NOT NULL,
    scope TEXT NOT NULL CHECK (scope IN ('client', 'admin')),
    epoch INTEGER NOT NULL,
    source TEXT,
    protocol TEXT NOT NULL,
    created INTEGER NOT NULL,
    expires INTEGER NOT NULL
) STRICT;
CREATE INDEX tokens_session ON tokens (session);
CREATE INDEX tokens_account ON tokens (account);
CREATE INDEX tokens_expires ON tokens (expires);
