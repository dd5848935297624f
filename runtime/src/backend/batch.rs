//! The rows of one forward pass, from any number of sequences at any positions, and where each
//! sequence keeps its keys and values in the paged KV pool.
//!
//! The KV pool is cut into blocks of [`KV_BLOCK`] positions. A sequence owns a *block table*:
//! position `p` of the sequence lives in slot `table[p / KV_BLOCK] · KV_BLOCK + p % KV_BLOCK`
//! of the pool. Rows come in two kinds, in this order: *prompt rows* (a chunk of a prompt,
//! computed by a backend's many-row kernels) and *decode rows* (one generated token each,
//! computed by its one-row kernels). A row's values depend only on its own sequence's tokens
//! and on its kind, never on the other rows of the pass: that is what makes a request's result
//! the same alone or batched (docs/design.md §16).

use crate::error::{Error, Result};

/// Positions per block of the paged KV pool: the CUDA kernels' (`kernels/cuda/common.cuh`),
/// so that both backends lay out a block table alike.
pub const KV_BLOCK: usize = cocoon_kernels::shapes::KV_BLOCK;

/// Which of a backend's kernels computes a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowKind {
    /// A chunk of a prompt: many rows at once (GEMM on CUDA).
    Prompt,
    /// A generated token: one row (GEMV on CUDA).
    Decode,
}

/// The staged inputs of one pass: per row its token, position and sequence's block table;
/// which rows get logits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    ids: Vec<u32>,
    positions: Vec<u32>,
    /// Per row: the index of its sequence in `table_starts`.
    seq_of_row: Vec<u32>,
    /// Per sequence: where its table starts in `tables`, and how many blocks it has.
    table_starts: Vec<u32>,
    table_lens: Vec<u32>,
    tables: Vec<u32>,
    prompt_rows: usize,
    logit_rows: Vec<u32>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `ids` of one sequence, fed at positions `first..first + ids.len()`, whose keys and
    /// values live in the blocks `table`; `logits` asks for the logits of its last row.
    /// Prompt rows must all come before decode rows. The table must cover the positions.
    pub fn push(
        &mut self,
        table: &[u32],
        first: usize,
        ids: &[u32],
        kind: RowKind,
        logits: Logits,
    ) -> Result<()> {
        if ids.is_empty() {
            return Err(Error::InvalidRequest("no tokens to feed".into()));
        }
        if kind == RowKind::Prompt && self.prompt_rows != self.ids.len() {
            return Err(Error::Backend(
                "batch: prompt rows must come before decode rows".into(),
            ));
        }
        let end = first
            .checked_add(ids.len())
            .filter(|e| *e <= table.len() * KV_BLOCK && *e <= u32::MAX as usize)
            .ok_or_else(|| {
                Error::Backend(format!(
                    "batch: positions {first}..+{} are not covered by a table of {} blocks",
                    ids.len(),
                    table.len()
                ))
            })?;
        let seq = self.table_starts.len() as u32;
        self.table_starts.push(self.tables.len() as u32);
        self.table_lens.push(table.len() as u32);
        self.tables.extend_from_slice(table);
        let row0 = self.ids.len();
        self.ids.extend_from_slice(ids);
        self.positions.extend((first..end).map(|p| p as u32));
        self.seq_of_row.extend(std::iter::repeat_n(seq, ids.len()));
        if kind == RowKind::Prompt {
            self.prompt_rows = self.ids.len();
        }
        match logits {
            Logits::None => {}
            Logits::Last => self.logit_rows.push((self.ids.len() - 1) as u32),
            Logits::All => self
                .logit_rows
                .extend((row0..self.ids.len()).map(|r| r as u32)),
        }
        Ok(())
    }

    /// Rows of the pass.
    pub fn rows(&self) -> usize {
        self.ids.len()
    }

    /// Whether the batch has no rows.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Token ids, one a row.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// Positions, one a row.
    pub fn positions(&self) -> &[u32] {
        &self.positions
    }

    /// The first rows, computed as prompt rows.
    pub fn prompt_rows(&self) -> usize {
        self.prompt_rows
    }

    /// The rows whose logits the pass returns, in the order they are returned.
    pub fn logit_rows(&self) -> &[u32] {
        &self.logit_rows
    }

    /// The block table of row `r`'s sequence.
    pub fn table_of(&self, r: usize) -> &[u32] {
        let s = self.seq_of_row[r] as usize;
        let start = self.table_starts[s] as usize;
        &self.tables[start..start + self.table_lens[s] as usize]
    }

    /// Per row, the index of its sequence; per sequence, the start and length of its table in
    /// [`Batch::tables`] (what a device backend uploads).
    pub fn table_index(&self) -> (&[u32], &[u32], &[u32]) {
        (&self.seq_of_row, &self.table_starts, &self.table_lens)
    }

    /// Every sequence's table, one after the other.
    pub fn tables(&self) -> &[u32] {
        &self.tables
    }

    /// The pool slot that row `r`'s key and value go to.
    pub fn slot_of(&self, r: usize) -> usize {
        let p = self.positions[r] as usize;
        self.table_of(r)[p / KV_BLOCK] as usize * KV_BLOCK + p % KV_BLOCK
    }

    /// The pool slot of position `p` of row `r`'s sequence (`p` ≤ the row's position).
    pub fn slot_at(&self, r: usize, p: usize) -> usize {
        self.table_of(r)[p / KV_BLOCK] as usize * KV_BLOCK + p % KV_BLOCK
    }

    /// The largest block any table names, if any.
    pub fn max_block(&self) -> Option<u32> {
        self.tables.iter().copied().max()
    }
}

/// Which rows of a sequence's chunk get logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// None (a prompt chunk that does not end the prompt).
    None,
    /// The last row's.
    Last,
    /// Every row's (replay).
    All,
}

/// Blocks needed to hold `positions` positions.
pub fn blocks_for(positions: usize) -> usize {
    positions.div_ceil(KV_BLOCK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_slots_and_logits_follow_the_tables() {
        const B: usize = KV_BLOCK;
        let mut b = Batch::new();
        // Three prompt rows from the last two positions of block 7 into block 3.
        let start = B as u32 - 2;
        b.push(&[7, 3], B - 2, &[1, 2, 3], RowKind::Prompt, Logits::Last)
            .unwrap();
        b.push(&[5], 4, &[9], RowKind::Decode, Logits::Last)
            .unwrap();
        assert_eq!(b.rows(), 4);
        assert_eq!(b.prompt_rows(), 3);
        assert_eq!(b.positions(), &[start, start + 1, start + 2, 4]);
        assert_eq!(
            (0..4).map(|r| b.slot_of(r)).collect::<Vec<_>>(),
            [7 * B + B - 2, 7 * B + B - 1, 3 * B, 5 * B + 4]
        );
        assert_eq!(b.slot_at(2, 0), 7 * B);
        assert_eq!(b.logit_rows(), &[2, 3]);
        assert_eq!(b.max_block(), Some(7));
        // Prompt rows after a decode row, positions past the table, nothing to feed.
        assert!(b
            .push(&[1], 0, &[1], RowKind::Prompt, Logits::None)
            .is_err());
        assert!(b
            .push(&[1], B - 1, &[1, 2], RowKind::Decode, Logits::None)
            .is_err());
        assert!(b.push(&[1], 0, &[], RowKind::Decode, Logits::None).is_err());
        assert_eq!(blocks_for(0), 0);
        assert_eq!(blocks_for(B), 1);
        assert_eq!(blocks_for(B + 1), 2);
    }
}
