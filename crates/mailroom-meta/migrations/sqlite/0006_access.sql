-- Issue 4: how an account may log in and what it may do, TOTP enrolment, and bans.

-- Required factors, networks, certificate subject, rights and limits, as one JSON object
-- (see convert::access_to_json). Read and written with the account; no query filters on it.
ALTER TABLE accounts ADD COLUMN access TEXT NOT NULL DEFAULT '{}';
-- TOTP: the base32 secret, the last accepted time step (a code works once), and the SHA-256
-- of each unused recovery code as a JSON array.
ALTER TABLE accounts ADD COLUMN totp_secret TEXT;
ALTER TABLE accounts ADD COLUMN totp_last_step INTEGER;
ALTER TABLE accounts ADD COLUMN totp_recovery TEXT NOT NULL DEFAULT '[]';

-- One row per banned subject: an address, or 'account:<name>'. Kept after the ban ends so
-- the next ban of the same subject lasts longer (level).
CREATE TABLE bans (
    subject TEXT NOT NULL PRIMARY KEY,
    until INTEGER NOT NULL,
    level INTEGER NOT NULL CHECK (level >= 1),
    reason TEXT NOT NULL,
    created INTEGER NOT NULL
) STRICT;
