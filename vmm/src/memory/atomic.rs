//! Atomic read-modify-write on 64-bit words of guest memory that the running shim uses at the
//! same time (the event mailbox). vm-memory checks that the word lies inside one mapped region
//! and is aligned before handing out the `AtomicU64`, so no `unsafe` is needed here; the
//! guest side uses `lock`ed instructions on the same words.

use std::sync::atomic::{AtomicU64, Ordering};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, VolatileMemory};

#[derive(Debug, thiserror::Error)]
#[error("the shared word at {gpa:#x} is not an aligned 8-byte word of guest memory")]
pub struct AtomicWordError {
    pub gpa: u64,
}

fn with_word<R>(
    mem: &GuestMemoryMmap,
    gpa: u64,
    f: impl FnOnce(&AtomicU64) -> R,
) -> Result<R, AtomicWordError> {
    let slice = mem.get_slice(GuestAddress(gpa), 8).map_err(|_| AtomicWordError { gpa })?;
    let word = slice.get_atomic_ref::<AtomicU64>(0).map_err(|_| AtomicWordError { gpa })?;
    Ok(f(word))
}

/// Atomically replaces the word at `gpa` with `v`; returns the old value.
pub fn swap_u64(mem: &GuestMemoryMmap, gpa: u64, v: u64) -> Result<u64, AtomicWordError> {
    with_word(mem, gpa, |w| w.swap(v, Ordering::SeqCst))
}

/// Atomically ORs `bits` into the word at `gpa`; returns the old value.
pub fn fetch_or_u64(mem: &GuestMemoryMmap, gpa: u64, bits: u64) -> Result<u64, AtomicWordError> {
    with_word(mem, gpa, |w| w.fetch_or(bits, Ordering::SeqCst))
}

/// Atomically ANDs `mask` into the word at `gpa`; returns the old value.
pub fn fetch_and_u64(mem: &GuestMemoryMmap, gpa: u64, mask: u64) -> Result<u64, AtomicWordError> {
    with_word(mem, gpa, |w| w.fetch_and(mask, Ordering::SeqCst))
}

/// Atomically reads the word at `gpa`.
pub fn load_u64(mem: &GuestMemoryMmap, gpa: u64) -> Result<u64, AtomicWordError> {
    with_word(mem, gpa, |w| w.load(Ordering::SeqCst))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0x1000), 0x1000)]).unwrap()
    }

    #[test]
    fn swap_and_or_act_on_the_guest_word() {
        let m = mem();
        assert_eq!(fetch_or_u64(&m, 0x1008, 0b101).unwrap(), 0);
        assert_eq!(fetch_or_u64(&m, 0x1008, 0b010).unwrap(), 0b101);
        assert_eq!(load_u64(&m, 0x1008).unwrap(), 0b111);
        assert_eq!(swap_u64(&m, 0x1008, 0).unwrap(), 0b111);
        assert_eq!(load_u64(&m, 0x1008).unwrap(), 0);
    }

    #[test]
    fn refuses_unaligned_and_out_of_memory_words() {
        let m = mem();
        for gpa in [0x1004, 0x1ffc, 0x2000, 0, u64::MAX - 3] {
            assert!(swap_u64(&m, gpa, 1).is_err(), "{gpa:#x}");
        }
    }
}
