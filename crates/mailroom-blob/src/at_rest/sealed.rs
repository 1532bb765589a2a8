//! The sealing blob store: any [`BlobStore`] underneath, content encrypted on its way in and
//! opened on its way out.
//!
//! A sealed blob is:
//!
//! ```text
//! header  "MRSEAL01" | data key id (16 bytes) | salt (32 bytes)
//! chunk 0 AES-256-GCM(64 KiB of plaintext) | tag (16 bytes)
//! …
//! chunk n the rest (0 to 64 KiB) | tag, sealed with the last-chunk flag
//! ```
//!
//! Each blob's chunks are sealed under its own key, HKDF-SHA-256 of the data key with the
//! salt; the nonce is the chunk's number and the last-chunk flag, so no nonce repeats under a
//! key, a chunk moved elsewhere fails, and a blob cut after a whole chunk fails on its new
//! last chunk. The salt of a blob whose store can take it up after a restart (the local
//! folder) is an HMAC of its staging id under the data key, so the resumed writer seals on
//! under the same key, after every whole chunk that reached the store (and the final chunk of
//! a commit the metadata never recorded, opened back into the window); otherwise it is random.
//!
//! Writing keeps the last [`WINDOW`] bytes of plaintext unsealed, so out-of-order and
//! rewritten data within it is taken as the other stores take it; a rewrite of data already
//! sealed is refused (Conflict), as S3 refuses a rewrite of data it has sent, and a write past
//! the window is refused (QuotaExceeded). The SHA-256 the metadata records is the
//! plaintext's, taken as chunks are sealed in order; the store underneath is asked not to hash
//! the ciphertext ([`crate::LocalBlobStore::without_content_hash`]).
//!
//! A blob without the header is read as it is: blobs stored before the hub encrypted at rest
//! stay readable.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use aws_lc_rs::aead::{Aad, LessSafeKey, NONCE_LEN, Nonce};
use mailroom_core::{
    AccountName, BlobId, BlobReader, BlobStore, BlobWriter, CoreError, ErrorKind, InlineReader,
    ListedBlob, Result, StoredBlob, SweepReport,
};
use sha2::{Digest, Sha256};

use super::keyring::{DataKey, KEY_ID_LEN, Keyring, aead_key, fill_random};
use crate::MAX_WRITE_LEN;
use crate::reader::{framed, read_len};

/// What a sealed blob begins with.
pub const SEAL_MAGIC: &[u8; 8] = b"MRSEAL01";
/// The plaintext bytes of each sealed chunk (the last may be shorter).
pub const SEAL_CHUNK: usize = 64 * 1024;
/// The length of an AES-GCM tag.
const TAG: usize = 16;
/// The length of the salt.
const SALT: usize = 32;
/// The length of the header.
const HEADER: usize = SEAL_MAGIC.len() + KEY_ID_LEN + SALT;
/// The stored length of a whole chunk.
const SEALED_CHUNK: u64 = (SEAL_CHUNK + TAG) as u64;
/// The plaintext kept unsealed behind the furthest write, for out-of-order data and rewrites.
const WINDOW: u64 = 4 * 1024 * 1024;
/// How much is sealed at once when the window is full: one write to the store underneath.
const BATCH: u64 = 1024 * 1024;
/// What the chunk keys are derived for.
const BLOB_INFO: &[u8] = b"mailroom blob v1";

/// Whether stored bytes beginning with `prefix` are a sealed blob.
pub fn is_sealed(prefix: &[u8]) -> bool {
    prefix.starts_with(SEAL_MAGIC)
}

/// The nonce of chunk `index`.
fn nonce(index: u64, last: bool) -> Nonce {
    let mut bytes = [0u8; NONCE_LEN];
    bytes[3..11].copy_from_slice(&index.to_be_bytes());
    bytes[11] = u8::from(last);
    Nonce::assume_unique_for_key(bytes)
}

