//! Opening indexes as every command does: with the lock timeout of `--lock-timeout`, saying on
//! standard error when a write waits for another process, and when an open upgraded the format.

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{bail, Result};
use milan::{Index, IndexBuilder, LockWait};

static LOCK_TIMEOUT: OnceLock<Duration> = OnceLock::new();

/// Sets the lock timeout of every open that follows, from `--lock-timeout SECONDS`.
pub fn set_lock_timeout(seconds: f64) -> Result<()> {
    if !seconds.is_finite() || !(0.0..=1e9).contains(&seconds) {
        bail!("--lock-timeout {seconds}: give a number of seconds from 0 to 1000000000");
    }
    let _ = LOCK_TIMEOUT.set(Duration::from_secs_f64(seconds));
    Ok(())
}

/// `builder` with the command line's lock settings.
pub fn settings(builder: IndexBuilder) -> IndexBuilder {
    let timeout = LOCK_TIMEOUT
        .get()
        .copied()
        .unwrap_or(milan::DEFAULT_LOCK_TIMEOUT);
    builder.lock_timeout(timeout).on_lock_wait(announce_wait)
}

fn announce_wait(wait: &LockWait) {
    let holder = wait
        .holder
        .as_deref()
        .map(|holder| format!(" ({holder})"))
        .unwrap_or_default();
    eprintln!(
        "waiting for another writer{holder} to finish with {}: up to {} s (--lock-timeout)",
        wait.path.display(),
        wait.timeout.as_secs_f64()
    );
}

/// Opens an index read-only (reads never wait for writers).
pub fn read_only(dir: &Path) -> Result<Index> {
    Ok(settings(IndexBuilder::default()).open_read_only(dir)?)
}

/// Opens an index for writing, saying so on standard error when the open upgraded its format.
pub fn writable(dir: &Path) -> Result<Index> {
    let index = settings(IndexBuilder::default()).open(dir)?;
    if let Some(old) = index.upgraded_from() {
        eprintln!(
            "upgraded {} from index format version {old} to {}",
            dir.display(),
            index.info().format_version
        );
    }
    Ok(index)
}
