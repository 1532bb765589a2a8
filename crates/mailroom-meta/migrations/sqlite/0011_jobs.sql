-- The job queue: the work that rules make of events (webhooks, mails). A job is inserted in
-- the transaction that records its event, so a committed event never lacks its jobs.
--
-- A job that runs is leased, not locked: the worker moves `due` to the end of its lease and
-- counts the attempt in one commit, so a job whose process died runs again once the lease
-- ends. `id` is the idempotency key a receiver sees; a job run twice carries it both times.
CREATE TABLE jobs (
    id TEXT NOT NULL PRIMARY KEY,
    rule TEXT NOT NULL,
    -- `webhook:<url>` or `email:<address>`.
    handler TEXT NOT NULL,
    -- The event it acts on (events.id; not a foreign key, so the audit trail stays
    -- append-only and free of cascades).
    event TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('queued', 'done', 'dead', 'dropped')),
    attempts INTEGER NOT NULL CHECK (attempts >= 0),
    due INTEGER NOT NULL,
    created INTEGER NOT NULL,
    updated INTEGER NOT NULL,
    last_error TEXT
) STRICT, WITHOUT ROWID;

-- The worker's question, "which queued jobs are due", and the queue depth, read from the
-- queued jobs only. It is the one index: every page a job's row dirties is written in the
-- commit of a transfer or of the worker, so operators' listings (rare) scan instead.
CREATE INDEX jobs_queued_by_due ON jobs (due) WHERE state = 'queued';