/// The plaintext length of a sealed blob of `stored` bytes (header included), and its number
/// of chunks; `None` for a length no sealed blob has.
fn geometry(stored: u64) -> Option<(u64, u64)> {
    let body = stored.checked_sub(HEADER as u64)?;
    if body < TAG as u64 {
        return None;
    }
    let chunks = body.div_ceil(SEALED_CHUNK);
    let last = body - (chunks - 1) * SEALED_CHUNK;
    // Only a blob of one chunk may end with an empty one.
    if last == TAG as u64 && chunks > 1 {
        return None;
    }
    Some((body - chunks * TAG as u64, chunks))
}

/// A damaged sealed blob: what the reader says (details logged, not sent).
fn damaged(what: &str) -> CoreError {
    tracing::error!(what, "a sealed blob does not open");
    CoreError::internal("stored content failed its integrity check")
}

/// [`BlobStore`] over `inner` that seals what is written and opens what is read.
pub struct SealedBlobStore {
    inner: Arc<dyn BlobStore>,
    keyring: Arc<Keyring>,
}

impl SealedBlobStore {
    /// Seals into `inner` under the data keys of `keyring`.
    pub fn new(inner: Arc<dyn BlobStore>, keyring: Arc<Keyring>) -> SealedBlobStore {
        SealedBlobStore { inner, keyring }
    }

    /// The header and chunk key of a new blob under `key` (salt from `staging` when given).
    fn header(key: &DataKey, staging: Option<&BlobId>) -> ([u8; HEADER], LessSafeKey) {
        let mut salt = [0u8; SALT];
        match staging {
            Some(id) => {
                let mut input = b"mailroom staging salt v1\0".to_vec();
                input.extend_from_slice(id.as_str().as_bytes());
                salt = key.mac(&input);
            }
            None => fill_random(&mut salt),
        }
        let mut header = [0u8; HEADER];
        header[..SEAL_MAGIC.len()].copy_from_slice(SEAL_MAGIC);
        header[SEAL_MAGIC.len()..SEAL_MAGIC.len() + KEY_ID_LEN].copy_from_slice(&key.id);
        header[SEAL_MAGIC.len() + KEY_ID_LEN..].copy_from_slice(&salt);
        (header, aead_key(&key.derive(&salt, BLOB_INFO)))
    }

    /// The chunk key a stored header names.
    async fn key_of(&self, header: &[u8]) -> Result<LessSafeKey> {
        if header.len() < HEADER || !is_sealed(header) {
            return Err(damaged("short header"));
        }
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&header[SEAL_MAGIC.len()..SEAL_MAGIC.len() + KEY_ID_LEN]);
        let key = self.keyring.key(&id).await?;
        Ok(aead_key(&key.derive(
            &header[SEAL_MAGIC.len() + KEY_ID_LEN..HEADER],
            BLOB_INFO,
        )))
    }

    /// A reader of sealed bytes held by `stored`, `size` bytes long.
    async fn open_sealed(&self, stored: Arc<dyn BlobReader>) -> Result<Arc<dyn BlobReader>> {
        let header = read_exact(&*stored, 0, HEADER).await?;
        let key = self.key_of(&header).await?;
        let (size, chunks) = geometry(stored.size()).ok_or_else(|| damaged("length"))?;
        Ok(Arc::new(SealedReader {
            stored,
            key,
            size,
            chunks,
            cache: Mutex::new(None),
        }))
    }
}

/// Exactly `len` bytes at `offset` of `reader` (several reads if the store answers less).
async fn read_exact(reader: &dyn BlobReader, offset: u64, len: usize) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        let data = reader
            .read_at(offset + out.len() as u64, len - out.len())
            .await?;
        if data.is_empty() {
            return Err(damaged("cut short"));
        }
        out.extend_from_slice(&data);
    }
    Ok(out)
}

