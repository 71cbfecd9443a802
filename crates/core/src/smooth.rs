//! The smooth policy: hierarchical apportionment over a weight tree.
//!
//! The active servers (weight > 0, divided by the gcd) are the leaves of a binary tree,
//! except that servers of equal weight share one leaf, a group (see below); an
//! internal node of total weight `T` with children of weights `A >= B` owns some
//! positions of the sequence and hands them to its children by a centred Bresenham
//! rule: of the node's first `m` positions, the heavy child gets
//! `floor((m·A + floor(T/2)) / T)`, the light child the rest. The root owns every
//! position, so position `k` is walked down from the root: at each node one fixed-point
//! multiplication (a division in `u128` for periods of 2^32 picks and more) gives the
//! child and the position's rank among that child's positions. Over a period
//! (`m` from 0 to `T`) the heavy child gets exactly `A`: quotas are exact at every node.
//!
//! Lag. Write `D_v(k) = c_v(k) - k·W_v/W` for the count of node `v` after `k` picks.
//! The rule gives `D_child = (W_child/W_v)·D_v ± e` with `|e| <= 1/2`, and `D_root = 0`,
//! so a leaf's lag is at most `1/2 · Σ w/W_v` over the nodes `v` of its path below the
//! root (the leaf included). [`Tree::lag_bound`] is half that sum for the worst leaf, a
//! proven bound for the whole sequence of the schedule.
//!
//! The tree: Huffman's (merge the two lightest) keeps the sums small (weights at least
//! grow like Fibonacci numbers going up), except when a server is paired with a much
//! lighter sibling: then its parent weighs about what it weighs and the sum gains
//! almost 1 (with Fibonacci-like weights a plain Huffman tree allows sums up to about
//! 3.36, a bound of 1.68). So a node lighter than half of the next lightest is set
//! aside instead of merged; the set-aside nodes are built into a tree of their own the
//! same way, which becomes the sibling of the main tree (recursively). Why the sum stays below 3:
//!
//! - Every merge in a main tree pairs weights within a factor 2, so each step up a path
//!   multiplies the weight by at least 1.5: a leaf at depth `d` of a main tree sums at
//!   most `1 + 2/3 + .. + (2/3)^d = 3 - 2·(2/3)^d` up to the main tree's top.
//! - The lightest item only grows (merged nodes are heavier than what they merge), so
//!   the nodes set aside in one round more than double one after the other and sum to
//!   less than twice the last one, itself less than half of an item that ends up in the
//!   main tree: all set-aside nodes together weigh less than the main tree. Going up the
//!   chain `main_k + (main_k+1 + (..))`, the weight therefore more than doubles at each
//!   step, adding less than `2·(2/3)^d` for a leaf of `main_k` at depth `d`.
//!
//! Groups. When two servers or more share a weight `w`, the `k` servers of each weight
//! form one leaf of weight `k·w` whose positions they take in turn, in pool order: the
//! group's `m`-th position goes to its member `m % k`. Equal weights thus take turns in
//! pool order (`a b c a b c`) in any pool below 2^30 servers (larger ones are not
//! grouped: the leaf ids need the bit), quotas stay exact (each member gets `w` of
//! the group's `k·w` positions a period), and the tree has one leaf per distinct
//! weight, so it is smaller and shallower (a pool of 100k servers with weights
//! 1..=4096 has at most 4096 leaves). Lag: member `j`'s count after `c` of the group's
//! positions is `c/k + θ` with `-j/k <= θ <= (k-1-j)/k`, and its share of the first
//! `p` picks is `(p·k·w/W)/k`, so its lag is `D_group/k + θ`: at most `B/k + (k-1)/k`
//! for a group whose leaf bound is `B`. As `B < 3/2`, that is below `1 + 1/(2k)`, at
//! most 3/2. [`Tree::lag_bound`] is the largest of these bounds over the leaves.

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::vec;
use alloc::vec::Vec;
use core::cmp::Reverse;

#[cfg(target_has_atomic = "64")]
/// A node with at most this many positions of a block being generated walks each of
/// them (see [`Tree::fill`]) instead of merging its children's.
const WALK_MAX: usize = 8;

/// Marks a child id as a leaf: the low bits are the server's index in the pool.
const LEAF: u32 = 1 << 31;

/// Servers beyond this index cannot be leaves (the top bit marks leaves).
pub(crate) const MAX_SERVERS: usize = LEAF as usize;

/// Marks a leaf as a group of servers of equal weight, the low bits its index in
/// [`Tree::groups`] (other leaves are servers). Pools with a server at this index or
/// beyond are not grouped.
const GROUP: u32 = 1 << 30;

/// An internal node: it hands `first_w` of every `total` of its positions to `first`.
#[derive(Clone, Copy, Debug)]
struct Node {
    total: u64,
    first_w: u64,
    first: u32,
    second: u32,
}

