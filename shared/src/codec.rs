//! Compression and hashing of WAL files.
//!
//! Archives hold standard single-frame zstd files (`zstd -d` reads them) with
//! the content size in the frame header, so a reader knows how much to expect
//! before it starts. The sha256 is always of the raw, uncompressed bytes: it is
//! the identity of a WAL file whatever the stores did to it.

use std::borrow::Cow;
use std::fmt;
use std::io::Read;

use sha2::{Digest, Sha256};

use crate::seal::{self, Claims, Identities, OpenError};

/// A zstd compression level walvault accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompressionLevel(i32);

impl CompressionLevel {
    /// Negative levels are zstd's "fast" modes; above 19 needs the
    /// `--ultra` window sizes and more memory than a small Lambda has.
    pub const MIN: i32 = -7;
    pub const MAX: i32 = 19;

    pub fn new(level: i32) -> Result<Self, CodecError> {
        if (Self::MIN..=Self::MAX).contains(&level) {
            Ok(CompressionLevel(level))
        } else {
            Err(CodecError::BadLevel(level))
        }
    }

    pub fn get(&self) -> i32 {
        self.0
    }
}

impl Default for CompressionLevel {
    fn default() -> Self {
        CompressionLevel(3)
    }
}

/// Hex-encoded sha256 of raw WAL bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256Hex(String);

impl Sha256Hex {
    pub fn of(bytes: &[u8]) -> Self {
        Self::finish(Sha256::new_with_prefix(bytes))
    }

    /// A digest (or any 32 bytes) in hex.
    pub fn of_digest(bytes: &[u8; 32]) -> Self {
        Sha256Hex(hex::encode(bytes))
    }

    /// The digest of everything fed to `hasher`: for bytes hashed as
    /// they stream by.
    pub fn finish(hasher: Sha256) -> Self {
        Sha256Hex(hex::encode(hasher.finalize()))
    }

