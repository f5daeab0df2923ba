//! Reads the tar stream `pg_basebackup -D - -Ft` writes as it goes by, to
//! keep the few small members walvault needs (`backup_label` at the start,
//! `global/pg_control` and the injected `backup_manifest` at the end) and
//! to see tablespace links, without holding the stream.
//!
//! PostgreSQL writes plain ustar: a 512-byte header per member, the data
//! padded to 512 bytes, two zero blocks at the end (its `tarCreateHeader`
//! refuses names too long for ustar, so no pax or GNU long-name members).

use std::collections::BTreeMap;

const BLOCK: usize = 512;

/// The members kept, and how much of each at most.
const KEPT: [(&str, usize); 4] = [
    ("backup_label", 64 * 1024),
    ("global/pg_control", 8192),
    ("PG_VERSION", 64),
    // One entry per file: tens of megabytes for the largest clusters.
    ("backup_manifest", 256 * 1024 * 1024),
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TarError {
    #[error("the base backup stream is not a tar archive: {0}")]
    Malformed(String),
    #[error("member {name} is larger than walvault reads ({limit} bytes)")]
    TooLarge { name: String, limit: usize },
}

enum State {
    /// Filling a header block.
    Header,
    /// Inside a member's data.
    Data {
        remaining: u64,
        padding: u64,
        kept: Option<String>,
    },
    /// After the two zero blocks.
    End,
}

pub struct TarScanner {
    state: State,
    block: Vec<u8>,
    zero_blocks: u8,
    /// The members kept, complete.
    pub members: BTreeMap<String, Vec<u8>>,
    /// Names under `pg_tblspc/`: tablespace links.
    pub tablespace_links: Vec<String>,
    pub member_count: u64,
}

impl Default for TarScanner {
    fn default() -> Self {
        TarScanner {
            state: State::Header,
            block: Vec::with_capacity(BLOCK),
            zero_blocks: 0,
            members: BTreeMap::new(),
            tablespace_links: Vec::new(),
            member_count: 0,
        }
    }
}

impl TarScanner {
    /// Whether the end-of-archive blocks were seen.
    pub fn finished(&self) -> bool {
        matches!(self.state, State::End)
    }

    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), TarError> {
        while !bytes.is_empty() {
            match &mut self.state {
                State::End => return Ok(()),
                State::Header => {
                    let take = (BLOCK - self.block.len()).min(bytes.len());
                    self.block.extend_from_slice(&bytes[..take]);
                    bytes = &bytes[take..];
                    if self.block.len() == BLOCK {
                        let header = std::mem::take(&mut self.block);
                        self.header(&header)?;
                    }
                }
                State::Data {
                    remaining,
                    padding,
                    kept,
                } => {
                    if *remaining > 0 {
                        let take = (*remaining).min(bytes.len() as u64) as usize;
                        if let Some(name) = kept {
                            self.members
                                .entry(name.clone())
                                .or_default()
                                .extend_from_slice(&bytes[..take]);
                        }
                        *remaining -= take as u64;
                        bytes = &bytes[take..];
                    } else {
                        let take = (*padding).min(bytes.len() as u64) as usize;
                        *padding -= take as u64;
                        bytes = &bytes[take..];
                    }
                    if let State::Data {
                        remaining: 0,
                        padding: 0,
                        ..
                    } = self.state
                    {
                        self.state = State::Header;
                    }
                }
            }
        }
        Ok(())
    }

    fn header(&mut self, header: &[u8]) -> Result<(), TarError> {
        if header.iter().all(|b| *b == 0) {
            self.zero_blocks += 1;
            if self.zero_blocks == 2 {
                self.state = State::End;
            }
            return Ok(());
        }
        self.zero_blocks = 0;
        check_checksum(header)?;
        let name = member_name(header)?;
        let size = member_size(header)?;
        let typeflag = header[156];
        self.member_count += 1;
        if name.starts_with("pg_tblspc/") && name.len() > "pg_tblspc/".len() {
            self.tablespace_links.push(name.clone());
        }
        // Only regular files carry data.
        let size = if matches!(typeflag, b'0' | 0) {
            size
        } else {
            0
        };
        let kept = match KEPT.iter().find(|(kept, _)| *kept == name) {
            Some((_, limit)) if size > *limit as u64 => {
                return Err(TarError::TooLarge {
                    name,
                    limit: *limit,
                })
            }
            Some(_) => {
                self.members
                    .insert(name.clone(), Vec::with_capacity(size as usize));
                Some(name)
            }
            None => None,
        };
        let padding = (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64;
        self.state = if size == 0 {
            State::Header
        } else {
            State::Data {
                remaining: size,
                padding,
                kept,
            }
        };
        Ok(())
    }
}

fn check_checksum(header: &[u8]) -> Result<(), TarError> {
    let recorded = octal(&header[148..156])
        .ok_or_else(|| TarError::Malformed("unreadable header checksum".into()))?;
    let computed: u64 = header
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u64::from(*b)
            }
        })
        .sum();
    if recorded == computed {
        Ok(())
    } else {
        Err(TarError::Malformed(format!(
            "header checksum {recorded}, computed {computed}"
        )))
    }
}