/// A node of a tree whose totals are all below 2^32, in fixed point: with
/// `V = m·f + h` (128 bits), `V >> 64` is `floor((m·A + floor(T/2)) / T)` exactly and
/// the low 64 bits reach `g` exactly when position `m` goes to the first child. One
/// multiplication a level, no division (see [`Fast::new`]).
#[derive(Clone, Copy, Debug)]
struct Fast {
    /// `ceil(A·2^64 / T)`.
    f: u64,
    /// `ceil(floor(T/2)·2^64 / T)`.
    h: u64,
    /// `ceil((T - A)·2^64 / T)`.
    g: u64,
    first: u32,
    second: u32,
}

impl Fast {
    /// For `T < 2^32`: the exact value `2^64·(m·A + h)/T` is `2^64·(q + j/T)` with
    /// `j < T`, and `V` exceeds it by less than `m + 1 <= T`, which is below the gap
    /// `2^64/T` between multiples of `2^64/T`: `V` has the same high word `q`, and its
    /// low word is at least `g` exactly when `j >= T - A`.
    fn new(node: &Node) -> Self {
        let (t, a) = (node.total, node.first_w);
        // `floor(a·2^64 / t)` and whether it is exact, by two 32-bit steps of long
        // division (a < t < 2^32): far cheaper than a `u128` division.
        let (hi, r) = ((a << 32) / t, (a << 32) % t);
        let (lo, r) = ((r << 32) / t, (r << 32) % t);
        let floor = (hi << 32) | lo;
        let f = floor + u64::from(r != 0);
        // (t - a)·2^64 / t = 2^64 - a·2^64 / t; floor >= 2^63 as a >= t/2.
        let g = 0u64.wrapping_sub(floor);
        // floor(t/2)·2^64 / t is 2^63 for an even t, 2^63 - 2^63/t for an odd one.
        let h = if t % 2 == 0 {
            1 << 63
        } else {
            (1u64 << 63) - (1u64 << 63) / t
        };
        Self {
            f,
            h,
            g,
            first: node.first,
            second: node.second,
        }
    }
}

/// The apportionment tree of one pool state.
#[derive(Clone, Debug)]
pub(crate) struct Tree {
    /// Internal nodes (empty once converted to `fast`), children referring to other
    /// nodes or to leaves.
    nodes: Box<[Node]>,
    /// The same nodes in fixed point, when the tree is `narrow` (else empty).
    fast: Box<[Fast]>,
    root: u32,
    /// Every node total is below 2^32, so `m·A + T/2` fits in a `u64`.
    narrow: bool,
    /// The lag bound: the worst server's (see the module docs).
    bound: f64,
    /// The servers of each weight two servers or more share: leaf `GROUP | g` is the
    /// group `groups[g]`, whose members take its positions in turn.
    groups: Box<[Group]>,
    /// The groups' servers, group after group, each in pool order.
    members: Box<[u32]>,
}

/// The servers of one weight: `members[start..start + len]`. The group's `m`-th
/// position goes to its member `m % len`.
#[derive(Clone, Copy, Debug)]
struct Group {
    start: u32,
    len: u32,
    /// `u64::MAX / len`, for [`rem`].
    magic: u64,
}

#[cfg(target_has_atomic = "64")]
/// Trees of at most this many nodes (128 KiB) walk a block's deep positions a level at
/// a time ([`Tree::walk_levels`]), larger ones eight at a time ([`Tree::walk_lockstep`]):
/// measured, each is the faster on its side.
const LEVEL_WALKS_MAX: usize = 4096;

#[cfg(target_has_atomic = "64")]
/// The most walks of one block ([`Tree::fill`]): its length.
const WALKS: usize = 1 << crate::ring::SMALL_SHIFT;

#[cfg(target_has_atomic = "64")]
/// The walks a block leaves to [`Tree::walk_levels`] or [`Tree::walk_lockstep`], on the stack: `(node, rank)`
/// pairs, then `(leaf, rank)` once walked.
struct Walks {
    node: [u32; WALKS],
    rank: [u64; WALKS],
    len: usize,
}

#[cfg(target_has_atomic = "64")]
impl Walks {
    fn new() -> Self {
        Self {
            node: [0; WALKS],
            rank: [0; WALKS],
            len: 0,
        }
    }

    /// Adds a walk, and returns its index (`None` when full).
    fn push(&mut self, node: u32, rank: u64) -> Option<usize> {
        let i = self.len;
        *self.node.get_mut(i)? = node;
        *self.rank.get_mut(i)? = rank;
        self.len += 1;
        Some(i)
    }
}

/// A node or leaf while building: weight, the smallest server index below (the tie
/// break), and its id.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Item {
    weight: u64,
    min_index: u32,
    id: u32,
}