#[async_trait]
impl BlobStore for SealedBlobStore {
    async fn create(&self, owner: &AccountName) -> Result<Box<dyn BlobWriter>> {
        let key = self.keyring.key_for(owner.as_str()).await?;
        let mut inner = self.inner.create(owner).await?;
        let (header, chunk_key) = Self::header(&key, inner.staging_id().as_ref());
        inner.write_at(0, &header).await?;
        Ok(Box::new(SealedWriter::new(
            inner,
            self.inner.clone(),
            chunk_key,
            0,
            true,
        )))
    }

    async fn resume(
        &self,
        staging: &BlobId,
        owner: &AccountName,
    ) -> Result<Option<Box<dyn BlobWriter>>> {
        let Some(mut inner) = self.inner.resume(staging, owner).await? else {
            return Ok(None);
        };
        let key = self.keyring.key_for(owner.as_str()).await?;
        let (header, chunk_key) = Self::header(&key, Some(staging));
        let (kept, tail) = take_up(&mut *inner, &header, &chunk_key).await?;
        let mut writer = SealedWriter::new(inner, self.inner.clone(), chunk_key, kept, kept == 0);
        if let Some(mut plain) = tail {
            writer.size += plain.len() as u64;
            plain.resize(SEAL_CHUNK, 0);
            writer.pending.push_back(plain);
        }
        Ok(Some(Box::new(writer)))
    }

    async fn open(&self, id: &BlobId) -> Result<Arc<dyn BlobReader>> {
        let stored = self.inner.open(id).await?;
        let prefix = stored.read_at(0, SEAL_MAGIC.len()).await?;
        if !is_sealed(&prefix) {
            // Stored before the hub encrypted at rest.
            return Ok(stored);
        }
        self.open_sealed(stored).await
    }

    async fn delete(&self, id: &BlobId) -> Result<()> {
        self.inner.delete(id).await
    }

    async fn sweep(&self, live: &HashSet<BlobId>) -> Result<SweepReport> {
        self.inner.sweep(live).await
    }

    async fn list(&self) -> Result<Vec<ListedBlob>> {
        self.inner.list().await
    }

    async fn set_aside(&self, id: &BlobId) -> Result<String> {
        self.inner.set_aside(id).await
    }

    async fn open_inline(&self, id: &BlobId, content: Vec<u8>) -> Result<Arc<dyn BlobReader>> {
        if !is_sealed(&content) {
            return self.inner.open_inline(id, content).await;
        }
        let sealed = self.open_sealed(Arc::new(InlineReader(content))).await?;
        let plain = read_exact(&*sealed, 0, usize::try_from(sealed.size()).unwrap_or(0)).await?;
        Ok(Arc::new(InlineReader(plain)))
    }
}

/// Takes up what reached the store of an upload sealed under `header` and `key`: every whole
/// chunk sealed in the stream (never flagged last), and the chunk that ends it when it opens
/// (a commit's final chunk, flagged last, of a blob whose commit was not recorded), whose
/// plaintext goes back to the unsealed window. A torn or damaged tail is dropped, for the
/// client to send again; a foreign header starts the blob afresh. Returns the chunks kept and
/// the tail's plaintext; the store underneath is cut to the kept chunks.
async fn take_up(
    inner: &mut dyn BlobWriter,
    header: &[u8; HEADER],
    key: &LessSafeKey,
) -> Result<(u64, Option<Vec<u8>>)> {
    let stored = inner.size();
    let ours = stored >= HEADER as u64 && inner.read_back(0, HEADER).await? == header;
    if !ours {
        inner.truncate(0).await?;
        inner.write_at(0, header).await?;
        return Ok((0, None));
    }
    let body = stored - HEADER as u64;
    let (whole, rest) = (body / SEALED_CHUNK, body % SEALED_CHUNK);
    let open = |index: u64, last: bool, mut sealed: Vec<u8>| -> Option<Vec<u8>> {
        let len = key
            .open_in_place(nonce(index, last), Aad::empty(), &mut sealed)
            .ok()?
            .len();
        sealed.truncate(len);
        Some(sealed)
    };
    let chunk_at = |index: u64| HEADER as u64 + index * SEALED_CHUNK;
    let (kept, tail) = if rest > 0 {
        let sealed = inner.read_back(chunk_at(whole), rest as usize).await?;
        (whole, open(whole, true, sealed))
    } else if whole > 0 {
        let sealed = inner
            .read_back(chunk_at(whole - 1), SEALED_CHUNK as usize)
            .await?;
        if open(whole - 1, false, sealed.clone()).is_some() {
            (whole, None)
        } else {
            (whole - 1, open(whole - 1, true, sealed))
        }
    } else {
        (0, None)
    };
    inner.truncate(chunk_at(kept)).await?;
    Ok((kept, tail))
}

