//! The 2-level bitmaps (Xen `event_2l.c`) in shared_info and `vcpu_info`, the upcall condition
//! the trap code checks on every return to the guest, and the ports the VMM raises.
//!
//! ```text
//!  raise p:   pending[p] 0→1 ?──no──► done          unmask p:  mask[p] 1→0
//!                 │yes                                            and pending[p]
//!             mask[p] clear and sel[p/64] 0→1 ?                   and sel[p/64] 0→1 ?
//!                 │yes                                                │yes
//!             vcpu_mark_events_pending: upcall_pending = 1  ◄─────────┘
//! ```

use super::PortState;
use crate::machine::Machine;
use crate::shim::Shim;
use core::mem::offset_of;
use xen_abi::event::EVTCHN_2L_NR_CHANNELS;
use xen_abi::hostcall::MAILBOX_WORDS;
use xen_abi::xen::{SharedInfo, VcpuInfo};

const EVTCHN_PENDING: u64 = offset_of!(SharedInfo, evtchn_pending) as u64;
const EVTCHN_MASK: u64 = offset_of!(SharedInfo, evtchn_mask) as u64;
const UPCALL_PENDING: u64 = offset_of!(VcpuInfo, evtchn_upcall_pending) as u64;
const UPCALL_MASK: u64 = offset_of!(VcpuInfo, evtchn_upcall_mask) as u64;
const PENDING_SEL: u64 = offset_of!(VcpuInfo, evtchn_pending_sel) as u64;

/// The word and bit of `port` in a 2-level bitmap.
fn word_bit(port: u32) -> (u64, u64) {
    (u64::from(port / 64), 1u64 << (port % 64))
}

impl<M: Machine> Shim<M> {
    fn shared_info(&self) -> u64 {
        self.boot.shared_info_mfn << 12
    }

    fn vcpu_info_byte(&self, off: u64) -> u8 {
        let mut b = [0u8; 1];
        // vcpu_info is shim-validated machine memory; a failed read reads as 0.
        let _ = self.m.read_phys(self.vcpu.vcpu_info + off, &mut b);
        b[0]
    }

    /// Bit `port` of the shared_info bitmap at `base` (`EVTCHN_PENDING` or `EVTCHN_MASK`).
    fn bitmap_test(&self, base: u64, port: u32) -> bool {
        let (w, bit) = word_bit(port);
        // Unreadable reads as set: a masked port is never delivered.
        self.m.read_u64(self.shared_info() + base + 8 * w).map_or(true, |v| v & bit != 0)
    }

    /// Sets (or clears) bit `port` of the bitmap at `base`; returns its old value.
    fn bitmap_update(&mut self, base: u64, port: u32, set: bool) -> bool {
        let (w, bit) = word_bit(port);
        let at = self.shared_info() + base + 8 * w;
        let Ok(v) = self.m.read_u64(at) else { return true };
        let new = if set { v | bit } else { v & !bit };
        if new != v {
            let _ = self.m.write_u64(at, new);
        }
        v & bit != 0
    }

    /// `test_and_set(evtchn_pending_sel[word])` in the vCPU's vcpu_info.
    fn pending_sel_test_and_set(&mut self, word: u64) -> bool {
        let at = self.vcpu.vcpu_info + PENDING_SEL;
        let Ok(sel) = self.m.read_u64(at) else { return true };
        if sel & (1 << word) == 0 {
            let _ = self.m.write_u64(at, sel | (1 << word));
        }
        sel & (1 << word) != 0
    }

    /// `evtchn_upcall_pending && !evtchn_upcall_mask`: an upcall is due on return to the guest
    /// (Xen's `local_events_need_delivery`).
    /// Runs on every return to the guest: one 2-byte read of the adjacent pending and mask
    /// bytes, as Xen tests them with one 16-bit load.
    pub fn upcall_deliverable(&self) -> bool {
        const _: () = assert!(UPCALL_MASK == UPCALL_PENDING + 1);
        let mut b = [0u8; 2];
        let at = self.vcpu.vcpu_info + UPCALL_PENDING;
        self.m.read_phys(at, &mut b).is_ok() && b[0] != 0 && b[1] == 0
    }

    /// The vCPU's `evtchn_upcall_pending`.
    pub fn upcall_pending(&self) -> bool {
        self.vcpu_info_byte(UPCALL_PENDING) != 0
    }

