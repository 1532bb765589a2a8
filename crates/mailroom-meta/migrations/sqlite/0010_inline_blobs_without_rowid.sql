-- The content of small blobs in a table keyed by its blob id alone (WITHOUT ROWID): one
-- B-tree instead of a table and the index of its key, so storing a small file dirties one page
-- fewer in the commit of its upload.
CREATE TABLE inline_blobs_keyed (
    blob_id TEXT PRIMARY KEY NOT NULL,
    content BLOB NOT NULL
) STRICT, WITHOUT ROWID;

INSERT INTO inline_blobs_keyed (blob_id, content) SELECT blob_id, content FROM inline_blobs;

DROP TABLE inline_blobs;

ALTER TABLE inline_blobs_keyed RENAME TO inline_blobs;