/// A blob being sealed into the store underneath.
struct SealedWriter {
    inner: Box<dyn BlobWriter>,
    /// The store underneath, to read a resumed blob back at commit.
    store: Arc<dyn BlobStore>,
    key: LessSafeKey,
    /// The hash of the plaintext sealed so far, in order; `None` for a resumed writer, whose
    /// earlier chunks are hashed from the store at commit.
    hasher: Option<Sha256>,
    /// Chunks sealed and handed to the store so far.
    sealed: u64,
    /// The plaintext of the chunks from `sealed` on, each [`SEAL_CHUNK`] long (zeros where
    /// nothing was written yet).
    pending: VecDeque<Vec<u8>>,
    /// The highest end offset written.
    size: u64,
}

impl SealedWriter {
    fn new(
        inner: Box<dyn BlobWriter>,
        store: Arc<dyn BlobStore>,
        key: LessSafeKey,
        sealed: u64,
        fresh: bool,
    ) -> Self {
        SealedWriter {
            inner,
            store,
            key,
            hasher: fresh.then(Sha256::new),
            sealed,
            pending: VecDeque::new(),
            size: sealed * SEAL_CHUNK as u64,
        }
    }

    /// The plaintext offset where the unsealed window begins.
    fn sealed_upto(&self) -> u64 {
        self.sealed * SEAL_CHUNK as u64
    }

    /// Seals the first `count` pending chunks (whole, none of them the last) or, with
    /// `last`, every pending chunk with the final one cut to the blob's size and flagged, and
    /// hands them to the store in one write.
    async fn seal(&mut self, count: u64, last: bool) -> Result<()> {
        let final_index = if self.size == 0 {
            0
        } else {
            (self.size - 1) / SEAL_CHUNK as u64
        };
        let upto = if last {
            final_index + 1
        } else {
            self.sealed + count
        };
        if upto <= self.sealed {
            return Ok(());
        }
        let mut out = Vec::with_capacity(((upto - self.sealed) * SEALED_CHUNK) as usize);
        let start = HEADER as u64 + self.sealed * SEALED_CHUNK;
        let mut index = self.sealed;
        while index < upto {
            let is_last = last && index == final_index;
            let chunk = self.pending.pop_front().unwrap_or_default();
            let len = if is_last {
                (self.size - index * SEAL_CHUNK as u64) as usize
            } else {
                SEAL_CHUNK
            };
            let mut plain = chunk;
            plain.resize(SEAL_CHUNK.max(plain.len()), 0);
            plain.truncate(len);
            if let Some(hasher) = &mut self.hasher {
                hasher.update(&plain);
            }
            let at = out.len();
            out.extend_from_slice(&plain);
            let tag = self
                .key
                .seal_in_place_separate_tag(nonce(index, is_last), Aad::empty(), &mut out[at..])
                .map_err(|_| CoreError::internal("could not seal a chunk"))?;
            out.extend_from_slice(tag.as_ref());
            index += 1;
        }
        // Chunks are whole here (a non-last batch) or the end (the final one): the store
        // underneath sees one in-order write.
        for piece in out.chunks(MAX_WRITE_LEN) {
            let offset = start + (piece.as_ptr() as usize - out.as_ptr() as usize) as u64;
            self.inner.write_at(offset, piece).await?;
        }
        self.sealed = upto;
        Ok(())
    }
}

