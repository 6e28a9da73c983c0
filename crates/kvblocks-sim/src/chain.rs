//! Turns each request's `hash_ids` into the chain of
//! [`kvblocks::SequenceHash`] keys the manager is keyed by, once per trace.
//!
//! Key `i` of a request is `SequenceHash::root(mix(id[0])).extend(mix(id[1]))
//! ... .extend(mix(id[i]))`: the positional lineage hash of the whole prefix
//! up to block `i`, exactly as a serving engine would compute it from tokens.
//! Trace ids are small consecutive integers; [`mix`] spreads them over 64
//! bits first, so the manager's hash index sees well-distributed keys.
//!
//! Alongside the keys, every distinct key gets a dense `u32` id (first-seen
//! order), which Belady's bound indexes arrays by. All chains live in one
//! flat buffer; nothing here is rebuilt per capacity or per policy.

use std::collections::HashMap;

use kvblocks::SequenceHash;

use crate::trace::Request;

/// The SplitMix64 finaliser: a bijection on `u64` that spreads consecutive
/// ids over the whole range.
#[inline]
pub fn mix(id: u64) -> u64 {
    let mut z = id.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Appends the chain of keys for one request's block ids to `out`.
pub fn extend_chain(hash_ids: &[u64], out: &mut Vec<SequenceHash>) {
    let mut iter = hash_ids.iter();
    let Some(&first) = iter.next() else {
        return;
    };
    let mut key = SequenceHash::root(mix(first));
    out.push(key);
    for &id in iter {
        key = key.extend(mix(id));
        out.push(key);
    }
}

/// Every request's key chain in one flat buffer, plus dense ids.
#[derive(Debug, Clone)]
pub struct Chains {
    /// `offsets[r]..offsets[r + 1]` is request `r`'s range in `keys`/`ids`.
    offsets: Vec<usize>,
    /// Sequence-hash keys, request after request.
    keys: Vec<SequenceHash>,
    /// Dense id of each key (`0..distinct`), same layout as `keys`.
    ids: Vec<u32>,
    /// Number of distinct keys.
    distinct: usize,
}

impl Chains {
    /// Builds the chains of every request.
    ///
    /// # Panics
    ///
    /// If a request has `2^24` blocks or more (the trace parser rejects those)
    /// or the trace has more than `u32::MAX` distinct blocks.
    pub fn build(requests: &[Request]) -> Self {
        let total: usize = requests.iter().map(|r| r.hash_ids.len()).sum();
        let mut offsets = Vec::with_capacity(requests.len() + 1);
        let mut keys = Vec::with_capacity(total);
        offsets.push(0);
        for request in requests {
            extend_chain(&request.hash_ids, &mut keys);
            offsets.push(keys.len());
        }
        let mut dense: HashMap<u128, u32> = HashMap::with_capacity(total / 2 + 16);
        let ids = keys
            .iter()
            .map(|key| {
                let next = u32::try_from(dense.len()).expect("more than u32::MAX distinct blocks");
                *dense.entry(key.as_u128()).or_insert(next)
            })
            .collect();
        Self {
            offsets,
            keys,
            ids,
            distinct: dense.len(),
        }
    }

    /// Number of requests.
    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    /// True if there is no request.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Request `r`'s keys, root first.
    #[inline]
    pub fn keys(&self, r: usize) -> &[SequenceHash] {
        &self.keys[self.offsets[r]..self.offsets[r + 1]]
    }

    /// Request `r`'s dense ids, root first.
    #[inline]
    pub fn ids(&self, r: usize) -> &[u32] {
        &self.ids[self.offsets[r]..self.offsets[r + 1]]
    }

    /// Offset of request `r`'s first reference in the flat reference list.
    #[inline]
    pub fn offset(&self, r: usize) -> usize {
        self.offsets[r]
    }

    /// Every reference's dense id, request after request.
    pub fn all_ids(&self) -> &[u32] {
        &self.ids
    }

    /// Total block references (sum of chain lengths).
    pub fn total_refs(&self) -> usize {
        self.keys.len()
    }

    /// Number of distinct blocks (distinct prefixes).
    pub fn distinct(&self) -> usize {
        self.distinct
    }

    /// Longest chain.
    pub fn max_len(&self) -> usize {
        self.offsets
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(ids: &[u64]) -> Request {
        Request {
            timestamp_ms: 0,
            input_length: ids.len() as u64 * 512,
            output_length: 1,
            hash_ids: ids.to_vec(),
        }
    }

    #[test]
    fn shared_prefixes_share_keys_and_ids() {
        let chains = Chains::build(&[request(&[1, 2, 3]), request(&[1, 2, 4]), request(&[2])]);
        assert_eq!(chains.keys(0)[..2], chains.keys(1)[..2]);
        assert_ne!(chains.keys(0)[2], chains.keys(1)[2]);
        assert_eq!(chains.ids(0), &[0, 1, 2]);
        assert_eq!(chains.ids(1), &[0, 1, 3]);
        // Block id 2 at the root is another prefix than id 2 at position 1.
        assert_eq!(chains.ids(2), &[4]);
        assert_eq!(chains.distinct(), 5);
        assert_eq!(chains.total_refs(), 7);
        assert_eq!(chains.max_len(), 3);
    }

    #[test]
    fn keys_carry_positions() {
        let mut keys = Vec::new();
        extend_chain(&[9, 8, 7], &mut keys);
        let positions: Vec<u64> = keys.iter().map(|k| k.position()).collect();
        assert_eq!(positions, vec![0, 1, 2]);
    }

    #[test]
    fn mix_spreads_consecutive_ids() {
        assert_ne!(mix(0), 0);
        assert!((mix(1) ^ mix(2)).count_ones() > 10);
    }
}