    /// The vCPU's `evtchn_upcall_mask` (the guest's virtual interrupt flag, inverted).
    pub fn upcall_mask(&self) -> u8 {
        self.vcpu_info_byte(UPCALL_MASK)
    }

    pub fn set_upcall_mask(&mut self, mask: u8) {
        let at = self.vcpu.vcpu_info + UPCALL_MASK;
        let _ = self.m.write_phys(at, &[mask]);
    }

    /// Writes CR2 of a page fault into `vcpu_info.arch.cr2`, where a PV guest reads it.
    pub fn set_guest_cr2(&mut self, cr2: u64) {
        let at = self.vcpu.vcpu_info + (offset_of!(VcpuInfo, arch) as u64);
        let _ = self.m.write_u64(at, cr2);
    }

    /// Xen's `vcpu_mark_events_pending`: set `evtchn_upcall_pending`; the 0→1 edge is what
    /// kicks a vCPU out of `SCHEDOP_block`/`SCHEDOP_poll`.
    pub fn vcpu_mark_events_pending(&mut self) {
        if !self.upcall_pending() {
            let _ = self.m.write_phys(self.vcpu.vcpu_info + UPCALL_PENDING, &[1]);
            self.ev.marked += 1;
        }
    }

    /// The port's pending bit (`evtchn_2l_is_pending`), whatever its mask.
    pub fn evtchn_is_pending(&self, port: u32) -> bool {
        port < EVTCHN_2L_NR_CHANNELS && self.bitmap_test(EVTCHN_PENDING, port)
    }

    /// The port's mask bit (`evtchn_2l_is_masked`); ports past the ABI's range are masked.
    pub fn evtchn_is_masked(&self, port: u32) -> bool {
        port >= EVTCHN_2L_NR_CHANNELS || self.bitmap_test(EVTCHN_MASK, port)
    }

    /// Xen's `evtchn_2l_set_pending` on the (only) vCPU: set the port's pending bit; if it was
    /// clear and the port is unmasked, set its selector bit and, on that edge,
    /// `evtchn_upcall_pending`. Every 0→1 pending edge also wakes `SCHEDOP_poll`.
    pub fn evtchn_set_pending(&mut self, port: u32) {
        if port >= EVTCHN_2L_NR_CHANNELS || self.bitmap_update(EVTCHN_PENDING, port, true) {
            return;
        }
        let (word, _) = word_bit(port);
        if !self.evtchn_is_masked(port) && !self.pending_sel_test_and_set(word) {
            self.vcpu_mark_events_pending();
        }
        self.ev.raised += 1;
    }

    /// Xen's `evtchn_2l_clear_pending`.
    pub fn evtchn_clear_pending(&mut self, port: u32) {
        if port < EVTCHN_2L_NR_CHANNELS {
            self.bitmap_update(EVTCHN_PENDING, port, false);
        }
    }

    /// Xen's `evtchn_2l_unmask`: clear the mask bit; a port that was masked while it became
    /// pending now sets its selector bit and `evtchn_upcall_pending`.
    pub fn evtchn_2l_unmask(&mut self, port: u32) {
        if port >= EVTCHN_2L_NR_CHANNELS {
            return;
        }
        let (word, _) = word_bit(port);
        if self.bitmap_update(EVTCHN_MASK, port, false)
            && self.evtchn_is_pending(port)
            && !self.pending_sel_test_and_set(word)
        {
            self.vcpu_mark_events_pending();
        }
    }

    /// A port the VMM raised through the mailbox: raised only when it is (or may be) bound to
    /// domain 0, as a notification from the VMM's end would be in Xen.
    pub fn evtchn_host_raise(&mut self, port: u32) {
        match self.ev.channel(port).map(|c| c.state) {
            Some(PortState::Interdomain { remote_dom: 0, .. })
            | Some(PortState::Unbound { remote_dom: 0 }) => self.evtchn_set_pending(port),
            _ => self.ev.ignored_host_raises += 1,
        }
    }

    /// Takes the ports the VMM raised and runs the timers: called on every hardware interrupt
    /// and after every wake-up from `wait_for_interrupt`.
    pub fn poll_sources(&mut self) {
        for w in 0..MAILBOX_WORDS {
            let mut bits = self.m.take_host_events(w);
            while bits != 0 {
                let b = bits.trailing_zeros();
                bits &= bits - 1;
                self.m.stats().host_raised += 1;
                self.evtchn_host_raise(w as u32 * 64 + b);
            }
        }
        self.check_timers();
    }
}
