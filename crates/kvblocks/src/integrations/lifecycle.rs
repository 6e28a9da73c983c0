//! The idle-only operations of a [`SchedulableSequence`]: dropping reserved
//! slots, preemption (`release`) and resumption (`reacquire`), appending
//! uncomputed tokens, and rolling back generated tokens.
//!
//! Each runs only when nothing is scheduled, checks everything before it
//! changes anything, and keeps the sequence's invariant: the registered
//! blocks are exactly the full blocks below the computed position, and the
//! held blocks cover at least the computed tokens.

use super::{ApplyError, SchedulableSequence, ScheduleError, SequenceEvent};
use crate::hash::Token;
use crate::{BlockManager, BlockMetadata};

impl<T: BlockMetadata> SchedulableSequence<T> {
    /// Drops up to `count` reserved writable blocks (look-ahead or admission
    /// slots past the computed tokens), last first; returns how many. Slots
    /// holding computed KV are never dropped.
    ///
    /// # Errors
    ///
    /// [`ApplyError::WrongState`] unless idle.
    pub fn drop_unassigned(&mut self, count: usize) -> Result<usize, ApplyError> {
        self.require_idle_for_apply()?;
        let bs = self.inner.block_size();
        let needed = self.kv_position.div_ceil(bs);
        let held = self.inner.held_blocks();
        let dropped = count.min(held.saturating_sub(needed));
        self.inner.truncate_blocks(held - dropped);
        if dropped > 0 {
            self.emit(|| SequenceEvent::UnassignedDropped { count: dropped });
        }
        Ok(dropped)
    }

    /// Releases every block (preemption, or the end of the request); tokens
    /// stay, and nothing counts as computed any more.
    ///
    /// # Errors
    ///
    /// [`ApplyError::WrongState`] unless idle.
    pub fn release(&mut self) -> Result<(), ApplyError> {
        self.require_idle_for_apply()?;
        self.inner.release();
        self.kv_position = 0;
        self.emit(|| SequenceEvent::Released);
        Ok(())
    }

    /// [`release`](Self::release), handing the registered blocks to
    /// `manager` in one batch.
    ///
    /// # Errors
    ///
    /// [`ApplyError::WrongState`] unless idle.
    pub fn release_to(&mut self, manager: &BlockManager<T>) -> Result<(), ApplyError> {
        self.require_idle_for_apply()?;
        self.inner.release_to(manager);
        self.kv_position = 0;
        self.emit(|| SequenceEvent::Released);
        Ok(())
    }

    /// Takes blocks again after a release: the cached prefix and slots for
    /// every other token ([`admit`](Self::admit) with no look-ahead). `false`
    /// if the pool cannot supply them now (nothing changes then).
    ///
    /// # Errors
    ///
    /// [`ApplyError::WrongState`] unless idle; the request's refusal if it
    /// still holds blocks or can never fit.
    pub fn reacquire(&mut self, manager: &BlockManager<T>) -> Result<bool, ApplyError> {
        self.require_idle_for_apply()?;
        let success = match self.admit(manager, 0) {
            Ok(_) => true,
            Err(ScheduleError::AllocationFailed { .. }) => false,
            Err(ScheduleError::Request(err)) => return Err(err.into()),
            Err(_) => false,
        };
        let prefix_matched = self.inner.prefix_matched_blocks();
        self.emit(|| SequenceEvent::Reacquired {
            prefix_matched,
            success,
        });
        Ok(success)
    }

    /// Appends tokens without computing them (they all wait for a prefill).
    ///
    /// # Errors
    ///
    /// [`ApplyError::WrongState`] unless idle,
    /// [`ApplyError::AppendExceedsRemaining`]; nothing changes then.
    pub fn append_tokens(&mut self, tokens: &[Token]) -> Result<(), ApplyError> {
        self.require_idle_for_apply()?;
        let remaining = self.inner.remaining_tokens();
        if tokens.len() > remaining {
            return Err(ApplyError::AppendExceedsRemaining {
                requested: tokens.len(),
                remaining,
            });
        }
        self.inner.append_tokens(tokens)?;
        Ok(())
    }

    /// Removes the last `count` generated tokens. If that reaches computed
    /// tokens, the computed position goes back with them (to the start of a
    /// registered block it would cut, whose KV cannot be rewritten), and the
    /// blocks past it are released, last first; the request then prefills
    /// (recomputes) or decodes as [`prefill_target`](Self::prefill_target)
    /// says. Returns how many blocks were released.
    ///
    /// # Errors
    ///
    /// [`ApplyError::WrongState`] unless idle,
    /// [`ApplyError::RollbackBeyondGenerated`]; nothing changes then.
    pub fn rollback(&mut self, count: usize) -> Result<usize, ApplyError> {
        self.require_idle_for_apply()?;
        if count == 0 {
            return Ok(0);
        }
        self.inner.unwind_generated(count)?;
        let bs = self.inner.block_size();
        let mut kv = self.kv_position.min(self.inner.total_tokens() - 1);
        if kv % bs != 0 && kv / bs < self.inner.assigned_blocks() {
            kv = kv / bs * bs;
        }
        self.kv_position = kv;
        let blocks_released = self.inner.truncate_blocks(kv.div_ceil(bs));
        self.emit(|| SequenceEvent::RolledBack {
            tokens: count,
            blocks_released,
        });
        Ok(blocks_released)
    }
}
