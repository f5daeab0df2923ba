//! The exit codes, as documented in the README.
//!
//! archive_command: any non-zero code makes PostgreSQL keep the file and
//! retry later; codes above 125 would also restart its archiver, so push
//! stays below. restore_command: 1 means "not in the archive" and ends
//! recovery; everything else must be above 125 so that recovery aborts
//! instead of promoting on a short history.

use shared::archive::fetch::FetchError;
use shared::archive::push::{PushError, PushOutcome};

pub const PUSH_USAGE: u8 = 2;
pub const PUSH_REFUSED_FILE: u8 = 3;
pub const PUSH_WRONG_CLUSTER: u8 = 4;
pub const PUSH_CONFLICT: u8 = 5;
pub const PUSH_UNAVAILABLE: u8 = 6;
pub const PUSH_FAILED: u8 = 7;

pub const FETCH_NOT_FOUND: u8 = 1;
pub const FETCH_STORE_ERROR: u8 = 150;
pub const FETCH_NO_VERIFIED_COPY: u8 = 151;
pub const FETCH_DISAGREEMENT: u8 = 152;
pub const FETCH_LOCAL_ERROR: u8 = 153;

// PostgreSQL reads fetch codes above 125 as "abort recovery", and push
// codes above 125 as a crashed archiver: checked at compile time.
const _: () = assert!(
    FETCH_STORE_ERROR > 125
        && FETCH_NO_VERIFIED_COPY > 125
        && FETCH_DISAGREEMENT > 125
        && FETCH_LOCAL_ERROR > 125
);
const _: () = assert!(
    PUSH_USAGE <= 125
        && PUSH_REFUSED_FILE <= 125
        && PUSH_WRONG_CLUSTER <= 125
        && PUSH_CONFLICT <= 125
        && PUSH_UNAVAILABLE <= 125
        && PUSH_FAILED <= 125
);

pub fn push_exit(result: &Result<PushOutcome, PushError>) -> u8 {
    match result {
        Ok(_) => 0,
        Err(PushError::Read { .. } | PushError::NotWalFile(_) | PushError::BadContent { .. }) => {
            PUSH_REFUSED_FILE
        }
        Err(PushError::WrongCluster { .. }) => PUSH_WRONG_CLUSTER,
        Err(PushError::Conflict { .. }) => PUSH_CONFLICT,
        Err(PushError::Unavailable { .. }) => PUSH_UNAVAILABLE,
        Err(PushError::Failed { .. }) => PUSH_FAILED,
    }
}

pub fn fetch_exit(error: &FetchError) -> u8 {
    match error {
        FetchError::NotFound(_) => FETCH_NOT_FOUND,
        FetchError::StoreErrors { .. } => FETCH_STORE_ERROR,
        FetchError::NoVerifiedCopy { .. } => FETCH_NO_VERIFIED_COPY,
        FetchError::Disagreement { .. } => FETCH_DISAGREEMENT,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fetch_failure_but_not_found_aborts_recovery() {
        let name = || "000000010000000000000001".to_string();
        assert_eq!(fetch_exit(&FetchError::NotFound(name())), 1);
        for error in [
            FetchError::StoreErrors {
                name: name(),
                errors: vec![],
            },
            FetchError::NoVerifiedCopy {
                name: name(),
                problems: vec![],
            },
            FetchError::Disagreement {
                name: name(),
                detail: String::new(),
            },
        ] {
            assert!(fetch_exit(&error) > 125, "{error:?}");
        }
    }

    #[test]
    fn push_failures_never_restart_the_archiver() {
        for code in [
            PUSH_USAGE,
            PUSH_REFUSED_FILE,
            PUSH_WRONG_CLUSTER,
            PUSH_CONFLICT,
            PUSH_UNAVAILABLE,
            PUSH_FAILED,
        ] {
            assert!((1..=125).contains(&code));
        }
    }
}
