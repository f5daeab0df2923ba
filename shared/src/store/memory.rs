//! An object store in memory with the semantics walvault relies on from
//! the real ones (put-if-absent by raw digest, deletes of missing keys
//! succeed, ordered paged listings), for fast tests of the logic above it.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;

use super::{
    damaged, ListPage, Metadata, Object, ObjectInfo, ObjectReader, ObjectStore, PutOutcome,
    StoreError, UploadId, UploadedPart,
};
use crate::codec::Sha256Hex;
use crate::store::SHA256_METADATA;

pub struct MemoryStore {
    name: String,
    state: Mutex<State>,
    page_size: usize,
}

struct State {
    objects: BTreeMap<String, Object>,
    /// Multipart writes begun and neither completed nor aborted, by id.
    uploads: BTreeMap<String, PendingUpload>,
    next_upload: u64,
    /// The time new objects are stamped with; the real clock when `None`.
    now: Option<SystemTime>,
    /// How long each piece of a streamed body takes to arrive.
    piece_delay: std::time::Duration,
}

impl MemoryStore {
    pub fn new(name: &str) -> Self {
        MemoryStore {
            name: name.to_owned(),
            state: Mutex::new(State {
                objects: BTreeMap::new(),
                uploads: BTreeMap::new(),
                next_upload: 0,
                now: None,
                piece_delay: std::time::Duration::ZERO,
            }),
            page_size: 1000,
        }
    }

    /// Listings return at most `page_size` keys a page.
    pub fn with_page_size(mut self, page_size: usize) -> Self {
        self.page_size = page_size.max(1);
        self
    }

    /// Delivers streamed bodies a piece (1 MiB) per `delay`: a slow link.
    pub fn set_piece_delay(&self, delay: std::time::Duration) {
        self.lock().piece_delay = delay;
    }

    /// Stamps objects written from now on with `now` (a simulated clock).
    pub fn set_now(&self, now: SystemTime) {
        self.lock().now = Some(now);
    }

    /// Stores an object as is, replacing whatever was there: how a test
    /// plants a foreign, tampered or truncated object.
    pub fn plant(&self, key: &str, body: impl Into<Bytes>, metadata: Metadata) {
        let mut state = self.lock();
        let body = body.into();
        let info = info(key, &body, metadata, state.now);
        state.objects.insert(key.to_owned(), Object { info, body });
    }

    /// A new store holding the same objects: a snapshot to start tests from.
    pub fn duplicate(&self) -> Self {
        let state = self.lock();
        MemoryStore {
            name: self.name.clone(),
            state: Mutex::new(State {
                objects: state.objects.clone(),
                uploads: BTreeMap::new(),
                next_upload: 0,
                now: state.now,
                piece_delay: state.piece_delay,
            }),
            page_size: self.page_size,
        }
    }

    /// Keeps the object's metadata and size but flips its first byte.
    pub fn corrupt(&self, key: &str) {
        if let Some(object) = self.lock().objects.get_mut(key) {
            object.body = damaged(&object.body);
        }
    }

    /// Keeps the object's metadata and size but flips the byte at `at`
    /// (its last if shorter): damage deep inside a body.
    pub fn corrupt_at(&self, key: &str, at: usize) {
        if let Some(object) = self.lock().objects.get_mut(key) {
            let mut body = object.body.to_vec();
            if let Some(last) = body.len().checked_sub(1) {
                body[at.min(last)] ^= 0x55;
            }
            object.body = Bytes::from(body);
        }
    }

    /// Removes an object behind walvault's back.
    pub fn remove(&self, key: &str) {
        self.lock().objects.remove(key);
    }

    pub fn keys(&self) -> Vec<String> {
        self.lock().objects.keys().cloned().collect()
    }

    pub fn object(&self, key: &str) -> Option<Object> {
        self.lock().objects.get(key).cloned()
    }

    /// Multipart writes begun and neither completed nor aborted: parts a
    /// real store would keep charging for.
    pub fn pending_uploads(&self) -> usize {
        self.lock().uploads.len()
    }

    /// Stores `body` under `key` unless something is there already: the
    /// condition of every write.
    fn insert_if_absent(
        &self,
        state: &mut State,
        key: &str,
        body: Bytes,
        sha256: &Sha256Hex,
        metadata: Metadata,
    ) -> Result<PutOutcome, StoreError> {
        if let Some(existing) = state.objects.get(key) {
            return match existing.info.sha256() {
                Some(stored) if &stored == sha256 => Ok(PutOutcome::AlreadyPresent {
                    etag: existing.info.etag.clone(),
                    size: existing.info.size,
                }),
                stored => Err(StoreError::different_content(
                    &self.name,
                    key,
                    stored.as_ref(),
                    sha256,
                )),
            };
        }
        let info = info(key, &body, metadata, state.now);
        let etag = info.etag.clone();
        state.objects.insert(key.to_owned(), Object { info, body });
        Ok(PutOutcome::Created { etag })
    }

