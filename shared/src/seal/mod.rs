//! Client-side encryption of what R2 and B2 hold ("sealing"), in the age
//! format: X25519 recipients, ChaCha20-Poly1305 in 64 KiB chunks, through
//! the `age` crate rather than anything written here.
//!
//! The compress function seals with public recipients only (configuration,
//! not secrets), after zstd; the private identities live on the hosts that
//! restore. What a sealed copy holds, once opened: [`Claims`] (the raw
//! size and sha256, which the providers must not see) and then the zstd
//! frame. The claims let a copy be verified without the catalog; with it,
//! they must agree with the record.
//!
//! A stored copy is sealed exactly when it begins with the age header, so
//! an archive that mixes plain and sealed copies reads without being told
//! which is which (a zstd frame begins with other bytes).

use std::fmt;
use std::io::{self, BufRead, Read, Write};
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};

use age::secrecy::ExposeSecret;
use age::x25519;
use sha2::{Digest, Sha256};

use crate::codec::{read_at_most, Sha256Hex};

pub mod state;

/// The first bytes of every age file.
const AGE_MAGIC: &[u8] = b"age-encryption.org/v1\n";

/// What a sealed copy begins with, once opened.
const CLAIMS_MAGIC: &[u8; 8] = b"wvseal1\n";
const CLAIMS_LEN: usize = CLAIMS_MAGIC.len() + 8 + 32;

/// The secret that keys a sealed file's content tag: HMAC-SHA256 of its raw
/// sha256, so that the tag is the same for every delivery of the file
/// (even one that recreates a lost catalog record) and tells a provider
/// nothing. One per cluster, kept in the catalog's encryption state (the
/// user's own account, beside the raw digests themselves).
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TagKey([u8; 32]);

impl TryFrom<String> for TagKey {
    type Error = String;

    fn try_from(hex_key: String) -> Result<Self, Self::Error> {
        TagKey::parse(&hex_key)
    }
}

impl From<TagKey> for String {
    fn from(key: TagKey) -> Self {
        key.to_hex()
    }
}

impl TagKey {
    pub fn random() -> Result<Self, KeyError> {
        let mut key = [0u8; 32];
        getrandom::getrandom(&mut key)
            .map_err(|e| KeyError::Encrypt(format!("no randomness: {e}")))?;
        Ok(TagKey(key))
    }

    pub fn parse(hex_key: &str) -> Result<Self, String> {
        let bytes = hex::decode(hex_key).map_err(|_| "the tag key is not hex".to_owned())?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| "the tag key is not 32 bytes".to_owned())?;
        Ok(TagKey(key))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The content tag of the file whose raw bytes have `raw_sha256`.
    pub fn tag(&self, raw_sha256: &Sha256Hex) -> Sha256Hex {
        use hmac::Mac;
        let mut mac =
            hmac::Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        mac.update(raw_sha256.as_str().as_bytes());
        Sha256Hex::of_digest(&mac.finalize().into_bytes().into())
    }
}

impl fmt::Debug for TagKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TagKey(<redacted>)")
    }
}

/// How a deployment seals new copies: to whom, and with the cluster's tag
/// key.
#[derive(Debug, Clone)]
pub struct Sealing {
    pub recipients: Recipients,
    pub tag_key: TagKey,
}

/// Whether a stored copy that begins with `start` is sealed.
pub fn is_sealed(start: &[u8]) -> bool {
    start.starts_with(AGE_MAGIC)
}

/// How many bytes [`is_sealed`] needs to decide.
pub const SNIFF_LEN: usize = AGE_MAGIC.len();

/// A public recipient's short name: the first 8 bytes of the sha256 of its
/// `age1…` form, in hex. What the catalog records per file, what errors
/// and `walvault status` show, and what `walvault keygen` prints beside
/// the recipient.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct Fingerprint(String);

impl TryFrom<String> for Fingerprint {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Fingerprint> for String {
    fn from(fingerprint: Fingerprint) -> Self {
        fingerprint.0
    }
}

impl Fingerprint {
    const HEX_LEN: usize = 16;

