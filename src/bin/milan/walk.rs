//! Which files a command reads: the walk of folders shared by `index add`, `extract --images` and
//! `bench extract`, and how paths are shown in messages.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use milan::ingest::{FailedFile, Failures};
use milan::text::for_terminal;

/// File extensions taken when walking folders; files named explicitly are always tried.
const IMAGE_EXTENSIONS: [&str; 9] = [
    "jpg", "jpeg", "png", "tif", "tiff", "webp", "bmp", "gif", "jfif",
];

/// What `index add`, `extract` and `bench extract` do with odd files, below their options.
pub const FILES_HELP: &str = "\
Files: links are followed, but each folder is walked once and each file read once, however many \
links lead to it; a link back into a folder already walked is reported and not followed. A folder \
inside that cannot be listed (permissions, say) is skipped and named, and the walk goes on. Only \
regular files of at most 256 MiB are read: FIFOs, sockets and devices, even named explicitly, are \
skipped. A JPEG whose data ends before its end-of-image marker is skipped as truncated (unless \
--lenient), as are files other decoders find cut short. Files that cannot be read or decoded \
(empty, corrupt, truncated, not an image, too large, a name that is not valid UTF-8) are skipped \
and named, and the exit status is 3. Keys are the absolute paths, exactly, with `.` and `..` \
resolved where that names the same file.";

// The help above names the limit.
const _: () = assert!(milan::extract::MAX_FILE_BYTES == 256 << 20);

/// `path` for a message: lossy where it is not UTF-8, control characters escaped.
pub fn shown(path: &Path) -> String {
    for_terminal(&path.to_string_lossy()).into_owned()
}

/// The reason, in summaries, for a folder that a walk could not list.
pub const UNLISTABLE_FOLDER: &str = "unlistable_folder";

/// What a walk found.
pub struct Walked {
    /// The files, in order.
    pub files: Vec<PathBuf>,
    /// The folders inside that could not be listed (reason [`UNLISTABLE_FOLDER`]), each to be
    /// counted as a skipped input.
    pub unlisted: Vec<FailedFile>,
}

impl Walked {
    /// Puts the folders that could not be listed first among `failures`, the skipped inputs of
    /// the run that read the files.
    pub fn report_unlisted(self, failures: &mut Failures) {
        let later = std::mem::take(failures);
        for failed in self.unlisted.into_iter().chain(later.failed) {
            failures.push(failed);
        }
    }
}

/// The files under `paths`, in order: files named explicitly, and the images (by extension) in
/// each folder, sorted within each folder, walking subfolders when `recursive`. Links are
/// followed, but each folder is walked once and each file listed once (by device and inode), so
/// that links back into a folder cannot make the walk endless; each link not followed is
/// reported on standard error. FIFOs, devices and the like are listed all the same: reading
/// refuses them, and so they are reported as skipped.
///
/// A folder named in `paths` that cannot be read or listed is an error; a folder found inside
/// one that cannot be listed is passed over and returned in [`Walked::unlisted`] (entries read
/// before a listing failed are walked all the same).
pub fn walk(paths: &[PathBuf], recursive: bool) -> Result<Walked> {
    let mut walk = Walk::default();
    for path in paths {
        let metadata =
            std::fs::metadata(path).with_context(|| format!("{}: cannot read", shown(path)))?;
        if metadata.is_dir() {
            walk.folder(path, &metadata, recursive)?;
        } else {
            walk.file(path, Some(&metadata));
        }
    }
    Ok(Walked {
        files: walk.files,
        unlisted: walk.unlisted,
    })
}

/// The files of [`walk`], for a command that counts no skipped inputs: each folder that could
/// not be listed is named on standard error.
pub fn collect(paths: &[PathBuf], recursive: bool) -> Result<Vec<PathBuf>> {
    let walked = walk(paths, recursive)?;
    name_skipped(&walked.unlisted);
    Ok(walked.files)
}

/// Names each skipped file or folder on standard error, with why.
pub fn name_skipped(failed: &[FailedFile]) {
    for failed in failed {
        eprintln!(
            "skipped {}: {}",
            shown(&failed.path),
            for_terminal(&failed.detail)
        );
    }
}

