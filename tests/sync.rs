//! `milan index sync` and the library calls behind it (`milan::sync::SyncPlan`,
//! `Writer::update_item`): renames, moves across folders, deletes, edits in place, copies under
//! two names, scope, --dry-run, unreadable files, and a kill in the middle.

use std::collections::BTreeMap;
use std::path::Path;

use milan::WriteError;
use milan::{Code, Index, Item};

use crate::images::{lsh_head, lsh_image_index, temp_image_set, tiny_model, write_image_set};
use crate::util::*;

/// One stored item as the tests compare them.
#[derive(Debug, Clone, PartialEq)]
struct Stored {
    id: u64,
    hash: Option<[u8; 32]>,
    label: Option<String>,
    code: String,
}

/// Every item of the index, by key (each key must be held once).
fn state(index: &Path) -> BTreeMap<String, Stored> {
    let index = Index::open_read_only(index).unwrap();
    let reader = index.reader().unwrap();
    let mut items = BTreeMap::new();
    for id in reader.ids() {
        let item = reader.item(id).unwrap().unwrap();
        let stored = Stored {
            id,
            hash: item.content_hash,
            label: item.label,
            code: reader.code(id).unwrap().to_hex(),
        };
        let key = item.key.expect("image items have keys");
        assert!(
            items.insert(key.clone(), stored).is_none(),
            "{key} held twice"
        );
    }
    items
}

fn key(path: &Path) -> String {
    path.to_str().unwrap().to_string()
}

fn hash_of(path: &Path) -> [u8; 32] {
    *blake3::hash(&std::fs::read(path).unwrap()).as_bytes()
}

/// Runs `milan index sync INDEX FOLDERS... --json` with `flags`, expecting `status`; returns the
/// report.
fn sync(index: &Path, folders: &[&Path], flags: &[&str], status: i32) -> serde_json::Value {
    let mut args = vec!["index", "sync", s(index)];
    args.extend(folders.iter().map(|folder| s(folder)));
    args.extend(["--json", "--quiet"]);
    args.extend(flags);
    json_output(&args, &milan(&args), status)
}

/// The counts of a sync report, in a fixed order: added, re-coded, moved, deleted, unchanged,
/// duplicates, failed.
fn counts(report: &serde_json::Value) -> [u64; 7] {
    let count = |name: &str| report[name].as_u64().unwrap();
    [
        count("added"),
        count("recoded"),
        count("moved"),
        count("deleted"),
        count("unchanged"),
        count("duplicates"),
        report["failed"].as_array().unwrap().len() as u64,
    ]
}

/// The image files under `root` (recursively), as keys.
fn files_under(root: &Path) -> Vec<String> {
    let mut files = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(key(&path));
            }
        }
    }
    files.sort();
    files
}

/// Checks the whole index: the invariants hold, and every item's key names a file with its
/// content hash.
fn assert_consistent(index: &Path) {
    let report = Index::verify_dir(index).unwrap();
    assert!(report.is_ok(), "{report:?}");
    for (key, stored) in state(index) {
        assert_eq!(stored.hash, Some(hash_of(Path::new(&key))), "{key}");
    }
}