impl Tree {
    /// Builds the tree over `active`: `(server index, scaled weight)`, weights > 0,
    /// indices below [`MAX_SERVERS`], at least one entry, sum below 2^64.
    pub(crate) fn new(active: &[(u32, u64)]) -> Self {
        // Servers of equal weight form one leaf (a group), its weight their sum.
        let mut by_weight: Vec<(u64, u32)> = active.iter().map(|&(i, w)| (w, i)).collect();
        by_weight.sort_unstable();
        let grouped = by_weight.iter().all(|&(_, i)| i < GROUP);
        let mut groups: Vec<Group> = Vec::new();
        let mut members: Vec<u32> = Vec::new();
        let mut items: Vec<Item> = Vec::with_capacity(active.len());
        if grouped {
            for servers in by_weight.chunk_by(|a, b| a.0 == b.0) {
                let ((w, first), len) = (servers[0], servers.len() as u64);
                if len == 1 {
                    items.push(Item {
                        weight: w,
                        min_index: first,
                        id: first | LEAF,
                    });
                    continue;
                }
                groups.push(Group {
                    start: members.len() as u32,
                    len: len as u32,
                    magic: u64::MAX / len,
                });
                members.extend(servers.iter().map(|s| s.1));
                items.push(Item {
                    // At most the sum of all weights: below 2^64.
                    weight: w * len,
                    min_index: first,
                    id: (groups.len() - 1) as u32 | GROUP | LEAF,
                });
            }
        } else {
            items.extend(active.iter().map(|&(i, w)| Item {
                weight: w,
                min_index: i,
                id: i | LEAF,
            }));
        }
        let mut nodes: Vec<Node> = Vec::with_capacity(items.len().saturating_sub(1));
        // The main trees of successive rounds, lightest last.
        let mut mains: Vec<Item> = Vec::new();
        // Two-queue Huffman: the sorted leaves, and the merged nodes, which come out in
        // nondecreasing weight order; the lightest head is the next item.
        let mut merged: VecDeque<Item> = VecDeque::new();
        while !items.is_empty() {
            items.sort_unstable();
            let mut leaves: VecDeque<Item> = items.drain(..).collect();
            merged.clear();
            let pop = |leaves: &mut VecDeque<Item>, merged: &mut VecDeque<Item>| match (
                leaves.front(),
                merged.front(),
            ) {
                (Some(l), Some(m)) if m < l => merged.pop_front(),
                (Some(_), _) => leaves.pop_front(),
                (None, _) => merged.pop_front(),
            };
            while let Some(x) = pop(&mut leaves, &mut merged) {
                let y = match (leaves.front(), merged.front()) {
                    (Some(l), Some(m)) => *l.min(m),
                    (Some(l), None) => *l,
                    (None, Some(m)) => *m,
                    (None, None) => {
                        mains.push(x);
                        break;
                    }
                };
                // `x` is much lighter than anything left: set it aside (see module docs).
                if 2 * x.weight < y.weight {
                    items.push(x);
                    continue;
                }
                pop(&mut leaves, &mut merged);
                merged.push_back(merge(&mut nodes, x, y));
            }
        }
        // Each round's set-aside nodes form the next round: hang them from the right.
        let mut top = mains.pop().unwrap_or(Item {
            weight: 1,
            min_index: 0,
            id: LEAF,
        });
        while let Some(main) = mains.pop() {
            top = merge(&mut nodes, main, top);
        }
        let narrow = top.weight < 1 << 32;
        let mut tree = Self {
            nodes: nodes.into_boxed_slice(),
            fast: Box::default(),
            root: top.id,
            narrow,
            bound: 0.0,
            groups: groups.into_boxed_slice(),
            members: members.into_boxed_slice(),
        };
        tree.bound = tree.worst_bound();
        tree.preorder();
        if tree.narrow {
            tree.fast = tree.nodes.iter().map(Fast::new).collect();
            tree.nodes = Box::default();
        }
        tree
    }

    /// Renumbers the nodes in depth-first order, root first: a node's first (heavier,
    /// more often taken) child comes right after it in memory.
    fn preorder(&mut self) {
        if self.root & LEAF != 0 {
            return;
        }
        let mut order: Vec<Node> = Vec::with_capacity(self.nodes.len());
        let mut new_id = vec![0u32; self.nodes.len()];
        let mut stack = vec![self.root];
        while let Some(v) = stack.pop() {
            let Some(&node) = self.nodes.get(v as usize) else {
                continue;
            };
            new_id[v as usize] = order.len() as u32;
            order.push(node);
            for child in [node.second, node.first] {
                if child & LEAF == 0 {
                    stack.push(child);
                }
            }
        }
        for node in &mut order {
            for child in [&mut node.first, &mut node.second] {
                if *child & LEAF == 0 {
                    *child = new_id[*child as usize];
                }
            }
        }
        self.nodes = order.into_boxed_slice();
        self.root = 0;
    }

