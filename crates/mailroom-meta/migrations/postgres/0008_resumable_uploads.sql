-- Resumable uploads that outlive a restart: what each was begun with and where its bytes are
-- staged (the blob store's staging id, which the start-up sweep spares). Its offset is what
-- the staging holds, so nothing here changes while bytes arrive. `targets` is the accounts
-- and groups it is addressed to, comma-separated. The row goes in the unit that delivers the
-- upload, so a finished upload is never taken up again. Times in nanoseconds.
CREATE TABLE resumable_uploads (
    id text NOT NULL PRIMARY KEY,
    owner text NOT NULL,
    targets text NOT NULL,
    name text NOT NULL,
    size bigint NOT NULL CHECK (size >= 0),
    sha256 text,
    e2e boolean NOT NULL,
    staging text NOT NULL,
    created bigint NOT NULL,
    expires bigint NOT NULL
);
