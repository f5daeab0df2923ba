//! The exit codes, as documented in the README.
//!
//! archive_command: any non-zero code makes PostgreSQL keep the file and
//! retry later; codes above 125 would also restart its archiver, so push
//! stays below. restore_command: 1 means "not in the archive" and ends
//! recovery; everything else must be above 125 so that recovery aborts
//! instead of promoting on a short history.

use shared::archive::fetch::FetchError;
use shared::archive::push::{PushError, PushOutcome};
use shared::backup::restore::RestoreError;
use shared::backup::take::BackupError;
use shared::error::Retryable;
use shared::identity::IdentityError;
use shared::status::health::Level;
use shared::verify::VerifyReport;

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
/// The copies are sealed to keys no configured identity opens.
pub const FETCH_LOCKED: u8 = 154;

pub const BACKUP_USAGE: u8 = 2;
/// pg_basebackup could not run or failed.
pub const BACKUP_POSTGRES: u8 = 3;
/// Not a backup walvault can keep: another cluster, tablespaces, no
/// archiving, a stream that is not a base backup.
pub const BACKUP_REFUSED: u8 = 4;
/// Staging or the catalog was unavailable, the WAL was not archived in
/// time, or another backup started in the same second: run it again.
pub const BACKUP_UNAVAILABLE: u8 = 5;
/// Staging or the catalog refused (rights, configuration).
pub const BACKUP_FAILED: u8 = 6;

pub const RESTORE_USAGE: u8 = 2;
/// Refused before anything was downloaded: no backup reaches the target,
/// the directory is not empty, the WAL is not continuous.
pub const RESTORE_REFUSED: u8 = 3;
/// A chunk could not be fetched verified from any provider.
pub const RESTORE_UNAVAILABLE: u8 = 4;
/// pg_verifybackup found the restored directory wrong.
pub const RESTORE_VERIFY_FAILED: u8 = 5;
/// Writing the directory, or a local configuration problem.
pub const RESTORE_LOCAL: u8 = 6;

/// The identity file could not be written (one is there already).
pub const KEYGEN_FAILED: u8 = 1;

pub const DRILL_FAILED: u8 = 1;
pub const DRILL_USAGE: u8 = 2;

/// Something is wrong (a copy missing or damaged, an orphan, a break in
/// WAL continuity, a file recorded corrupt) and was not repaired.
pub const VERIFY_PROBLEMS: u8 = 1;
pub const VERIFY_USAGE: u8 = 2;
/// Not everything could be checked (a provider or the catalog did not
/// answer, a provider is not configured); nothing checked was wrong.
pub const VERIFY_INCOMPLETE: u8 = 3;
/// `--repair` was refused: the configured keys cannot write.
pub const VERIFY_REPAIR_REFUSED: u8 = 4;

/// `walvault status` follows the monitoring-plugin convention: 0 OK,
/// 1 WARNING, 2 CRITICAL (`shared::status::health::Level`), and this one
/// when the state could not be read at all (or the command line is wrong).
pub const STATUS_UNKNOWN: u8 = 3;

// The UNKNOWN the command returns itself is the one its checks return.
const _: () = assert!(Level::Unknown.exit_code() == STATUS_UNKNOWN);

// PostgreSQL reads fetch codes above 125 as "abort recovery", and push
// codes above 125 as a crashed archiver: checked at compile time.
const _: () = assert!(
    FETCH_STORE_ERROR > 125
        && FETCH_NO_VERIFIED_COPY > 125
        && FETCH_DISAGREEMENT > 125
        && FETCH_LOCAL_ERROR > 125
        && FETCH_LOCKED > 125
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
    let Err(error) = result else { return 0 };
    match error {
        PushError::Read { .. } | PushError::NotWalFile(_) | PushError::BadContent { .. } => {
            PUSH_REFUSED_FILE
        }
        PushError::WrongCluster {
            source: IdentityError::Store(_),
            ..
        }
        | PushError::Store { .. }
        | PushError::Catalog { .. } => {
            if error.is_permanent() {
                PUSH_FAILED
            } else {
                PUSH_UNAVAILABLE
            }
        }
        PushError::WrongCluster { .. } => PUSH_WRONG_CLUSTER,
        PushError::Conflict { .. } => PUSH_CONFLICT,
    }
}

