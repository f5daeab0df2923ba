//! PostgreSQL's own programs, which walvault drives for base backups,
//! their verification and the recovery drill.

use std::path::{Path, PathBuf};

/// Where PostgreSQL's programs are.
#[derive(Debug, Clone)]
pub struct PgTools {
    bindir: Option<PathBuf>,
}

impl PgTools {
    /// `WALVAULT_PG_BINDIR` when set; otherwise Debian's and Red Hat's
    /// directory for `major` when it exists; otherwise `PATH`.
    pub fn locate(configured: Option<&Path>, major: Option<u32>) -> PgTools {
        if let Some(dir) = configured {
            return PgTools {
                bindir: Some(dir.to_owned()),
            };
        }
        let known = major.into_iter().flat_map(|v| {
            [
                PathBuf::from(format!("/usr/lib/postgresql/{v}/bin")),
                PathBuf::from(format!("/usr/pgsql-{v}/bin")),
            ]
        });
        PgTools {
            bindir: known.into_iter().find(|dir| dir.join("pg_ctl").exists()),
        }
    }

    pub fn program(&self, name: &str) -> PathBuf {
        match &self.bindir {
            Some(dir) => dir.join(name),
            None => PathBuf::from(name),
        }
    }
}