    /// The proven bound on every server's lag: in every prefix of `k` picks a server's
    /// count is within this of `k·w/W`.
    pub(crate) fn lag_bound(&self) -> f64 {
        self.bound
    }

    /// Whether every node total is below 2^32 (the fixed-point walk).
    pub(crate) fn is_narrow(&self) -> bool {
        self.narrow
    }

    /// Heap bytes held by the tree.
    pub(crate) fn heap_bytes(&self) -> usize {
        size_of_val(&*self.nodes)
            + size_of_val(&*self.fast)
            + size_of_val(&*self.groups)
            + size_of_val(&*self.members)
    }

    /// The group leaf `leaf` is, if it is one.
    #[inline(always)]
    fn group(&self, leaf: u32) -> Option<&Group> {
        if leaf & GROUP == 0 {
            return None;
        }
        self.groups.get((leaf & !(LEAF | GROUP)) as usize)
    }

    /// The server of the `m`-th position of leaf `leaf` (a server, or a group whose
    /// members take turns).
    #[inline(always)]
    fn server(&self, leaf: u32, m: u64) -> u32 {
        let Some(g) = self.group(leaf) else {
            return leaf & !LEAF;
        };
        let j = rem(m, u64::from(g.len), g.magic);
        self.members
            .get(g.start as usize + j as usize)
            .copied()
            .unwrap_or(0)
    }

    #[cfg(target_has_atomic = "64")]
    /// `out` gets the servers of positions `r0..r0 + out.len()` of leaf `leaf`.
    fn fill_leaf(&self, leaf: u32, r0: u64, out: &mut [u32]) {
        let Some(&g) = self.group(leaf) else {
            return out.fill(leaf & !LEAF);
        };
        let start = g.start as usize;
        let Some(turns) = self.members.get(start..start + g.len as usize) else {
            return;
        };
        let mut j = rem(r0, u64::from(g.len), g.magic) as usize;
        for o in out.iter_mut() {
            *o = turns[j];
            j += 1;
            if j == turns.len() {
                j = 0;
            }
        }
    }

    /// The server index at position `pos` (below the period).
    #[inline]
    pub(crate) fn at(&self, pos: u64) -> usize {
        if self.narrow {
            self.walk_fast(pos)
        } else {
            self.walk_wide(pos)
        }
    }

    #[inline(always)]
    fn walk_fast(&self, pos: u64) -> usize {
        self.walk_from(self.root, pos)
    }

    /// The server of the `m`-th position of node `id` (narrow trees).
    #[inline(always)]
    fn walk_from(&self, mut id: u32, mut m: u64) -> usize {
        while id & LEAF == 0 {
            let Some(node) = self.fast.get(id as usize) else {
                break;
            };
            let v = u128::from(m) * u128::from(node.f) + u128::from(node.h);
            let (q, low) = ((v >> 64) as u64, v as u64);
            // Without a branch: which child is as unpredictable as a coin.
            let first = u64::from(low >= node.g).wrapping_neg();
            m = (q & first) | ((m - q) & !first);
            id = (node.first & first as u32) | (node.second & !(first as u32));
        }
        self.server(id, m) as usize
    }

    #[cfg(target_has_atomic = "64")]
    /// Writes the servers at positions `pos..pos + out.len()` (all below the period)
    /// into `out`; `tmp` is scratch space at least as long.
    ///
    /// A node's positions with ranks `r0..r1` give each child a contiguous range of its
    /// own ranks (by the same floor formula), so the block is generated top-down and
    /// merged bottom-up by each node's pattern: a node with `len` of the block's
    /// positions costs O(len) additions and copies (no multiplication), and a node with
    /// at most [`WALK_MAX`] positions leaves them to [`Tree::walk_levels`], which walks
    /// every such position of the block down to its leaf, all of them a level at a
    /// time (eight at a time in larger trees, [`Tree::walk_lockstep`]). About `depth` cheap steps per position instead of `depth` dependent
    /// multiplications and loads; no heap allocation.
    pub(crate) fn fill(&self, pos: u64, out: &mut [u32], tmp: &mut [u32]) {
        if self.narrow {
            let mut walks = Walks::new();
            self.generate(self.root, pos, out, tmp, &mut walks);
            if walks.len == 0 {
                return;
            }
            if self.fast.len() <= LEVEL_WALKS_MAX {
                self.walk_levels(&mut walks);
            } else {
                self.walk_lockstep(&mut walks);
            }
            // The merges moved the placeholders to their positions: resolve them.
            for o in out.iter_mut() {
                if *o & LEAF != 0 {
                    let i = (*o & !LEAF) as usize;
                    *o = match (walks.node.get(i), walks.rank.get(i)) {
                        (Some(&leaf), Some(&m)) => self.server(leaf, m),
                        _ => 0,
                    };
                }
            }
        } else {
            for (k, o) in (pos..).zip(out.iter_mut()) {
                *o = self.walk_wide(k) as u32;
            }
        }
    }

