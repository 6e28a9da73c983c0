//! The buffer emitters append to: events in push order, kept as runs of one
//! kind and tier over typed payload vectors.
//!
//! For batches of one kind a stored block costs 32 bytes here and a removed
//! hash 16 (a [`KvCacheEvent`](super::KvCacheEvent) costs 48). For mixed
//! batches (the default) stores and removals go in order into one vector of
//! the [`BlockChange`]s a mixed batch is made of, so a flush moves a run
//! into its batch without converting it, and can hand the whole vector
//! over as the batch ([`EventBuffer::take_mixed`]). Either way a flush hands
//! the batcher whole runs as slices, which it copies with one `memcpy` each
//! instead of matching every event. This module owns the layout of the
//! buffer and nothing else: it never batches, filters or locks (the emitter
//! holds its lock around every call).

use super::protocol::{BlockChange, StoredBlock};
use crate::{LogicalLayoutHandle, SequenceHash};

/// The kind of the events of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RunKind {
    /// Stored blocks.
    Create,
    /// Removed hashes.
    Remove,
    /// A clear.
    Clear,
    /// Stores and removals, in order (mixed batches).
    Mixed,
}

/// Consecutive events of one kind and one tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    kind: RunKind,
    tier: LogicalLayoutHandle,
    /// Events in the run (1 for a clear).
    len: usize,
}

