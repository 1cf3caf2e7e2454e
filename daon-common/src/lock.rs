//! A lock file (flock) so two runs of a tool never work at once — a deploy
//! during a backup, two crons overlapping. The kernel drops a flock when its
//! holder dies, so a killed run can never leave a lock that blocks forever;
//! the file's contents (who, when, what) are kept only to explain a wait.

use crate::error::{Error, Result};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A held lock; released on drop.
#[derive(Debug)]
pub struct LockGuard {
    file: File,
    path: PathBuf,
}

impl LockGuard {
    /// Path of the lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        // Empty the holder record before the kernel releases the lock.
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

/// Who holds a lock, as recorded in its file.
pub fn holder(path: &Path) -> Option<String> {
    let mut s = String::new();
    File::open(path).ok()?.read_to_string(&mut s).ok()?;
    let s = s.trim().to_string();
    (!s.is_empty()).then_some(s)
}

/// Takes the exclusive lock at `path`, waiting up to `wait` (zero: try once).
/// `what` describes the holder (e.g. `daon-backup --tag nightly`).
pub fn acquire(path: &Path, wait: Duration, what: &str) -> Result<LockGuard> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("creating lock directory", dir, e))?;
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| Error::io("opening lock file", path, e))?;
    let deadline = Instant::now() + wait;
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(TryLockError::WouldBlock) => {
                if Instant::now() >= deadline {
                    return Err(Error::LockHeld {
                        path: path.to_path_buf(),
                        holder: holder(path).unwrap_or_else(|| "holder unknown".into()),
                    });
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(TryLockError::Error(e)) => return Err(Error::io("locking", path, e)),
        }
    }
    let record = serde_json::json!({
        "pid": std::process::id(),
        "command": what,
        "started": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "host": hostname(),
    });
    file.set_len(0)
        .and_then(|_| file.seek(SeekFrom::Start(0)))
        .and_then(|_| writeln!(file, "{record}"))
        .and_then(|_| file.sync_data())
        .map_err(|e| Error::io("writing lock file", path, e))?;
    Ok(LockGuard {
        file,
        path: path.to_path_buf(),
    })
}

/// This host's name (for lock records and manifests).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_taker_gets_lock_held_with_the_holder_then_succeeds_after_release() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/deploy.lock");
        let g = acquire(&p, Duration::ZERO, "first").unwrap();
        let err = acquire(&p, Duration::from_millis(200), "second").unwrap_err();
        assert_eq!(err.exit_code(), crate::ExitCode::TempFail);
        assert!(err.to_string().contains("first"), "{err}");
        drop(g);
        let g2 = acquire(&p, Duration::ZERO, "second").unwrap();
        assert!(holder(g2.path()).unwrap().contains("second"));
    }

    #[test]
    fn a_waiter_gets_the_lock_when_it_is_released() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.lock");
        let g = acquire(&p, Duration::ZERO, "first").unwrap();
        let p2 = p.clone();
        let t =
            std::thread::spawn(move || acquire(&p2, Duration::from_secs(5), "waiter").map(|_| ()));
        std::thread::sleep(Duration::from_millis(300));
        drop(g);
        t.join().unwrap().unwrap();
    }
}
