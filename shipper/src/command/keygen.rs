//! `walvault keygen --out FILE`: a new age identity for sealed copies,
//! written with mode 0600 and never over an existing file. Prints the
//! public recipient (for `WALVAULT_RECIPIENTS`) on stdout and its
//! fingerprint on stderr. Needs no configuration: keys are made before a
//! deployment is.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use shared::clock::{now_millis, utc_time};
use shared::seal::generate_identity;
use walvault::exit::KEYGEN_FAILED;

pub(crate) fn keygen(out: &Path) -> u8 {
    let new = generate_identity(&utc_time(now_millis()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .and_then(|mut file| {
            file.write_all(new.file_text.as_bytes())?;
            file.sync_all()
        });
    if let Err(e) = written {
        let why = match e.kind() {
            std::io::ErrorKind::AlreadyExists => {
                "a file is there already; keygen never overwrites a key".to_owned()
            }
            _ => e.to_string(),
        };
        eprintln!(
            "walvault keygen: {}: {why} (exit {KEYGEN_FAILED})",
            out.display()
        );
        return KEYGEN_FAILED;
    }
    println!("{}", new.recipient);
    eprintln!(
        "walvault keygen: wrote {} (mode 0600), recipient fingerprint {}.\n\
         Keep a copy of this file somewhere safe and offline: copies sealed to it\n\
         cannot be restored without it (or another identity they were sealed to).",
        out.display(),
        new.fingerprint
    );
    0
}
