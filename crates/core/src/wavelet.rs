//! A wavelet matrix over a sequence of `u32` values: the `k`-th smallest value of any
//! prefix in O(log max) time, in `log2(max)` bit levels of the sequence's length (plus
//! a rank directory, one `u32` per 64 bits).
//!
//! The interleaved schedule keeps its servers sorted by weight (heaviest first, then by
//! index) in one: the servers eligible in a round are a prefix of that order, and the
//! `rank`-th of them in pool order is the prefix's `rank`-th smallest index.

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;

#[derive(Clone, Debug)]
pub(crate) struct Wavelet {
    /// Bit levels, most significant first, `words` `u64`s each.
    bits: Box<[u64]>,
    /// Per level, the ones before each word (`words + 1` entries a level).
    ones: Box<[u32]>,
    /// Per level, the zeros of the whole level.
    zeros: Box<[u32]>,
    words: usize,
    levels: u32,
}

impl Wavelet {
    /// The matrix of `values` (fewer than 2^32 of them).
    pub(crate) fn new(values: &[u32]) -> Self {
        let max = values.iter().copied().max().unwrap_or(0);
        let levels = u32::BITS - max.leading_zeros();
        let n = values.len();
        let words = n.div_ceil(64);
        let mut bits = vec![0u64; words * levels as usize];
        let mut ones = vec![0u32; (words + 1) * levels as usize];
        let mut zeros = vec![0u32; levels as usize];
        let mut cur: Vec<u32> = values.to_vec();
        // Each value goes to both, its own side advances; one spare entry each.
        let (mut zero_side, mut one_side) = (vec![0u32; n + 1], vec![0u32; n + 1]);
        for l in 0..levels as usize {
            let bit = levels - 1 - l as u32;
            let level = &mut bits[l * words..(l + 1) * words];
            for (word, chunk) in level.iter_mut().zip(cur.chunks(64)) {
                *word = chunk
                    .iter()
                    .rev()
                    .fold(0, |acc, &v| (acc << 1) | u64::from((v >> bit) & 1));
            }
            let directory = &mut ones[l * (words + 1)..(l + 1) * (words + 1)];
            for w in 0..words {
                directory[w + 1] = directory[w] + level[w].count_ones();
            }
            let z = n - directory[words] as usize;
            zeros[l] = z as u32;
            // Stable partition, zeros first, without a branch (the bits are random).
            let (mut i0, mut i1) = (0usize, 0usize);
            for &v in &cur {
                let b = ((v >> bit) & 1) as usize;
                zero_side[i0] = v;
                one_side[i1] = v;
                i0 += 1 - b;
                i1 += b;
            }
            cur[..z].copy_from_slice(&zero_side[..z]);
            cur[z..].copy_from_slice(&one_side[..n - z]);
        }
        Self {
            bits: bits.into_boxed_slice(),
            ones: ones.into_boxed_slice(),
            zeros: zeros.into_boxed_slice(),
            words,
            levels,
        }
    }

    /// Ones among the first `i` bits of level `l`.
    #[inline]
    fn rank1(&self, l: usize, i: usize) -> usize {
        let (w, b) = (i / 64, i % 64);
        let before = self.ones[l * (self.words + 1) + w] as usize;
        if b == 0 {
            return before;
        }
        let word = self.bits[l * self.words + w];
        before + (word & ((1u64 << b) - 1)).count_ones() as usize
    }

    /// The `k`-th smallest (from 0) of the first `end` values; `k < end`.
    pub(crate) fn kth_smallest(&self, end: usize, mut k: usize) -> u32 {
        let (mut lo, mut hi) = (0usize, end);
        let mut value = 0u32;
        for l in 0..self.levels as usize {
            let (o_lo, o_hi) = (self.rank1(l, lo), self.rank1(l, hi));
            let zeros = (hi - lo) - (o_hi - o_lo);
            if k < zeros {
                (lo, hi) = (lo - o_lo, hi - o_hi);
            } else {
                k -= zeros;
                value |= 1 << (self.levels - 1 - l as u32);
                let z = self.zeros[l] as usize;
                (lo, hi) = (z + o_lo, z + o_hi);
            }
        }
        value
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        size_of_val(&*self.bits) + size_of_val(&*self.ones) + size_of_val(&*self.zeros)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn kth_smallest_of_every_prefix(values in prop::collection::vec(0..300u32, 0..200)) {
            let w = Wavelet::new(&values);
            for end in 1..=values.len() {
                let mut sorted = values[..end].to_vec();
                sorted.sort_unstable();
                for (k, &want) in sorted.iter().enumerate() {
                    prop_assert_eq!(w.kth_smallest(end, k), want);
                }
            }
        }
    }
}
