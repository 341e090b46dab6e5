//! The events a connection has produced and the driver has not taken yet.

use std::collections::VecDeque;

use super::Event;

/// Events in order, oldest first.
///
/// Parsing stops after an event until it is taken, except for the whole data
/// messages read ahead with it from the same bytes (a pipelined burst, at most
/// a few dozen): the first event is kept inline, and taking it is a move out of
/// an `Option`. A second one (read ahead, or a close behind a message)
/// allocates a queue, which is released once drained so that an idle
/// connection holds no heap memory for its events (a `VecDeque` of events grows
/// to four, 256 bytes, on the first one and keeps them for the life of the
/// connection).
#[derive(Debug, Default)]
pub(super) struct PendingEvents {
    first: Option<Event>,
    // Boxed: one word in every connection instead of a `VecDeque`'s four, for
    // a queue that is there only for a burst.
    #[allow(clippy::box_collection)]
    rest: Option<Box<VecDeque<Event>>>,
}

impl PendingEvents {
    /// Appends `event` after every waiting one.
    #[inline(always)]
    pub(super) fn push(&mut self, event: Event) {
        if self.first.is_none() {
            debug_assert!(self.rest.is_none(), "the inline event is always the oldest");
            self.first = Some(event);
        } else {
            self.rest.get_or_insert_default().push_back(event);
        }
    }

    /// Takes the oldest event.
    #[inline]
    pub(super) fn pop(&mut self) -> Option<Event> {
        let event = self.first.take()?;
        if let Some(rest) = &mut self.rest {
            self.first = rest.pop_front();
            if rest.is_empty() {
                self.rest = None;
            }
        }
        Some(event)
    }

    /// Drops the `count` newest events (all of them if fewer wait).
    pub(super) fn drop_newest(&mut self, count: usize) {
        for _ in 0..count {
            match &mut self.rest {
                Some(rest) => {
                    rest.pop_back();
                    if rest.is_empty() {
                        self.rest = None;
                    }
                }
                None => self.first = None,
            }
        }
    }

    /// How many events wait.
    pub(super) fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.as_ref().map_or(0, |rest| rest.len())
    }

    /// Whether none waits.
    #[inline]
    pub(super) fn is_empty(&self) -> bool {
        self.first.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use proptest::prelude::*;

    proptest! {
        /// Against a `VecDeque`, the plain definition: any sequence of pushes and
        /// pops gives the same events in the same order, and the same length.
        #[test]
        fn behaves_as_a_fifo(ops in proptest::collection::vec(any::<Option<u8>>(), 0..64)) {
            let mut queue = PendingEvents::default();
            let mut model = VecDeque::new();
            for op in ops {
                match op {
                    Some(byte) => {
                        queue.push(Event::Binary(Bytes::copy_from_slice(&[byte])));
                        model.push_back(byte);
                    }
                    None => {
                        let got = queue.pop().map(|e| match e {
                            Event::Binary(b) => b[0],
                            other => panic!("unexpected {other:?}"),
                        });
                        prop_assert_eq!(got, model.pop_front());
                    }
                }
                prop_assert_eq!(queue.len(), model.len());
                prop_assert_eq!(queue.is_empty(), model.is_empty());
                // Drained means no heap memory kept.
                if model.is_empty() {
                    prop_assert!(queue.rest.is_none());
                }
            }
        }
    }
}
