-- Accounts' end-to-end encryption keys: the age X25519 recipients (`age1…`) senders' agents
-- encrypt files to, as one JSON list in the order added,
-- `[{"recipient": "age1…", "comment": "…", "added": NANOS}]`, written as SQLite writes it.
-- Written whole by the unit that adds or removes one (a field-level update of its own); no
-- trigger moves the policy version, since keys are no policy. Every account so far has none.
ALTER TABLE accounts ADD COLUMN e2e_keys text NOT NULL DEFAULT '[]';
