-- Resumable uploads that outlive a restart: what each was begun with and where its bytes are
-- staged (the blob store's staging id, which the start-up sweep spares). Its offset is what
-- the staging holds, so nothing here changes while bytes arrive. `targets` is the accounts
-- and groups it is addressed to, comma-separated. The row goes in the unit that delivers the
-- upload, so a finished upload is never taken up again. Times in nanoseconds.
CREATE TABLE resumable_uploads (
    id TEXT NOT NULL PRIMARY KEY,
    owner TEXT NOT NULL,
    targets TEXT NOT NULL,
    name TEXT NOT NULL,
    size INTEGER NOT NULL CHECK (size >= 0),
    sha256 TEXT,
    e2e INTEGER NOT NULL CHECK (e2e IN (0, 1)),
    staging TEXT NOT NULL,
    created INTEGER NOT NULL,
    expires INTEGER NOT NULL
) STRICT;
