//! Intrusive doubly linked lists over slot numbers.
//!
//! [`Links`] holds one `prev`/`next` pair per slot; any number of [`List`]
//! heads can thread through the same [`Links`] as long as a slot sits in at
//! most one of them at a time. Every operation is O(1) and allocation-free.
//! This module knows nothing about eviction; the policies build on it.

/// "No slot": the end of a list.
pub(crate) const NIL: u32 = u32::MAX;

#[derive(Clone, Copy)]
struct Link {
    prev: u32,
    next: u32,
}

/// Per-slot links shared by the lists of one policy.
pub(crate) struct Links {
    links: Vec<Link>,
}

impl Links {
    /// Links for slots `0..slots`, all unlinked.
    pub(crate) fn new(slots: usize) -> Self {
        Self {
            links: vec![
                Link {
                    prev: NIL,
                    next: NIL
                };
                slots
            ],
        }
    }

    /// The slot after `slot` in its list, or [`NIL`].
    #[inline]
    pub(crate) fn next(&self, slot: u32) -> u32 {
        self.links[slot as usize].next
    }

    /// Whether `slot` has no neighbour (true of an unlinked slot, and of
    /// the one entry of a one-entry list).
    #[inline]
    fn is_bare(&self, slot: u32) -> bool {
        let link = self.links[slot as usize];
        link.prev == NIL && link.next == NIL
    }
}

/// One list head: front is the oldest entry, back the newest.
#[derive(Default)]
pub(crate) struct List {
    head: u32,
    tail: u32,
    len: usize,
}

impl List {
    /// An empty list.
    pub(crate) const fn new() -> Self {
        Self {
            head: NIL,
            tail: NIL,
            len: 0,
        }
    }

    /// Number of entries.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The oldest entry, or [`NIL`].
    #[inline]
    pub(crate) fn front(&self) -> u32 {
        self.head
    }

    /// The newest entry, or [`NIL`].
    #[inline]
    pub(crate) fn back(&self) -> u32 {
        self.tail
    }

    /// Appends `slot` as the newest entry. The caller guarantees `slot` is in no list.
    #[inline]
    pub(crate) fn push_back(&mut self, links: &mut Links, slot: u32) {
        debug_assert!(
            links.is_bare(slot) && self.head != slot,
            "list: slot {slot} pushed while linked"
        );
        links.links[slot as usize] = Link {
            prev: self.tail,
            next: NIL,
        };
        if self.tail == NIL {
            self.head = slot;
        } else {
            links.links[self.tail as usize].next = slot;
        }
        self.tail = slot;
        self.len += 1;
    }

    /// Prepends `slot` as the oldest entry. The caller guarantees `slot` is in no list.
    #[inline]
    pub(crate) fn push_front(&mut self, links: &mut Links, slot: u32) {
        debug_assert!(
            links.is_bare(slot) && self.head != slot,
            "list: slot {slot} pushed while linked"
        );
        links.links[slot as usize] = Link {
            prev: NIL,
            next: self.head,
        };
        if self.head == NIL {
            self.tail = slot;
        } else {
            links.links[self.head as usize].prev = slot;
        }
        self.head = slot;
        self.len += 1;
    }

    /// Unlinks `slot`. The caller guarantees `slot` is in this list.
    #[inline]
    pub(crate) fn remove(&mut self, links: &mut Links, slot: u32) {
        let Link { prev, next } = links.links[slot as usize];
        debug_assert!(
            (prev != NIL || self.head == slot) && (next != NIL || self.tail == slot),
            "list: slot {slot} removed from a list that does not hold it"
        );
        debug_assert!(self.len > 0, "list: removal from an empty list");
        if prev == NIL {
            self.head = next;
        } else {
            links.links[prev as usize].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            links.links[next as usize].prev = prev;
        }
        links.links[slot as usize] = Link {
            prev: NIL,
            next: NIL,
        };
        self.len -= 1;
    }

    /// Unlinks and returns the oldest entry.
    #[inline]
    pub(crate) fn pop_front(&mut self, links: &mut Links) -> Option<u32> {
        let slot = self.head;
        if slot == NIL {
            return None;
        }
        self.remove(links, slot);
        Some(slot)
    }

    /// Moves `slot` (in this list) to the back.
    #[inline]
    pub(crate) fn move_to_back(&mut self, links: &mut Links, slot: u32) {
        if self.tail != slot {
            self.remove(links, slot);
            self.push_back(links, slot);
        }
    }

    /// Walks the list front to back, checking every link against its
    /// neighbours and the count against the walk, and hands each entry to
    /// `visit` (which may report a broken invariant of its own). O(len), for
    /// a policy's [`check`](super::EvictionPolicy::check).
    pub(crate) fn check(
        &self,
        links: &Links,
        name: &str,
        mut visit: impl FnMut(u32) -> Result<(), String>,
    ) -> Result<(), String> {
        let mut slot = self.head;
        let mut prev = NIL;
        let mut walked = 0usize;
        while slot != NIL {
            if slot as usize >= links.links.len() {
                return Err(format!("{name}: slot {slot} out of range"));
            }
            if walked >= links.links.len() {
                return Err(format!("{name}: a cycle (longer than every slot)"));
            }
            let link = links.links[slot as usize];
            if link.prev != prev {
                return Err(format!(
                    "{name}: slot {slot} links back to {} instead of {prev}",
                    link.prev
                ));
            }
            visit(slot)?;
            walked += 1;
            prev = slot;
            slot = link.next;
        }
        if self.tail != prev {
            return Err(format!(
                "{name}: tail {} but the walk ends at {prev}",
                self.tail
            ));
        }
        if walked != self.len {
            return Err(format!(
                "{name}: holds {walked} entries, counts {}",
                self.len
            ));
        }
        Ok(())
    }

    /// Walks the list front to back (tests and validation only).
    #[cfg(test)]
    pub(crate) fn to_vec(&self, links: &Links) -> Vec<u32> {
        let mut out = Vec::with_capacity(self.len);
        let mut slot = self.head;
        while slot != NIL {
            out.push(slot);
            slot = links.next(slot);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_sharing_links_keep_their_own_order() {
        let mut links = Links::new(8);
        let (mut a, mut b) = (List::new(), List::new());
        for slot in [3, 1, 4] {
            a.push_back(&mut links, slot);
        }
        b.push_back(&mut links, 5);
        b.push_front(&mut links, 2);
        a.remove(&mut links, 1);
        a.move_to_back(&mut links, 3);
        assert_eq!(a.to_vec(&links), vec![4, 3]);
        assert_eq!(b.to_vec(&links), vec![2, 5]);
        assert_eq!(a.pop_front(&mut links), Some(4));
        assert_eq!(a.pop_front(&mut links), Some(3));
        assert_eq!(a.pop_front(&mut links), None);
        assert_eq!((a.len(), b.len()), (0, 2));
        assert_eq!(b.check(&links, "b", |_| Ok(())), Ok(()));
    }

    #[test]
    fn check_reports_a_count_that_disagrees_with_the_walk() {
        let mut links = Links::new(4);
        let mut list = List::new();
        list.push_back(&mut links, 1);
        list.push_back(&mut links, 2);
        assert_eq!(list.check(&links, "l", |_| Ok(())), Ok(()));
        list.len = 3;
        assert!(list
            .check(&links, "l", |_| Ok(()))
            .unwrap_err()
            .contains("counts 3"));
        list.len = 2;
        let visit = |slot| {
            if slot == 2 {
                Err("two".to_string())
            } else {
                Ok(())
            }
        };
        assert_eq!(list.check(&links, "l", visit), Err("two".to_string()));
    }
}