#[test]
fn sync_adds_deletes_rekeys_moves_and_recodes_edits() {
    let (tmp, images, files) = temp_image_set(6);
    // Content the index has never seen: the generator's images past the first six of each class.
    let fresh_files = write_image_set(&tmp.path().join("fresh"), 8);
    let (_, index) = lsh_image_index(tmp.path(), &images, &["--label-from-dir"]);
    let before = state(&index);
    assert_eq!(before.len(), 12);
    let max_id = before.values().map(|item| item.id).max().unwrap();

    let (red, blue) = (images.join("red"), images.join("blue"));
    // A rename in the same folder.
    let renamed = red.join("renamed.png");
    std::fs::rename(&files[0], &renamed).unwrap();
    // A move across folders.
    let moved = red.join("blue001.jpg");
    std::fs::rename(&files[7], &moved).unwrap();
    // A delete.
    std::fs::remove_file(&files[2]).unwrap();
    // An edit in place: new content at the same path.
    let edited = files[6].clone();
    std::fs::copy(&fresh_files[6], &edited).unwrap();
    // A new file.
    let new = blue.join("new.jpg");
    std::fs::copy(&fresh_files[15], &new).unwrap();
    // A copy of an indexed file under a second name.
    let copy = red.join("copy.webp");
    std::fs::copy(&files[4], &copy).unwrap();

    let report = sync(&index, &[&images], &["--label-from-dir"], 0);
    // added, re-coded, moved, deleted, unchanged, duplicates, failed
    assert_eq!(counts(&report), [1, 1, 2, 1, 8, 1, 0], "{report}");
    let after = state(&index);
    let mut expected = files_under(&images);
    expected.retain(|file| *file != key(&copy));
    assert_eq!(after.keys().cloned().collect::<Vec<_>>(), expected);
    assert_consistent(&index);

    // Moved items keep their id and code; the label follows the folder.
    let old = &before[&key(&files[0])];
    assert_eq!(after[&key(&renamed)], *old);
    let old = &before[&key(&files[7])];
    let now = &after[&key(&moved)];
    assert_eq!((now.id, &now.code, now.hash), (old.id, &old.code, old.hash));
    assert_eq!(
        (old.label.as_deref(), now.label.as_deref()),
        (Some("blue"), Some("red"))
    );
    // The edited file was coded again under a new id; its old id is gone.
    let old = &before[&key(&edited)];
    let now = &after[&key(&edited)];
    assert!(now.id > max_id, "{now:?}");
    assert_ne!(now.hash, old.hash);
    assert!(!after.values().any(|item| item.id == old.id));
    assert!(after[&key(&new)].id > max_id);
    // The rest is untouched.
    for file in [&files[1], &files[3], &files[4], &files[5], &files[8]] {
        assert_eq!(after[&key(file)], before[&key(file)], "{}", file.display());
    }

    // Run again: nothing to do, and the copy is still a duplicate.
    let again = sync(&index, &[&images], &[], 0);
    assert_eq!(counts(&again), [0, 0, 0, 0, 12, 1, 0], "{again}");
    assert_eq!(state(&index), after);
}

#[test]
fn a_file_under_two_names_is_indexed_once_and_its_item_follows_the_survivor() {
    let (tmp, images, files) = temp_image_set(2);
    let (_, index) = lsh_image_index(tmp.path(), &images, &[]);
    // Two new names for one new content, plus a copy of an indexed file.
    let fresh_files = write_image_set(&tmp.path().join("fresh"), 3);
    let (first, second) = (images.join("a.png"), images.join("b.png"));
    std::fs::copy(&fresh_files[2], &first).unwrap();
    std::fs::copy(&fresh_files[2], &second).unwrap();
    let copy = images.join("c.png");
    std::fs::copy(&files[0], &copy).unwrap();

    let report = sync(&index, &[&images], &["--dry-run"], 0);
    assert_eq!(counts(&report), [1, 0, 0, 0, 4, 2, 0], "{report}");
    let duplicates = report["plan"]["duplicates"].as_array().unwrap();
    let pairs: Vec<(&str, &str)> = duplicates
        .iter()
        .map(|d| (d["path"].as_str().unwrap(), d["of"].as_str().unwrap()))
        .collect();
    // Paths are taken in sorted order: a.png is added, b.png is its duplicate.
    assert_eq!(
        pairs,
        [
            (key(&second).as_str(), key(&first).as_str()),
            (key(&copy).as_str(), key(&files[0]).as_str())
        ]
    );
    let report = sync(&index, &[&images], &[], 0);
    assert_eq!(counts(&report), [1, 0, 0, 0, 4, 2, 0], "{report}");
    let state1 = state(&index);
    assert!(state1.contains_key(&key(&first)) && !state1.contains_key(&key(&second)));

    // The indexed names go: their items are re-keyed to the copies, with no model run.
    std::fs::remove_file(&first).unwrap();
    std::fs::remove_file(&files[0]).unwrap();
    let report = sync(&index, &[&images], &[], 0);
    assert_eq!(counts(&report), [0, 0, 2, 0, 3, 0, 0], "{report}");
    let state2 = state(&index);
    assert_eq!(state2[&key(&second)], state1[&key(&first)]);
    assert_eq!(state2[&key(&copy)], state1[&key(&files[0])]);
    assert_consistent(&index);
}

