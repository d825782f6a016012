//! Generational ids that never repeat: the registries' arena.
//!
//! An id is a `u64` with slotmap's layout (`KeyData::as_ffi`: generation in
//! the high 32 bits, slot in the low 32 bits), so it crosses the C ABI as a
//! plain integer and is validated on the way back in ([`Arena::get`]):
//!
//! | bits | meaning |
//! |---|---|
//! | 32..=63 | generation of the slot, `1..=u32::MAX` |
//! | 0..=31 | slot index + 1 (so 0 is never an id) |
//!
//! Unlike slotmap, a slot whose generation reached `u32::MAX` is *retired*
//! when its value is removed: never handed out again. So an id, once its
//! object is gone, never resolves again — not even after 2³² reuses of its
//! slot (slotmap's 32-bit version wraps there, and a stale id then reaches
//! the new object). The cost is one retired slot (a few bytes) per 2³²
//! reuses of a slot.

/// One slot: its current generation and value.
struct Slot<T> {
    generation: u32,
    value: Option<T>,
}

/// A generational arena (see the module docs).
pub(crate) struct Arena<T> {
    slots: Vec<Slot<T>>,
    /// Vacant slots whose generation was already advanced.
    free: Vec<u32>,
    /// Generation of a slot's first value (a test hook to reach the limit
    /// at once; 1 normally).
    first_generation: u32,
    len: usize,
}

fn split(raw: u64) -> Option<(usize, u32)> {
    let low = (raw & 0xffff_ffff) as u32;
    let generation = (raw >> 32) as u32;
    if low == 0 || generation == 0 {
        return None;
    }
    Some(((low - 1) as usize, generation))
}

fn join(index: usize, generation: u32) -> u64 {
    (u64::from(generation) << 32) | (index as u64 + 1)
}

impl<T> Arena<T> {
    /// An empty arena whose slots start at `first_generation` (0 reads as 1).
    pub(crate) fn new(first_generation: u32) -> Self {
        Self {
            slots: Vec::new(),
            free: Vec::new(),
            first_generation: first_generation.max(1),
            len: 0,
        }
    }

    /// Inserts the value `f(id)` makes and returns its id. `None` when memory
    /// is exhausted (nothing changed) or no slot index is left.
    pub(crate) fn insert_with(&mut self, f: impl FnOnce(u64) -> T) -> Option<u64> {
        let index = match self.free.pop() {
            Some(i) => i as usize,
            None => {
                if self.slots.len() >= u32::MAX as usize - 1 || self.slots.try_reserve(1).is_err() {
                    return None;
                }
                self.slots.push(Slot {
                    generation: self.first_generation,
                    value: None,
                });
                self.slots.len() - 1
            }
        };
        let slot = &mut self.slots[index];
        let id = join(index, slot.generation);
        slot.value = Some(f(id));
        self.len += 1;
        Some(id)
    }

    /// Makes room so that the next [`insert_with`](Self::insert_with) does
    /// not allocate; `false` when memory is exhausted.
    pub(crate) fn reserve_one(&mut self) -> bool {
        !self.free.is_empty() || self.slots.try_reserve(1).is_ok()
    }

    /// The value of `id`, if it is live (a forged, stale or retired id gives
    /// `None`).
    pub(crate) fn get(&self, id: u64) -> Option<&T> {
        let (i, g) = split(id)?;
        let s = self.slots.get(i)?;
        if s.generation == g {
            s.value.as_ref()
        } else {
            None
        }
    }

    /// Removes and returns the value of `id`, advancing (or retiring) its
    /// slot's generation.
    pub(crate) fn remove(&mut self, id: u64) -> Option<T> {
        let (i, g) = split(id)?;
        let s = self.slots.get_mut(i)?;
        if s.generation != g || s.value.is_none() {
            return None;
        }
        let v = s.value.take();
        self.vacate(i);
        v
    }

    fn vacate(&mut self, i: usize) {
        self.len -= 1;
        let s = &mut self.slots[i];
        if s.generation == u32::MAX {
            return; // retired: its ids must never come back
        }
        s.generation += 1;
        // cannot fail to grow in a way that matters: free never exceeds slots,
        // whose capacity was reserved when the slot was made
        if self.free.try_reserve(1).is_ok() {
            self.free.push(i as u32);
        }
    }

    /// Keeps only the values for which `keep` is true.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        for i in 0..self.slots.len() {
            let drop_it = self.slots[i].value.as_ref().is_some_and(|v| !keep(v));
            if drop_it {
                self.slots[i].value = None;
                self.vacate(i);
            }
        }
    }

    /// Live values.
    pub(crate) fn values(&self) -> impl Iterator<Item = &T> {
        self.slots.iter().filter_map(|s| s.value.as_ref())
    }

    /// Number of live values.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn ids_are_never_zero_and_round_trip() {
        let mut a = Arena::new(1);
        let id = a.insert_with(|id| id).unwrap();
        assert_ne!(id, 0);
        assert_eq!(a.get(id), Some(&id));
        assert_eq!(a.get(0), None);
        assert_eq!(a.get(id ^ (1 << 32)), None);
        assert_eq!(a.get(id + 1), None);
        assert_eq!(a.remove(id), Some(id));
        assert_eq!(a.get(id), None);
        assert_eq!(a.remove(id), None);
    }

    #[test]
    fn slots_are_reused_with_a_new_generation() {
        let mut a = Arena::new(1);
        let x = a.insert_with(|_| 1).unwrap();
        a.remove(x);
        let y = a.insert_with(|_| 2).unwrap();
        assert_eq!(x & 0xffff_ffff, y & 0xffff_ffff, "same slot");
        assert_ne!(x, y);
        assert_eq!(a.get(x), None);
        assert_eq!(a.get(y), Some(&2));
    }

    #[test]
    fn a_slot_at_the_last_generation_is_retired_not_wrapped() {
        let mut a = Arena::new(u32::MAX - 1);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10 {
            let id = a.insert_with(|_| ()).unwrap();
            assert!(seen.insert(id), "id {id:#x} issued twice");
            a.remove(id);
        }
        // slot 0 served generations MAX-1 and MAX, then was retired
        assert!(seen.iter().filter(|&&id| id & 0xffff_ffff == 1).count() == 2);
        for id in seen {
            assert_eq!(a.get(id), None);
        }
    }
}
