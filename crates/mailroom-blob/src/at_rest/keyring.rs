//! The master key and the keyring of data keys it unwraps.
//!
//! [`Keyring::open`] reads every wrapped data key from the metadata store and unwraps it
//! under the master key before the hub serves anything: a wrong key is refused there, with
//! nothing changed. Keys made later (a mailbox's first upload, on this node or another) are
//! inserted once per owner and found again by id when a blob names one this process has not
//! seen yet.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::{hkdf, hmac};
use mailroom_core::{
    CoreError, DataKeyRecord, HUB_KEY_OWNER, MetaStore, MetaStoreExt, Result, Vault,
};
use time::OffsetDateTime;

/// The length of every key here, in bytes.
pub(crate) const KEY_LEN: usize = 32;
/// The length of a data key's id, in bytes (32 hex digits as text).
pub(crate) const KEY_ID_LEN: usize = 16;
/// The length of a wrapped data key: nonce, key, tag.
const WRAPPED_LEN: usize = NONCE_LEN + KEY_LEN + 16;

/// The master key: wraps the data keys, and is kept outside the data folder. Its `Debug`
/// shows only its fingerprint.
#[derive(Clone)]
pub struct MasterKey {
    bytes: [u8; KEY_LEN],
    fingerprint: String,
}

impl MasterKey {
    /// A fresh random key.
    pub fn generate() -> MasterKey {
        let mut bytes = [0u8; KEY_LEN];
        fill_random(&mut bytes);
        MasterKey::from_bytes(bytes)
    }

    /// A key from its text: 64 hex digits, surrounding white space ignored. The error names
    /// what is wrong, never the text.
    pub fn parse(text: &str) -> std::result::Result<MasterKey, String> {
        let text = text.trim();
        let mut bytes = [0u8; KEY_LEN];
        hex::decode_to_slice(text, &mut bytes).map_err(|_| {
            format!(
                "a master key is 64 hex digits (32 bytes); this one has {} characters",
                text.len()
            )
        })?;
        Ok(MasterKey::from_bytes(bytes))
    }

    fn from_bytes(bytes: [u8; KEY_LEN]) -> MasterKey {
        let tag = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, &bytes),
            b"mailroom master key fingerprint v1",
        );
        MasterKey {
            bytes,
            fingerprint: hex::encode(&tag.as_ref()[..8]),
        }
    }

    /// The key as text, as [`MasterKey::parse`] reads it: to write to a key file, once.
    pub fn to_text(&self) -> String {
        hex::encode(self.bytes)
    }

    /// 16 hex digits that name this key without revealing it (an HMAC of a fixed text under
    /// it): kept beside each wrapped key, printed by `mailroom keys status`.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// `key` wrapped under this master key, bound to `id` and `owner`.
    fn wrap(&self, id: &str, owner: &str, key: &[u8; KEY_LEN]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce);
        let mut out = nonce.to_vec();
        let mut sealed = key.to_vec();
        aead_key(&self.bytes)
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(wrap_context(id, owner)),
                &mut sealed,
            )
            // AES-GCM sealing fails only for inputs of many GiB.
            .unwrap_or_else(|_| unreachable!("AES-GCM seals 32 bytes"));
        out.extend_from_slice(&sealed);
        out
    }

    /// The data key `record` wraps, if this master key wrapped it and nothing was altered.
    fn unwrap(&self, record: &DataKeyRecord) -> Option<[u8; KEY_LEN]> {
        if record.wrapped.len() != WRAPPED_LEN {
            return None;
        }
        let (nonce, sealed) = record.wrapped.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut sealed = sealed.to_vec();
        let key = aead_key(&self.bytes)
            .open_in_place(
                nonce,
                Aad::from(wrap_context(&record.id, &record.owner)),
                &mut sealed,
            )
            .ok()?;
        key.try_into().ok()
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey({})", self.fingerprint)
    }
}

