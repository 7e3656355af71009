//! The library's errors in an operator's words.
//!
//! The library's `Display` speaks to the programmer who calls it ("call
//! `ShmLock::provision`", "set `Options::allow_network_filesystem(true)`"); someone at a
//! shell holds none of those, so every variant gets a sentence here that names the file,
//! says what is wrong, and what to do at a shell. No Rust API names, no `Debug` output.

use std::io;
use std::path::Path;

use shmlock::{CorruptReason, Error};

use crate::render::age;

/// One sentence (without the `shmlock:` prefix) for `e`.
pub fn operator_message(e: &Error) -> String {
    match e {
        Error::WriterBusy { pid, generation } => format!(
            "the writer role is held by process {pid} (generation {generation}); try again when it is free"
        ),
        Error::Deposed { generation } => format!(
            "the writer of generation {generation} was replaced by a newer claim"
        ),
        Error::AlreadyWriter => "this process already holds the writer role".to_string(),
        Error::VersionNotIncreasing { version, published } => format!(
            "cannot publish version {version}: version {published} is already published, and versions only grow"
        ),
        Error::VersionTooLarge { version, max } => {
            format!("cannot publish version {version}: the largest version is {max}")
        }
        Error::ClaimTimeout {
            pid,
            generation,
            waited,
        } => format!(
            "gave up after {} waiting for the writer role: process {pid} (generation {generation}) still holds it",
            age(*waited)
        ),
        Error::NoDataFile { path } => format!(
            "{}: no such data file; check the path (a lock file belongs to an existing data file)",
            path.display()
        ),
        Error::ProvisionNotPermitted { path, data } => format!(
            "{}: no lock file yet, and this user may not write {}, so none was created; run the engine once as a user who may write it",
            path.display(),
            data.display()
        ),
        Error::Timeout { what, waited } => {
            format!("gave up after {} waiting for {what}", age(*waited))
        }
        Error::ProvisioningDisabled { path } => format!(
            "{}: no lock file, and creating one is turned off (set SHMLOCK_PROVISION=1 to allow it)",
            path.display()
        ),
        Error::DataPathIsLockFile { path } => format!(
            "{}: is a lock file, not a data file; give the data file (app.db for app.db-shm), or the lock file to a command that takes one",
            path.display()
        ),
        Error::TooManyReaders { limit } => {
            format!("a process has {limit} readers attached, the most one process may hold")
        }
        Error::TooManyProcesses { capacity } => format!(
            "all {capacity} member entries are taken by live processes; stop some of them (`shmlock inspect` lists them)"
        ),
        Error::Corrupt { path, reason } => {
            format!("{}: {}", path.display(), operator_reason(reason))
        }
        Error::IncompatibleVersion {
            path,
            found,
            supported,
        } => {
            if found > supported {
                format!(
                    "{}: format version {found} is newer than this shmlock's ({supported}); use the shmlock tool of the version that wrote it",
                    path.display()
                )
            } else {
                format!(
                    "{}: format version {found} is older than this shmlock's ({supported}); processes of an older shmlock still use it: stop them and the next opener upgrades it",
                    path.display()
                )
            }
        }
        Error::UnsupportedFilesystem { path, fs } => format!(
            "{}: is on a {fs} filesystem, where locks and shared memory are not coherent between hosts; keep lock files on a local filesystem",
            path.display()
        ),
        Error::NotARegularFile { path, found } => format!(
            "{}: is {found}, not a regular file; give a lock file (app.db-shm) or the data file beside it (app.db)",
            path.display()
        ),
        Error::ForkedHandle => {
            "internal error: a lock file was used in a child process after fork()".to_string()
        }
        Error::Io { op, path, source } => io_message(op, path, source),
        // A variant this tool does not know yet: the library's own sentence.
        other => other.to_string(),
    }
}

