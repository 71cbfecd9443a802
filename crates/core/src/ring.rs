//! A small lock-free ring of prefetched blocks of a schedule's sequence, shared by the
//! callers of [`Schedule::next_atomic`](crate::Schedule::next_atomic).
//!
//! Block `b` holds the server indices of the position counts `b·len .. (b+1)·len`
//! (a count `k` is the position `k % period`; `len` is 1024 for
//! interleaved schedules, 512 for smooth ones), in slot `b % SLOTS`. A slot's tag says
//! which block it holds: `b + 1`, [`EMPTY`] before its first block, [`FILLING`] while a
//! caller writes it. Readers check the tag seqlock-style (tag, entry, acquire fence,
//! tag again); a writer claims the slot with a compare-and-swap to `FILLING`, so one
//! caller at most writes a slot, and only with a newer block than the one it held, so a
//! tag never comes back to a value after another one: a reader that sees the same tag
//! twice read an entry of that block. Everything is atomics: no `unsafe`.

use alloc::boxed::Box;
use core::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

/// `log2` of the block length, interleaved: 1024 positions (a block is generated in
/// about 2–20 µs).
pub(crate) const SHIFT: u32 = 10;
/// The interleaved block length.
#[cfg(test)]
pub(crate) const BLOCK: usize = 1 << SHIFT;
/// `log2` of the block length, smooth: 512 positions. A position costs more to
/// generate (about 5–65 ns): the shorter block bounds the filler's pause.
pub(crate) const SMALL_SHIFT: u32 = 9;
/// Blocks held: the one being read, the next one, and older ones for late readers.
const SLOTS: usize = 4;
const EMPTY: u64 = 0;
const FILLING: u64 = u64::MAX;

pub(crate) struct Ring {
    /// `log2` of the block length.
    shift: u32,
    tags: [AtomicU64; SLOTS],
    entries: Box<[AtomicU32]>,
}

/// The right to write one slot, from [`Ring::claim`].
pub(crate) struct Claim<'a> {
    ring: &'a Ring,
    block: u64,
}

/// Whether a slot whose tag reads `seen` may take `block`: it is not being written and
/// holds an older block.
#[inline]
pub(crate) fn older(seen: u64, block: u64) -> bool {
    seen != FILLING && seen < block + 1
}

impl Ring {
    /// A ring of blocks of `1 << shift` positions.
    pub(crate) fn new(shift: u32) -> Self {
        Self {
            shift,
            tags: [const { AtomicU64::new(EMPTY) }; SLOTS],
            entries: (0..SLOTS << shift).map(|_| AtomicU32::new(0)).collect(),
        }
    }

    /// `log2` of the block length: count `k` is in block `k >> shift`.
    #[inline]
    pub(crate) fn shift(&self) -> u32 {
        self.shift
    }

    /// Whether count `k` is the first of its block.
    #[inline]
    pub(crate) fn starts_block(&self, k: u64) -> bool {
        k & ((1 << self.shift) - 1) == 0
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        size_of_val(&*self.entries)
    }

    #[inline]
    fn slot(block: u64) -> usize {
        (block % SLOTS as u64) as usize
    }

    /// The entry of count `k`, or the tag its slot held instead of its block.
    #[inline]
    pub(crate) fn get(&self, k: u64) -> Result<u32, u64> {
        let block = k >> self.shift;
        let slot = Self::slot(block);
        let tag = &self.tags[slot];
        let want = block + 1;
        let seen = tag.load(Ordering::Acquire);
        if seen == want {
            let i = (slot << self.shift) + (k & ((1 << self.shift) - 1)) as usize;
            let entry = self.entries.get(i).map_or(0, |e| e.load(Ordering::Relaxed));
            // Orders the entry's load before the second tag load: had a writer started
            // over this slot before our entry load saw its write, we see its mark.
            fence(Ordering::Acquire);
            if tag.load(Ordering::Relaxed) == want {
                return Ok(entry);
            }
            return Err(FILLING);
        }
        Err(seen)
    }

    /// The slot of `block`, for writing, unless another caller writes it or it holds
    /// `block` or a newer one.
    pub(crate) fn claim(&self, block: u64) -> Option<Claim<'_>> {
        let tag = &self.tags[Self::slot(block)];
        let seen = tag.load(Ordering::Relaxed);
        if !older(seen, block) {
            return None;
        }
        // Acquire: the previous writer's entries come before ours.
        tag.compare_exchange(seen, FILLING, Ordering::Acquire, Ordering::Relaxed)
            .ok()?;
        // The mark comes before every entry written below (see `get`).
        fence(Ordering::Release);
        Some(Claim { ring: self, block })
    }
}

impl Claim<'_> {
    /// The slot's entries, to write.
    pub(crate) fn entries(&self) -> &[AtomicU32] {
        let slot = Ring::slot(self.block);
        &self.ring.entries[slot << self.ring.shift..(slot + 1) << self.ring.shift]
    }

    /// Publishes the block written into [`Claim::entries`].
    pub(crate) fn publish(self) {
        self.ring.tags[Ring::slot(self.block)].store(self.block + 1, Ordering::Release);
    }
}
