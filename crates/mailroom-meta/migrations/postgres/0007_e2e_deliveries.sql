-- End-to-end encrypted deliveries: the content is age ciphertext the sender's agent made for
-- the recipients' keys, so the hub neither reads nor scans it. A route rule may require it.
ALTER TABLE deliveries ADD COLUMN e2e boolean NOT NULL DEFAULT false;
ALTER TABLE routes ADD COLUMN require_e2e boolean NOT NULL DEFAULT false;