/// What failed, in words: the library names system calls.
fn operation(op: &str) -> String {
    match op {
        "open" => "cannot open it".into(),
        "fstat" | "stat data file" => "cannot read its metadata".into(),
        "read" => "cannot read it".into(),
        "lock" => "cannot take a kernel lock on it".into(),
        "mmap" => "cannot map it into memory".into(),
        "resize" => "cannot resize it".into(),
        "chmod" => "cannot set its permissions".into(),
        "dup" => "cannot duplicate its descriptor".into(),
        other => format!("{other} failed"),
    }
}

/// An `io::Error` as words, without the "(os error N)" suffix, with what to do.
fn cause(source: &io::Error) -> String {
    match source.kind() {
        io::ErrorKind::NotFound => "no such file or directory; check the path".into(),
        io::ErrorKind::PermissionDenied => {
            "permission denied; run shmlock as a user who can read it (and write it, for reap)"
                .into()
        }
        io::ErrorKind::ReadOnlyFilesystem => {
            "the filesystem is read-only (inspect and watch still work there)".into()
        }
        _ => {
            let text = source.to_string();
            match text.find(" (os error") {
                Some(at) => text[..at].to_string(),
                None => text,
            }
        }
    }
}

fn io_message(op: &str, path: &Path, source: &io::Error) -> String {
    format!("{}: {}: {}", path.display(), operation(op), cause(source))
}

/// A `Corrupt` reason in an operator's words (the library's own `Display` names the API
/// calls a program should make instead).
fn operator_reason(reason: &CorruptReason) -> String {
    match reason {
        CorruptReason::NotALockFile { len } => format!(
            "is a {len}-byte file that is not a shmlock lock file (no shmlock magic), so it was left untouched; \
             if it is a database, give its path and shmlock uses the lock file beside it"
        ),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_api_names(text: &str) {
        for word in [
            "::",
            "ShmLock",
            "Options",
            "claim_writer",
            "provision(",
            "Some(",
            "None",
            "os error",
        ] {
            assert!(!text.contains(word), "{word:?} in {text:?}");
        }
    }

    #[test]
    fn every_error_reads_as_an_operator_sentence() {
        let path = std::path::PathBuf::from("/srv/app.db-shm");
        let errors = [
            Error::WriterBusy {
                pid: 7,
                generation: 9,
            },
            Error::Timeout {
                what: "a version above 3 to be published".into(),
                waited: std::time::Duration::from_millis(1500),
            },
            Error::ProvisioningDisabled { path: path.clone() },
            Error::DataPathIsLockFile { path: path.clone() },
            Error::TooManyProcesses { capacity: 124 },
            Error::Corrupt {
                path: path.clone(),
                reason: CorruptReason::NotALockFile { len: 9 },
            },
            Error::IncompatibleVersion {
                path: path.clone(),
                found: 3,
                supported: 2,
            },
            Error::UnsupportedFilesystem {
                path: path.clone(),
                fs: "NFS",
            },
            Error::NotARegularFile {
                path: path.clone(),
                found: "a directory",
            },
            Error::Io {
                op: "open",
                path: path.clone(),
                source: io::Error::from_raw_os_error(13),
            },
            Error::Io {
                op: "mmap",
                path: path.clone(),
                source: io::Error::from_raw_os_error(12),
            },
        ];
        for e in &errors {
            let text = operator_message(e);
            no_api_names(&text);
            assert!(!text.ends_with(';'), "{text}");
        }
        let timeout = operator_message(&errors[1]);
        assert!(timeout.contains("after 1.5 s"), "{timeout}");
        let not_ours = operator_message(&errors[5]);
        assert!(not_ours.contains("not a shmlock lock file"), "{not_ours}");
        assert!(not_ours.contains("if it is a database"), "{not_ours}");
        let denied = operator_message(&errors[9]);
        assert_eq!(
            denied,
            "/srv/app.db-shm: cannot open it: permission denied; run shmlock as a user who can read it (and write it, for reap)"
        );
    }
}
