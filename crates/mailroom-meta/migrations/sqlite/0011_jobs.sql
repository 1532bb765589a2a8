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

-- The worker's question, "which queued jobs are due", read from the queued jobs only. It is
-- the one index: every page a job's row dirties is written in the commit of a transfer or of
-- the worker, so operators' listings (rare) scan instead.
CREATE INDEX jobs_queued_by_due ON jobs (due) WHERE state = 'queued';

-- The queue's depth, which every unit that queues jobs reads against the bound: one row kept
-- by triggers in the changing transaction (as policy_version is), so the read costs the same
-- with ten jobs waiting or a hundred thousand.
CREATE TABLE job_depth (
    -- Always 1: the table holds one row.
    id INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    queued INTEGER NOT NULL CHECK (queued >= 0)
) STRICT;

INSERT INTO job_depth (id, queued) VALUES (1, 0);

CREATE TRIGGER job_depth_queued AFTER INSERT ON jobs WHEN new.state = 'queued'
BEGIN UPDATE job_depth SET queued = queued + 1 WHERE id = 1; END;

CREATE TRIGGER job_depth_left AFTER UPDATE OF state ON jobs
WHEN old.state = 'queued' AND new.state <> 'queued'
BEGIN UPDATE job_depth SET queued = queued - 1 WHERE id = 1; END;

CREATE TRIGGER job_depth_requeued AFTER UPDATE OF state ON jobs
WHEN old.state <> 'queued' AND new.state = 'queued'
BEGIN UPDATE job_depth SET queued = queued + 1 WHERE id = 1; END;

CREATE TRIGGER job_depth_removed AFTER DELETE ON jobs WHEN old.state = 'queued'
BEGIN UPDATE job_depth SET queued = queued - 1 WHERE id = 1; END;
