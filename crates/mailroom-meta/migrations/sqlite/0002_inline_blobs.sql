-- Small blobs kept in the metadata store: their content commits in the same transaction as
-- the deliveries that reference them (one WAL fsync instead of a file, a rename and a folder
-- fsync). A row lives while a live delivery references its blob id; the transition that ends
-- the last one deletes it.
CREATE TABLE inline_blobs (
    blob_id TEXT PRIMARY KEY NOT NULL,
    content BLOB NOT NULL
) STRICT;