#[test]
fn items_outside_the_folders_are_never_touched() {
    let (tmp, images, files) = temp_image_set(3);
    // A folder whose name extends the synced one's: /x/red must not take in /x/red2.
    let fresh_files = write_image_set(&tmp.path().join("fresh"), 4);
    let red2 = images.join("red2");
    std::fs::create_dir_all(&red2).unwrap();
    let in_red2 = red2.join("red2.bmp");
    std::fs::copy(&fresh_files[3], &in_red2).unwrap();
    let (_, index) = lsh_image_index(tmp.path(), &images, &[]);
    let before = state(&index);
    assert_eq!(before.len(), 7);

    // Files go everywhere; only the synced folder's item is deleted.
    for file in [&files[0], &files[3], &in_red2] {
        std::fs::remove_file(file).unwrap();
    }
    // Its content moved out of scope: not a move, since the new path is outside the folder.
    std::fs::rename(&files[1], images.join("blue/red001.jpg")).unwrap();
    let red = images.join("red");
    // `..` in the folder named resolves in the text, as keys are compared.
    let red_dotted = images.join("blue/../red");
    let report = sync(&index, &[&red_dotted], &[], 0);
    assert_eq!(counts(&report), [0, 0, 0, 2, 1, 0, 0], "{report}");
    let after = state(&index);
    let mut expected = before.clone();
    expected.remove(&key(&files[0]));
    expected.remove(&key(&files[1]));
    assert_eq!(after, expected);
    assert_eq!(files_under(&red), [key(&files[2])]);
    // A folder that is missing is refused, never taken for an emptied one.
    let err = fails(
        &["index", "sync", s(&index), s(&tmp.path().join("unmounted"))],
        1,
    );
    assert!(err.contains("not a folder"), "{err}");
    assert_eq!(state(&index), after);
}

#[test]
fn a_dry_run_changes_nothing_and_shows_the_plan() {
    let (tmp, images, files) = temp_image_set(3);
    let (_, index) = lsh_image_index(tmp.path(), &images, &[]);
    std::fs::rename(&files[0], images.join("red/moved.png")).unwrap();
    std::fs::remove_file(&files[4]).unwrap();
    let fresh_files = write_image_set(&tmp.path().join("fresh"), 5);
    std::fs::copy(&fresh_files[3], &files[5]).unwrap();
    std::fs::copy(&fresh_files[4], images.join("blue/new.webp")).unwrap();
    let database = index.join(milan::format::DATABASE_FILE);
    let bytes = std::fs::read(&database).unwrap();
    let before = state(&index);

    let plan = sync(&index, &[&images], &["--dry-run"], 0);
    assert_eq!(plan["dry_run"], true);
    assert_eq!(counts(&plan), [1, 1, 1, 1, 3, 0, 0], "{plan}");
    assert_eq!(
        plan["plan"]["moves"][0]["to"],
        key(&images.join("red/moved.png"))
    );
    assert_eq!(plan["plan"]["deletes"][0]["reason"], "gone");
    let text = ok(&["index", "sync", s(&index), s(&images), "--dry-run"]);
    assert!(
        text.contains(&format!("delete {} (file gone)", key(&files[4]))),
        "{text}"
    );
    assert!(
        text.contains(&format!("re-code {}", key(&files[5]))),
        "{text}"
    );
    assert!(
        text.contains("would be 1 added, 1 re-coded, 1 moved, 1 deleted"),
        "{text}"
    );
    assert_eq!(std::fs::read(&database).unwrap(), bytes);
    assert_eq!(state(&index), before);

    // The real run does what the plan said.
    let report = sync(&index, &[&images], &[], 0);
    assert_eq!(report["dry_run"], false);
    assert_eq!(counts(&report), counts(&plan));
    assert_consistent(&index);
}

#[cfg(unix)]
#[test]
fn unreadable_files_are_skipped_keeping_their_items_and_a_bad_edit_loses_its_item() {
    let (tmp, images, files) = temp_image_set(2);
    let (_, index) = lsh_image_index(tmp.path(), &images, &[]);
    let before = state(&index);
    // A FIFO where an indexed file was: it cannot be read, so its item stays.
    std::fs::remove_file(&files[0]).unwrap();
    let status = std::process::Command::new("mkfifo")
        .arg(&files[0])
        .status()
        .unwrap();
    assert!(status.success());
    // An indexed file overwritten with garbage: its old code is stale, and nothing replaces it.
    std::fs::write(&files[2], b"not an image any more").unwrap();
    // A new file whose name no key could hold.
    use std::os::unix::ffi::OsStrExt;
    let odd = images.join(std::ffi::OsStr::from_bytes(b"odd\xff.png"));
    std::fs::copy(&files[1], &odd).unwrap();

    let report = sync(&index, &[&images], &[], 3);
    assert_eq!(counts(&report), [0, 0, 0, 1, 2, 0, 3], "{report}");
    assert_eq!(report["failed_by_reason"]["not_a_file"], 1);
    assert_eq!(report["failed_by_reason"]["unsupported"], 1);
    assert_eq!(report["failed_by_reason"]["name_not_utf8"], 1);
    let after = state(&index);
    assert_eq!(after[&key(&files[0])], before[&key(&files[0])]);
    assert!(!after.contains_key(&key(&files[2])));
    assert_eq!(after.len(), 3);
}