/// What a wrapped key is bound to: moved to another id or owner, it does not unwrap.
fn wrap_context(id: &str, owner: &str) -> Vec<u8> {
    let mut context = b"mailroom data key v1\0".to_vec();
    context.extend_from_slice(id.as_bytes());
    context.push(0);
    context.extend_from_slice(owner.as_bytes());
    context
}

/// Why a keyring does not open: each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    /// The data keys are wrapped under another master key.
    #[error(
        "the master key given (fingerprint {given}) is not the one this hub's data keys are wrapped with (fingerprint {expected}); give the right key, or, after `mailroom keys rotate`, the new one"
    )]
    WrongKey {
        /// The fingerprint of the key given.
        given: String,
        /// The fingerprint the data keys name.
        expected: String,
    },
    /// A data key did not unwrap although the fingerprints match: the store was altered.
    #[error(
        "data key {id} (of {owner}) does not unwrap under the master key although its fingerprint matches: the metadata store was altered or damaged"
    )]
    Damaged {
        /// The key's id.
        id: String,
        /// Its owner.
        owner: String,
    },
    /// The metadata store could not be read or written.
    #[error("the metadata store: {0}")]
    Store(#[from] CoreError),
}

/// A data key, unwrapped.
pub(crate) struct DataKey {
    /// Its id as it is in a sealed blob's header.
    pub(crate) id: [u8; KEY_ID_LEN],
    key: [u8; KEY_LEN],
}

impl DataKey {
    /// The key for `info`, derived from this data key and `salt` (HKDF-SHA-256).
    pub(crate) fn derive(&self, salt: &[u8], info: &[u8]) -> [u8; KEY_LEN] {
        let mut out = [0u8; KEY_LEN];
        hkdf::Salt::new(hkdf::HKDF_SHA256, salt)
            .extract(&self.key)
            .expand(&[info], OutLen)
            .and_then(|okm| okm.fill(&mut out))
            // HKDF-SHA-256 fails only for outputs over 255 × 32 bytes.
            .unwrap_or_else(|_| unreachable!("HKDF yields 32 bytes"));
        out
    }

    /// An HMAC-SHA-256 of `data` under this key (a deterministic per-blob salt).
    pub(crate) fn mac(&self, data: &[u8]) -> [u8; KEY_LEN] {
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &self.key), data);
        let mut out = [0u8; KEY_LEN];
        out.copy_from_slice(tag.as_ref());
        out
    }
}

/// The output length of [`DataKey::derive`], for HKDF.
struct OutLen;

impl hkdf::KeyType for OutLen {
    fn len(&self) -> usize {
        KEY_LEN
    }
}

/// The unwrapped data keys of a hub, by id and by owner.
pub struct Keyring {
    master: MasterKey,
    meta: Arc<dyn MetaStore>,
    keys: RwLock<Keys>,
}

#[derive(Default)]
struct Keys {
    by_id: HashMap<[u8; KEY_ID_LEN], Arc<DataKey>>,
    by_owner: HashMap<String, Arc<DataKey>>,
}

impl Keyring {
    /// Reads and unwraps every data key under `master`; with `create_hub_key`, makes the
    /// hub's own key when there is none (turning encryption at rest on). Refused, with
    /// nothing changed, when the keys are wrapped under another master key or one does not
    /// unwrap; without `create_hub_key`, a store with no hub key opens empty.
    pub async fn open(
        master: MasterKey,
        meta: Arc<dyn MetaStore>,
        create_hub_key: bool,
    ) -> std::result::Result<Keyring, KeyringError> {
        let records = meta.read_with(|tx| tx.data_keys()).await?;
        let keyring = Keyring {
            master,
            meta,
            keys: RwLock::new(Keys::default()),
        };
        keyring.add_records(records)?;
        if create_hub_key && keyring.cached_owner(HUB_KEY_OWNER).is_none() {
            keyring.key_for(HUB_KEY_OWNER).await?;
        }
        Ok(keyring)
    }

