//! Which blocks of the KV pool are free, and how many are promised.
//!
//! A request is admitted only when the pool can hold everything it may need (prompt plus
//! `max_tokens`): that many blocks are *reserved* for it, so it can never run out half-way and
//! no request is ever preempted. The blocks themselves are *taken* one at a time as its
//! positions are written, and go back at its end; a backend that gives blocks memory lazily
//! (the CPU) then holds memory for the tokens actually held, not for the reservations.

/// Free blocks and reservations of one pool.
#[derive(Debug)]
pub struct BlockAllocator {
    free: Vec<u32>,
    total: usize,
    reserved: usize,
}

impl BlockAllocator {
    /// A pool of `total` free blocks.
    pub fn new(total: usize) -> Self {
        BlockAllocator {
            // Taken from the end: block 0 first.
            free: (0..total as u32).rev().collect(),
            total,
            reserved: 0,
        }
    }

    /// Blocks of the pool.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Blocks taken (holding positions) now.
    pub fn taken(&self) -> usize {
        self.total - self.free.len()
    }

    /// Blocks reserved and not yet taken.
    pub fn reserved(&self) -> usize {
        self.reserved
    }

    /// Whether `n` more blocks can be promised.
    pub fn can_reserve(&self, n: usize) -> bool {
        self.reserved + n <= self.free.len()
    }

    /// Promises `n` blocks; false (and nothing promised) when the pool cannot.
    pub fn reserve(&mut self, n: usize) -> bool {
        if !self.can_reserve(n) {
            return false;
        }
        self.reserved += n;
        true
    }

    /// Takes one of the blocks promised earlier.
    pub fn take(&mut self) -> Option<u32> {
        if self.reserved == 0 {
            return None;
        }
        let b = self.free.pop()?;
        self.reserved -= 1;
        Some(b)
    }

    /// Gives back `blocks` (taken) and `unused` promised blocks that were never taken.
    pub fn give_back(&mut self, blocks: &[u32], unused: usize) {
        self.free.extend(blocks.iter().rev());
        self.reserved = self.reserved.saturating_sub(unused);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_bound_what_can_be_taken() {
        let mut a = BlockAllocator::new(4);
        assert!(a.reserve(3));
        assert!(!a.reserve(2), "4 blocks cannot promise 5");
        assert_eq!(a.take(), Some(0));
        assert_eq!(a.take(), Some(1));
        assert_eq!((a.taken(), a.reserved()), (2, 1));
        assert!(a.reserve(1));
        assert!(!a.reserve(1));
        a.give_back(&[0, 1], 1);
        assert_eq!((a.taken(), a.reserved()), (0, 1));
        assert!(a.reserve(3));
        let got: Vec<_> = (0..4).filter_map(|_| a.take()).collect();
        assert_eq!(got.len(), 4);
        assert_eq!(a.take(), None, "nothing promised, nothing taken");
    }
}