#[cfg(unix)]
#[test]
fn a_folder_that_cannot_be_listed_keeps_its_items_and_counts_as_skipped() {
    use crate::files::{milan_unprivileged, Unlistable};
    let (tmp, images, files) = temp_image_set(3);
    let (_, index) = lsh_image_index(tmp.path(), &images, &[]);
    let before = state(&index);
    // A change where the walk can see it is still synced.
    std::fs::remove_file(&files[0]).unwrap();
    let blue = images.join("blue");
    let _blue = Unlistable::new(&blue);

    let args = ["index", "sync", s(&index), s(&images), "--json", "--quiet"];
    let Some(output) = milan_unprivileged(tmp.path(), &args) else {
        return;
    };
    let report = json_output(&args, &output, 3);
    // added, re-coded, moved, deleted, unchanged, duplicates, failed: the folder, and its three
    // files, which cannot be reached to tell whether they are still there.
    assert_eq!(counts(&report), [0, 0, 0, 1, 2, 0, 4], "{report}");
    assert_eq!(report["failed"][0]["path"], key(&blue), "{report}");
    assert_eq!(
        report["failed_by_reason"]["unlistable_folder"], 1,
        "{report}"
    );
    assert_eq!(report["failed_by_reason"]["unreadable"], 3, "{report}");
    let mut expected = before.clone();
    expected.remove(&key(&files[0]));
    assert_eq!(state(&index), expected);
}

#[test]
fn paths_with_dots_are_keyed_alike_by_add_and_sync() {
    let (tmp, images, _) = temp_image_set(2);
    let other = tmp.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let dotted = other.join("..").join("images");
    // `index add` keys the plain paths, as sync spells them: nothing for sync to do.
    let (_, index) = lsh_image_index(tmp.path(), &dotted, &[]);
    let added = state(&index);
    assert_eq!(
        added.keys().cloned().collect::<Vec<_>>(),
        files_under(&images)
    );
    let report = sync(&index, &[&images], &[], 0);
    assert_eq!(counts(&report), [0, 0, 0, 0, 4, 0, 0], "{report}");
    let report = sync(&index, &[&dotted], &[], 0);
    assert_eq!(counts(&report), [0, 0, 0, 0, 4, 0, 0], "{report}");

    // Keys stored with `..` (as `index add` stored them before) are matched as the files they
    // name, and re-keyed to the plain spelling, instead of every file turning up as a duplicate
    // of itself.
    {
        let opened = Index::open(&index).unwrap();
        let reader = opened.reader().unwrap();
        let mut writer = opened.writer().unwrap();
        for (plain, stored) in &added {
            let relative = Path::new(plain).strip_prefix(&images).unwrap();
            let item = Item {
                key: Some(key(&dotted.join(relative))),
                ..reader.item(stored.id).unwrap().unwrap()
            };
            assert!(writer.update_item(stored.id, item).unwrap());
        }
        writer.commit().unwrap();
    }
    assert!(state(&index).keys().all(|key| key.contains("/../")));
    let report = sync(&index, &[&images], &[], 0);
    assert_eq!(counts(&report), [0, 0, 4, 0, 0, 0, 0], "{report}");
    assert_eq!(state(&index), added);
    let report = sync(&index, &[&images], &[], 0);
    assert_eq!(counts(&report), [0, 0, 0, 0, 4, 0, 0], "{report}");
}

#[test]
fn kept_features_stay_kept_through_sync_and_add_without_the_flag() {
    let (tmp, images, files) = temp_image_set(2);
    let fresh_files = write_image_set(&tmp.path().join("fresh"), 5);
    let (_, index) = lsh_image_index(tmp.path(), &images, &["--keep-features"]);
    // An edit (re-coded) and a new file (added), synced without --keep-features.
    std::fs::copy(&fresh_files[2], &files[0]).unwrap();
    std::fs::copy(&fresh_files[3], images.join("red/new.png")).unwrap();
    let report = sync(&index, &[&images], &[], 0);
    assert_eq!(counts(&report), [1, 1, 0, 0, 3, 0, 0], "{report}");
    // And an add without it.
    ok(&["index", "add", s(&index), s(&fresh_files[4]), "--quiet"]);

    let head = tmp.path().join("other.head");
    lsh_head(&head, "16", &["--model", s(&tiny_model()), "--seed", "7"]);
    let said = ok(&["index", "rehash", s(&index), "--head", s(&head)]);
    assert!(said.starts_with("re-coded 6 items"), "{said}");
    assert_consistent(&index);
}

