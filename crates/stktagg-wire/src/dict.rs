//! The per-session dictionary caches that carry `server_key` values.
//!
//! Each direction of a session has 128 slots (`PEER_STKT_CACHE_MAX_ENTRIES`). The
//! sender puts a name it has not sent yet into the next slot, round-robin, and sends
//! the full form (`id, strlen, bytes`); a name still in its slot goes as the short
//! form (`id`). Ids on the wire are the slot + 1. Both caches live and die with the
//! session, like the [`crate::Decoder`] and [`crate::Encoder`] that own them.

use bytes::Bytes;
use std::collections::HashMap;

/// The number of slots per direction.
pub const DICT_SLOTS: usize = 128;

/// The receive cache: what the peer put in each slot.
#[derive(Debug, Clone)]
pub(crate) struct RxDict {
    slots: Vec<Option<Bytes>>,
}

impl Default for RxDict {
    fn default() -> Self {
        RxDict {
            slots: vec![None; DICT_SLOTS],
        }
    }
}

impl RxDict {
    /// The name in slot `id - 1`, for a wire id in 1..=128.
    pub(crate) fn get(&self, id: u8) -> Option<&Bytes> {
        self.slots.get(usize::from(id).checked_sub(1)?)?.as_ref()
    }

    /// Fills slot `id - 1`, for a wire id in 1..=128.
    pub(crate) fn set(&mut self, id: u8, name: Bytes) {
        if let Some(slot) = usize::from(id)
            .checked_sub(1)
            .and_then(|i| self.slots.get_mut(i))
        {
            *slot = Some(name);
        }
    }
}

/// The transmit cache: which slot holds each name we sent.
#[derive(Debug, Clone, Default)]
pub(crate) struct TxDict {
    /// Empty until the first name is cached: most tables never send one, and a
    /// shared update's encoder builds a dictionary it never uses.
    slots: Vec<Option<Bytes>>,
    index: HashMap<Bytes, usize>,
    next: usize,
}

/// How a name is to be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TxEntry {
    /// Already cached: send `id` alone.
    Short(u8),
    /// Newly cached: send `id`, then the name.
    Full(u8),
}

impl TxDict {
    /// What [`TxDict::insert`] would return for `name`, without changing the cache.
    pub(crate) fn peek(&self, name: &Bytes) -> TxEntry {
        match self.index.get(name) {
            Some(&slot) => TxEntry::Short(slot_id(slot)),
            None => TxEntry::Full(slot_id(self.next)),
        }
    }

    /// Looks `name` up, caching it in the next round-robin slot (evicting what was
    /// there) when absent. Returns the wire id (slot + 1) and the form to send.
    pub(crate) fn insert(&mut self, name: &Bytes) -> TxEntry {
        if let Some(&slot) = self.index.get(name) {
            return TxEntry::Short(slot_id(slot));
        }
        if self.slots.is_empty() {
            self.slots = vec![None; DICT_SLOTS];
        }
        let slot = self.next;
        self.next = (self.next + 1) % DICT_SLOTS;
        if let Some(old) = self.slots[slot].replace(name.clone()) {
            self.index.remove(&old);
        }
        self.index.insert(name.clone(), slot);
        TxEntry::Full(slot_id(slot))
    }
}

/// The wire id of a slot. Slots are below 128, so the id fits a byte.
fn slot_id(slot: usize) -> u8 {
    (slot % DICT_SLOTS + 1) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tx_round_robin_and_eviction() {
        let mut tx = TxDict::default();
        let s1 = Bytes::from_static(b"s1");
        assert_eq!(tx.peek(&s1), TxEntry::Full(1));
        assert_eq!(tx.insert(&s1), TxEntry::Full(1));
        assert_eq!(tx.peek(&s1), TxEntry::Short(1));
        assert_eq!(tx.insert(&s1), TxEntry::Short(1));
        for i in 2..=128u8 {
            let name = Bytes::from(format!("n{i}"));
            assert_eq!(tx.insert(&name), TxEntry::Full(i));
        }
        // Slot 0 is reused: s1 is evicted by the 129th name.
        let n129 = Bytes::from_static(b"n129");
        assert_eq!(tx.insert(&n129), TxEntry::Full(1));
        assert_eq!(tx.insert(&n129), TxEntry::Short(1));
        assert_eq!(tx.insert(&s1), TxEntry::Full(2));
        assert_eq!(tx.index.len(), DICT_SLOTS);
    }

    #[test]
    fn rx_slots() {
        let mut rx = RxDict::default();
        assert_eq!(rx.get(1), None);
        rx.set(1, Bytes::from_static(b"s1"));
        rx.set(128, Bytes::from_static(b"last"));
        rx.set(0, Bytes::from_static(b"ignored"));
        rx.set(129, Bytes::from_static(b"ignored"));
        assert_eq!(rx.get(1).map(|b| &b[..]), Some(&b"s1"[..]));
        assert_eq!(rx.get(128).map(|b| &b[..]), Some(&b"last"[..]));
        assert_eq!(rx.get(0), None);
        assert_eq!(rx.get(129), None);
    }
}