    fn of(recipient: &x25519::Recipient) -> Self {
        let digest = Sha256::digest(recipient.to_string().as_bytes());
        Fingerprint(hex::encode(&digest[..Self::HEX_LEN / 2]))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Fingerprint {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let valid = s.len() == Self::HEX_LEN
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        match valid {
            true => Ok(Fingerprint(s.to_owned())),
            false => Err(format!("{s:?} is not a recipient fingerprint")),
        }
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Fingerprints as an error or a report shows them.
pub fn listed(fingerprints: &[Fingerprint]) -> String {
    match fingerprints {
        [] => "unknown recipients".into(),
        _ => fingerprints
            .iter()
            .map(Fingerprint::as_str)
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// Why a key list could not be used. Never holds a key: errors name the
/// entry by position and the file by what the caller knows it as.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("entry {position} is not an age X25519 recipient (age1…)")]
    BadRecipient { position: usize },
    #[error("no recipient listed")]
    NoRecipients,
    #[error("reading an identity file: {0}")]
    Read(String),
    #[error("line {line} of an identity file is not an age X25519 identity (AGE-SECRET-KEY-1…)")]
    BadIdentity { line: usize },
    #[error("an identity file holds no identity")]
    EmptyIdentityFile,
    #[error("encrypting: {0}")]
    Encrypt(String),
}

/// The public keys new copies are sealed to: every one of them can open
/// what is sealed.
#[derive(Clone)]
pub struct Recipients {
    keys: Vec<x25519::Recipient>,
    fingerprints: Vec<Fingerprint>,
}

impl Recipients {
    /// Parses a list of `age1…` recipients separated by commas or white
    /// space.
    pub fn parse(list: &str) -> Result<Self, KeyError> {
        let keys = list
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|entry| !entry.is_empty())
            .enumerate()
            .map(|(index, entry)| {
                x25519::Recipient::from_str(entry).map_err(|_| KeyError::BadRecipient {
                    position: index + 1,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err(KeyError::NoRecipients);
        }
        let mut fingerprints: Vec<Fingerprint> = keys.iter().map(Fingerprint::of).collect();
        fingerprints.sort();
        fingerprints.dedup();
        Ok(Recipients { keys, fingerprints })
    }

    /// The recipients as [`Recipients::parse`] reads them back.
    pub fn to_list(&self) -> String {
        let keys: Vec<String> = self.keys.iter().map(ToString::to_string).collect();
        keys.join(" ")
    }

    /// Sorted, each once.
    pub fn fingerprints(&self) -> &[Fingerprint] {
        &self.fingerprints
    }

    fn encryptor(&self) -> Result<age::Encryptor, KeyError> {
        age::Encryptor::with_recipients(self.keys.iter().map(|k| k as &dyn age::Recipient))
            .map_err(|e| KeyError::Encrypt(e.to_string()))
    }
}

/// Two lists are the same when they name the same keys.
impl PartialEq for Recipients {
    fn eq(&self, other: &Self) -> bool {
        self.fingerprints == other.fingerprints
    }
}

impl Eq for Recipients {}

impl fmt::Debug for Recipients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Recipients({})", listed(&self.fingerprints))
    }
}

/// The private keys a restoring host opens sealed copies with; none when
/// no identity file is configured.
#[derive(Clone, Default)]
pub struct Identities {
    keys: Vec<x25519::Identity>,
}

impl Identities {
    /// Reads every identity in each file: one `AGE-SECRET-KEY-1…` per
    /// line, `#` comments and blank lines allowed (what `walvault keygen`
    /// and `age-keygen` write).
    pub fn load<P: AsRef<Path>>(files: &[P]) -> Result<Self, KeyError> {
        let mut keys = Vec::new();
        for file in files {
            let text =
                std::fs::read_to_string(file).map_err(|e| KeyError::Read(e.kind().to_string()))?;
            let before = keys.len();
            for (index, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let key = x25519::Identity::from_str(line)
                    .map_err(|_| KeyError::BadIdentity { line: index + 1 })?;
                keys.push(key);
            }
            if keys.len() == before {
                return Err(KeyError::EmptyIdentityFile);
            }
        }
        Ok(Identities { keys })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The fingerprints of the recipients these identities open, sorted.
    pub fn fingerprints(&self) -> Vec<Fingerprint> {
        let mut fingerprints: Vec<Fingerprint> = self
            .keys
            .iter()
            .map(|k| Fingerprint::of(&k.to_public()))
            .collect();
        fingerprints.sort();
        fingerprints.dedup();
        fingerprints
    }

    fn as_age(&self) -> impl Iterator<Item = &dyn age::Identity> {
        self.keys.iter().map(|k| k as &dyn age::Identity)
    }
}

impl fmt::Debug for Identities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identities({})", listed(&self.fingerprints()))
    }
}

/// A new identity: its file text (with the public recipient in a comment,
/// as `age-keygen` writes it), its recipient and fingerprint.
pub struct NewIdentity {
    pub file_text: String,
    pub recipient: String,
    pub fingerprint: Fingerprint,
}

pub fn generate_identity(created: &str) -> NewIdentity {
    let identity = x25519::Identity::generate();
    let public = identity.to_public();
    let recipient = public.to_string();
    NewIdentity {
        file_text: format!(
            "# created: {created}\n# public key: {recipient}\n{}\n",
            identity.to_string().expose_secret()
        ),
        recipient,
        fingerprint: Fingerprint::of(&public),
    }
}

/// What a sealed copy says it holds, inside the encryption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub raw_size: u64,
    pub raw_sha256: Sha256Hex,
}

impl Claims {
    fn to_bytes(&self) -> [u8; CLAIMS_LEN] {
        let mut bytes = [0u8; CLAIMS_LEN];
        bytes[..8].copy_from_slice(CLAIMS_MAGIC);
        bytes[8..16].copy_from_slice(&self.raw_size.to_be_bytes());
        // A Sha256Hex is 64 hex digits by construction.
        let digest = hex::decode(self.raw_sha256.as_str()).unwrap_or_default();
        bytes[16..16 + digest.len()].copy_from_slice(&digest);
        bytes
    }

    fn parse(bytes: &[u8; CLAIMS_LEN]) -> Result<Self, OpenError> {
        if &bytes[..8] != CLAIMS_MAGIC {
            return Err(OpenError::Damaged("opened, but not a walvault copy".into()));
        }
        let mut size = [0u8; 8];
        size.copy_from_slice(&bytes[8..16]);
        let raw_sha256 = Sha256Hex::parse(&hex::encode(&bytes[16..]))
            .map_err(|e| OpenError::Damaged(e.to_string()))?;
        Ok(Claims {
            raw_size: u64::from_be_bytes(size),
            raw_sha256,
        })
    }
}

/// Why a sealed copy could not be opened.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum OpenError {
    /// No configured identity opens it: not a damaged copy, a missing
    /// key. The caller names the recipients it was sealed to.
    #[error("sealed to keys no configured identity opens")]
    Locked,
    /// Tampered with, truncated, or not an age file: a corrupt copy, as
    /// much as one that does not decompress.
    #[error("sealed copy damaged: {0}")]
    Damaged(String),
}

fn open_error(error: age::DecryptError) -> OpenError {
    match error {
        age::DecryptError::NoMatchingKeys => OpenError::Locked,
        other => OpenError::Damaged(other.to_string()),
    }
}

/// A byte buffer both the encryption writes into and the caller drains.
#[derive(Clone, Default)]
struct Pending(Arc<Mutex<Vec<u8>>>);

impl Pending {
    fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// The first `n` bytes (all of them if fewer), removed; a buffer of
    /// their size, so that a part in flight holds no spare capacity.
    fn take(&self, n: usize) -> Vec<u8> {
        let mut buffer = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let at = n.min(buffer.len());
        buffer.drain(..at).collect()
    }
}

impl Write for Pending {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Seals a compressed copy whole.
pub fn seal(packed: &[u8], claims: &Claims, to: &Recipients) -> Result<Vec<u8>, KeyError> {
    let mut sealer = Sealer::new(claims, to)?;
    sealer
        .write_all(packed)
        .map_err(|e| KeyError::Encrypt(e.to_string()))?;
    sealer
        .finish()
        .map_err(|e| KeyError::Encrypt(e.to_string()))
}

/// Seals a copy as it is produced: write the compressed bytes in, take
/// the sealed bytes out as they accumulate, [`Sealer::finish`] for the
/// rest. Holds at most one 64 KiB chunk besides what was not taken.
pub struct Sealer {
    stream: age::stream::StreamWriter<Pending>,
    out: Pending,
}

impl Sealer {
    pub fn new(claims: &Claims, to: &Recipients) -> Result<Self, KeyError> {
        let out = Pending::default();
        let mut stream = to
            .encryptor()?
            .wrap_output(out.clone())
            .map_err(|e| KeyError::Encrypt(e.to_string()))?;
        stream
            .write_all(&claims.to_bytes())
            .map_err(|e| KeyError::Encrypt(e.to_string()))?;
        Ok(Sealer { stream, out })
    }

