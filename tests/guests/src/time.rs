//! Time, timers and the vCPU from the guest's side: the pvclock computed from a
//! `vcpu_time_info` (xen-pv-contract.md §3.13), `HYPERVISOR_vcpu_op`, `set_timer_op`,
//! `SCHEDOP_block`/`SCHEDOP_poll`, and this vCPU's own `vcpu_info` placed in a page of the
//! program with `VCPUOP_register_vcpu_info`, where the guest can read it without mapping
//! shared_info.
#![allow(unsafe_code)]

use core::ptr::{addr_of, addr_of_mut, read_volatile, write_volatile};
use core::sync::atomic::{fence, Ordering};
use xen_abi::hypercall::{HYPERVISOR_SCHED_OP, HYPERVISOR_SET_TIMER_OP, HYPERVISOR_VCPU_OP};
use xen_abi::sched::{SchedPoll, SCHEDOP_BLOCK, SCHEDOP_POLL};
use xen_abi::vcpu::*;
use xen_abi::xen::{StartInfo, VcpuInfo, VcpuTimeInfo};

use crate::hypercall::hypercall3;
use crate::layout::VIRT_BASE;

pub const MS: u64 = 1_000_000;

/// `HYPERVISOR_vcpu_op(cmd, vcpu, arg)` with a pointer (or 0) the command may use; safe for
/// the commands this module issues: each reads or writes at most one struct at `arg`, which
/// callers pass as a reference or as an address nothing of this program lives at.
pub fn vcpu_op(cmd: u64, vcpu: u64, arg: u64) -> i64 {
    // SAFETY: see above.
    unsafe { hypercall3(HYPERVISOR_VCPU_OP, cmd, vcpu, arg) }
}

pub fn set_singleshot(vcpu: u64, timeout_abs_ns: u64, flags: u32) -> i64 {
    let a = VcpuSetSingleshotTimer { timeout_abs_ns, flags, _pad: 0 };
    vcpu_op(VCPUOP_SET_SINGLESHOT_TIMER, vcpu, &a as *const _ as u64)
}

pub fn set_periodic(period_ns: u64) -> i64 {
    let a = VcpuSetPeriodicTimer { period_ns };
    vcpu_op(VCPUOP_SET_PERIODIC_TIMER, 0, &a as *const _ as u64)
}

pub fn get_runstate_info(out: &mut VcpuRunstateInfo) -> i64 {
    vcpu_op(VCPUOP_GET_RUNSTATE_INFO, 0, out as *mut _ as u64)
}

/// `HYPERVISOR_set_timer_op(timeout_abs_ns)`.
pub fn set_timer_op(timeout_abs_ns: u64) -> i64 {
    // SAFETY: takes no pointer.
    unsafe { hypercall3(HYPERVISOR_SET_TIMER_OP, timeout_abs_ns, 0, 0) }
}

/// `SCHEDOP_block`: clears the upcall mask and sleeps until an event is deliverable.
pub fn block() -> i64 {
    // SAFETY: takes no pointer.
    unsafe { hypercall3(HYPERVISOR_SCHED_OP, SCHEDOP_BLOCK, 0, 0) }
}

/// `SCHEDOP_poll` on `ports` with an absolute timeout (0 = none).
pub fn poll(ports: &[u32], timeout: u64) -> i64 {
    let a = SchedPoll { ports: ports.as_ptr() as u64, nr_ports: ports.len() as u32, _pad: 0, timeout };
    // SAFETY: the hypervisor reads `a` and `ports`, both alive for the call.
    unsafe { hypercall3(HYPERVISOR_SCHED_OP, SCHEDOP_POLL, &a as *const _ as u64, 0) }
}

/// `SCHEDOP_poll` with a raw argument, for error checks.
pub fn poll_raw(arg: &SchedPoll) -> i64 {
    // SAFETY: SCHEDOP_poll only reads `arg` and the port list it names, never writes.
    unsafe { hypercall3(HYPERVISOR_SCHED_OP, SCHEDOP_POLL, arg as *const _ as u64, 0) }
}

