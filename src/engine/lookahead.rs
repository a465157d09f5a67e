//! Parsing a block of records ahead of their turn (see [`Lookahead`]).

use super::{Engine, Prepared};

/// How many records [`Lookahead`] parses and prefetches at a time, and so
/// how far ahead of its turn a record's state is asked for: enough to cover
/// a trip to memory, few enough that the prefetched lines are still in cache
/// when their turn comes. 8, 16 and 32 were measured: 16 and 32 tie, 8 is
/// slower.
pub const LOOKAHEAD: usize = 16;

/// Feeds records to [`Engine::apply`] a block at a time: it parses the next
/// [`LOOKAHEAD`] records, prefetches their state together (see
/// [`Engine::prefetch`]), and hands them out while the block before them is
/// still being applied. Records come out in their input order, so the
/// verdicts are exactly those of calling [`Engine::process`] on each in
/// turn; only the memory accesses overlap.
pub struct Lookahead<'a, T, I: Iterator<Item = (T, &'a [u8])>> {
    input: I,
    ready: std::collections::VecDeque<(T, &'a [u8], Prepared)>,
}

impl<'a, T, I: Iterator<Item = (T, &'a [u8])>> Lookahead<'a, T, I> {
    pub fn new(input: I) -> Self {
        Lookahead {
            input,
            ready: std::collections::VecDeque::with_capacity(2 * LOOKAHEAD + 1),
        }
    }

    /// The next record, its payload and its prepared form, for
    /// `engine.apply`. `engine` must be the engine they are applied to.
    #[inline]
    pub fn next(&mut self, engine: &Engine) -> Option<(T, &'a [u8], Prepared)> {
        if self.ready.len() <= LOOKAHEAD {
            let from = self.ready.len();
            for _ in 0..LOOKAHEAD {
                let Some((tag, payload)) = self.input.next() else {
                    break;
                };
                self.ready.push_back((tag, payload, engine.parse(payload)));
            }
            engine.prefetch(self.ready.range(from..).map(|(_, _, prepared)| prepared));
        }
        self.ready.pop_front()
    }
}

/// [`Lookahead`] over records parsed already (see `job`'s parallel parse):
/// it prefetches the state of the next [`LOOKAHEAD`] records a block at a
/// time and hands them out in their input order.
pub struct Prefetched<T, I: Iterator<Item = T>> {
    input: I,
    ready: std::collections::VecDeque<T>,
}

impl<T: AsRef<Prepared>, I: Iterator<Item = T>> Prefetched<T, I> {
    pub fn new(input: I) -> Self {
        Prefetched {
            input,
            ready: std::collections::VecDeque::with_capacity(2 * LOOKAHEAD + 1),
        }
    }

    /// The next record; `engine` must be the engine it is applied to.
    #[inline]
    pub fn next(&mut self, engine: &Engine) -> Option<T> {
        if self.ready.len() <= LOOKAHEAD {
            let from = self.ready.len();
            self.ready.extend(self.input.by_ref().take(LOOKAHEAD));
            engine.prefetch(self.ready.range(from..).map(AsRef::as_ref));
        }
        self.ready.pop_front()
    }
}
