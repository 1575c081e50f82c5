//! [`Index::rehash`]: re-code every item from its stored features with a new hash head.

use std::sync::Arc;

use milan_index_format::CodeLayout;
use ndarray::Array2;

use super::{check_binding, reload_record, Index, Next, MILAN_VERSION};
use crate::error::{Error, ExtractError, Mismatch, Result, WriteError};
use crate::head::HashHead;
use crate::mih::layout::WordLayout;
use crate::mih::View;

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
    /// with [`ExtractError::Mismatch`] for a code-only index, a head made for another extractor or
    /// feature dimension, and when any live item has no kept features (added without them).
    ///
    /// Through a shared handle (`Arc<Index>`): it takes the writer lock like [`Index::writer`]
    /// (waits for another thread's [`Writer`](super::Writer), fails with
    /// [`WriteError::WriterBusy`] while the calling thread holds one). Readers keep searching the
    /// old codes until the commit and see the new ones from their next [`Index::reader`];
    /// [`Index::head`] returns the new head from then on. Images coded with the old head by
    /// another thread meanwhile are refused at their commit ([`ExtractError::Mismatch`]).
    pub fn rehash(&self, head: HashHead) -> Result<RehashReport> {
        if !self.store.is_writable() {
            return Err(Error::Write(WriteError::ReadOnly {
                path: self.dir.clone(),
            }));
        }
        let mismatch = |reason: Mismatch| {
            Error::Extract(ExtractError::Mismatch {
                path: self.dir.clone(),
                reason,
            })
        };
        let Some(model) = &self.model else {
            return Err(mismatch(Mismatch::CodesOnly));
        };
        check_binding(&self.dir, head.bits(), model, &head)?;
        let dim = model.dim;
        // This handle's writers wait for the writer lock; other handles and processes for the
        // writer's turn, which `begin_write` takes.
        let _lock = self.lock_writer(true)?;
        let (mut txn, view, mut meta, generation) = self.begin_write()?;
        let old_bits = meta.bits;
        if head.bits() != old_bits {
            meta.substrings = Index::recommended_substrings(head.bits(), view.live());
        }
        meta.bits = head.bits();
        meta.written_by = MILAN_VERSION.to_string();
        let layout = WordLayout::new(CodeLayout::new(meta.bits, meta.substrings)?);

        let live: Vec<u64> = view.live_ids().collect();
        let mut words = vec![0u64; view.slots() * layout.words];
        let mut changed = 0u64;
        for chunk in live.chunks(CHUNK) {
            let mut matrix = Vec::with_capacity(chunk.len() * dim as usize);
            for &id in chunk {
                let Some(vector) = crate::store::guard(&self.dir, || txn.features(id, dim))? else {
                    let mut missing = 0u64;
                    for &id in &live {
                        missing += u64::from(txn.features(id, dim)?.is_none());
                    }
                    return Err(mismatch(Mismatch::FeaturesNotKept {
                        missing,
                        items: live.len() as u64,
                        example: id,
                    }));
                };
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
            }
        }
        let rebuilt = View::build(Arc::new(layout), words, view.deleted_flags().clone());
        drop(view);
        let record = reload_record(&meta);
        crate::store::guard(&self.dir, || {
            txn.rewrite_codes(&rebuilt)?;
            txn.put_tables(&rebuilt)?;
            txn.put_head(&head)?;
            txn.put_meta(&meta)?;
            txn.put_generation(generation + 1, Some(&record))
        })?;
        let report = RehashReport {
            items: live.len() as u64,
            changed,
            old_bits,
            new_bits: meta.bits,
            substrings: meta.substrings,
        };
        // The head is swapped before the new codes are published, and both under the writer
        // lock, so that no writer of this handle pairs new codes with the old head.
        let old_head = self
            .head
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .replace(Arc::new(head));
        if let Err(err) = self.commit_and_publish(txn, meta, generation + 1, Next::Replace(rebuilt))
        {
            *self.head.write().unwrap_or_else(|e| e.into_inner()) = old_head;
            return Err(err);
        }
        self.head_replaced
            .store(false, std::sync::atomic::Ordering::Relaxed);
        Ok(report)
    }
}