    /// The wrapped data keys in the store, without opening them (for a status report).
    pub async fn records(meta: &dyn MetaStore) -> Result<Vec<DataKeyRecord>> {
        meta.read_with(|tx| tx.data_keys()).await
    }

    /// How many data keys this keyring holds.
    pub fn len(&self) -> usize {
        self.read_keys().by_id.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The master key's fingerprint.
    pub fn fingerprint(&self) -> &str {
        self.master.fingerprint()
    }

    /// Unwraps and caches `records`; refused on the first that does not unwrap.
    fn add_records(&self, records: Vec<DataKeyRecord>) -> std::result::Result<(), KeyringError> {
        let mut unwrapped = Vec::with_capacity(records.len());
        for record in &records {
            if record.master != self.master.fingerprint() {
                return Err(KeyringError::WrongKey {
                    given: self.master.fingerprint().to_owned(),
                    expected: record.master.clone(),
                });
            }
            let damaged = || KeyringError::Damaged {
                id: record.id.clone(),
                owner: record.owner.clone(),
            };
            let key = self.master.unwrap(record).ok_or_else(damaged)?;
            let mut id = [0u8; KEY_ID_LEN];
            hex::decode_to_slice(&record.id, &mut id).map_err(|_| damaged())?;
            unwrapped.push((record.owner.clone(), Arc::new(DataKey { id, key })));
        }
        let mut keys = self.write_keys();
        for (owner, key) in unwrapped {
            keys.by_id.insert(key.id, key.clone());
            keys.by_owner.insert(owner, key);
        }
        Ok(())
    }

    fn read_keys(&self) -> std::sync::RwLockReadGuard<'_, Keys> {
        self.keys.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_keys(&self) -> std::sync::RwLockWriteGuard<'_, Keys> {
        self.keys.write().unwrap_or_else(|p| p.into_inner())
    }

    fn cached_owner(&self, owner: &str) -> Option<Arc<DataKey>> {
        self.read_keys().by_owner.get(owner).cloned()
    }

    /// The data key of `owner`, made and stored first if it has none. Of two processes
    /// making one at once, the first insert wins and both use its key.
    pub(crate) async fn key_for(&self, owner: &str) -> Result<Arc<DataKey>> {
        if let Some(key) = self.cached_owner(owner) {
            return Ok(key);
        }
        let mut id = [0u8; KEY_ID_LEN];
        let mut key = [0u8; KEY_LEN];
        fill_random(&mut id);
        fill_random(&mut key);
        let id_text = hex::encode(id);
        let record = DataKeyRecord {
            wrapped: self.master.wrap(&id_text, owner, &key),
            id: id_text,
            owner: owner.to_owned(),
            master: self.master.fingerprint().to_owned(),
            created: OffsetDateTime::now_utc(),
        };
        self.meta
            .write_with(mailroom_core::Durability::Flush, move |tx| {
                tx.insert_data_key(&record)
            })
            .await?;
        self.reload().await?;
        self.cached_owner(owner)
            .ok_or_else(|| CoreError::internal("a data key just stored is not there"))
    }

    /// The data key a sealed blob names, read again from the store if another node made it.
    pub(crate) async fn key(&self, id: &[u8; KEY_ID_LEN]) -> Result<Arc<DataKey>> {
        if let Some(key) = self.read_keys().by_id.get(id).cloned() {
            return Ok(key);
        }
        self.reload().await?;
        self.read_keys().by_id.get(id).cloned().ok_or_else(|| {
            CoreError::internal(format!(
                "a sealed blob names data key {}, which this hub does not have",
                hex::encode(id)
            ))
        })
    }

    /// Reads every data key again (one made elsewhere).
    async fn reload(&self) -> Result<()> {
        let records = self.meta.read_with(|tx| tx.data_keys()).await?;
        self.add_records(records).map_err(|err| match err {
            KeyringError::Store(err) => err,
            other => CoreError::internal(other.to_string()),
        })
    }