    #[cfg(target_has_atomic = "64")]
    /// [`Tree::fill`] from position `pos` on, wrapping at the `period`.
    pub(crate) fn fill_wrapping(&self, pos: u64, period: u64, out: &mut [u32], tmp: &mut [u32]) {
        let (mut pos, mut out) = (pos, out);
        while !out.is_empty() {
            let len = (period - pos).min(out.len() as u64) as usize;
            let (head, rest) = out.split_at_mut(len);
            self.fill(pos, head, tmp);
            (out, pos) = (rest, 0);
        }
    }

    #[cfg(target_has_atomic = "64")]
    /// `out` gets the servers of ranks `r0..r0 + out.len()` of node `id` (narrow
    /// trees); `tmp` is scratch (at least as long), the children's outputs before the
    /// merge. The children use `out` as their scratch in turn.
    ///
    /// A node with one of the positions leaves a placeholder (`LEAF | i`) and the
    /// walk `i` from it in `walks` (`(node, rank)`), done later several at a time.
    fn generate(&self, id: u32, r0: u64, out: &mut [u32], tmp: &mut [u32], walks: &mut Walks) {
        let len = out.len();
        if id & LEAF != 0 {
            self.fill_leaf(id, r0, out);
            return;
        }
        if len <= WALK_MAX {
            for (r, o) in (r0..).zip(out.iter_mut()) {
                *o = match walks.push(id, r) {
                    Some(i) => LEAF | i as u32,
                    // More walks than a block has positions: walk this one now.
                    None => self.walk_from(id, r) as u32,
                };
            }
            return;
        }
        let Some(&node) = self.fast.get(id as usize) else {
            return;
        };
        let v0 = u128::from(r0) * u128::from(node.f) + u128::from(node.h);
        let v1 = u128::from(r0 + len as u64) * u128::from(node.f) + u128::from(node.h);
        let q0 = (v0 >> 64) as u64;
        let a = (((v1 >> 64) as u64) - q0) as usize;
        let tmp = &mut tmp[..len];
        {
            let (t1, t2) = tmp.split_at_mut(a);
            let (o1, o2) = out.split_at_mut(a);
            self.generate(node.first, q0, t1, o1, walks);
            self.generate(node.second, r0 - q0, t2, o2, walks);
        }
        // Rank m goes to the first child when the low word of m·f + h reaches g.
        let mut low = v0 as u64;
        let (mut i, mut j) = (0usize, a);
        for o in out.iter_mut() {
            let first = low >= node.g;
            low = low.wrapping_add(node.f);
            *o = tmp[if first { i } else { j }];
            i += usize::from(first);
            j += usize::from(!first);
        }
    }

    #[cfg(target_has_atomic = "64")]
    /// Walks every `(node, rank)` of `walks` down to its leaf (narrow trees of at most
    /// [`LEVEL_WALKS_MAX`] nodes): leaves each walk's leaf and its rank there in its
    /// place. All the walks still under way take one step a round, with no branch: a
    /// walk that reaches its leaf writes it and drops out of the next round (the list
    /// is compacted in place). The steps of one round are independent, so their loads
    /// and multiplications overlap.
    fn walk_levels(&self, walks: &mut Walks) {
        let Some(&dummy) = self.fast.first() else {
            return;
        };
        let mut ids = [0u32; WALKS];
        let mut ms = [0u64; WALKS];
        let mut slots = [0u16; WALKS];
        let mut live = walks.len.min(WALKS);
        ids[..live].copy_from_slice(&walks.node[..live]);
        ms[..live].copy_from_slice(&walks.rank[..live]);
        for (k, s) in slots[..live].iter_mut().enumerate() {
            *s = k as u16;
        }
        while live > 0 {
            let mut k = 0;
            for i in 0..live.min(WALKS) {
                let (id, m, slot) = (ids[i], ms[i], slots[i]);
                let node = self.fast.get(id as usize).unwrap_or(&dummy);
                let v = u128::from(m) * u128::from(node.f) + u128::from(node.h);
                let (q, low) = ((v >> 64) as u64, v as u64);
                let first = u64::from(low >= node.g).wrapping_neg();
                let m = (q & first) | ((m - q) & !first);
                let id = (node.first & first as u32) | (node.second & !(first as u32));
                // Written every round, the last time at the leaf.
                walks.node[slot as usize % WALKS] = id;
                walks.rank[slot as usize % WALKS] = m;
                ids[k] = id;
                ms[k] = m;
                slots[k] = slot;
                k += usize::from(id & LEAF == 0);
            }
            live = k;
        }
    }

