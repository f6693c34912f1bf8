//! One training run per run folder. `train` holds an exclusive OS lock on `OUT/.lock`
//! (through std's `File::try_lock`: `flock` on Unix, `LockFileEx` on Windows) for as long as
//! it runs, and a second run on the same folder is refused. The OS drops the lock when the
//! process ends, however it ends, so a crash or `kill -9` never leaves a stale one.

use anyhow::{bail, Context, Result};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The lock file in a run folder. It stays after the run: removing it would let a run that
/// opened it just before lock a file no later run sees.
pub const LOCK_FILE: &str = ".lock";

/// The held lock of a run folder; dropping it releases the lock.
pub struct RunLock {
    file: File,
    dir: PathBuf,
    /// Whether `acquire` created the folder (then `discard` may remove it again).
    created: bool,
}

impl RunLock {
    /// Creates `dir` if needed and locks it for this process, or says which process holds it.
    /// Errors name the `--out` flag.
    pub fn acquire(dir: &Path) -> Result<RunLock> {
        let created = !dir.exists();
        fs::create_dir_all(dir).with_context(|| format!("--out {}: cannot create the folder; choose a writable --out", dir.display()))?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("--out {}: the folder is not writable; choose a writable --out", dir.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let who = if holder.is_empty() { "another process".to_string() } else { holder.to_string() };
                bail!(
                    "--out {}: another training run ({who}) is writing to this folder; wait for it to end (or stop it), or choose another --out",
                    dir.display()
                );
            }
            Err(fs::TryLockError::Error(e)) => {
                bail!("--out {}: cannot lock {} ({e}); the run lock needs a file system with file locks: choose another --out", dir.display(), path.display())
            }
        }
        // Who holds it, for the message of a run that finds it taken.
        let _ = file.set_len(0).and_then(|()| file.rewind()).and_then(|()| write!(file, "process {}", std::process::id())).and_then(|()| file.flush());
        Ok(RunLock { file, dir: dir.to_path_buf(), created })
    }

    /// After a run that failed before it wrote anything: removes the folder again if this
    /// lock created it, so a refused run leaves nothing behind. Only the lock file and
    /// empty folders are removed; anything else keeps the folder.
    pub fn discard(self) {
        if !self.created {
            return;
        }
        let RunLock { file, dir, .. } = self;
        drop(file);
        let _ = fs::remove_file(dir.join(LOCK_FILE));
        let _ = fs::remove_dir(&dir);
    }
}
