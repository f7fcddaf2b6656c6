//! The guest's grant table as its backends (domain 0) use it (xen-pv-contract.md §6.3): before
//! touching a granted page a backend maps the grant here, which checks it as Xen checks a
//! mapping domain's request (`map_grant_ref` and `_set_status_v1` in Xen's
//! `common/grant_table.c`), and unmaps it before publishing its response.
//!
//! # Theory
//!
//! ```text
//!  entry (8 bytes, guest-writable at any time)     this module, per gref (Xen's active entry)
//!  ┌──────────────┬──────────────┬───────────┐     ┌─────────────────────────────────────┐
//!  │ flags  (u16) │ domid  (u16) │ frame u32 │     │ domid, mfn, readers, writers (pins) │
//!  └──────────────┴──────────────┴───────────┘     └─────────────────────────────────────┘
//!   └──────── one 32-bit word ───┘
//! ```
//!
//! The first pin of a grant (and the first writable pin) checks the `{flags, domid}` word —
//! `GTF_permit_access` without `GTF_sub_page`, granted to the backend's domid, not
//! `GTF_readonly` for a writer — and sets `GTF_reading` (and `GTF_writing`) with a
//! compare-exchange of the whole word, retried a few times (Xen: 5) if the guest changes it
//! meanwhile. Only then is `frame` read, once, and it must be the domain's RAM: shim pages,
//! grant frames and shared_info are refused. Later pins use the recorded frame, as Xen does.
//! The last writable unpin clears `GTF_writing`, the last unpin `GTF_reading`, so the guest's
//! revocation (`cmpxchg(flags, old, 0)` failing while either is set) stays honest.
//!
//! The guest is hostile: it may rewrite the entry between any two accesses. Steps that make
//! the backend safe are the checks on the word it swapped in and on the frame it read once;
//! what the guest does to the entry afterwards only hurts itself.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use vm_memory::{GuestAddress, GuestMemoryBackend, VolatileMemory};
use xen_abi::grant_table::*;
use xen_abi::hostcall::MfnRange;

/// Compare-exchange attempts on a shared entry before giving up (Xen's `_set_status_v1`).
pub const CMPXCHG_RETRIES: u32 = 5;
/// Most pins of one kind on one grant (Xen refuses a pin that would reach bit 7 of a count).
pub const MAX_PINS: u32 = 0x7f;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    #[error("grant reference {gref:#x} is beyond the grant table")]
    BadRef { gref: GrantRef },
    #[error("grant {gref:#x} does not grant domain {domid} access (flags {flags:#x}, domid {granted_to})")]
    NotGranted { gref: GrantRef, domid: u16, flags: u16, granted_to: u16 },
    #[error("grant {gref:#x} is read-only")]
    ReadOnly { gref: GrantRef },
    #[error("grant {gref:#x} kept changing under the backend")]
    Unstable { gref: GrantRef },
    #[error("grant {gref:#x} names frame {frame:#x}, which is not the domain's RAM")]
    BadFrame { gref: GrantRef, frame: u32 },
    #[error("grant {gref:#x} is in use by domain {domid}")]
    PinnedByOther { gref: GrantRef, domid: u16 },
    #[error("grant {gref:#x} is pinned too often")]
    PinOverflow { gref: GrantRef },
    #[error("grant {gref:#x} is not mapped {kind}")]
    NotMapped { gref: GrantRef, kind: &'static str },
    #[error("the grant table word at {gpa:#x} is not accessible")]
    Memory { gpa: u64 },
}

impl GrantError {
    /// The `GNTST_*` status Xen would report for the same failure.
    pub fn status(&self) -> i16 {
        match self {
            GrantError::BadRef { .. } => GNTST_BAD_GNTREF,
            GrantError::BadFrame { .. } => GNTST_BAD_PAGE,
            GrantError::NotMapped { .. } => GNTST_BAD_HANDLE,
            _ => GNTST_GENERAL_ERROR,
        }
    }
}

/// 32-bit words of guest memory shared with the guest, accessed atomically.
pub trait SharedWords {
    fn load(&self, gpa: u64) -> Option<u32>;
    /// Replaces `old` with `new`; returns the value found (equal to `old` on success).
    fn compare_exchange(&self, gpa: u64, old: u32, new: u32) -> Option<u32>;
    /// Atomically ANDs `mask` into the word.
    fn fetch_and(&self, gpa: u64, mask: u32) -> Option<u32>;
}