/// The payload of one run, as the batcher takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RunEvents<'a> {
    /// Stored blocks, in push order.
    Create(&'a [StoredBlock]),
    /// Removed hashes, in push order.
    Remove(&'a [SequenceHash]),
    /// One clear of the run's tier.
    Clear,
    /// Stores and removals, in push order.
    Mixed(&'a [BlockChange]),
}

/// Where a walk over the buffer's runs has got to (see
/// [`EventBuffer::for_each_run`]).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Cursor {
    run: usize,
    create: usize,
    remove: usize,
    mixed: usize,
}

/// Events in push order: runs over typed payload vectors.
#[derive(Debug, Default)]
pub(crate) struct EventBuffer {
    runs: Vec<Run>,
    /// Every stored block of every create run, in order.
    pub(super) creates: Vec<StoredBlock>,
    /// Every removed hash of every remove run, in order.
    pub(super) removes: Vec<SequenceHash>,
    /// Every change of every mixed run, in order.
    pub(super) changes: Vec<BlockChange>,
    /// Runs before this index take no more events (a barrier follows them).
    sealed: usize,
}

impl EventBuffer {
    /// Block events buffered (clears not counted).
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.creates.len() + self.removes.len() + self.changes.len()
    }

    /// Records that the last `count` entries of the kind's payload vector
    /// were pushed for `tier`: they extend the last run when it has the same
    /// kind and tier and is not sealed, else they open a run.
    #[inline]
    pub(crate) fn close_push(&mut self, kind: RunKind, tier: LogicalLayoutHandle, count: usize) {
        if count == 0 {
            return;
        }
        if self.runs.len() > self.sealed {
            if let Some(last) = self.runs.last_mut() {
                if last.kind == kind && last.tier == tier && kind != RunKind::Clear {
                    last.len += count;
                    return;
                }
            }
        }
        self.runs.push(Run {
            kind,
            tier,
            len: count,
        });
    }

    /// Appends a clear of `tier` (a run of its own).
    pub(crate) fn push_clear(&mut self, tier: LogicalLayoutHandle) {
        self.runs.push(Run {
            kind: RunKind::Clear,
            tier,
            len: 1,
        });
    }

    /// Seals the runs pushed so far (later events start a new run) and
    /// returns how many there are: the position of a barrier.
    pub(crate) fn seal(&mut self) -> usize {
        self.sealed = self.runs.len();
        self.sealed
    }

    /// Hands `f` each run from `cursor` up to run index `until`, in order,
    /// and advances `cursor` past them.
    pub(crate) fn for_each_run<'a>(
        &'a self,
        cursor: &mut Cursor,
        until: usize,
        mut f: impl FnMut(LogicalLayoutHandle, RunEvents<'a>),
    ) {
        let until = until.min(self.runs.len());
        while cursor.run < until {
            let run = self.runs[cursor.run];
            cursor.run += 1;
            let events = match run.kind {
                RunKind::Create => {
                    let start = cursor.create;
                    cursor.create += run.len;
                    RunEvents::Create(&self.creates[start..cursor.create])
                }
                RunKind::Remove => {
                    let start = cursor.remove;
                    cursor.remove += run.len;
                    RunEvents::Remove(&self.removes[start..cursor.remove])
                }
                RunKind::Mixed => {
                    let start = cursor.mixed;
                    cursor.mixed += run.len;
                    RunEvents::Mixed(&self.changes[start..cursor.mixed])
                }
                RunKind::Clear => RunEvents::Clear,
            };
            f(run.tier, events);
        }
    }

    /// Runs buffered.
    #[cfg(test)]
    fn runs(&self) -> usize {
        self.runs.len()
    }

    /// Empties the buffer, keeping its capacity.
    pub(crate) fn clear(&mut self) {
        self.runs.clear();
        self.creates.clear();
        self.removes.clear();
        self.changes.clear();
        self.sealed = 0;
    }

    /// When the buffer holds one mixed run and nothing else (no barrier):
    /// takes its changes out whole, with its tier, leaving the buffer empty
    /// with room for `room` changes (so the emitters' next pushes do not
    /// grow the vector from nothing).
    pub(crate) fn take_mixed(
        &mut self,
        room: usize,
    ) -> Option<(LogicalLayoutHandle, Vec<BlockChange>)> {
        let &[run] = self.runs.as_slice() else {
            return None;
        };
        if run.kind != RunKind::Mixed || self.sealed != 0 {
            return None;
        }
        self.runs.clear();
        let changes = std::mem::replace(&mut self.changes, Vec::with_capacity(room));
        Some((run.tier, changes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LogicalLayoutHandle::{G1, G2};

    fn runs(buffer: &EventBuffer) -> Vec<(LogicalLayoutHandle, RunEvents<'_>)> {
        let mut out = Vec::new();
        buffer.for_each_run(&mut Cursor::default(), usize::MAX, |tier, run| {
            out.push((tier, run))
        });
        out
    }

    #[test]
    fn pushes_of_one_kind_and_tier_merge_into_one_run_in_order() {
        let (a, b, c) = (
            SequenceHash::root(1),
            SequenceHash::root(2),
            SequenceHash::root(3),
        );
        let mut buffer = EventBuffer::default();
        buffer.creates.push(StoredBlock::orphan(a));
        buffer.close_push(RunKind::Create, G1, 1);
        buffer.creates.push(StoredBlock::orphan(b));
        buffer.close_push(RunKind::Create, G1, 1);
        buffer.removes.push(a);
        buffer.close_push(RunKind::Remove, G1, 1);
        buffer.removes.push(c);
        buffer.close_push(RunKind::Remove, G2, 1);
        buffer.close_push(RunKind::Remove, G2, 0);
        buffer.push_clear(G2);
        buffer.push_clear(G2);
        assert_eq!(buffer.len(), 4);
        assert_eq!(
            runs(&buffer),
            [
                (
                    G1,
                    RunEvents::Create(&[StoredBlock::orphan(a), StoredBlock::orphan(b)])
                ),
                (G1, RunEvents::Remove(&[a])),
                (G2, RunEvents::Remove(&[c])),
                (G2, RunEvents::Clear),
                (G2, RunEvents::Clear),
            ]
        );
        buffer.clear();
        assert_eq!((buffer.len(), buffer.runs()), (0, 0));
    }

    #[test]
    fn a_seal_starts_a_new_run_and_the_walk_stops_at_it() {
        let (a, b) = (SequenceHash::root(1), SequenceHash::root(2));
        let mut buffer = EventBuffer::default();
        buffer.removes.push(a);
        buffer.close_push(RunKind::Remove, G1, 1);
        let at = buffer.seal();
        buffer.removes.push(b);
        buffer.close_push(RunKind::Remove, G1, 1);
        assert_eq!(buffer.runs(), 2);

        let mut cursor = Cursor::default();
        let mut seen = Vec::new();
        buffer.for_each_run(&mut cursor, at, |_, run| seen.push(run));
        assert_eq!(seen, [RunEvents::Remove(&[a])]);
        buffer.for_each_run(&mut cursor, usize::MAX, |_, run| seen.push(run));
        assert_eq!(seen, [RunEvents::Remove(&[a]), RunEvents::Remove(&[b])]);
    }

    #[test]
    fn a_lone_mixed_run_is_taken_whole_and_nothing_else_is() {
        let (a, b) = (SequenceHash::root(1), SequenceHash::root(2));
        let mut buffer = EventBuffer::default();
        buffer.changes.push(BlockChange::Removed(a));
        buffer
            .changes
            .push(BlockChange::Stored(StoredBlock::orphan(b)));
        buffer.close_push(RunKind::Mixed, G1, 2);
        let (tier, changes) = buffer.take_mixed(8).expect("one mixed run");
        assert_eq!(tier, G1);
        assert_eq!(
            changes,
            [
                BlockChange::Removed(a),
                BlockChange::Stored(StoredBlock::orphan(b))
            ]
        );
        assert_eq!((buffer.len(), buffer.runs()), (0, 0));
        assert!(buffer.changes.capacity() >= 8);

        // Two runs, a barrier, or a run of another kind: not taken.
        buffer.changes.push(BlockChange::Removed(a));
        buffer.close_push(RunKind::Mixed, G1, 1);
        buffer.changes.push(BlockChange::Removed(b));
        buffer.close_push(RunKind::Mixed, G2, 1);
        assert!(buffer.take_mixed(8).is_none());
        buffer.clear();
        buffer.changes.push(BlockChange::Removed(a));
        buffer.close_push(RunKind::Mixed, G1, 1);
        buffer.seal();
        assert!(buffer.take_mixed(8).is_none());
        buffer.clear();
        buffer.removes.push(a);
        buffer.close_push(RunKind::Remove, G1, 1);
        assert!(buffer.take_mixed(8).is_none());
    }
}