#[async_trait]
impl BlobWriter for SealedWriter {
    async fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        if data.len() > MAX_WRITE_LEN {
            return Err(CoreError::new(
                ErrorKind::QuotaExceeded,
                "write request too large",
            ));
        }
        let Some(end) = offset
            .checked_add(data.len() as u64)
            .filter(|end| *end <= i64::MAX as u64)
        else {
            return Err(CoreError::new(
                ErrorKind::QuotaExceeded,
                "write offset out of range",
            ));
        };
        if data.is_empty() {
            return Ok(());
        }
        if offset < self.sealed_upto() {
            return Err(CoreError::conflict(
                "that part of the upload is stored already and cannot be written again",
            ));
        }
        if end - self.sealed_upto() > WINDOW {
            // Make room: seal whole chunks before this write and before the end, down to a
            // batch below the window.
            let wanted = (end - self.sealed_upto() - WINDOW + BATCH).div_ceil(SEAL_CHUNK as u64);
            let before = (offset.min(self.size) / SEAL_CHUNK as u64).saturating_sub(self.sealed);
            let count = wanted.min(before);
            if count > 0 && self.size > 0 {
                // Never the chunk that holds the end so far (it may be the last).
                let below_end = ((self.size - 1) / SEAL_CHUNK as u64).saturating_sub(self.sealed);
                self.seal(count.min(below_end), false).await?;
            }
            if end - self.sealed_upto() > WINDOW {
                return Err(CoreError::new(
                    ErrorKind::QuotaExceeded,
                    "a write this far ahead of the upload is refused",
                ));
            }
        }
        let mut at = offset - self.sealed_upto();
        let mut rest = data;
        while !rest.is_empty() {
            let index = (at / SEAL_CHUNK as u64) as usize;
            let within = (at % SEAL_CHUNK as u64) as usize;
            while self.pending.len() <= index {
                self.pending.push_back(vec![0; SEAL_CHUNK]);
            }
            let take = rest.len().min(SEAL_CHUNK - within);
            self.pending[index][within..within + take].copy_from_slice(&rest[..take]);
            rest = &rest[take..];
            at += take as u64;
        }
        self.size = self.size.max(end);
        Ok(())
    }

    fn size(&self) -> u64 {
        self.size
    }

    fn staging_id(&self) -> Option<BlobId> {
        self.inner.staging_id()
    }

    async fn commit(mut self: Box<Self>) -> Result<StoredBlob> {
        self.seal(0, true).await?;
        let SealedWriter {
            inner,
            store,
            key,
            hasher,
            size,
            ..
        } = *self;
        let stored = inner.commit().await?;
        let sha256 = match hasher {
            Some(hasher) => hex::encode(hasher.finalize()),
            None => {
                // A resumed upload: hash what was stored, opening every chunk.
                let reader: Arc<dyn BlobReader> = match &stored.inline {
                    Some(content) => Arc::new(InlineReader(content.clone())),
                    None => store.open(&stored.id).await?,
                };
                hash_sealed(reader, key, size).await?
            }
        };
        Ok(StoredBlob {
            id: stored.id,
            size,
            sha256,
            inline: stored.inline,
        })
    }

    async fn abort(self: Box<Self>) {
        self.inner.abort().await;
    }
}

