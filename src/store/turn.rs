//! The writer's turn: one process at a time writes to an index, and the others wait for their
//! turn, within a time limit.
//!
//! The storage engine lets several processes open the database for writing and queues their
//! write transactions, but a writer's open and its transactions then wait without limit for
//! another process's transaction. So every write (a writable open, a transaction, a check or a
//! compaction) first takes an exclusive lock on the [`WRITER_LOCK_FILE`] beside the database,
//! polling for it up to the lock timeout; the storage engine's own lock is then free whenever it
//! is asked for. The holder writes its process id and command line into that file, so that a
//! waiting process can say whom it waits for.
//!
//! A writer that commits and at once begins again would take the lock back before a polling
//! waiter sees it free; waiters therefore hold a shared lock on the [`WRITER_QUEUE_FILE`], and a
//! writer that finds it held gives way for a moment before taking its turn.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use milan_index_format::{WRITER_LOCK_FILE, WRITER_QUEUE_FILE};

use crate::error::{Error, Result, WriteError};

/// How long a write waits for another process's turn when not told: [`DEFAULT_LOCK_TIMEOUT`].
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// The first and the longest pause between two looks at a held lock.
const FIRST_POLL: Duration = Duration::from_millis(1);
const LONGEST_POLL: Duration = Duration::from_millis(10);
/// How long a writer about to begin lets waiting processes go first: longer than their longest
/// pause between looks, so that one of them finds the lock free.
const GIVE_WAY: Duration = Duration::from_millis(25);
/// Most bytes of the holder's description read back.
const HOLDER_BYTES: u64 = 512;

/// A write of this process waits for another process's: shown to the
/// [`IndexBuilder::on_lock_wait`](crate::IndexBuilder::on_lock_wait) callback once per wait,
/// when the wait begins.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LockWait {
    /// The index directory.
    pub path: PathBuf,
    /// The process holding the writer's turn, as it describes itself (process id and command
    /// line), when it could be read.
    pub holder: Option<String>,
    /// How long the write waits at most.
    pub timeout: Duration,
}

/// Called when a write begins to wait for another process.
type WaitNotice = Arc<dyn Fn(&LockWait) + Send + Sync>;

/// How a handle's writes wait for their turn.
#[derive(Clone)]
pub(crate) struct LockSettings {
    pub(crate) timeout: Duration,
    pub(crate) on_wait: Option<WaitNotice>,
}

impl Default for LockSettings {
    fn default() -> LockSettings {
        LockSettings {
            timeout: DEFAULT_LOCK_TIMEOUT,
            on_wait: None,
        }
    }
}

impl std::fmt::Debug for LockSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockSettings")
            .field("timeout", &self.timeout)
            .field("on_wait", &self.on_wait.is_some())
            .finish()
    }
}

/// The writer's turn, held until dropped (closing the file releases the lock).
pub(crate) struct Turn {
    _file: File,
}

impl Turn {
    /// Takes the writer's turn on the index in `dir`, waiting up to the settings' timeout for
    /// another process to end its own.
    pub(crate) fn take(dir: &Path, settings: &LockSettings) -> Result<Turn> {
        let lock_path = dir.join(WRITER_LOCK_FILE);
        let mut file = open_lock_file(&lock_path)?;
        let queue_path = dir.join(WRITER_QUEUE_FILE);
        let queue = open_lock_file(&queue_path)?;
        give_way(&queue);
        if try_lock(&file, &lock_path)? {
            describe_holder(&mut file);
            return Ok(Turn { _file: file });
        }
        // Announce the wait; a failure to announce it only makes the wait less fair.
        let _ = queue.lock_shared();
        let holder = read_holder(&mut file);
        if let Some(notice) = &settings.on_wait {
            notice(&LockWait {
                path: dir.to_path_buf(),
                holder: holder.clone(),
                timeout: settings.timeout,
            });
        }
        let started = Instant::now();
        let mut pause = FIRST_POLL;
        loop {
            std::thread::sleep(pause.min(settings.timeout.saturating_sub(started.elapsed())));
            if try_lock(&file, &lock_path)? {
                drop(queue);
                describe_holder(&mut file);
                return Ok(Turn { _file: file });
            }
            if started.elapsed() >= settings.timeout {
                return Err(Error::Write(WriteError::LockTimeout {
                    path: dir.to_path_buf(),
                    waited: settings.timeout,
                    holder: read_holder(&mut file).or(holder),
                }));
            }
            pause = (pause * 2).min(LONGEST_POLL);
        }
    }
}

fn open_lock_file(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })
}

/// Takes the exclusive lock if it is free.
fn try_lock(file: &File, path: &Path) -> Result<bool> {
    match file.try_lock() {
        Ok(()) => Ok(true),
        Err(TryLockError::WouldBlock) => Ok(false),
        Err(TryLockError::Error(source)) => Err(Error::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Pauses while another process waits for the turn (holds the queue file shared).
fn give_way(queue: &File) {
    match queue.try_lock() {
        Ok(()) => {
            let _ = queue.unlock();
        }
        Err(TryLockError::WouldBlock) => std::thread::sleep(GIVE_WAY),
        Err(TryLockError::Error(_)) => {}
    }
}

/// Writes this process's description into the lock file it holds (best effort: it only serves
/// the messages of waiting processes).
fn describe_holder(file: &mut File) {
    // `args_os`: an argument that is not Unicode must not make a write fail.
    let mut args = std::env::args_os();
    let program = args.next().map(|arg| {
        Path::new(&arg)
            .file_name()
            .unwrap_or(&arg)
            .to_string_lossy()
            .into_owned()
    });
    let program = program
        .into_iter()
        .chain(args.take(3).map(|arg| arg.to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(" ");
    let text = format!("process {} ({program})", std::process::id());
    // Written over the last holder's text, then cut to length, so that a waiting process never
    // reads an empty file.
    let _ = file
        .seek(SeekFrom::Start(0))
        .and_then(|_| file.write_all(text.as_bytes()))
        .and_then(|()| file.set_len(text.len() as u64));
}

/// The holder's description, if there is one to read.
fn read_holder(file: &mut File) -> Option<String> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.take(HOLDER_BYTES).read_to_string(&mut text).ok()?;
    let text = crate::text::for_terminal(text.trim()).into_owned();
    (!text.is_empty()).then_some(text)
}
