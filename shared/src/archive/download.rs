//! A copy too large to hold (over [`IN_MEMORY_LIMIT`]): opened (if sealed),
//! decompressed and hashed as it streams in, written to a temporary file in the directory
//! it is meant for, and handed over only once its size and sha256 are the
//! ones expected. Memory stays at a few pieces and zstd's window whatever
//! the file's size; a copy that fails leaves no file behind.
//!
//! [`IN_MEMORY_LIMIT`]: crate::codec::IN_MEMORY_LIMIT

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tempfile::TempPath;

use bytes::Bytes;

use crate::codec::{CodecError, Sha256Hex};
use crate::error::Retryable;
use crate::retry::TimedOut;
use crate::seal::{self, Claims, Identities, OpenError};
use crate::store::{BodyStream, ObjectReader, StoreError};

/// Why a streamed copy was not kept.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DownloadError {
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

impl Retryable for DownloadError {
    fn is_permanent(&self) -> bool {
        match self {
            DownloadError::Store(e) => e.is_permanent(),
            DownloadError::Corrupt(_) | DownloadError::Local(_) => true,
        }
    }
}

impl From<TimedOut> for DownloadError {
    fn from(timed_out: TimedOut) -> Self {
        DownloadError::Store(StoreError::TimedOut(timed_out))
    }
}

/// What the copy must decompress (or hash) to.
pub(crate) struct Expect<'a> {
    pub size: u64,
    pub sha256: &'a Sha256Hex,
    pub compressed: bool,
    /// What a sealed replica is opened with.
    pub identities: &'a Identities,
}

/// Streams `reader`'s body into a new temporary file in `dir`, each piece
/// within `piece_timeout`; the verified file, removed when dropped.
pub(crate) async fn to_temp_file(
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
    let out = BufWriter::with_capacity(1 << 20, file);
    let out = stream_verified(reader, expect, out, piece_timeout).await?;
    let file = out
        .into_inner()
        .map_err(|e| DownloadError::Local(e.into_error()))?;
    file.as_file().sync_all().map_err(local)?;
    Ok(file.into_temp_path())
}

/// Reads `reader`'s body to its end and checks it, keeping nothing: what
/// `verify --deep` does with each replica, in constant memory.
pub(crate) async fn check_stream(
    reader: ObjectReader,
    expect: Expect<'_>,
    piece_timeout: Duration,
) -> Result<(), DownloadError> {
    stream_verified(reader, expect, std::io::sink(), piece_timeout)
        .await
        .map(drop)
}

/// Streams the body (opened first if it is a sealed replica) through zstd
/// (for a replica) and the hash into `out`; `out` back once the size and
/// sha256 are the expected ones.
async fn stream_verified<W: Write + Send + 'static>(
    reader: ObjectReader,
    expect: Expect<'_>,
    out: W,
    piece_timeout: Duration,
) -> Result<W, DownloadError> {
    let mut body = Pieces {
        key: reader.info.key.clone(),
        body: reader.body,
        timeout: piece_timeout,
    };
    let mut start = Vec::new();
    while start.len() < seal::SNIFF_LEN {
        match body.next().await? {
            Some(piece) => start.extend_from_slice(&piece),
            None => break,
        }
    }
    let sink = Sink::new(out, expect.size, expect.compressed).map_err(DownloadError::Local)?;
    let (out, written, sha256) = if expect.compressed && seal::is_sealed(&start) {
        let (opened, claims) =
            open_streamed(body, Bytes::from(start), sink, expect.identities).await?;
        check(claims.raw_size, &claims.raw_sha256, &expect)?;
        opened
    } else {
        let mut sink = sink;
        sink.write(&start)?;
        while let Some(piece) = body.next().await? {
            sink.write(&piece)?;
        }
        sink.finish()?
    };
    check(written, &sha256, &expect)?;
    Ok(out)
}

/// Checks a size and digest (read, or claimed by a sealed copy) against
/// the expected ones.
fn check(size: u64, sha256: &Sha256Hex, expect: &Expect<'_>) -> Result<(), DownloadError> {
    if size != expect.size {
        return Err(CodecError::SizeMismatch {
            expected: expect.size,
            actual: size,
        }
        .into());
    }
    if sha256 != expect.sha256 {
        return Err(CodecError::DigestMismatch {
            expected: expect.sha256.clone(),
            actual: sha256.clone(),
        }
        .into());
    }
    Ok(())
}