    /// How many sealed bytes are ready to take.
    pub fn ready(&self) -> usize {
        self.out.len()
    }

    /// The first `n` sealed bytes ready (fewer if fewer are).
    pub fn take(&mut self, n: usize) -> Vec<u8> {
        self.out.take(n)
    }

    /// Ends the encryption; the sealed bytes not yet taken.
    pub fn finish(self) -> io::Result<Vec<u8>> {
        let out = self.stream.finish()?;
        Ok(out.take(usize::MAX))
    }
}

impl Write for Sealer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

/// Opens a sealed copy read from `sealed`: its claims, and a reader of
/// the compressed bytes that fails (as [`io::ErrorKind::InvalidData`])
/// on any chunk that was tampered with or cut short.
pub fn open_stream<R: BufRead>(
    sealed: R,
    with: &Identities,
) -> Result<(Claims, impl Read), OpenError> {
    let decryptor = age::Decryptor::new_buffered(sealed).map_err(open_error)?;
    let mut reader = decryptor.decrypt(with.as_age()).map_err(open_error)?;
    let mut claims = [0u8; CLAIMS_LEN];
    reader
        .read_exact(&mut claims)
        .map_err(|e| OpenError::Damaged(e.to_string()))?;
    Ok((Claims::parse(&claims)?, reader))
}

/// Opens a sealed copy held whole: its claims and the compressed bytes,
/// of which at most `max_len` are read.
pub fn open(
    sealed: &[u8],
    with: &Identities,
    max_len: u64,
) -> Result<(Claims, Vec<u8>), OpenError> {
    let (claims, reader) = open_stream(sealed, with)?;
    let packed = read_at_most(reader, max_len)
        .map_err(|e| OpenError::Damaged(e.to_string()))?
        .ok_or_else(|| OpenError::Damaged(format!("holds more than {max_len} compressed bytes")))?;
    Ok((claims, packed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_pair() -> (Recipients, Identities) {
        let new = generate_identity("test");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, &new.file_text).unwrap();
        (
            Recipients::parse(&new.recipient).unwrap(),
            Identities::load(&[path]).unwrap(),
        )
    }

    fn claims(body: &[u8]) -> Claims {
        Claims {
            raw_size: body.len() as u64 * 3,
            raw_sha256: Sha256Hex::of(body),
        }
    }

    #[test]
    fn opens_what_it_sealed_with_any_of_its_recipients() {
        let (one, one_key) = key_pair();
        let (two, two_key) = key_pair();
        let both = Recipients::parse(&format!("{}, {}", one.keys[0], two.keys[0])).unwrap();
        let body = vec![7u8; 200_000];
        let sealed = seal(&body, &claims(&body), &both).unwrap();
        assert!(is_sealed(&sealed));
        assert!(!sealed.windows(64).any(|w| w == &body[..64]));
        for key in [&one_key, &two_key] {
            let (opened_claims, opened) = open(&sealed, key, 1 << 20).unwrap();
            assert_eq!(opened, body);
            assert_eq!(opened_claims, claims(&body));
        }
        assert_eq!(both.fingerprints().len(), 2);
        assert!(both.fingerprints().contains(&one_key.fingerprints()[0]));
    }

    #[test]
    fn a_stranger_is_locked_out_and_damage_is_not_locked() {
        let (to, key) = key_pair();
        let (_, stranger) = key_pair();
        let body = vec![1u8; 150_000];
        let sealed = seal(&body, &claims(&body), &to).unwrap();
        assert_eq!(
            open(&sealed, &stranger, 1 << 20).unwrap_err(),
            OpenError::Locked
        );
        let nobody = Identities::default();
        assert_eq!(
            open(&sealed, &nobody, 1 << 20).unwrap_err(),
            OpenError::Locked
        );

        let mut flipped = sealed.clone();
        let at = flipped.len() - 1000;
        flipped[at] ^= 1;
        let damaged =
            |copy: &[u8], max_len| matches!(open(copy, &key, max_len), Err(OpenError::Damaged(_)));
        assert!(damaged(&flipped, 1 << 20), "a flipped bit");
        assert!(
            damaged(&sealed[..sealed.len() - 100], 1 << 20),
            "a cut mid-chunk"
        );
        // Cut right after a whole chunk: the last chunk's flag is missing.
        let payload_start = sealed.len() - (150_000 + CLAIMS_LEN + 3 * 16);
        assert!(
            damaged(&sealed[..payload_start + 65_536 + 16], 1 << 20),
            "a cut at a chunk"
        );
        assert!(damaged(&sealed, 1000), "more than the limit");
        assert!(
            damaged(b"age-encryption.org/v1\nnonsense", 1 << 20),
            "a bad header"
        );
    }

    #[test]
    fn streamed_sealing_equals_whole_and_keeps_little_in_memory() {
        let (to, key) = key_pair();
        let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut sealer = Sealer::new(&claims(&body), &to).unwrap();
        let mut sealed = Vec::new();
        for piece in body.chunks(100_000) {
            sealer.write_all(piece).unwrap();
            assert!(sealer.ready() < 200_000, "sealed bytes pile up");
            sealed.extend(sealer.take(usize::MAX));
        }
        sealed.extend(sealer.finish().unwrap());
        let (_, opened) = open(&sealed, &key, 4 << 20).unwrap();
        assert_eq!(opened, body);
    }

    #[test]
    fn key_lists_name_the_bad_entry_without_printing_it() {
        let (good, _) = key_pair();
        let list = format!("{} age1notakey", good.keys[0]);
        let error = Recipients::parse(&list).unwrap_err();
        assert_eq!(error, KeyError::BadRecipient { position: 2 });
        assert!(!error.to_string().contains("notakey"));
        assert_eq!(
            Recipients::parse(" , ").unwrap_err(),
            KeyError::NoRecipients
        );

        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad");
        std::fs::write(&bad, "# comment\nAGE-SECRET-KEY-1SECRETBUTWRONG\n").unwrap();
        let error = Identities::load(&[&bad]).unwrap_err();
        assert_eq!(error, KeyError::BadIdentity { line: 2 });
        assert!(!error.to_string().contains("SECRETBUTWRONG"));
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "# nothing\n").unwrap();
        assert_eq!(
            Identities::load(&[&empty]).unwrap_err(),
            KeyError::EmptyIdentityFile
        );
        assert!(matches!(
            Identities::load(&[dir.path().join("absent")]),
            Err(KeyError::Read(_))
        ));
    }

    #[test]
    fn fingerprints_parse_back_and_reject_anything_else() {
        let (to, _) = key_pair();
        let fingerprint = &to.fingerprints()[0];
        assert_eq!(
            fingerprint.as_str().parse::<Fingerprint>().unwrap(),
            *fingerprint
        );
        assert!("XYZ".parse::<Fingerprint>().is_err());
        assert!("0123456789ABCDEF".parse::<Fingerprint>().is_err());
    }
}