    /// Accepts a digest as stored in object metadata or the catalog.
    pub fn parse(s: &str) -> Result<Self, CodecError> {
        let valid = s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
        if valid {
            Ok(Sha256Hex(s.to_ascii_lowercase()))
        } else {
            Err(CodecError::BadDigest(s.chars().take(80).collect()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl serde::Serialize for Sha256Hex {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Sha256Hex {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Sha256Hex::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Sha256Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The largest file held whole in memory (the default segment size): the
/// compress function then holds about three times this much, a fetch two.
/// Larger files are streamed, in compress and in fetch alike.
pub const IN_MEMORY_LIMIT: u64 = 16 << 20;

pub fn compress(raw: &[u8], level: CompressionLevel) -> Result<Vec<u8>, CodecError> {
    // bulk::compress writes the content size into the frame header.
    zstd::bulk::compress(raw, level.get()).map_err(|e| CodecError::Compress(e.to_string()))
}

/// Decompresses one archived file, refusing to produce more than `max_len`
/// bytes so that a corrupt or hostile object cannot exhaust memory.
pub fn decompress(compressed: &[u8], max_len: u64) -> Result<Vec<u8>, CodecError> {
    let decoder = zstd::stream::read::Decoder::new(compressed)
        .map_err(|e| CodecError::Decompress(e.to_string()))?;
    read_at_most(decoder, max_len)
        .map_err(|e| CodecError::Decompress(e.to_string()))?
        .ok_or(CodecError::TooLarge { max_len })
}

/// Everything `reader` gives, unless that is more than `max_len` bytes
/// (`None`, having read one byte past the limit and no more): how a
/// corrupt or hostile copy is kept from exhausting memory.
pub(crate) fn read_at_most(reader: impl Read, max_len: u64) -> std::io::Result<Option<Vec<u8>>> {
    let mut bytes = Vec::new();
    reader
        .take(max_len.saturating_add(1))
        .read_to_end(&mut bytes)?;
    Ok((bytes.len() as u64 <= max_len).then_some(bytes))
}

/// Decompresses and checks the result against the expected size and digest:
/// the only way archived bytes are handed back to PostgreSQL.
pub fn decompress_verified(
    compressed: &[u8],
    expected_len: u64,
    expected: &Sha256Hex,
) -> Result<Vec<u8>, CodecError> {
    let raw = decompress(compressed, expected_len)?;
    verify(&raw, expected_len, expected)?;
    Ok(raw)
}

/// Checks that `compressed` decompresses to `expected_len` bytes with the
/// digest `expected`, a piece at a time: the raw bytes are never held
/// (a 64 MiB copy of a 1 GiB segment stays 64 MiB in memory).
pub fn verify_compressed(
    compressed: &[u8],
    expected_len: u64,
    expected: &Sha256Hex,
) -> Result<(), CodecError> {
    let bad = |e: std::io::Error| CodecError::Decompress(e.to_string());
    let mut decoder = zstd::stream::read::Decoder::new(compressed).map_err(bad)?;
    let mut hasher = Sha256::new();
    let mut piece = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = decoder.read(&mut piece).map_err(bad)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > expected_len {
            return Err(CodecError::TooLarge {
                max_len: expected_len,
            });
        }
        hasher.update(&piece[..n]);
    }
    if total != expected_len {
        return Err(CodecError::SizeMismatch {
            expected: expected_len,
            actual: total,
        });
    }
    let actual = Sha256Hex::finish(hasher);
    if &actual != expected {
        return Err(CodecError::DigestMismatch {
            expected: expected.clone(),
            actual,
        });
    }
    Ok(())
}

/// A stored copy's compressed bytes: opened first if it is sealed, with
/// what it claims inside; a plain copy as it is.
pub fn unseal<'a>(
    stored: &'a [u8],
    with: &Identities,
) -> Result<(Cow<'a, [u8]>, Option<Claims>), CodecError> {
    if !seal::is_sealed(stored) {
        return Ok((Cow::Borrowed(stored), None));
    }
    let (claims, packed) = seal::open(stored, with, stored.len() as u64)?;
    Ok((Cow::Owned(packed), Some(claims)))
}

/// What a sealed copy claims must be what the catalog expects.
fn check_claims(
    claims: Option<&Claims>,
    expected_len: u64,
    expected: &Sha256Hex,
) -> Result<(), CodecError> {
    match claims {
        Some(claims) if claims.raw_size != expected_len => Err(CodecError::SizeMismatch {
            expected: expected_len,
            actual: claims.raw_size,
        }),
        Some(claims) if &claims.raw_sha256 != expected => Err(CodecError::DigestMismatch {
            expected: expected.clone(),
            actual: claims.raw_sha256.clone(),
        }),
        _ => Ok(()),
    }
}

/// [`decompress_verified`] for a stored copy, sealed or not.
pub fn unpack_verified(
    stored: &[u8],
    expected_len: u64,
    expected: &Sha256Hex,
    with: &Identities,
) -> Result<Vec<u8>, CodecError> {
    let (packed, claims) = unseal(stored, with)?;
    check_claims(claims.as_ref(), expected_len, expected)?;
    decompress_verified(&packed, expected_len, expected)
}

/// [`verify_compressed`] for a stored copy, sealed or not.
pub fn verify_stored(
    stored: &[u8],
    expected_len: u64,
    expected: &Sha256Hex,
    with: &Identities,
) -> Result<(), CodecError> {
    let (packed, claims) = unseal(stored, with)?;
    check_claims(claims.as_ref(), expected_len, expected)?;
    verify_compressed(&packed, expected_len, expected)
}

/// Checks raw WAL bytes against the size and digest they must have.
pub fn verify(raw: &[u8], expected_len: u64, expected: &Sha256Hex) -> Result<(), CodecError> {
    if raw.len() as u64 != expected_len {
        return Err(CodecError::SizeMismatch {
            expected: expected_len,
            actual: raw.len() as u64,
        });
    }
    let actual = Sha256Hex::of(raw);
    if &actual != expected {
        return Err(CodecError::DigestMismatch {
            expected: expected.clone(),
            actual,
        });
    }
    Ok(())
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("zstd level {0} is outside {min}..={max}", min = CompressionLevel::MIN, max = CompressionLevel::MAX)]
    BadLevel(i32),
    #[error("{0:?} is not a hex sha256 digest")]
    BadDigest(String),
    #[error("zstd compression failed: {0}")]
    Compress(String),
    #[error("not a valid zstd frame: {0}")]
    Decompress(String),
    #[error("decompressed data exceeds {max_len} bytes")]
    TooLarge { max_len: u64 },
    #[error("{actual} bytes, expected {expected}")]
    SizeMismatch { expected: u64, actual: u64 },
    #[error("sha256 of the data is {actual}, expected {expected}")]
    DigestMismatch {
        expected: Sha256Hex,
        actual: Sha256Hex,
    },
    /// A sealed copy that could not be opened: locked (no identity for
    /// it) or damaged.
    #[error(transparent)]
    Sealed(#[from] OpenError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::process::{Command, Stdio};

    fn sample() -> Vec<u8> {
        // WAL-like: long runs of zeroes between repeated record bytes.
        let mut v = Vec::new();
        for i in 0u32..20_000 {
            v.extend_from_slice(&i.to_le_bytes());
            v.extend_from_slice(&[0u8; 60]);
        }
        v
    }

    #[test]
    fn round_trips_at_every_level() {
        let raw = sample();
        for level in [CompressionLevel::MIN, 1, 3, 9, CompressionLevel::MAX] {
            let level = CompressionLevel::new(level).unwrap();
            let packed = compress(&raw, level).unwrap();
            assert!(
                packed.len() < raw.len() / 4,
                "level {level:?} did not compress"
            );
            assert_eq!(decompress(&packed, raw.len() as u64).unwrap(), raw);
        }
    }

    #[test]
    fn the_zstd_command_line_tool_reads_our_frames() {
        let raw = sample();
        let packed = compress(&raw, CompressionLevel::default()).unwrap();
        let mut child = Command::new("zstd")
            .args(["-d", "-c", "-q"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the zstd command-line tool must be installed (README: test prerequisites)");
        let mut stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || stdin.write_all(&packed));
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap().unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, raw);
    }

    #[test]
    fn levels_outside_the_range_are_refused() {
        assert_eq!(CompressionLevel::new(20), Err(CodecError::BadLevel(20)));
        assert_eq!(CompressionLevel::new(-8), Err(CodecError::BadLevel(-8)));
    }

    #[test]
    fn garbage_is_not_decompressed() {
        assert!(matches!(
            decompress(b"definitely not zstd", 100),
            Err(CodecError::Decompress(_))
        ));
        let mut packed = compress(&sample(), CompressionLevel::default()).unwrap();
        packed.truncate(packed.len() / 2);
        assert!(matches!(
            decompress(&packed, 10 << 20),
            Err(CodecError::Decompress(_))
        ));
    }

    #[test]
    fn output_is_capped() {
        let packed = compress(&vec![0u8; 1 << 20], CompressionLevel::default()).unwrap();
        assert_eq!(
            decompress(&packed, 1000),
            Err(CodecError::TooLarge { max_len: 1000 })
        );
    }

    #[test]
    fn verified_decompression_checks_size_and_digest() {
        let raw = sample();
        let digest = Sha256Hex::of(&raw);
        let packed = compress(&raw, CompressionLevel::default()).unwrap();
        assert_eq!(
            decompress_verified(&packed, raw.len() as u64, &digest).unwrap(),
            raw
        );
        verify_compressed(&packed, raw.len() as u64, &digest).unwrap();
        assert!(verify_compressed(&packed, raw.len() as u64 - 1, &digest).is_err());
        assert!(verify_compressed(&packed, raw.len() as u64 + 1, &digest).is_err());
        assert!(verify_compressed(&packed, raw.len() as u64, &Sha256Hex::of(b"x")).is_err());
        assert!(verify_compressed(b"not zstd", raw.len() as u64, &digest).is_err());
        assert_eq!(
            decompress_verified(&packed, raw.len() as u64, &digest).unwrap(),
            raw
        );
        assert!(matches!(
            decompress_verified(&packed, raw.len() as u64 + 1, &digest),
            Err(CodecError::SizeMismatch { .. })
        ));
        let other = Sha256Hex::of(b"other");
        assert!(matches!(
            decompress_verified(&packed, raw.len() as u64, &other),
            Err(CodecError::DigestMismatch { .. })
        ));
    }

    #[test]
    fn digests_are_sha256_hex() {
        assert_eq!(
            Sha256Hex::of(b"abc").as_str(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let upper = "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD";
        assert_eq!(Sha256Hex::parse(upper).unwrap(), Sha256Hex::of(b"abc"));
        assert!(Sha256Hex::parse("abc").is_err());
        assert!(Sha256Hex::parse(&"g".repeat(64)).is_err());
    }
}
