//! Lists a driver gave back with [`RawNode::recycle`](crate::RawNode::recycle), reused for
//! the next [`Ready`](crate::Ready)s and appends, so that a steady stream of commits does not
//! allocate a list per message, write and batch of committed entries.

use crate::message::Message;
use crate::types::Entry;

/// At most this many entry lists are kept.
const MAX_ENTRY_LISTS: usize = 8;
/// A list that grew beyond this many elements (a burst, a catch-up) is freed rather than kept,
/// so that a quiet node does not hold on to its largest burst.
const MAX_KEPT_CAPACITY: usize = 4096;

#[derive(Debug, Default)]
pub(crate) struct Spares {
    messages: Vec<Message>,
    entries: Vec<Vec<Entry>>,
}

impl Spares {
    /// A copy of `entries` in a kept list if there is one.
    pub(crate) fn entries_from(&mut self, entries: &[Entry]) -> Vec<Entry> {
        if entries.is_empty() {
            return Vec::new();
        }
        match self.entries.pop() {
            Some(mut list) => {
                list.extend_from_slice(entries);
                list
            }
            None => entries.to_vec(),
        }
    }

    /// Keeps `list`'s allocation (dropping what it holds) if it is worth keeping.
    pub(crate) fn keep_entries(&mut self, mut list: Vec<Entry>) {
        let capacity = list.capacity();
        if capacity == 0 || capacity > MAX_KEPT_CAPACITY || self.entries.len() >= MAX_ENTRY_LISTS {
            return;
        }
        list.clear();
        self.entries.push(list);
    }

    /// A kept message list (empty), if there is one.
    pub(crate) fn messages(&mut self) -> Vec<Message> {
        std::mem::take(&mut self.messages)
    }

    /// Keeps `list`'s allocation (dropping what it holds) unless a larger one is kept already.
    pub(crate) fn keep_messages(&mut self, mut list: Vec<Message>) {
        let capacity = list.capacity();
        if capacity <= self.messages.capacity() || capacity > MAX_KEPT_CAPACITY {
            return;
        }
        list.clear();
        self.messages = list;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::EntryKind;

    fn entry(index: u64) -> Entry {
        Entry::new(1, index, EntryKind::Normal, bytes::Bytes::from_static(b"x"))
    }

    #[test]
    fn a_kept_list_is_handed_out_again_empty_of_what_it_held() {
        let mut spares = Spares::default();
        let list = vec![entry(1), entry(2), entry(3)];
        let pointer = list.as_ptr();
        spares.keep_entries(list);
        let again = spares.entries_from(&[entry(7)]);
        assert_eq!(again.as_ptr(), pointer, "the same allocation");
        assert_eq!(again, vec![entry(7)]);
        assert!(spares.entries_from(&[]).capacity() == 0);
    }

    #[test]
    fn only_a_bounded_number_of_lists_of_bounded_size_is_kept() {
        let mut spares = Spares::default();
        spares.keep_entries(Vec::with_capacity(MAX_KEPT_CAPACITY + 1));
        assert!(spares.entries.is_empty());
        for _ in 0..MAX_ENTRY_LISTS + 3 {
            spares.keep_entries(Vec::with_capacity(4));
        }
        assert_eq!(spares.entries.len(), MAX_ENTRY_LISTS);
        spares.keep_messages(Vec::with_capacity(8));
        spares.keep_messages(Vec::with_capacity(4));
        assert_eq!(spares.messages().capacity(), 8, "the larger list stays");
        assert_eq!(spares.messages().capacity(), 0, "handed out once");
    }
}