/// The time stamp counter (CPL3 may read it: the guest kernel never sets CR4.TSD here).
pub fn rdtsc() -> u64 {
    // SAFETY: no side effects.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// System time (ns) from a `vcpu_time_info` the hypervisor keeps at `t`, under its version
/// protocol (retry while odd or changed; bounded).
///
/// # Safety
/// `t` must point to a readable `vcpu_time_info`.
pub unsafe fn pvclock_read(t: *const VcpuTimeInfo) -> u64 {
    for _ in 0..1000 {
        // SAFETY: the caller vouches for `t`; volatile because the hypervisor writes it.
        let (v1, rec) = unsafe { (read_volatile(addr_of!((*t).version)), read_volatile(t)) };
        fence(Ordering::Acquire);
        let tsc = rdtsc();
        fence(Ordering::Acquire);
        // SAFETY: as above.
        let v2 = unsafe { read_volatile(addr_of!((*t).version)) };
        if v1.is_multiple_of(2) && v1 == v2 {
            return pvclock(&rec, tsc);
        }
    }
    panic!("vcpu_time_info version never settled");
}

/// `system_time + ((tsc - tsc_timestamp) scaled by shift, then * mul >> 32)`.
pub fn pvclock(rec: &VcpuTimeInfo, tsc: u64) -> u64 {
    let mut delta = tsc.wrapping_sub(rec.tsc_timestamp);
    if rec.tsc_shift < 0 {
        delta >>= -i32::from(rec.tsc_shift);
    } else {
        delta <<= rec.tsc_shift;
    }
    rec.system_time.wrapping_add(((u128::from(delta) * u128::from(rec.tsc_to_system_mul)) >> 32) as u64)
}

/// A page of this program holding this vCPU's `vcpu_info` at [`VCPU_INFO_OFFSET`].
#[repr(C, align(4096))]
struct Page([u8; 4096]);
static mut VCPU_INFO_PAGE: Page = Page([0; 4096]);
/// Where in its page the `vcpu_info` goes (Linux puts it in per-CPU data, anywhere).
pub const VCPU_INFO_OFFSET: u32 = 4096 - 64 * 3;

/// The machine frame of this program's page at `va`, from the builder's P2M list.
pub fn virt_to_mfn(si: &StartInfo, va: u64) -> Option<u64> {
    let pfn = va.checked_sub(VIRT_BASE)? >> 12;
    if pfn >= si.nr_pages || si.mfn_list == 0 {
        return None;
    }
    // SAFETY: the builder maps the P2M list (`nr_pages` u64 entries) at `mfn_list`.
    Some(unsafe { read_volatile((si.mfn_list as *const u64).add(pfn as usize)) })
}

/// This vCPU's `vcpu_info` after [`VcpuInfoArea::register`].
#[derive(Clone, Copy)]
pub struct VcpuInfoArea(*mut VcpuInfo);

impl VcpuInfoArea {
    /// The page's MFN and the offset to register.
    pub fn location(si: &StartInfo) -> Option<(u64, u32)> {
        let page = addr_of_mut!(VCPU_INFO_PAGE) as u64;
        Some((virt_to_mfn(si, page)?, VCPU_INFO_OFFSET))
    }

    /// `VCPUOP_register_vcpu_info` for vCPU 0 with the given frame and offset.
    pub fn register_at(mfn: u64, offset: u32) -> i64 {
        let a = VcpuRegisterVcpuInfo { mfn, offset, rsvd: 0 };
        vcpu_op(VCPUOP_REGISTER_VCPU_INFO, 0, &a as *const _ as u64)
    }

    /// Registers the page of this program as vCPU 0's `vcpu_info`.
    pub fn register(si: &StartInfo) -> Result<VcpuInfoArea, i64> {
        let (mfn, offset) = Self::location(si).ok_or(-1i64)?;
        match Self::register_at(mfn, offset) {
            0 => Ok(Self::get()),
            rc => Err(rc),
        }
    }

    fn get() -> VcpuInfoArea {
        let page = addr_of_mut!(VCPU_INFO_PAGE) as *mut u8;
        // SAFETY: VCPU_INFO_OFFSET + 64 <= 4096: the pointer stays in the page.
        VcpuInfoArea(unsafe { page.add(VCPU_INFO_OFFSET as usize) }.cast())
    }

    pub fn upcall_pending(&self) -> u8 {
        // SAFETY: the area is this program's page; the hypervisor writes it: volatile.
        unsafe { read_volatile(addr_of!((*self.0).evtchn_upcall_pending)) }
    }

    pub fn upcall_mask(&self) -> u8 {
        // SAFETY: as upcall_pending.
        unsafe { read_volatile(addr_of!((*self.0).evtchn_upcall_mask)) }
    }

    pub fn set_upcall_mask(&self, mask: u8) {
        // SAFETY: as upcall_pending.
        unsafe { write_volatile(addr_of_mut!((*self.0).evtchn_upcall_mask), mask) }
    }

    pub fn pending_sel(&self) -> u64 {
        // SAFETY: as upcall_pending.
        unsafe { read_volatile(addr_of!((*self.0).evtchn_pending_sel)) }
    }

    /// What an upcall handler does first: clear `evtchn_upcall_pending` and the selector.
    pub fn ack(&self) {
        // SAFETY: as upcall_pending.
        unsafe {
            write_volatile(addr_of_mut!((*self.0).evtchn_upcall_pending), 0);
            write_volatile(addr_of_mut!((*self.0).evtchn_pending_sel), 0);
        }
    }

    /// A snapshot of the time record.
    pub fn time_record(&self) -> VcpuTimeInfo {
        // SAFETY: as upcall_pending.
        unsafe { read_volatile(addr_of!((*self.0).time)) }
    }

    /// System time now, from the registered `vcpu_info`.
    pub fn now(&self) -> u64 {
        // SAFETY: the time record lies inside the area.
        unsafe { pvclock_read(addr_of!((*self.0).time)) }
    }
}