/// A body's pieces, each within the time one may take.
struct Pieces {
    key: String,
    body: BodyStream,
    timeout: Duration,
}

impl Pieces {
    async fn next(&mut self) -> Result<Option<Bytes>, DownloadError> {
        match tokio::time::timeout(self.timeout, self.body.next()).await {
            Ok(Some(piece)) => Ok(Some(piece?)),
            Ok(None) => Ok(None),
            Err(_) => Err(StoreError::TimedOut(TimedOut {
                what: format!("reading {}", self.key),
                after: self.timeout,
            })
            .into()),
        }
    }
}

/// What a sealed copy's opening gives back: the output, the raw bytes
/// written and their digest, and what the copy claimed.
type Opened<W> = ((W, u64, Sha256Hex), Claims);

/// Opens a sealed copy as it streams in: age reads (pulls) its input, so
/// it runs on a blocking thread that the pieces reach through a channel
/// of a few pieces, and writes what it opens into `sink`. A store that
/// fails mid-body fails the copy; the thread then sees the body end and
/// stops.
async fn open_streamed<W: Write + Send + 'static>(
    mut body: Pieces,
    start: Bytes,
    sink: Sink<W>,
    identities: &Identities,
) -> Result<Opened<W>, DownloadError> {
    let (pieces, received) = tokio::sync::mpsc::channel::<Bytes>(4);
    let identities = identities.clone();
    let opening = tokio::task::spawn_blocking(move || open_into(received, &identities, sink));
    let mut next = Some(start);
    while let Some(piece) = next {
        // The opening stopped (a damaged copy): its error says why.
        if pieces.send(piece).await.is_err() {
            break;
        }
        next = body.next().await?;
    }
    drop(pieces);
    // A panic while opening is this copy's doing: the next source is tried.
    opening.await.map_err(|e| {
        DownloadError::Corrupt(CodecError::Sealed(OpenError::Damaged(format!(
            "opening stopped: {e}"
        ))))
    })?
}

/// The blocking half of [`open_streamed`].
fn open_into<W: Write>(
    received: tokio::sync::mpsc::Receiver<Bytes>,
    identities: &Identities,
    mut sink: Sink<W>,
) -> Result<Opened<W>, DownloadError> {
    let input = BufReader::new(Received {
        received,
        current: Bytes::new(),
    });
    let damaged = |e: std::io::Error| CodecError::Sealed(OpenError::Damaged(e.to_string()));
    let (claims, mut packed) = seal::open_stream(input, identities).map_err(CodecError::Sealed)?;
    let mut piece = vec![0u8; 1 << 16];
    loop {
        let n = packed.read(&mut piece).map_err(damaged)?;
        if n == 0 {
            break;
        }
        sink.write(&piece[..n])?;
    }
    Ok((sink.finish()?, claims))
}

/// The pieces sent to a blocking thread, read as one byte stream.
struct Received {
    received: tokio::sync::mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl Read for Received {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.received.blocking_recv() {
                Some(piece) => self.current = piece,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// Where the pieces go: through zstd (for a replica) into the hashing,
/// size-limited file writer.
enum Sink<W: Write> {
    Compressed(zstd::stream::write::Decoder<'static, Verifying<W>>),
    Raw(Verifying<W>),
}

impl<W: Write> Sink<W> {
    fn new(out: W, limit: u64, compressed: bool) -> std::io::Result<Self> {
        let verifying = Verifying {
            out,
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

    fn verifying(&self) -> &Verifying<W> {
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

    /// The output, the raw bytes written, and their digest.
    fn finish(self) -> Result<(W, u64, Sha256Hex), DownloadError> {
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
        Ok((out, written, Sha256Hex::finish(hasher)))
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
struct Verifying<W> {
    out: W,
    hasher: Sha256,
    written: u64,
    limit: u64,
    overflowed: bool,
    disk_error: bool,
}

impl<W: Write> Write for Verifying<W> {
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