    #[cfg(target_has_atomic = "64")]
    /// [`Tree::walk_levels`] for larger trees: eight walks at a time in lockstep, each
    /// eight to its leaf before the next eight (walks that end early idle), so the
    /// nodes a walk reads stay in the L1 cache for the next level (a node's first child
    /// follows it in memory), which a round over all the walks of the block does not
    /// keep once the tree outgrows the caches.
    fn walk_lockstep(&self, walks: &mut Walks) {
        const LANES: usize = 8;
        let Some(&dummy) = self.fast.first() else {
            return;
        };
        let n = walks.len.min(WALKS);
        let mut start = 0;
        while start < n {
            let end = (start + LANES).min(n);
            let mut ids = [LEAF; LANES];
            let mut ms = [0u64; LANES];
            for k in start..end {
                (ids[k - start], ms[k - start]) = (walks.node[k], walks.rank[k]);
            }
            loop {
                let mut live = false;
                for (id, m) in ids.iter_mut().zip(ms.iter_mut()) {
                    let inner = *id & LEAF == 0;
                    live |= inner;
                    // A finished walk reads the root and keeps its state.
                    let node = if inner {
                        self.fast.get(*id as usize).copied().unwrap_or(dummy)
                    } else {
                        dummy
                    };
                    let v = u128::from(*m) * u128::from(node.f) + u128::from(node.h);
                    let (q, low) = ((v >> 64) as u64, v as u64);
                    let first = low >= node.g;
                    let (next_id, next_m) = if first {
                        (node.first, q)
                    } else {
                        (node.second, m.wrapping_sub(q))
                    };
                    if inner {
                        (*id, *m) = (next_id, next_m);
                    }
                }
                if !live {
                    break;
                }
            }
            for k in start..end {
                (walks.node[k], walks.rank[k]) = (ids[k - start], ms[k - start]);
            }
            start = end;
        }
    }

    /// Periods of 2^32 picks and more: `u128` divisions.
    fn walk_wide(&self, mut m: u64) -> usize {
        let mut id = self.root;
        while id & LEAF == 0 {
            let Some(node) = self.nodes.get(id as usize) else {
                break;
            };
            let x = u128::from(m) * u128::from(node.first_w) + u128::from(node.total / 2);
            let t = u128::from(node.total);
            let (q, r) = ((x / t) as u64, (x % t) as u64);
            // The floor grows between m and m + 1: position m goes to the first child.
            if r >= node.total - node.first_w {
                id = node.first;
                m = q;
            } else {
                id = node.second;
                m -= q;
            }
        }
        self.server(id, m) as usize
    }

    /// The count of every server among the positions `0..pos` (`pos` up to the
    /// period), added into `counts` (indexed by server index).
    #[cfg(test)]
    pub(crate) fn counts_before(&self, pos: u64, counts: &mut [u64]) {
        let mut stack = alloc::vec![(self.root, pos)];
        while let Some((id, m)) = stack.pop() {
            if id & LEAF != 0 {
                match self.group(id) {
                    Some(g) => {
                        let k = u64::from(g.len);
                        for j in 0..g.len {
                            let i = self.members[(g.start + j) as usize] as usize;
                            counts[i] += m / k + u64::from(u64::from(j) < m % k);
                        }
                    }
                    _ => counts[(id & !LEAF) as usize] += m,
                }
                continue;
            }
            let (q, first, second) = match self.fast.get(id as usize) {
                Some(f) => {
                    let v = u128::from(m) * u128::from(f.f) + u128::from(f.h);
                    ((v >> 64) as u64, f.first, f.second)
                }
                None => {
                    let node = &self.nodes[id as usize];
                    let x = u128::from(m) * u128::from(node.first_w) + u128::from(node.total / 2);
                    ((x / u128::from(node.total)) as u64, node.first, node.second)
                }
            };
            stack.push((first, q));
            stack.push((second, m - q));
        }
    }

    /// The lag bound of the worst server (see the module docs): half of `Σ w / W_v`
    /// over its leaf's path below the root (the leaf's own term, 1, included), and for
    /// a group of `k` servers that over `k`, plus `(k - 1) / k`.
    fn worst_bound(&self) -> f64 {
        let bound = |leaf: u32, sum: f64| {
            let k = self.group(leaf).map_or(1.0, |g| f64::from(g.len));
            sum / 2.0 / k + (k - 1.0) / k
        };
        if self.root & LEAF != 0 {
            return bound(self.root, 1.0);
        }
        // Per node: the weights of its path from the root, as Σ 1/W_v (root excluded).
        let mut worst = 0.0f64;
        let root = &self.nodes[self.root as usize];
        let mut stack: Vec<(u32, f64)> = vec![(root.first, 0.0), (root.second, 0.0)];
        while let Some((id, inv_sum)) = stack.pop() {
            if id & LEAF != 0 {
                // A child of the root: its own term only.
                worst = worst.max(bound(id, 1.0));
                continue;
            }
            let node = &self.nodes[id as usize];
            let inv = inv_sum + 1.0 / node.total as f64;
            for (child, w) in [
                (node.first, node.first_w),
                (node.second, node.total - node.first_w),
            ] {
                if child & LEAF != 0 {
                    worst = worst.max(bound(child, 1.0 + w as f64 * inv));
                } else {
                    stack.push((child, inv));
                }
            }
        }
        worst
    }
}

