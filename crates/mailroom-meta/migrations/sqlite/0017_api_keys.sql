-- API keys: long-lived secrets of client accounts for unattended clients (the client agent on
-- a server, scripts). Only the SHA-256 of a key's secret is kept, so a copy of the database
-- lets nobody in; the secret carries the key's id, by which it is found. `scopes` is what the
-- key may do (`send`, `receive` or both); `expires` NULL: no expiry; `last_used` is written at
-- most once a minute. Times in nanoseconds. Deleting the account deletes its keys.
CREATE TABLE api_keys (
    id TEXT NOT NULL PRIMARY KEY,
    account TEXT NOT NULL REFERENCES accounts (name) ON DELETE CASCADE,
    label TEXT NOT NULL,
    hash TEXT NOT NULL,
    scopes TEXT NOT NULL CHECK (scopes IN ('send', 'receive', 'send,receive')),
    created INTEGER NOT NULL,
    expires INTEGER,
    last_used INTEGER
) STRICT;
CREATE INDEX api_keys_account ON api_keys (account, created);
