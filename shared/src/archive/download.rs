//! A copy too large to hold (over [`IN_MEMORY_LIMIT`]): decompressed and
//! hashed as it streams in, written to a temporary file in the directory
//! it is meant for, and handed over only once its size and sha256 are the
//! ones expected. Memory stays at a few pieces and zstd's window whatever
//! the file's size; a copy that fails leaves no file behind.
//!
//! [`IN_MEMORY_LIMIT`]: crate::codec::IN_MEMORY_LIMIT

use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tempfile::{NamedTempFile, TempPath};

use crate::codec::{CodecError, Sha256Hex};
use crate::retry::TimedOut;
use crate::store::{ObjectReader, StoreError};

/// Why a streamed copy was not kept.
#[derive(Debug, thiserror::Error)]
pub(super) enum DownloadError {
    /// The store failed before the body was complete.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The bytes are not the file's: a corrupt copy.
    #[error(transparent)]
    Corrupt(#[from] CodecError),
    /// The local disk failed: no other copy will fare better.
    #[error("writing a temporary file")]
    Local(#[source] std::io::Error),
}

/// What the copy must decompress (or hash) to.
pub(super) struct Expect<'a> {
    pub size: u64,
    pub sha256: &'a Sha256Hex,
    pub compressed: bool,
}

/// Streams `reader`'s body into a new temporary file in `dir`, each piece
/// within `piece_timeout`; the verified file, removed when dropped.
pub(super) async fn to_temp_file(
    reader: ObjectReader,
    expect: Expect<'_>,
    dir: &Path,
    piece_timeout: Duration,
) -> Result<TempPath, DownloadError> {
    let local = DownloadError::Local;
    let file = tempfile::Builder::new()
        .prefix(".walvault-fetch-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(local)?;
    let key = reader.info.key.clone();
    let mut body = reader.body;
    let mut sink = Sink::new(file, expect.size, expect.compressed).map_err(local)?;
    loop {
        let piece = match tokio::time::timeout(piece_timeout, body.next()).await {
            Ok(Some(piece)) => piece?,
            Ok(None) => break,
            Err(_) => {
                return Err(StoreError::TimedOut(TimedOut {
                    what: format!("reading {key}"),
                    after: piece_timeout,
                })
                .into())
            }
        };
        sink.write(&piece)?;
    }
    let (file, written, sha256) = sink.finish()?;
    if written != expect.size {
        return Err(CodecError::SizeMismatch {
            expected: expect.size,
            actual: written,
        }
        .into());
    }
    if &sha256 != expect.sha256 {
        return Err(CodecError::DigestMismatch {
            expected: expect.sha256.clone(),
            actual: sha256,
        }
        .into());
    }
    file.as_file().sync_all().map_err(local)?;
    Ok(file.into_temp_path())
}

/// Where the pieces go: through zstd (for a replica) into the hashing,
/// size-limited file writer.
enum Sink {
    Compressed(zstd::stream::write::Decoder<'static, Verifying>),
    Raw(Verifying),
}

impl Sink {
    fn new(file: NamedTempFile, limit: u64, compressed: bool) -> std::io::Result<Self> {
        let verifying = Verifying {
            out: BufWriter::with_capacity(1 << 20, file),
            hasher: Sha256::new(),
            written: 0,
            limit,
            overflowed: false,
            disk_error: false,
        };
        Ok(if compressed {
            Sink::Compressed(zstd::stream::write::Decoder::new(verifying)?)
        } else {
            Sink::Raw(verifying)
        })
    }

    fn verifying(&self) -> &Verifying {
        match self {
            Sink::Compressed(decoder) => decoder.get_ref(),
            Sink::Raw(verifying) => verifying,
        }
    }

    fn write(&mut self, piece: &[u8]) -> Result<(), DownloadError> {
        let written = match self {
            Sink::Compressed(decoder) => decoder.write_all(piece),
            Sink::Raw(verifying) => verifying.write_all(piece),
        };
        written.map_err(|e| self.classify(e))
    }

    /// The file, the raw bytes written, and their digest.
    fn finish(self) -> Result<(NamedTempFile, u64, Sha256Hex), DownloadError> {
        let verifying = match self {
            Sink::Compressed(mut decoder) => {
                if let Err(e) = decoder.flush() {
                    return Err(Sink::Compressed(decoder).classify(e));
                }
                decoder.into_inner()
            }
            Sink::Raw(verifying) => verifying,
        };
        let Verifying {
            out,
            hasher,
            written,
            ..
        } = verifying;
        let file = out
            .into_inner()
            .map_err(|e| DownloadError::Local(e.into_error()))?;
        Ok((file, written, Sha256Hex::finish(hasher)))
    }

    /// A write error: the copy's fault (too long, not zstd) or the disk's.
    fn classify(&self, error: std::io::Error) -> DownloadError {
        let verifying = self.verifying();
        if verifying.overflowed {
            CodecError::TooLarge {
                max_len: verifying.limit,
            }
            .into()
        } else if verifying.disk_error {
            DownloadError::Local(error)
        } else {
            CodecError::Decompress(error.to_string()).into()
        }
    }
}

/// Hashes and writes raw bytes, refusing more than `limit` of them.
struct Verifying {
    out: BufWriter<NamedTempFile>,
    hasher: Sha256,
    written: u64,
    limit: u64,
    overflowed: bool,
    disk_error: bool,
}

impl Write for Verifying {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.written + buf.len() as u64 > self.limit {
            self.overflowed = true;
            return Err(std::io::Error::other("more bytes than the file has"));
        }
        let n = self
            .out
            .write(buf)
            .inspect_err(|_| self.disk_error = true)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush().inspect_err(|_| self.disk_error = true)
    }
}
