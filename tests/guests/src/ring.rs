//! The guest (frontend) end of the PV console ring (xen-pv-contract.md §8.1), written the way
//! Linux's `hvc_xen` writes it, plus the event-channel and scheduler calls it needs.
//!
//! The ring page is `start_info.console.domU.mfn`. Like Linux's `mfn_to_virt`, the kernel
//! finds its pseudo-physical frame in the read-only M2P the hypervisor maps at
//! `MACH2PHYS_VIRT_START`, and its address in the builder's initial mapping of
//! `VIRT_BASE + pfn * 4096`.
#![allow(unsafe_code)]

use core::ptr::{addr_of, addr_of_mut};
use core::sync::atomic::{fence, Ordering};

use xen_abi::event::EVTCHNOP_SEND;
use xen_abi::hypercall::HYPERVISOR_EVENT_CHANNEL_OP;
use xen_abi::io::console::{mask_out, XenconsInterface, XENCONS_OUT_SIZE};
use xen_abi::xen::{StartInfo, MACH2PHYS_NR_ENTRIES, MACH2PHYS_VIRT_START, PAGE_SHIFT};

use crate::hypercall::hypercall3;
use crate::layout::VIRT_BASE;

/// `HYPERVISOR_event_channel_op(EVTCHNOP_send, &{port})`.
pub fn evtchn_send(port: u32) -> i64 {
    let arg = port;
    // SAFETY: EVTCHNOP_send only reads `struct evtchn_send` (one u32).
    unsafe { hypercall3(HYPERVISOR_EVENT_CHANNEL_OP, EVTCHNOP_SEND, &arg as *const u32 as u64, 0) }
}

/// The time-stamp counter (CR4.TSD is clear for PV guests, as on Xen).
pub fn rdtsc() -> u64 {
    // SAFETY: rdtsc only reads the TSC.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// `m2p[mfn]`: the pseudo-physical frame of machine frame `mfn`, `None` outside the M2P.
pub fn mfn_to_pfn(mfn: u64) -> Option<u64> {
    if mfn >= MACH2PHYS_NR_ENTRIES {
        return None;
    }
    // SAFETY: the hypervisor maps the M2P read-only and user-readable at
    // MACH2PHYS_VIRT_START in every address space of a PV guest; mfn is within its entries.
    Some(unsafe { ((MACH2PHYS_VIRT_START + mfn * 8) as *const u64).read_volatile() })
}

/// The console ring, as the frontend writes it.
pub struct ConsoleRing {
    intf: *mut XenconsInterface,
}

impl ConsoleRing {
    /// The ring of `start_info`, at its address in the initial mapping; `None` if its frame
    /// is not one of the domain's pages.
    pub fn from_start_info(si: &StartInfo) -> Option<ConsoleRing> {
        let pfn = mfn_to_pfn(si.console_mfn)?;
        if pfn >= si.nr_pages {
            return None;
        }
        Some(ConsoleRing { intf: (VIRT_BASE + (pfn << PAGE_SHIFT)) as *mut XenconsInterface })
    }

    pub fn out_cons(&self) -> u32 {
        // SAFETY: `intf` is the ring page, mapped writable by the builder for the kernel's
        // lifetime; the host writes this index concurrently, hence volatile.
        unsafe { addr_of!((*self.intf).out_cons).read_volatile() }
    }

    pub fn out_prod(&self) -> u32 {
        // SAFETY: as in out_cons.
        unsafe { addr_of!((*self.intf).out_prod).read_volatile() }
    }

    /// Sets `out_prod` directly (for tests of a hostile ring); `wmb` first.
    pub fn set_out_prod(&mut self, prod: u32) {
        fence(Ordering::SeqCst);
        // SAFETY: as in out_cons; the guest owns out_prod.
        unsafe { addr_of_mut!((*self.intf).out_prod).write_volatile(prod) }
    }

    /// Free bytes in `out`.
    pub fn space(&self) -> usize {
        let used = self.out_prod().wrapping_sub(self.out_cons()) as usize;
        XENCONS_OUT_SIZE.saturating_sub(used)
    }

    /// Copies as much of `data` as fits into `out` and publishes it (Linux's
    /// `__write_console`: bytes, `wmb`, `out_prod`); returns how many bytes went in. Does
    /// not notify.
    pub fn write(&mut self, data: &[u8]) -> usize {
        let cons = self.out_cons();
        let mut prod = self.out_prod();
        fence(Ordering::SeqCst);
        let mut sent = 0;
        while sent < data.len() && (prod.wrapping_sub(cons) as usize) < XENCONS_OUT_SIZE {
            // SAFETY: as in out_cons; the index is masked into `out`.
            unsafe {
                addr_of_mut!((*self.intf).out).cast::<u8>().add(mask_out(prod)).write_volatile(data[sent])
            };
            prod = prod.wrapping_add(1);
            sent += 1;
        }
        self.set_out_prod(prod);
        sent
    }
}