/// Merges two items into a new node, the heavier first (ties: the lower server index).
fn merge(nodes: &mut Vec<Node>, a: Item, b: Item) -> Item {
    let (first, second) = if (a.weight, Reverse(a.min_index)) >= (b.weight, Reverse(b.min_index)) {
        (a, b)
    } else {
        (b, a)
    };
    let total = first.weight + second.weight;
    let id = nodes.len() as u32;
    nodes.push(Node {
        total,
        first_w: first.weight,
        first: first.id,
        second: second.id,
    });
    Item {
        weight: total,
        min_index: first.min_index.min(second.min_index),
        id,
    }
}

/// `x % p` for any `x`, without a division, given `magic = u64::MAX / p`.
#[inline(always)]
pub(crate) fn rem(x: u64, p: u64, magic: u64) -> u64 {
    let q = ((u128::from(x) * u128::from(magic)) >> 64) as u64;
    let r = x - q * p;
    if r >= p {
        r - p
    } else {
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn gcd(a: u64, b: u64) -> u64 {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }

    /// The active servers of `weights`, scaled by their gcd, and the period.
    fn scaled(weights: &[u32]) -> (Vec<(u32, u64)>, u64) {
        let g = weights.iter().fold(0, |g, &w| gcd(g, u64::from(w)));
        let active: Vec<(u32, u64)> = (0..)
            .zip(weights)
            .filter(|(_, &w)| w > 0)
            .map(|(i, &w)| (i, u64::from(w) / g))
            .collect();
        let period = active.iter().map(|a| a.1).sum();
        (active, period)
    }

    /// `2·|c·P - k·q| <= 2·bound·P`, in exact integers (`bound2` = 2·bound, rounded up
    /// to an integer number of half picks by the caller: 3 for 1.5).
    fn within(c: u64, k: u64, q: u64, period: u64, bound2: u128) -> bool {
        let (a, b) = (
            u128::from(c) * u128::from(period),
            u128::from(k) * u128::from(q),
        );
        2 * a.abs_diff(b) <= bound2 * u128::from(period)
    }

    /// Walks `len` picks from position `start`, checking every server's count against
    /// its exact share at each pick (just before and just after it, where the lag
    /// peaks) and the counts the closed form gives at the end. Returns the largest
    /// lag seen, in picks.
    fn walk_window(
        tree: &Tree,
        weights: &[u32],
        active: &[(u32, u64)],
        period: u64,
        start: u64,
        len: u64,
    ) -> Result<f64, TestCaseError> {
        let mut q = vec![0u64; weights.len()];
        for &(i, w) in active {
            q[i as usize] = w;
        }
        let mut counts = vec![0u64; weights.len()];
        tree.counts_before(start, &mut counts);
        let mut worst = 0.0f64;
        let lag = |c: u64, k: u64, q: u64| {
            let d = (u128::from(c) * u128::from(period)).abs_diff(u128::from(k) * u128::from(q));
            d as f64 / period as f64
        };
        for &(i, w) in active {
            let i = i as usize;
            prop_assert!(
                within(counts[i], start, w, period, 3),
                "server {} at {}",
                i,
                start
            );
            worst = worst.max(lag(counts[i], start, w));
        }
        let end = period.min(start + len);
        for k in start..end {
            let i = tree.at(k);
            prop_assert!(weights[i] > 0, "drained server {} picked at {}", i, k);
            prop_assert!(
                within(counts[i], k, q[i], period, 3),
                "server {} before {}",
                i,
                k
            );
            worst = worst.max(lag(counts[i], k, q[i]));
            counts[i] += 1;
            prop_assert!(
                within(counts[i], k + 1, q[i], period, 3),
                "server {} after {}",
                i,
                k
            );
            worst = worst.max(lag(counts[i], k + 1, q[i]));
        }
        let mut closed = vec![0u64; weights.len()];
        tree.counts_before(end, &mut closed);
        prop_assert_eq!(closed, counts);
        Ok(worst)
    }

    fn check(weights: &[u32], starts: &[u64]) -> Result<(), TestCaseError> {
        let (active, period) = scaled(weights);
        if active.is_empty() {
            return Ok(());
        }
        let tree = Tree::new(&active);
        let bound = tree.lag_bound();
        prop_assert!(bound <= 1.5, "bound {} for {:?}", bound, weights);
        // Exact quotas over the period.
        let mut counts = vec![0u64; weights.len()];
        tree.counts_before(period, &mut counts);
        for &(i, w) in &active {
            prop_assert_eq!(counts[i as usize], w);
        }
        if period <= 200_000 {
            let worst = walk_window(&tree, weights, &active, period, 0, period)?;
            prop_assert!(worst <= bound + 1e-9, "lag {} above bound {}", worst, bound);
        } else {
            for &s in starts {
                let worst = walk_window(&tree, weights, &active, period, s % period, 3_000)?;
                prop_assert!(worst <= bound + 1e-9, "lag {} above bound {}", worst, bound);
            }
        }
        Ok(())
    }

    fn weights() -> impl Strategy<Value = Vec<u32>> {
        let one = prop_oneof![
            1 => Just(0u32),
            2 => 1..=8u32,
            4 => 0..=u32::from(u16::MAX),
            1 => Just(u32::MAX),
            1 => (u32::MAX - 8)..=u32::MAX,
        ];
        prop_oneof![
            4 => prop::collection::vec(one, 0..=2000),
            1 => prop::collection::vec(prop_oneof![Just(1u32), Just(u32::MAX)], 0..=64),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        #[test]
        fn quotas_exact_and_lag_within_bound(
            weights in weights(),
            starts in prop::collection::vec(any::<u64>(), 3),
        ) {
            check(&weights, &starts)?;
        }

        /// Weights growing like Fibonacci numbers (with noise): the shape where a
        /// weight tree accumulates the most lag.
        #[test]
        fn fibonacci_like_weights(
            noise in prop::collection::vec(-2i64..=2, 2..=45),
            starts in prop::collection::vec(any::<u64>(), 3),
        ) {
            let mut w: Vec<u32> = vec![1, 1];
            for d in &noise {
                let next = i64::from(w[w.len() - 1]) + i64::from(w[w.len() - 2]) + d;
                w.push(next.clamp(0, i64::from(u32::MAX)) as u32);
            }
            check(&w, &starts)?;
        }
    }

    proptest! {
        /// The fixed-point node agrees with the exact integer rule at every position.
        #[test]
        fn fixed_point_is_exact(
            t in prop_oneof![2..=64u64, 2..(1u64 << 32)],
            a_frac in 0.0..1.0f64,
            m_frac in 0.0..=1.0f64,
            edge in 0..4u8,
        ) {
            let a = ((t / 2 + t % 2) + ((t / 2) as f64 * a_frac) as u64).min(t - 1).max(1);
            let m = match edge {
                0 => 0,
                1 => t - 1,
                2 => t,
                _ => (t as f64 * m_frac) as u64,
            };
            let node = Node { total: t, first_w: a, first: 0, second: 0 };
            let fast = Fast::new(&node);
            let v = u128::from(m) * u128::from(fast.f) + u128::from(fast.h);
            let x = u128::from(m) * u128::from(a) + u128::from(t / 2);
            prop_assert_eq!((v >> 64) as u64, (x / u128::from(t)) as u64);
            if m < t {
                let to_first = (x % u128::from(t)) as u64 >= t - a;
                prop_assert_eq!(v as u64 >= fast.g, to_first);
            }
        }
    }

    /// Servers of equal weight take turns in pool order in any pool (here beyond the
    /// 4096 servers the former leaf swapping was limited to), and a group's bound holds.
    #[test]
    fn equal_weights_take_turns_in_pool_order() {
        let mut weights = vec![2u32; 5000];
        weights[2500] = 7;
        weights[10] = 0;
        let (active, period) = scaled(&weights);
        let tree = Tree::new(&active);
        assert!(tree.lag_bound() <= 1.5);
        let twos: Vec<usize> = (0..period)
            .map(|k| tree.at(k))
            .filter(|&i| weights[i] == 2)
            .collect();
        let order: Vec<usize> = (0..5000).filter(|&i| weights[i] == 2).collect();
        assert_eq!(twos.len(), 2 * order.len());
        assert_eq!(twos[..order.len()], order[..]);
        assert_eq!(twos[order.len()..], order[..]);
        check(&weights, &[0]).unwrap();
    }

    #[test]
    fn extremes() {
        let starts = [0, 1 << 31, u64::MAX];
        for weights in [
            vec![u32::MAX],
            vec![u32::MAX, 1],
            vec![1, u32::MAX, 1, u32::MAX, 0, 1],
            vec![u32::MAX; 2000],
            vec![u32::MAX - 1, u32::MAX, u32::MAX - 2],
            (0..2000)
                .map(|i| if i % 3 == 0 { u32::MAX } else { 1 })
                .collect(),
            (0..32).map(|i| 1u32 << i).collect(),
            (0..32).map(|i| (1u32 << i) - 1).collect(),
            // n = 100k: mixed small, large and drained weights.
            (0..100_000u32)
                .map(|i| match i % 7 {
                    0 => 0,
                    1 => u32::MAX - i,
                    _ => i % 4096 + 1,
                })
                .collect(),
        ] {
            check(&weights, &starts).unwrap();
        }
    }
}
