//! [`Index::rehash`]: re-code every item from its stored features with a new hash head.

use std::sync::Arc;

use bitvec::vec::BitVec;
use milan_index_format::{decode_features, CodeLayout, HEAD_KEY, META_KEY};
use ndarray::Array2;
use redb::ReadableTable;

use super::{check_binding, Index, MILAN_VERSION};
use crate::error::{Error, Result};
use crate::head::HashHead;
use crate::mih::layout::WordLayout;
use crate::mih::View;
use crate::store::{self, Db};

/// Items coded per head run: bounds the memory of the feature matrix.
const CHUNK: usize = 4096;

/// What [`Index::rehash`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RehashReport {
    /// Items re-coded (every live item).
    pub items: u64,
    /// Items whose code changed (all of them when the code length changed).
    pub changed: u64,
    /// Code length before.
    pub old_bits: u32,
    /// Code length after.
    pub new_bits: u32,
    /// Substrings after (kept when the code length is unchanged, else the recommended number).
    pub substrings: u32,
}

impl Index {
    /// Re-codes every live item from its kept features with `head`, replacing the stored head, the
    /// codes and the buckets in one transaction: a failure or a kill leaves the index as it was.
    ///
    /// The head may make codes of another length; the substrings are then chosen afresh. Refused
    /// with [`Error::Mismatch`] for a code-only index, a head made for another extractor or
    /// feature dimension, and when any live item has no kept features (added without them).
    pub fn rehash(&mut self, head: HashHead) -> Result<RehashReport> {
        let Db::Writable(db) = &self.db else {
            return Err(Error::ReadOnly {
                path: self.dir.clone(),
            });
        };
        let mismatch = |detail: String| Error::Mismatch {
            path: self.dir.clone(),
            detail,
        };
        let Some(model) = &self.model else {
            return Err(mismatch(
                "this index stores codes only: it has no features to re-code".into(),
            ));
        };
        check_binding(&self.dir, head.bits(), model, &head)?;
        let dim = model.dim;
        let _guard = self.writer_lock.lock().unwrap_or_else(|e| e.into_inner());
        let view = self.snapshot();
        let mut meta = self.meta();
        let old_bits = meta.bits;
        if head.bits() != old_bits {
            meta.substrings = Index::recommended_substrings(head.bits(), view.live());
        }
        meta.bits = head.bits();
        meta.written_by = MILAN_VERSION.to_string();
        let layout = WordLayout::new(CodeLayout::new(meta.bits, meta.substrings)?);

        let db_path = self.db_path.clone();
        let st = |err: redb::Error| Error::storage(&db_path, err);
        let txn = db.begin_write().map_err(|e| st(e.into()))?;
        let live: Vec<u64> = view.live_ids().collect();
        let mut words = vec![0u64; view.slots() * layout.words];
        let mut changed = 0u64;
        {
            let features = txn.open_table(store::FEATURES).map_err(|e| st(e.into()))?;
            let mut codes = txn.open_table(store::CODES).map_err(|e| st(e.into()))?;
            for chunk in live.chunks(CHUNK) {
                let mut matrix = Vec::with_capacity(chunk.len() * dim as usize);
                for &id in chunk {
                    let stored = features.get(id).map_err(|e| st(e.into()))?;
                    let Some(bytes) = stored else {
                        let missing = live.len() - count_with_features(&features, &live, &st)?;
                        return Err(mismatch(format!(
                            "{missing} of {} items have no kept features (item {id} is one); only items added with IngestOptions::keep_features can be re-coded",
                            live.len()
                        )));
                    };
                    let vector = decode_features(bytes.value(), dim)
                        .map_err(|err| Error::from_decode(&self.dir, err))?;
                    matrix.extend_from_slice(&vector);
                }
                let matrix = Array2::from_shape_vec((chunk.len(), dim as usize), matrix)
                    .expect("one row of `dim` values per item");
                for (&id, code) in chunk.iter().zip(head.codes(matrix.view())?) {
                    let new_words = code.to_words();
                    if old_bits != meta.bits || view.code(id) != Some(new_words.as_slice()) {
                        changed += 1;
                    }
                    let slot = id as usize * layout.words;
                    words[slot..slot + layout.words].copy_from_slice(&new_words);
                    codes
                        .insert(id, code.as_bytes())
                        .map_err(|e| st(e.into()))?;
                }
            }
        }
        let deleted: BitVec<u64> = (0..view.slots() as u64)
            .map(|id| !view.is_live(id))
            .collect();
        let rebuilt = View::build(Arc::new(layout), words, deleted);
        let write = || -> std::result::Result<(), redb::Error> {
            store::rewrite_buckets(&txn, rebuilt.layout(), &rebuilt)?;
            let mut table = txn.open_table(store::META)?;
            table.insert(META_KEY, meta.encode().as_slice())?;
            table.insert(HEAD_KEY, head.as_bytes())?;
            Ok(())
        };
        write().map_err(st)?;
        let report = RehashReport {
            items: live.len() as u64,
            changed,
            old_bits,
            new_bits: meta.bits,
            substrings: meta.substrings,
        };
        self.commit_and_publish(txn, meta, rebuilt)?;
        self.head = Some(head);
        Ok(report)
    }
}

/// How many of `ids` have kept features, for the refusal message.
fn count_with_features(
    features: &redb::Table<u64, &[u8]>,
    ids: &[u64],
    st: &impl Fn(redb::Error) -> Error,
) -> Result<usize> {
    let mut count = 0;
    for &id in ids {
        if features.get(id).map_err(|e| st(e.into()))?.is_some() {
            count += 1;
        }
    }
    Ok(count)
}