/// What identifies a file or folder however it is reached: its device and inode where the
/// platform has them, else its absolute path.
#[derive(Clone, PartialEq, Eq, Hash)]
enum Identity {
    #[cfg_attr(not(unix), allow(dead_code))]
    Inode(u64, u64),
    Path(PathBuf),
}

fn identity(path: &Path, metadata: Option<&std::fs::Metadata>) -> Identity {
    #[cfg(unix)]
    if let Some(metadata) = metadata {
        use std::os::unix::fs::MetadataExt;
        return Identity::Inode(metadata.dev(), metadata.ino());
    }
    #[cfg(not(unix))]
    let _ = metadata;
    Identity::Path(
        path.canonicalize()
            .or_else(|_| std::path::absolute(path))
            .unwrap_or_else(|_| path.to_path_buf()),
    )
}

#[derive(Default)]
struct Walk {
    files: Vec<PathBuf>,
    seen_files: HashSet<Identity>,
    /// Each folder walked, with the path it was first walked by.
    seen_folders: HashMap<Identity, PathBuf>,
    /// Folders inside that could not be listed.
    unlisted: Vec<FailedFile>,
}

impl Walk {
    /// Lists `path` unless the same file was listed before.
    fn file(&mut self, path: &Path, metadata: Option<&std::fs::Metadata>) {
        if self.seen_files.insert(identity(path, metadata)) {
            self.files.push(path.to_path_buf());
        }
    }

    /// Walks the folder `root` (depth first, entries sorted), without recursion so that no
    /// depth of folders can exhaust the stack.
    fn folder(&mut self, root: &Path, metadata: &std::fs::Metadata, recursive: bool) -> Result<()> {
        let id = identity(root, Some(metadata));
        if self.seen_folders.contains_key(&id) {
            return Ok(()); // the same folder named twice
        }
        self.seen_folders.insert(id, root.to_path_buf());
        let mut pending = Vec::new();
        push_entries(root, &mut pending)
            .with_context(|| format!("{}: cannot list", shown(root)))?;
        while let Some(entry) = pending.pop() {
            // Links followed: a link to a folder is a folder, a link to a file a file.
            let metadata = std::fs::metadata(&entry).ok();
            if metadata.as_ref().is_some_and(std::fs::Metadata::is_dir) {
                if !recursive {
                    continue;
                }
                let id = identity(&entry, metadata.as_ref());
                if let Some(first) = self.seen_folders.get(&id) {
                    if entry == *first {
                        // A folder named on the command line, met again inside another.
                    } else if entry.starts_with(first) {
                        eprintln!(
                            "not following {}: it leads back to {} (a loop of links)",
                            shown(&entry),
                            shown(first)
                        );
                    } else {
                        eprintln!(
                            "not following {}: the same folder as {}, already walked",
                            shown(&entry),
                            shown(first)
                        );
                    }
                    continue;
                }
                self.seen_folders.insert(id, entry.clone());
                if let Err(err) = push_entries(&entry, &mut pending) {
                    self.unlisted.push(FailedFile {
                        path: entry,
                        reason: UNLISTABLE_FOLDER.to_string(),
                        detail: format!("cannot list the folder: {err}"),
                    });
                }
            } else if entry
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
            {
                // A dangling link or a special file is listed: reading reports it by name.
                self.file(&entry, metadata.as_ref());
            }
        }
        Ok(())
    }
}

/// Pushes the entries of `dir` onto `pending` so that they pop in sorted order. Fails when the
/// folder cannot be opened, or with the first entry that could not be read (after pushing the
/// others).
fn push_entries(dir: &Path, pending: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries = Vec::new();
    let mut failed = None;
    for entry in std::fs::read_dir(dir)? {
        match entry {
            Ok(entry) => entries.push(entry.path()),
            Err(err) => {
                failed.get_or_insert(err);
            }
        }
    }
    entries.sort();
    pending.extend(entries.into_iter().rev());
    failed.map_or(Ok(()), Err)
}