    fn no_such_upload(&self, key: &str, upload: &UploadId) -> StoreError {
        StoreError::NotFound {
            store: self.name.clone(),
            key: format!("{key} (upload {})", upload.0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock is a test failure already.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn etag_changed(&self, key: &str, etag: &str) -> StoreError {
        StoreError::PreconditionFailed {
            store: self.name.clone(),
            key: key.to_owned(),
            detail: format!("its ETag is no longer {etag}"),
        }
    }

    fn not_found(&self, key: &str) -> StoreError {
        StoreError::NotFound {
            store: self.name.clone(),
            key: key.to_owned(),
        }
    }
}

struct PendingUpload {
    key: String,
    metadata: Metadata,
    parts: BTreeMap<u32, Bytes>,
}

/// The object's info as a store would report it: a quoted etag derived
/// from the body, lower-case metadata keys.
fn info(key: &str, body: &Bytes, metadata: Metadata, now: Option<SystemTime>) -> ObjectInfo {
    ObjectInfo {
        key: key.to_owned(),
        size: body.len() as u64,
        etag: Some(format!("\"{}\"", &Sha256Hex::of(body).as_str()[..32])),
        last_modified: Some(now.unwrap_or_else(SystemTime::now)),
        metadata: metadata
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect(),
    }
}

#[async_trait]
impl ObjectStore for MemoryStore {
    fn name(&self) -> &str {
        &self.name
    }

    async fn put_if_absent(
        &self,
        key: &str,
        body: Bytes,
        sha256: &Sha256Hex,
        metadata: &Metadata,
    ) -> Result<PutOutcome, StoreError> {
        let mut metadata = metadata.clone();
        metadata.insert(SHA256_METADATA.to_owned(), sha256.as_str().to_owned());
        let mut state = self.lock();
        self.insert_if_absent(&mut state, key, body, sha256, metadata)
    }

    async fn put_replacing(
        &self,
        key: &str,
        body: Bytes,
        sha256: &Sha256Hex,
        metadata: &Metadata,
        replaced: &str,
    ) -> Result<Option<String>, StoreError> {
        let mut metadata = metadata.clone();
        metadata.insert(SHA256_METADATA.to_owned(), sha256.as_str().to_owned());
        let mut state = self.lock();
        match state.objects.get(key) {
            Some(object) if object.info.etag.as_deref() == Some(replaced) => {}
            _ => return Err(self.etag_changed(key, replaced)),
        }
        let info = info(key, &body, metadata, state.now);
        let etag = info.etag.clone();
        state.objects.insert(key.to_owned(), Object { info, body });
        Ok(etag)
    }

    async fn get(&self, key: &str) -> Result<Object, StoreError> {
        self.object(key).ok_or_else(|| self.not_found(key))
    }

    async fn get_stream(&self, key: &str) -> Result<ObjectReader, StoreError> {
        let object = self.get(key).await?;
        let delay = self.lock().piece_delay;
        // In pieces of 1 MiB, as a network would deliver it.
        let pieces: Vec<Result<Bytes, StoreError>> = (0..object.body.len())
            .step_by(1 << 20)
            .map(|at| Ok(object.body.slice(at..object.body.len().min(at + (1 << 20)))))
            .collect();
        let body = futures_util::stream::iter(pieces).then(move |piece| async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            piece
        });
        Ok(ObjectReader {
            info: object.info,
            body: Box::pin(body),
        })
    }

    async fn create_upload(
        &self,
        key: &str,
        sha256: &Sha256Hex,
        metadata: &Metadata,
    ) -> Result<UploadId, StoreError> {
        let mut metadata = metadata.clone();
        metadata.insert(SHA256_METADATA.to_owned(), sha256.as_str().to_owned());
        let mut state = self.lock();
        state.next_upload += 1;
        let id = format!("upload-{}", state.next_upload);
        state.uploads.insert(
            id.clone(),
            PendingUpload {
                key: key.to_owned(),
                metadata,
                parts: BTreeMap::new(),
            },
        );
        Ok(UploadId(id))
    }

    async fn upload_part(
        &self,
        key: &str,
        upload: &UploadId,
        number: u32,
        body: Bytes,
    ) -> Result<UploadedPart, StoreError> {
        let mut state = self.lock();
        let pending = state
            .uploads
            .get_mut(&upload.0)
            .filter(|p| p.key == key)
            .ok_or_else(|| self.no_such_upload(key, upload))?;
        let etag = format!("\"{}\"", &Sha256Hex::of(&body).as_str()[..32]);
        pending.parts.insert(number, body);
        Ok(UploadedPart {
            number,
            etag: Some(etag),
        })
    }

    async fn complete_upload(
        &self,
        key: &str,
        upload: &UploadId,
        parts: &[UploadedPart],
        sha256: &Sha256Hex,
    ) -> Result<PutOutcome, StoreError> {
        let mut state = self.lock();
        let pending = state
            .uploads
            .remove(&upload.0)
            .filter(|p| p.key == key)
            .ok_or_else(|| self.no_such_upload(key, upload))?;
        let mut body = Vec::new();
        for part in parts {
            let piece = pending
                .parts
                .get(&part.number)
                .ok_or_else(|| StoreError::Refused {
                    store: self.name.clone(),
                    operation: super::Operation::Put,
                    key: key.to_owned(),
                    source: crate::error::message(format!(
                        "InvalidPart: part {} was never sent",
                        part.number
                    )),
                })?;
            body.extend_from_slice(piece);
        }
        self.insert_if_absent(&mut state, key, Bytes::from(body), sha256, pending.metadata)
    }

    async fn abort_upload(&self, _key: &str, upload: &UploadId) -> Result<(), StoreError> {
        self.lock().uploads.remove(&upload.0);
        Ok(())
    }

    async fn head(&self, key: &str) -> Result<ObjectInfo, StoreError> {
        self.object(key)
            .map(|o| o.info)
            .ok_or_else(|| self.not_found(key))
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.lock().objects.remove(key);
        Ok(())
    }

    async fn delete_if_etag(&self, key: &str, etag: &str) -> Result<(), StoreError> {
        let mut state = self.lock();
        match state.objects.get(key) {
            None => Ok(()),
            Some(object) if object.info.etag.as_deref() == Some(etag) => {
                state.objects.remove(key);
                Ok(())
            }
            Some(_) => Err(self.etag_changed(key, etag)),
        }
    }

    async fn list_page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
    ) -> Result<ListPage, StoreError> {
        let state = self.lock();
        let mut matching = state
            .objects
            .range(start_after.unwrap_or("").to_owned()..)
            .filter(|(k, _)| Some(k.as_str()) != start_after && k.starts_with(prefix))
            .map(|(_, o)| ObjectInfo {
                metadata: Metadata::new(),
                ..o.info.clone()
            });
        let objects: Vec<ObjectInfo> = matching.by_ref().take(self.page_size).collect();
        let truncated = matching.next().is_some();
        Ok(ListPage { objects, truncated })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::list_all;

    #[tokio::test]
    async fn put_if_absent_compares_raw_digests() {
        let store = MemoryStore::new("mem");
        let (a, b) = (Sha256Hex::of(b"a"), Sha256Hex::of(b"b"));
        let created = store
            .put_if_absent("k", Bytes::from_static(b"x"), &a, &Metadata::new())
            .await
            .unwrap();
        assert!(matches!(created, PutOutcome::Created { etag: Some(_) }));
        let again = store
            .put_if_absent("k", Bytes::from_static(b"y"), &a, &Metadata::new())
            .await
            .unwrap();
        assert_eq!(
            again.etag(),
            created.etag(),
            "same digest: the stored one stands"
        );
        assert!(matches!(
            store
                .put_if_absent("k", Bytes::from_static(b"x"), &b, &Metadata::new())
                .await,
            Err(StoreError::PreconditionFailed { .. })
        ));
        assert_eq!(store.get("k").await.unwrap().body, Bytes::from_static(b"x"));
        store.plant("foreign", Bytes::from_static(b"f"), Metadata::new());
        assert!(matches!(
            store
                .put_if_absent("foreign", Bytes::from_static(b"x"), &a, &Metadata::new())
                .await,
            Err(StoreError::PreconditionFailed { .. })
        ));
    }

    #[tokio::test]
    async fn listings_page_in_key_order_and_deletes_are_idempotent() {
        let store = MemoryStore::new("mem").with_page_size(2);
        for key in ["p/3", "p/1", "q/1", "p/2", "p/4", "p/5"] {
            store.plant(key, Bytes::from_static(b"."), Metadata::new());
        }
        let first = store.list_page("p/", None).await.unwrap();
        assert_eq!(first.objects.len(), 2);
        assert!(first.truncated);
        let keys: Vec<String> = list_all(&store, "p/")
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(keys, ["p/1", "p/2", "p/3", "p/4", "p/5"]);
        store.delete("p/1").await.unwrap();
        store.delete("p/1").await.unwrap();
        assert!(store.head("p/1").await.unwrap_err().is_not_found());
    }
}