/// The SHA-256 of the plaintext of `stored` (a sealed blob under `key`, `size` bytes of
/// plaintext), every chunk's tag checked.
async fn hash_sealed(stored: Arc<dyn BlobReader>, key: LessSafeKey, size: u64) -> Result<String> {
    let (plain, chunks) = geometry(stored.size()).ok_or_else(|| damaged("length"))?;
    if plain != size {
        return Err(damaged("size"));
    }
    let reader = SealedReader {
        stored,
        key,
        size,
        chunks,
        cache: Mutex::new(None),
    };
    let mut hasher = Sha256::new();
    let mut offset = 0;
    while offset < size {
        let data = reader.read_at(offset, 1024 * 1024).await?;
        if data.is_empty() {
            return Err(damaged("cut short"));
        }
        offset += data.len() as u64;
        hasher.update(&data);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// A sealed blob open for reading.
struct SealedReader {
    stored: Arc<dyn BlobReader>,
    key: LessSafeKey,
    /// The plaintext size.
    size: u64,
    /// The number of chunks.
    chunks: u64,
    /// The last chunk opened, by number: a reader asking for less than a chunk at a time
    /// opens each chunk once.
    cache: Mutex<Option<(u64, Arc<Vec<u8>>)>>,
}

impl SealedReader {
    /// Opens chunks `first..=last`, reading them in one go.
    async fn open_chunks(&self, first: u64, last: u64) -> Result<Vec<Vec<u8>>> {
        let start = HEADER as u64 + first * SEALED_CHUNK;
        let end = (HEADER as u64 + (last + 1) * SEALED_CHUNK).min(self.stored.size());
        let stored = read_exact(&*self.stored, start, (end - start) as usize).await?;
        let mut out = Vec::with_capacity((last - first + 1) as usize);
        for (i, sealed) in stored.chunks(SEALED_CHUNK as usize).enumerate() {
            let index = first + i as u64;
            let mut buffer = sealed.to_vec();
            let plain_len = self
                .key
                .open_in_place(
                    nonce(index, index + 1 == self.chunks),
                    Aad::empty(),
                    &mut buffer,
                )
                .map_err(|_| damaged("tag"))?
                .len();
            buffer.truncate(plain_len);
            out.push(buffer);
        }
        Ok(out)
    }

    /// Chunk `index`, opened (from the cache when it is the last one opened).
    async fn chunk(&self, index: u64) -> Result<Arc<Vec<u8>>> {
        if let Some((cached, chunk)) = &*self.cache.lock().unwrap_or_else(|p| p.into_inner())
            && *cached == index
        {
            return Ok(chunk.clone());
        }
        let chunk = Arc::new(
            self.open_chunks(index, index)
                .await?
                .pop()
                .unwrap_or_default(),
        );
        *self.cache.lock().unwrap_or_else(|p| p.into_inner()) = Some((index, chunk.clone()));
        Ok(chunk)
    }
}

#[async_trait]
impl BlobReader for SealedReader {
    fn size(&self) -> u64 {
        self.size
    }

    async fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let len = read_len(self.size, offset, len);
        if len == 0 {
            return Ok(Vec::new());
        }
        let chunk = SEAL_CHUNK as u64;
        let (first, last) = (offset / chunk, (offset + len as u64 - 1) / chunk);
        let within = (offset % chunk) as usize;
        if first == last {
            let opened = self.chunk(first).await?;
            return opened
                .get(within..within + len)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| damaged("chunk length"));
        }
        let opened = self.open_chunks(first, last).await?;
        let mut out = Vec::with_capacity(len);
        for (i, plain) in opened.iter().enumerate() {
            let from = if i == 0 { within } else { 0 };
            let take = (len - out.len()).min(plain.len().saturating_sub(from));
            out.extend_from_slice(&plain[from..from + take]);
        }
        if out.len() != len {
            return Err(damaged("chunk length"));
        }
        if let Some(last_chunk) = opened.into_iter().last() {
            *self.cache.lock().unwrap_or_else(|p| p.into_inner()) =
                Some((last, Arc::new(last_chunk)));
        }
        Ok(out)
    }

    async fn read_at_after(&self, offset: u64, len: usize, room: usize) -> Result<Vec<u8>> {
        Ok(framed(room, &self.read_at(offset, len).await?))
    }
}