#[test]
fn a_killed_sync_keeps_whole_commits_and_a_rerun_finishes() {
    let (tmp, images, files) = temp_image_set(20);
    let (_, index) = lsh_image_index(tmp.path(), &images, &[]);
    // Moves and deletes for the first commits, then many new files for the model.
    for (i, file) in files.iter().enumerate().take(10) {
        if i % 2 == 0 {
            std::fs::remove_file(file).unwrap();
        } else {
            let name = file.file_name().unwrap().to_str().unwrap();
            std::fs::rename(file, file.with_file_name(format!("moved-{name}"))).unwrap();
        }
    }
    // New content: the generator's images past the first 20 of each class.
    let fresh = tmp.path().join("fresh");
    for (i, file) in write_image_set(&fresh, 340).iter().enumerate() {
        if i % 340 < 20 {
            std::fs::remove_file(file).unwrap();
        }
    }
    std::fs::rename(&fresh, images.join("fresh")).unwrap();
    let first: Vec<String> = state(&index).into_keys().collect();
    let last = files_under(&images);

    // kill -9 after a longer wait each time, until a run gets to the end before its kill: the
    // kills land before the first commit, between commits and within them.
    let mut partial = 0;
    let mut finished = false;
    for attempt in 1..=200 {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_milan"))
            .args([
                "index",
                "sync",
                s(&index),
                s(&images),
                "--quiet",
                "--batch-size",
                "8",
                "--commit-every",
                "16",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5 * attempt));
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            finished = true;
            break;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let opened = Index::open(&index).unwrap();
        let report = opened.verify().unwrap();
        assert!(report.is_ok(), "after kill {attempt}: {report:?}");
        drop(opened);
        let keys: Vec<String> = state(&index).into_keys().collect();
        if keys != first && keys != last {
            partial += 1;
        }
    }
    assert!(finished, "no sync ran to its end");
    assert!(partial > 0, "no kill landed while the sync was writing");

    // The last run planned afresh and finished: exactly the files on disk, moved items re-keyed.
    assert_eq!(state(&index).into_keys().collect::<Vec<_>>(), last);
    assert_consistent(&index);
    let again = sync(&index, &[&images], &[], 0);
    assert_eq!(
        counts(&again),
        [0, 0, 0, 0, last.len() as u64, 0, 0],
        "{again}"
    );
}

#[test]
fn update_item_rekeys_without_touching_code_or_features() {
    let tmp = tempfile::tempdir().unwrap();
    let index = Index::builder(16).create(tmp.path()).unwrap();
    let code = Code::from_hex("00ff").unwrap();
    let item = |key: &str, hash: u8| Item {
        key: Some(key.into()),
        content_hash: Some([hash; 32]),
        label: Some("red".into()),
        ..Item::default()
    };
    let mut writer = index.writer().unwrap();
    let a = writer.add(&code, item("a.png", 1)).unwrap();
    let b = writer.add(&code, item("b.png", 2)).unwrap();
    writer.commit().unwrap();

    let mut writer = index.writer().unwrap();
    assert!(writer.update_item(a, item("moved.png", 3)).unwrap());
    // An add in the same transaction takes its update before it is written.
    let c = writer.add(&code, item("c.png", 4)).unwrap();
    assert!(writer.update_item(c, item("c2.png", 4)).unwrap());
    // Deleted, unknown and too large: refused.
    assert!(writer.delete(b).unwrap());
    assert!(!writer.update_item(b, item("b2.png", 2)).unwrap());
    assert!(!writer.update_item(99, item("x.png", 5)).unwrap());
    let huge = "k".repeat(milan::MAX_ITEM_BYTES + 1);
    let err = writer.update_item(a, item(&huge, 1)).unwrap_err();
    assert!(
        matches!(err, milan::Error::Write(WriteError::ItemTooLarge { .. })),
        "{err}"
    );
    writer.commit().unwrap();

    let reader = index.reader().unwrap();
    assert_eq!(reader.item(a).unwrap().unwrap(), item("moved.png", 3));
    assert_eq!(reader.item(c).unwrap().unwrap(), item("c2.png", 4));
    assert_eq!(reader.code(a).unwrap(), code);
    // The content-hash lookup follows the new hash.
    assert!(reader.ids_with_content_hash(&[1; 32]).unwrap().is_empty());
    assert_eq!(reader.ids_with_content_hash(&[3; 32]).unwrap(), [a]);
    drop(reader);
    drop(index);
    assert!(Index::verify_dir(tmp.path()).unwrap().is_ok());
}