pub fn fetch_exit(error: &FetchError) -> u8 {
    match error {
        FetchError::NotFound(_) => FETCH_NOT_FOUND,
        FetchError::Unavailable { .. } => FETCH_STORE_ERROR,
        FetchError::NoVerifiedCopy { .. } => FETCH_NO_VERIFIED_COPY,
        FetchError::Disagreement { .. } => FETCH_DISAGREEMENT,
        FetchError::Local { .. } => FETCH_LOCAL_ERROR,
        FetchError::Locked { .. } => FETCH_LOCKED,
    }
}

pub fn backup_exit(error: &BackupError) -> u8 {
    match error {
        BackupError::Read(_) => BACKUP_POSTGRES,
        BackupError::Tar(_)
        | BackupError::Truncated
        | BackupError::MissingMember(_)
        | BackupError::Tablespaces(_)
        | BackupError::Facts(_)
        | BackupError::WrongCluster { .. }
        | BackupError::NoArchiving(_)
        | BackupError::TooManyChunks => BACKUP_REFUSED,
        BackupError::WalNotArchived { .. } | BackupError::Exists(_) => BACKUP_UNAVAILABLE,
        BackupError::Store { .. } | BackupError::Catalog(_) | BackupError::Identity(_) => {
            if error.is_permanent() {
                BACKUP_FAILED
            } else {
                BACKUP_UNAVAILABLE
            }
        }
    }
}

pub fn restore_exit(error: &RestoreError) -> u8 {
    match error {
        RestoreError::NotEmpty(_)
        | RestoreError::NoBackup { .. }
        | RestoreError::RequestedBackup { .. }
        | RestoreError::BackupWalMissing { .. }
        | RestoreError::WalGap { .. } => RESTORE_REFUSED,
        RestoreError::Catalog(_) | RestoreError::Fetch { .. } => RESTORE_UNAVAILABLE,
        RestoreError::Verify(_) => RESTORE_VERIFY_FAILED,
        RestoreError::Write(_) => RESTORE_LOCAL,
    }
}

pub fn verify_exit(report: &VerifyReport) -> u8 {
    if report.repair_refused.is_some() {
        VERIFY_REPAIR_REFUSED
    } else if report.anything_wrong() {
        VERIFY_PROBLEMS
    } else if !report.all_good() {
        VERIFY_INCOMPLETE
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::archive::fetch::SourceFailure;
    use shared::error::message;
    use shared::store::{Operation, StoreError};
    use shared::wal::WalFileName;
    use std::time::Duration;

    fn name() -> WalFileName {
        "000000010000000000000001".parse().unwrap()
    }

    fn store_error(permanent: bool) -> StoreError {
        let (store, operation, key, source) =
            ("staging".into(), Operation::Put, "k".into(), message("x"));
        if permanent {
            StoreError::Refused {
                store,
                operation,
                key,
                source,
            }
        } else {
            StoreError::Transient {
                store,
                operation,
                key,
                source,
            }
        }
    }

    #[test]
    fn only_not_found_lets_recovery_end() {
        assert_eq!(
            fetch_exit(&FetchError::NotFound(name().into())),
            FETCH_NOT_FOUND
        );
        let unavailable = FetchError::Unavailable {
            name: name().into(),
            failures: vec![SourceFailure::Store(
                shared::archive::fetch::Source::Staging,
                store_error(false),
            )],
        };
        assert_eq!(fetch_exit(&unavailable), FETCH_STORE_ERROR);
        let corrupt = FetchError::NoVerifiedCopy {
            name: name().into(),
            reason: "every copy found is corrupt",
            failures: vec![],
        };
        assert_eq!(fetch_exit(&corrupt), FETCH_NO_VERIFIED_COPY);
        let disagree = FetchError::Disagreement {
            name: name().into(),
            detail: String::new(),
        };
        assert_eq!(fetch_exit(&disagree), FETCH_DISAGREEMENT);
    }

    #[test]
    fn a_store_failure_exits_unavailable_when_waiting_can_help_and_failed_when_not() {
        for (permanent, code) in [(false, PUSH_UNAVAILABLE), (true, PUSH_FAILED)] {
            let error = PushError::Store {
                name: name(),
                waited: Duration::from_secs(1),
                source: store_error(permanent),
            };
            assert_eq!(push_exit(&Err(error)), code);
            let identity = PushError::WrongCluster {
                name: name(),
                source: IdentityError::Store(store_error(permanent)),
            };
            assert_eq!(push_exit(&Err(identity)), code);
        }
        let wrong = PushError::WrongCluster {
            name: name(),
            source: IdentityError::Malformed("x".into()),
        };
        assert_eq!(push_exit(&Err(wrong)), PUSH_WRONG_CLUSTER);
        assert_eq!(push_exit(&Ok(PushOutcome::Stored)), 0);
    }
}