/// [`SharedWords`] over vm-memory guest memory (bounds- and alignment-checked atomics).
pub struct GuestWords<'a, M: GuestMemoryBackend>(pub &'a M);

impl<M: GuestMemoryBackend> GuestWords<'_, M> {
    fn with<R>(&self, gpa: u64, f: impl FnOnce(&AtomicU32) -> R) -> Option<R> {
        let slice = self.0.get_slice(GuestAddress(gpa), 4).ok()?;
        let word = slice.get_atomic_ref::<AtomicU32>(0).ok()?;
        Some(f(word))
    }
}

impl<M: GuestMemoryBackend> SharedWords for GuestWords<'_, M> {
    fn load(&self, gpa: u64) -> Option<u32> {
        self.with(gpa, |w| w.load(Ordering::SeqCst))
    }

    fn compare_exchange(&self, gpa: u64, old: u32, new: u32) -> Option<u32> {
        self.with(gpa, |w| {
            w.compare_exchange(old, new, Ordering::SeqCst, Ordering::SeqCst).unwrap_or_else(|v| v)
        })
    }

    fn fetch_and(&self, gpa: u64, mask: u32) -> Option<u32> {
        self.with(gpa, |w| w.fetch_and(mask, Ordering::SeqCst))
    }
}

/// A grant in use by a backend: the frame to access and how. Hand it back to
/// [`GrantTable::unmap`] before publishing the response that completes the request.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a mapped grant must be unmapped"]
pub struct Grant {
    pub gref: GrantRef,
    /// The granted machine frame (guest-physical address `mfn << 12`), the domain's RAM.
    pub mfn: u64,
    pub readonly: bool,
}

impl Grant {
    pub fn gpa(&self) -> GuestAddress {
        GuestAddress(self.mfn << 12)
    }
}

/// Xen's `struct active_grant_entry`: what pins a grant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Active {
    domid: u16,
    mfn: u64,
    readers: u32,
    writers: u32,
}

/// One domain's grant table as seen by its backends.
#[derive(Debug)]
pub struct GrantTable {
    frames: MfnRange,
    ram: Vec<MfnRange>,
    active: BTreeMap<GrantRef, Active>,
}

/// `{flags, domid}` as one little-endian word.
fn combo(flags: u16, domid: u16) -> u32 {
    u32::from(flags) | u32::from(domid) << 16
}

fn split(word: u32) -> (u16, u16) {
    (word as u16, (word >> 16) as u16)
}

impl GrantTable {
    /// The table in `frames` (all the frames the domain may ever use) of a domain whose RAM is
    /// `ram`.
    pub fn new(frames: MfnRange, ram: &[MfnRange]) -> GrantTable {
        GrantTable { frames, ram: ram.to_vec(), active: BTreeMap::new() }
    }

    /// Entries the table can hold.
    pub fn nr_entries(&self) -> u64 {
        self.frames.nr_frames.saturating_mul(u64::from(GRANT_ENTRIES_PER_FRAME_V1))
    }

    fn entry_gpa(&self, gref: GrantRef) -> Result<u64, GrantError> {
        if u64::from(gref) >= self.nr_entries() {
            return Err(GrantError::BadRef { gref });
        }
        let frame = self.frames.first_mfn + u64::from(gref / GRANT_ENTRIES_PER_FRAME_V1);
        Ok((frame << 12) + u64::from(gref % GRANT_ENTRIES_PER_FRAME_V1) * GRANT_ENTRY_V1_SIZE)
    }

    fn is_ram(&self, mfn: u64) -> bool {
        self.ram.iter().any(|r| r.contains(mfn)) && !self.frames.contains(mfn)
    }

    /// Pins of grant `gref` as `(readers, writers)`.
    pub fn pins(&self, gref: GrantRef) -> (u32, u32) {
        self.active.get(&gref).map_or((0, 0), |a| (a.readers, a.writers))
    }

    /// Grants pinned now.
    pub fn nr_active(&self) -> usize {
        self.active.len()
    }

