-- Data keys of encryption at rest: one per mailbox (`owner`, an account name) and one of the hub
-- itself (`@hub`: TOTP secrets, the web UI's CSRF key). Each is kept only wrapped (AES-256-GCM)
-- under the master key, which never reaches this database; `master` is that key's fingerprint,
-- so a start with another key is refused before anything is read. Not tied to the accounts
-- table: a deleted account's deliveries may still be read by their recipients. Times in
-- nanoseconds, as on SQLite.
CREATE TABLE data_keys (
    id text COLLATE "C" NOT NULL PRIMARY KEY,
    owner text COLLATE "C" NOT NULL UNIQUE,
    wrapped bytea NOT NULL,
    master text COLLATE "C" NOT NULL,
    created bigint NOT NULL
);
