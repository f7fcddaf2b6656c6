//! Event channels from the guest's side: `HYPERVISOR_event_channel_op` wrappers
//! (xen-pv-contract.md §5.3) and, where the hypervisor lets the guest map it, the 2-level
//! bitmaps of shared_info.
#![allow(unsafe_code)]

use core::ptr::addr_of_mut;
use core::sync::atomic::{AtomicU64, Ordering};
use xen_abi::event::*;
use xen_abi::hypercall::{HYPERVISOR_EVENT_CHANNEL_OP, HYPERVISOR_UPDATE_VA_MAPPING};
use xen_abi::xen::{SharedInfo, StartInfo, UVMF_INVLPG};
use zerocopy::{FromBytes, IntoBytes};

use crate::hypercall::hypercall3;

/// `HYPERVISOR_event_channel_op(cmd, arg)`; the hypervisor reads and writes `*arg`.
pub fn op<T: FromBytes + IntoBytes>(cmd: u64, arg: &mut T) -> i64 {
    // SAFETY: `arg` is a whole, writable argument struct; every EVTCHNOP touches at most
    // its own struct, and `T` is plain data (any bytes written back are a valid `T`).
    unsafe { hypercall3(HYPERVISOR_EVENT_CHANNEL_OP, cmd, arg as *mut T as u64, 0) }
}

/// `HYPERVISOR_event_channel_op(cmd, addr)` with any address, for -EFAULT checks: safe
/// because callers pass addresses nothing of this program lives at.
pub fn op_raw(cmd: u64, addr: u64) -> i64 {
    // SAFETY: see above.
    unsafe { hypercall3(HYPERVISOR_EVENT_CHANNEL_OP, cmd, addr, 0) }
}

/// A port or the hypercall's `-errno`.
pub type PortResult = Result<u32, i64>;

fn port_result(rc: i64, port: u32) -> PortResult {
    if rc == 0 {
        Ok(port)
    } else {
        Err(rc)
    }
}

pub fn alloc_unbound(dom: u16, remote_dom: u16) -> PortResult {
    let mut a = EvtchnAllocUnbound { dom, remote_dom, port: 0 };
    port_result(op(EVTCHNOP_ALLOC_UNBOUND, &mut a), a.port)
}

pub fn bind_interdomain(remote_dom: u16, remote_port: u32) -> PortResult {
    let mut a = EvtchnBindInterdomain { remote_dom, remote_port, ..Default::default() };
    port_result(op(EVTCHNOP_BIND_INTERDOMAIN, &mut a), a.local_port)
}

pub fn bind_virq(virq: u32, vcpu: u32) -> PortResult {
    let mut a = EvtchnBindVirq { virq, vcpu, port: 0 };
    port_result(op(EVTCHNOP_BIND_VIRQ, &mut a), a.port)
}

pub fn bind_ipi(vcpu: u32) -> PortResult {
    let mut a = EvtchnBindIpi { vcpu, port: 0 };
    port_result(op(EVTCHNOP_BIND_IPI, &mut a), a.port)
}

pub fn bind_pirq(pirq: u32) -> PortResult {
    let mut a = EvtchnBindPirq { pirq, ..Default::default() };
    port_result(op(EVTCHNOP_BIND_PIRQ, &mut a), a.port)
}

pub fn close(port: u32) -> i64 {
    op(EVTCHNOP_CLOSE, &mut EvtchnClose { port })
}

pub fn send(port: u32) -> i64 {
    op(EVTCHNOP_SEND, &mut EvtchnSend { port })
}

pub fn unmask(port: u32) -> i64 {
    op(EVTCHNOP_UNMASK, &mut EvtchnUnmask { port })
}

pub fn bind_vcpu(port: u32, vcpu: u32) -> i64 {
    op(EVTCHNOP_BIND_VCPU, &mut EvtchnBindVcpu { port, vcpu })
}

pub fn reset(cmd: u64, dom: u16) -> i64 {
    op(cmd, &mut EvtchnReset { dom })
}

pub fn status(dom: u16, port: u32) -> Result<EvtchnStatus, i64> {
    let mut a = EvtchnStatus { dom, port, ..Default::default() };
    match op(EVTCHNOP_STATUS, &mut a) {
        0 => Ok(a),
        rc => Err(rc),
    }
}

/// A page-aligned page of this program that [`SharedInfoMap::map`] remaps onto shared_info.
#[repr(C, align(4096))]
struct Page([u8; 4096]);
static mut SHARED_INFO_PAGE: Page = Page([0; 4096]);

/// shared_info mapped into this program (as Linux maps it with `update_va_mapping`).
#[derive(Clone, Copy)]
pub struct SharedInfoMap(*mut SharedInfo);

impl SharedInfoMap {
    /// Maps the shared_info frame over a page of `.bss`; `Err(rc)` when the hypervisor
    /// refuses (`-ENOSYS` while it has no PV MMU).
    pub fn map(si: &StartInfo) -> Result<SharedInfoMap, i64> {
        let va = addr_of_mut!(SHARED_INFO_PAGE) as u64;
        // Present, writable, accessed, dirty, no-execute.
        let pte = (si.shared_info & !0xfff) | 0x63 | (1 << 63);
        // SAFETY: the page belongs to this program and nothing else refers to it; after the
        // call its VA shows shared_info, which is only accessed through this map.
        let rc = unsafe { hypercall3(HYPERVISOR_UPDATE_VA_MAPPING, va, pte, UVMF_INVLPG) };
        if rc == 0 {
            Ok(SharedInfoMap(va as *mut SharedInfo))
        } else {
            Err(rc)
        }
    }

    fn word(&self, bitmap_offset: usize, port: u32) -> &AtomicU64 {
        let base = self.0 as usize + bitmap_offset + (8 * (port as usize / 64)) % (64 * 8);
        // SAFETY: the map covers the whole shared_info page and the word lies inside one of
        // its 64-word bitmaps; the hypervisor updates these words atomically too.
        unsafe { AtomicU64::from_ptr(base as *mut u64) }
    }

    pub fn pending(&self, port: u32) -> bool {
        self.word(core::mem::offset_of!(SharedInfo, evtchn_pending), port).load(Ordering::SeqCst)
            & (1 << (port % 64))
            != 0
    }

    pub fn clear_pending(&self, port: u32) {
        self.word(core::mem::offset_of!(SharedInfo, evtchn_pending), port)
            .fetch_and(!(1 << (port % 64)), Ordering::SeqCst);
    }

    pub fn is_masked(&self, port: u32) -> bool {
        self.word(core::mem::offset_of!(SharedInfo, evtchn_mask), port).load(Ordering::SeqCst)
            & (1 << (port % 64))
            != 0
    }

    pub fn set_masked(&self, port: u32, masked: bool) {
        let w = self.word(core::mem::offset_of!(SharedInfo, evtchn_mask), port);
        if masked {
            w.fetch_or(1 << (port % 64), Ordering::SeqCst);
        } else {
            w.fetch_and(!(1 << (port % 64)), Ordering::SeqCst);
        }
    }
}
