//! Checks on output paths, made before a command reads or writes anything, so that an output can
//! never overwrite the index a command works on or one of its inputs.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

/// Refuses `output` when it lies inside the index directory `index_dir` (when given) or names the
/// same file as one of `inputs`. Paths are compared after resolving links, so `./x/../idx/f` and a
/// link to an input are caught too.
pub fn check_output(output: &Path, index_dir: Option<&Path>, inputs: &[&Path]) -> Result<()> {
    let resolved = resolve(output);
    if let Some(dir) = index_dir {
        if resolved.starts_with(resolve(dir)) {
            bail!(
                "{}: refusing to write inside the index directory {}; choose an output path elsewhere",
                output.display(),
                dir.display()
            );
        }
    }
    for input in inputs {
        if resolve(input) == resolved {
            bail!(
                "{}: the output would overwrite the input {}; choose another output path",
                output.display(),
                input.display()
            );
        }
    }
    Ok(())
}

/// `path` made absolute with its links resolved, as far as it exists: the missing tail (an output
/// that is not written yet) is appended to its longest existing ancestor, resolved. A link whose
/// target does not exist yet is followed too, since writing through it creates the target.
fn resolve(path: &Path) -> PathBuf {
    resolve_within(path, MAX_LINKS)
}

/// Links followed before giving up, as the system does (ELOOP).
const MAX_LINKS: u32 = 40;

fn resolve_within(path: &Path, links_left: u32) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut existing = absolute.as_path();
    let mut tail = Vec::new();
    loop {
        if let Ok(real) = existing.canonicalize() {
            return append(real, &tail);
        }
        // A dangling link: where the write would land is its target.
        if links_left > 0 && existing.symlink_metadata().is_ok_and(|m| m.is_symlink()) {
            if let Ok(target) = std::fs::read_link(existing) {
                let parent = existing.parent().unwrap_or(Path::new("/"));
                return append(resolve_within(&parent.join(target), links_left - 1), &tail);
            }
        }
        match (existing.parent(), existing.components().next_back()) {
            (Some(parent), Some(last)) => {
                tail.push(last.as_os_str().to_owned());
                existing = parent;
            }
            _ => return absolute,
        }
    }
}

/// `base` with the `tail` components (innermost first) appended; `..` after a missing folder is
/// taken lexically, as the caller's intent reads.
fn append(mut base: PathBuf, tail: &[std::ffi::OsString]) -> PathBuf {
    for part in tail.iter().rev() {
        if part == ".." {
            base.pop();
        } else if part != "." {
            base.push(part);
        }
    }
    base
}