    /// The hub's own data key (see [`Keyring::open`]).
    fn hub_key(&self) -> Result<Arc<DataKey>> {
        self.cached_owner(HUB_KEY_OWNER)
            .ok_or_else(|| CoreError::internal("the hub has no data key of its own"))
    }

    /// The web UI's CSRF key, derived from the hub's data key: the same after a restart and
    /// on every node, and never stored.
    pub fn csrf_key(&self) -> Result<[u8; KEY_LEN]> {
        Ok(self.hub_key()?.derive(b"", b"mailroom web csrf key v1"))
    }

    /// The AES-256-GCM key of the vault (TOTP secrets).
    fn vault_key(&self) -> Result<LessSafeKey> {
        Ok(aead_key(&self.hub_key()?.derive(b"", b"mailroom vault v1")))
    }
}

impl Vault for Keyring {
    fn seal(&self, context: &str, plain: &str) -> Result<String> {
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce);
        let mut sealed = plain.as_bytes().to_vec();
        self.vault_key()?
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut sealed,
            )
            .map_err(|_| CoreError::internal("could not seal a secret"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(hex::encode(out))
    }

    fn open(&self, context: &str, sealed: &str) -> Result<String> {
        let failed = || {
            CoreError::internal(
                "a sealed secret does not open: altered, moved, or sealed under another key",
            )
        };
        let bytes = hex::decode(sealed).map_err(|_| failed())?;
        if bytes.len() < NONCE_LEN + 16 {
            return Err(failed());
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| failed())?;
        let mut sealed = sealed.to_vec();
        let plain = self
            .vault_key()?
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut sealed)
            .map_err(|_| failed())?;
        String::from_utf8(plain.to_vec()).map_err(|_| failed())
    }
}

/// Rewraps every data key in `meta` from `old` to `new`, in one unit: all or none. Returns
/// how many were rewrapped. Refused, changing nothing, when `old` does not unwrap them all.
/// Serving nodes go on with the data keys they hold; each must start with `new` from then on.
pub async fn rotate(
    meta: &dyn MetaStore,
    old: &MasterKey,
    new: &MasterKey,
) -> std::result::Result<usize, KeyringError> {
    let records = meta.read_with(|tx| tx.data_keys()).await?;
    let mut rewrapped = Vec::with_capacity(records.len());
    for record in &records {
        if record.master != old.fingerprint() {
            return Err(KeyringError::WrongKey {
                given: old.fingerprint().to_owned(),
                expected: record.master.clone(),
            });
        }
        let key = old.unwrap(record).ok_or_else(|| KeyringError::Damaged {
            id: record.id.clone(),
            owner: record.owner.clone(),
        })?;
        rewrapped.push((record.id.clone(), new.wrap(&record.id, &record.owner, &key)));
    }
    let (count, fingerprint, old_fingerprint) = (
        rewrapped.len(),
        new.fingerprint().to_owned(),
        old.fingerprint().to_owned(),
    );
    meta.write_with(mailroom_core::Durability::Flush, move |tx| {
        for (id, wrapped) in &rewrapped {
            // Another rotation in between would have changed the fingerprint: refuse.
            if !tx.rewrap_data_key(id, wrapped, &fingerprint)? {
                return Err(CoreError::conflict(format!("data key {id} is gone")));
            }
        }
        let now = tx.data_keys()?;
        if now.len() != rewrapped.len() || now.iter().any(|k| k.master != fingerprint) {
            return Err(CoreError::conflict(format!(
                "the data keys changed during the rotation (a key was added under {old_fingerprint}); run it again"
            )));
        }
        Ok(())
    })
    .await?;
    Ok(count)
}