    /// Maps grant `gref` for domain `domid` (the backend's, 0): for reading only, or also for
    /// writing. On success the entry carries `GTF_reading` (and `GTF_writing`).
    pub fn map(
        &mut self,
        mem: &impl SharedWords,
        gref: GrantRef,
        domid: u16,
        readonly: bool,
    ) -> Result<Grant, GrantError> {
        let at = self.entry_gpa(gref)?;
        let act = self.active.get(&gref).copied();
        if let Some(a) = act {
            if a.domid != domid {
                return Err(GrantError::PinnedByOther { gref, domid: a.domid });
            }
            if a.readers >= MAX_PINS || a.writers >= MAX_PINS {
                return Err(GrantError::PinOverflow { gref });
            }
        }
        let pinned = act.is_some();
        let mut set = 0u16;
        if !pinned || (!readonly && act.is_some_and(|a| a.writers == 0)) {
            set = set_status_v1(mem, at, gref, domid, readonly, pinned)?;
        }
        let mut a = match act {
            Some(a) => a,
            None => {
                // Read the frame once, after the flags are ours.
                let frame = mem.load(at + 4).ok_or(GrantError::Memory { gpa: at + 4 });
                let frame = match frame {
                    Ok(f) if self.is_ram(u64::from(f)) => f,
                    Ok(f) => {
                        clear_flags(mem, at, set);
                        return Err(GrantError::BadFrame { gref, frame: f });
                    }
                    Err(e) => {
                        clear_flags(mem, at, set);
                        return Err(e);
                    }
                };
                Active { domid, mfn: u64::from(frame), readers: 0, writers: 0 }
            }
        };
        if readonly {
            a.readers += 1;
        } else {
            a.writers += 1;
        }
        self.active.insert(gref, a);
        Ok(Grant { gref, mfn: a.mfn, readonly })
    }

    /// Unmaps `g`: the last writer clears `GTF_writing`, the last pin `GTF_reading`.
    pub fn unmap(&mut self, mem: &impl SharedWords, g: Grant) -> Result<(), GrantError> {
        let gref = g.gref;
        let kind = if g.readonly { "read-only" } else { "writable" };
        let Some(a) = self.active.get_mut(&gref) else {
            return Err(GrantError::NotMapped { gref, kind });
        };
        let count = if g.readonly { &mut a.readers } else { &mut a.writers };
        if *count == 0 || a.mfn != g.mfn {
            return Err(GrantError::NotMapped { gref, kind });
        }
        *count -= 1;
        let mut clear = 0;
        if a.writers == 0 && !g.readonly {
            clear |= GTF_WRITING;
        }
        if a.readers == 0 && a.writers == 0 {
            clear |= GTF_READING;
            self.active.remove(&gref);
        }
        // The entry is within the table: it was mapped.
        let at = self.entry_gpa(gref)?;
        clear_flags(mem, at, clear);
        Ok(())
    }
}

/// Xen's `_set_status_v1` for a mapping (`GTF_sub_page` refused): returns the bits it set.
fn set_status_v1(
    mem: &impl SharedWords,
    at: u64,
    gref: GrantRef,
    domid: u16,
    readonly: bool,
    pinned: bool,
) -> Result<u16, GrantError> {
    let mut cur = mem.load(at).ok_or(GrantError::Memory { gpa: at })?;
    for _ in 0..CMPXCHG_RETRIES {
        let (flags, granted_to) = split(cur);
        if !pinned && (flags & (GTF_TYPE_MASK | GTF_SUB_PAGE) != GTF_PERMIT_ACCESS || granted_to != domid) {
            return Err(GrantError::NotGranted { gref, domid, flags, granted_to });
        }
        let mut want = GTF_READING;
        if !readonly {
            if flags & GTF_READONLY != 0 {
                return Err(GrantError::ReadOnly { gref });
            }
            want |= GTF_WRITING;
        }
        let new = combo(flags | want, granted_to);
        let found = mem.compare_exchange(at, cur, new).ok_or(GrantError::Memory { gpa: at })?;
        if found == cur {
            return Ok(want & !flags);
        }
        cur = found;
    }
    Err(GrantError::Unstable { gref })
}

/// Clears `bits` of the entry's flags (Xen's `gnttab_clear_flags`).
fn clear_flags(mem: &impl SharedWords, at: u64, bits: u16) {
    if bits != 0 {
        // A table word that was readable a moment ago; nothing to do if it is not.
        let _ = mem.fetch_and(at, !u32::from(bits));
    }
}

#[cfg(test)]
mod tests;
