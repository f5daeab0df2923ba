//! The S3-compatible providers walvault replicates to. Each kind keeps its
//! quirks in a module of its own (`r2`, `b2`); everything else iterates
//! over [`Provider::ALL`] and never names one. Another bucket, account or
//! jurisdiction of an existing kind is configuration; a new kind is a
//! variant here and one module.

mod b2;
mod r2;

use std::fmt;

/// Which provider a replica lives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Provider {
    R2,
    B2,
}

impl Provider {
    /// Every provider; an archived file is `replicated` once it is on all.
    pub const ALL: [Provider; 2] = [Provider::R2, Provider::B2];

    /// Lower case: catalog attributes, logs, `WALVAULT_FETCH_ORDER`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Provider::R2 => "r2",
            Provider::B2 => "b2",
        }
    }

    /// The upper-case infix of the provider's settings (`WALVAULT_R2_…`).
    pub fn setting_infix(&self) -> &'static str {
        match self {
            Provider::R2 => "R2",
            Provider::B2 => "B2",
        }
    }

    pub fn parse(name: &str) -> Option<Provider> {
        Provider::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(name))
    }

    /// The SigV4 region to sign with, from the configured one (if any)
    /// and the endpoint; the error says what is wrong, without the value.
    pub fn signing_region(
        &self,
        configured: Option<&str>,
        endpoint: &str,
    ) -> Result<String, RegionError> {
        match self {
            Provider::R2 => r2::signing_region(configured),
            Provider::B2 => b2::signing_region(configured, endpoint),
        }
    }

    /// How the provider's S3 API treats the requests walvault sends.
    pub fn quirks(&self) -> &'static Quirks {
        match self {
            Provider::R2 => &r2::QUIRKS,
            Provider::B2 => &b2::QUIRKS,
        }
    }
}

impl serde::Serialize for Provider {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a provider does differently from AWS S3, as data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quirks {
    /// It refuses the `x-amz-checksum-*` headers the SDK sends on
    /// `DeleteObjects`, so deletes go one key at a time from the start
    /// (a store that refuses them unannounced is switched on its first
    /// refusal).
    pub refuses_checksum_headers: bool,
    /// It keeps versions: a delete by name only hides the object (walvault
    /// then deletes its versions, which frees the bytes), and an object
    /// that reads as missing may be hidden, so reads look among its
    /// versions before answering "not found".
    pub keeps_versions: bool,
    /// A PUT with `If-Match` writes only over the object with that ETag
    /// (how `verify --repair` replaces a damaged copy); otherwise walvault
    /// compares the ETag with a HEAD first.
    pub replaces_if_match: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegionError {
    #[error("is required for this provider")]
    Missing,
    #[error("{0}")]
    Invalid(&'static str),
}