/// An AES-256-GCM key.
pub(crate) fn aead_key(bytes: &[u8; KEY_LEN]) -> LessSafeKey {
    // A 32-byte key is always accepted by AES-256-GCM.
    LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, bytes)
            .unwrap_or_else(|_| unreachable!("AES-256-GCM takes 32-byte keys")),
    )
}

/// Fills `out` from the operating system's generator (through aws-lc).
pub(crate) fn fill_random(out: &mut [u8]) {
    aws_lc_rs::rand::fill(out).unwrap_or_else(|_| panic!("the system random generator failed"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_master_key_round_trips_as_text_and_names_itself_without_revealing() {
        let key = MasterKey::generate();
        let again = MasterKey::parse(&format!(" {}\n", key.to_text())).unwrap();
        assert_eq!(again.fingerprint(), key.fingerprint());
        assert_eq!(key.fingerprint().len(), 16);
        assert!(!key.to_text().contains(key.fingerprint()));
        assert!(!format!("{key:?}").contains(&key.to_text()));
        let err = MasterKey::parse("not a key").unwrap_err();
        assert!(err.contains("64 hex digits"), "{err}");
        assert!(!err.contains("not a key"), "{err}");
    }

    /// What a restart and a rotation must keep: the web UI's CSRF key (open forms post
    /// after either) and the secrets sealed before; the old master key opens nothing after.
    #[tokio::test]
    async fn the_csrf_key_and_sealed_secrets_survive_a_restart_and_a_rotation() {
        let meta = Arc::new(mailroom_core::testing::MemoryMeta::new());
        let master = MasterKey::generate();
        let first = Keyring::open(master.clone(), meta.clone(), true)
            .await
            .unwrap();
        let sealed = first.seal("alice", "JBSWY3DPEHPK3PXP").unwrap();
        assert!(!sealed.contains("JBSWY3DPEHPK3PXP"));
        let csrf = first.csrf_key().unwrap();

        let restarted = Keyring::open(master.clone(), meta.clone(), true)
            .await
            .unwrap();
        assert_eq!(restarted.len(), 1, "a restart made a second hub key");
        assert_eq!(restarted.csrf_key().unwrap(), csrf);
        assert_eq!(
            restarted.open("alice", &sealed).unwrap(),
            "JBSWY3DPEHPK3PXP"
        );
        assert!(
            restarted.open("bob", &sealed).is_err(),
            "moved to another account"
        );

        let new = MasterKey::generate();
        assert_eq!(rotate(&*meta, &master, &new).await.unwrap(), 1);
        assert!(matches!(
            Keyring::open(master.clone(), meta.clone(), true).await,
            Err(KeyringError::WrongKey { .. })
        ));
        // A second rotation from the old key is refused and changes nothing.
        assert!(
            rotate(&*meta, &master, &MasterKey::generate())
                .await
                .is_err()
        );
        let rotated = Keyring::open(new, meta, true).await.unwrap();
        assert_eq!(rotated.csrf_key().unwrap(), csrf);
        assert_eq!(rotated.open("alice", &sealed).unwrap(), "JBSWY3DPEHPK3PXP");
    }

    #[test]
    fn a_wrapped_key_unwraps_only_under_its_master_id_and_owner() {
        let (master, other) = (MasterKey::generate(), MasterKey::generate());
        let key = [7u8; KEY_LEN];
        let record = DataKeyRecord {
            id: "00".repeat(16),
            owner: "alice".into(),
            wrapped: master.wrap(&"00".repeat(16), "alice", &key),
            master: master.fingerprint().into(),
            created: OffsetDateTime::UNIX_EPOCH,
        };
        assert_eq!(master.unwrap(&record), Some(key));
        assert_eq!(other.unwrap(&record), None);
        let moved = DataKeyRecord {
            owner: "mallory".into(),
            ..record.clone()
        };
        assert_eq!(master.unwrap(&moved), None);
        let mut flipped = record.clone();
        flipped.wrapped[20] ^= 1;
        assert_eq!(master.unwrap(&flipped), None);
    }
}