fn member_name(header: &[u8]) -> Result<String, TarError> {
    let field = |range: std::ops::Range<usize>| {
        let raw = &header[range];
        let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
        std::str::from_utf8(&raw[..end])
            .map(str::to_owned)
            .map_err(|_| TarError::Malformed("a member name is not UTF-8".into()))
    };
    let name = field(0..100)?;
    let ustar = &header[257..262] == b"ustar";
    let prefix = if ustar {
        field(345..500)?
    } else {
        String::new()
    };
    let full = if prefix.is_empty() {
        name
    } else {
        format!("{prefix}/{name}")
    };
    Ok(full.trim_end_matches('/').to_owned())
}

fn member_size(header: &[u8]) -> Result<u64, TarError> {
    let field = &header[124..136];
    if field[0] & 0x80 != 0 {
        // Base-256, for members of 8 GiB and more.
        return Ok(field[4..]
            .iter()
            .fold(0u64, |n, b| (n << 8) | u64::from(*b)));
    }
    octal(field).ok_or_else(|| TarError::Malformed("unreadable member size".into()))
}

fn octal(field: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(field).ok()?;
    let digits = text.trim_matches(|c: char| c == '\0' || c == ' ');
    if digits.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(digits, 8).ok()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A ustar member as PostgreSQL writes it.
    pub(crate) fn member(name: &str, typeflag: u8, data: &[u8]) -> Vec<u8> {
        let mut header = vec![0u8; BLOCK];
        header[..name.len()].copy_from_slice(name.as_bytes());
        header[100..107].copy_from_slice(b"0000600");
        header[124..135].copy_from_slice(format!("{:011o}", data.len()).as_bytes());
        header[156] = typeflag;
        header[257..263].copy_from_slice(b"ustar\0");
        header[263..265].copy_from_slice(b"00");
        header[148..156].copy_from_slice(b"        ");
        let sum: u64 = header.iter().map(|b| u64::from(*b)).sum();
        header[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        let mut out = header;
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(BLOCK) * BLOCK, 0);
        out
    }

    pub(crate) fn archive(members: &[Vec<u8>]) -> Vec<u8> {
        let mut out: Vec<u8> = members.concat();
        out.extend_from_slice(&[0u8; 2 * BLOCK]);
        out
    }

    #[test]
    fn keeps_the_wanted_members_whatever_the_read_sizes() {
        let stream = archive(&[
            member("backup_label", b'0', b"START WAL LOCATION: 0/2000028\n"),
            member("base", b'5', b""),
            member("base/1/1259", b'0', &vec![7u8; 9000]),
            member("pg_tblspc/16385", b'2', b""),
            member("global/pg_control", b'0', &[1u8; 8192]),
            member("backup_manifest", b'0', b"{}"),
        ]);
        for step in [1, 7, 511, 512, 513, 4096, stream.len()] {
            let mut scanner = TarScanner::default();
            for piece in stream.chunks(step) {
                scanner.feed(piece).unwrap();
            }
            assert!(scanner.finished(), "step {step}");
            assert_eq!(scanner.member_count, 6);
            assert_eq!(
                scanner.members["backup_label"],
                b"START WAL LOCATION: 0/2000028\n"
            );
            assert_eq!(scanner.members["global/pg_control"].len(), 8192);
            assert_eq!(scanner.members["backup_manifest"], b"{}");
            assert!(!scanner.members.contains_key("base/1/1259"));
            assert_eq!(scanner.tablespace_links, ["pg_tblspc/16385"]);
        }
    }

    #[test]
    fn a_damaged_header_or_a_cut_stream_is_noticed() {
        let mut stream = archive(&[member("backup_label", b'0', b"x")]);
        stream[10] ^= 1;
        assert!(matches!(
            TarScanner::default().feed(&stream),
            Err(TarError::Malformed(_))
        ));
        let whole = archive(&[member("backup_label", b'0', b"x")]);
        let mut scanner = TarScanner::default();
        scanner.feed(&whole[..whole.len() - 600]).unwrap();
        assert!(!scanner.finished());
    }
}
