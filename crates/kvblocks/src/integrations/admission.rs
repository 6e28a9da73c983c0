//! Batch admission: several requests take their blocks together, or none
//! does.
//!
//! Owns the all-or-nothing protocol only: every request is checked, every
//! cached prefix is matched (pinning it, so the allocation cannot evict it),
//! and the blocks the whole batch is missing are taken in one
//! `allocate_blocks` call, which the manager serves completely or not at all.
//! If that fails the matched blocks are released, last first, and no request
//! changed.

use super::{AdmitError, SchedulableSequence};
use crate::{BlockManager, BlockMetadata, ImmutableBlock};

/// Whether [`admit_all`] is certain to succeed now for `requests`, without
/// touching the pool (conservative in the way
/// [`RequestSequence::can_admit`](super::RequestSequence::can_admit) is).
pub fn can_admit_all<T: BlockMetadata>(
    manager: &BlockManager<T>,
    requests: &[&SchedulableSequence<T>],
    lookahead: usize,
) -> bool {
    let mut needed = 0usize;
    for request in requests {
        match request.admission_plan(manager, lookahead) {
            Ok(plan) => needed = needed.saturating_add(plan.needed),
            Err(_) => return false,
        }
    }
    needed <= manager.available_blocks()
}

/// Admits every request (cached prefix plus slots for the other tokens and
/// `lookahead`), or none; returns the blocks found cached, summed.
///
/// ```
/// use kvblocks::{admit_all, BlockManager, SchedulableSequence};
/// #[derive(Clone)] struct Gpu;
/// let manager = BlockManager::<Gpu>::builder().block_count(4).block_size(4).build()?;
/// let new = |n: u32| SchedulableSequence::<Gpu>::new((0..n).collect(), 8, 4, None);
/// let (mut a, mut b) = (new(8), new(12));      // 2 + 3 blocks: more than the pool
/// assert!(admit_all(&manager, &mut [&mut a, &mut b], 0).is_err());
/// assert_eq!((a.held_blocks(), b.held_blocks()), (0, 0));   // nobody changed
/// assert_eq!(manager.available_blocks(), 4);
/// admit_all(&manager, &mut [&mut a], 0)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
///
/// [`AdmitError::Request`] if a request cannot be admitted at all;
/// [`AdmitError::InsufficientBlocks`] if the batch does not fit now. No
/// request and no slot state changes (matched blocks go back where they
/// were; the eviction policy has seen them used).
pub fn admit_all<T: BlockMetadata>(
    manager: &BlockManager<T>,
    requests: &mut [&mut SchedulableSequence<T>],
    lookahead: usize,
) -> Result<usize, AdmitError> {
    let mut plans = Vec::with_capacity(requests.len());
    for (index, request) in requests.iter().enumerate() {
        let plan = request
            .admission_plan(manager, lookahead)
            .map_err(|source| AdmitError::Request { index, source })?;
        plans.push(plan);
    }
    let mut matched: Vec<Vec<ImmutableBlock<T>>> = Vec::with_capacity(requests.len());
    let mut missing = 0usize;
    for (request, plan) in requests.iter().zip(&plans) {
        let hits = manager.match_blocks(request.request().matchable_hashes(plan));
        missing += plan.needed - hits.len();
        matched.push(hits);
    }
    let Some(allocated) = manager.allocate_blocks(missing) else {
        let tail_first = matched
            .into_iter()
            .rev()
            .flat_map(|hits| hits.into_iter().rev());
        manager.release_blocks(tail_first.collect());
        return Err(AdmitError::InsufficientBlocks {
            needed: missing,
            available: manager.available_blocks(),
        });
    };
    let mut allocated = allocated.into_iter();
    let mut cached = 0;
    for (index, ((request, plan), hits)) in requests.iter_mut().zip(&plans).zip(matched).enumerate()
    {
        let fresh = plan.needed - hits.len();
        cached += request
            .commit_admission(manager, hits, allocated.by_ref().take(fresh))
            .map_err(|source| AdmitError::Request { index, source })?;
    }
    Ok(cached)
}
