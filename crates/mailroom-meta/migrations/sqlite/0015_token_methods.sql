-- The negotiated methods (ACE) an API login agreed on, written as the API wrote them
-- (`authentication=password compression=zstd encryption=tls`), kept on every token of the
-- login so that whichever process checks a token knows them. NULL: the client did not
-- negotiate (and every token issued before this migration).
ALTER TABLE tokens ADD COLUMN methods TEXT;
