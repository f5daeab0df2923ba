//! Backblaze B2's S3-compatible API. Sources: backblaze.com/docs/cloud-storage-s3-compatible-api
//! (the region is the endpoint's: `s3.<region>.backblazeb2.com`), the
//! unsupported `x-amz-checksum-*` headers, and hide-on-delete
//! (cloud-storage-file-versions).

use super::{Quirks, RegionError};

pub(super) const QUIRKS: Quirks = Quirks {
    refuses_checksum_headers: true,
    keeps_versions: true,
    // Reported to answer 501 to If-None-Match on PUT; If-Match is not
    // documented either way, so it is never trusted: HEAD and compare.
    replaces_if_match: false,
};

const ENDPOINT_HOST_SUFFIX: &str = ".backblazeb2.com";

/// B2 needs its region, and it must be the one its endpoint names.
pub(super) fn signing_region(
    configured: Option<&str>,
    endpoint: &str,
) -> Result<String, RegionError> {
    let region = configured.ok_or(RegionError::Missing)?;
    match endpoint_region(endpoint) {
        Some(named) if named != region => Err(RegionError::Invalid(
            "differs from the region the B2 endpoint names (s3.<region>.backblazeb2.com)",
        )),
        _ => Ok(region.to_owned()),
    }
}

/// The region in a `https://s3.<region>.backblazeb2.com` endpoint; `None`
/// for any other host (a stand-in, a proxy).
fn endpoint_region(endpoint: &str) -> Option<&str> {
    let host = endpoint.split("://").nth(1)?.split(['/', ':']).next()?;
    host.strip_suffix(ENDPOINT_HOST_SUFFIX)?.strip_prefix("s3.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn b2_regions_must_match_their_endpoint() {
        let endpoint = "https://s3.eu-central-003.backblazeb2.com";
        assert_eq!(endpoint_region(endpoint), Some("eu-central-003"));
        assert_eq!(endpoint_region("http://127.0.0.1:9000"), None);
        assert_eq!(
            signing_region(Some("eu-central-003"), endpoint).unwrap(),
            "eu-central-003"
        );
        assert!(signing_region(Some("us-west-004"), endpoint).is_err());
        assert_eq!(signing_region(None, endpoint), Err(RegionError::Missing));
        assert_eq!(
            signing_region(Some("anything"), "http://127.0.0.1:9000").unwrap(),
            "anything"
        );
    }
}
