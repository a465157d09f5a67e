//! Prefetching the state of a block of parsed records ahead of their turn
//! (see [`Lookahead`]).

use super::{Engine, Prepared};

/// How many records [`Lookahead`] prefetches at a time, and so how far
/// ahead of its turn a record's state is asked for: enough to cover a trip
/// to memory, few enough that the prefetched lines are still in cache when
/// their turn comes. 8, 16 and 32 were measured: 16 and 32 tie, 8 is
/// slower.
pub const LOOKAHEAD: usize = 16;

/// Feeds parsed records (`(tag, prepared)`, from [`Engine::parser`] on
/// this thread or another) to [`Engine::apply`] a block at a time: it
/// takes the next [`LOOKAHEAD`] records, prefetches their state together
/// (see [`Engine::prefetch`]), and hands them out while the block before
/// them is still being applied. Records come out in their input order, so
/// the verdicts are exactly those of calling [`Engine::process`] on each
/// in turn; only the memory accesses overlap. A lazily parsing input
/// parses each record a block ahead of its turn.
pub struct Lookahead<T, I: Iterator<Item = (T, Prepared)>> {
    input: I,
    ready: std::collections::VecDeque<(T, Prepared)>,
}

impl<T, I: Iterator<Item = (T, Prepared)>> Lookahead<T, I> {
    pub fn new(input: I) -> Self {
        Lookahead {
            input,
            ready: std::collections::VecDeque::with_capacity(2 * LOOKAHEAD + 1),
        }
    }

    /// The next record and its prepared form, for `engine.apply`. `engine`
    /// must be the engine they are applied to.
    #[inline]
    pub fn next(&mut self, engine: &Engine) -> Option<(T, Prepared)> {
        if self.ready.len() <= LOOKAHEAD {
            let from = self.ready.len();
            self.ready.extend(self.input.by_ref().take(LOOKAHEAD));
            engine.prefetch(self.ready.range(from..).map(|(_, prepared)| prepared));
        }
        self.ready.pop_front()
    }
}
