-- API keys: long-lived secrets of client accounts for unattended clients (the client agent on
-- a server, scripts). Only the SHA-256 of a key's secret is kept, so a copy of the database
-- lets nobody in; the secret carries the key's id, by which it is found. `scopes` is what the
-- key may do (`send`, `receive` or both); `expires` NULL: no expiry; `last_used` is written at
-- most once a minute. Times in nanoseconds, as on SQLite. Deleting the account deletes its
-- keys.
CREATE TABLE api_keys (
    id text COLLATE "C" NOT NULL PRIMARY KEY,
    account text COLLATE "C" NOT NULL REFERENCES accounts (name) ON DELETE CASCADE,
    label text NOT NULL,
    hash text COLLATE "C" NOT NULL,
    scopes text NOT NULL CHECK (scopes IN ('send', 'receive', 'send,receive')),
    created bigint NOT NULL,
    expires bigint,
    last_used bigint
);
CREATE INDEX api_keys_account ON api_keys (account, created);
