//! Cloudflare R2. Sources: developers.cloudflare.com/r2/api/s3/api/
//! ("region: auto"), /r2/examples/aws/aws-sdk-rust/ (checksum settings
//! `WhenRequired`), /r2/api/s3/conditional-operations/.

use super::{Quirks, RegionError};

pub(super) const QUIRKS: Quirks = Quirks {
    refuses_checksum_headers: false,
    keeps_versions: false,
    // developers.cloudflare.com/r2/api/s3/conditional-operations: PutObject
    // takes If-Match, and fails when the key does not exist.
    replaces_if_match: true,
};

/// R2 signs for the region `auto` only.
pub(super) fn signing_region(configured: Option<&str>) -> Result<String, RegionError> {
    match configured {
        None | Some("auto") => Ok("auto".to_owned()),
        Some(_) => Err(RegionError::Invalid("R2 takes the region \"auto\" only")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn r2_signs_for_auto() {
        assert_eq!(signing_region(None).unwrap(), "auto");
        assert_eq!(signing_region(Some("auto")).unwrap(), "auto");
        assert!(signing_region(Some("us-east-1")).is_err());
    }
}
