//! `HYPERVISOR_vcpu_op(cmd, vcpuid, arg)` (Xen 4.17 `common/domain.c:do_vcpu_op`,
//! `arch/x86/domain.c:arch_do_vcpu_op`), for the one vCPU the shim runs. It is always up,
//! initialised and the current vCPU, so the answers are Xen's for a running vCPU 0; every
//! other id is `-ENOENT` (Linux probes ids up to 8191 at boot).

use crate::hypercall::Args;
use crate::machine::Machine;
use crate::mm;
use crate::shim::Shim;
use core::mem::{offset_of, size_of};
use xen_abi::sched::SHUTDOWN_POWEROFF;
use xen_abi::vcpu::*;
use xen_abi::xen::{VcpuInfo, VcpuTimeInfo};
use xen_abi::Errno;
use zerocopy::IntoBytes;

pub fn vcpu_op<M: Machine>(s: &mut Shim<M>, a: Args) -> Result<u64, Errno> {
    // `int cmd, unsigned int vcpuid` in C.
    let (cmd, vcpuid, arg) = (u64::from(a.0[0] as u32), a.0[1] as u32, a.0[2]);
    if !s.vcpu_exists(vcpuid) {
        return Err(Errno::ENOENT);
    }
    match cmd {
        VCPUOP_INITIALISE => {
            // The context is copied in first; a vCPU that is initialised refuses it.
            check_readable(s, arg, VCPU_GUEST_CONTEXT_SIZE)?;
            Err(Errno::EEXIST)
        }
        // Initialised and not down: nothing to wake.
        VCPUOP_UP => Ok(0),
        VCPUOP_DOWN => {
            // The last vCPU going down powers the domain off.
            s.domain_shutdown(SHUTDOWN_POWEROFF as u8);
            Ok(0)
        }
        VCPUOP_IS_UP => Ok(1),
        VCPUOP_GET_RUNSTATE_INFO => {
            let r = s.runstate_now();
            let cr3 = s.cr3();
            mm::copy_to_guest(&mut s.m, cr3, arg, r.as_bytes()).map(|()| 0)
        }
        VCPUOP_REGISTER_RUNSTATE_MEMORY_AREA => {
            let area: VcpuRegisterRunstateMemoryArea = mm::read_guest(&s.m, s.cr3(), arg)?;
            if !mm::guest_range_ok(area.addr, size_of::<VcpuRunstateInfo>() as u64) {
                return Err(Errno::EFAULT);
            }
            s.vcpu.time.runstate_area = Some(area.addr);
            // Xen writes the current record at once, ignoring a fault.
            let r = s.runstate_now();
            let cr3 = s.cr3();
            let _ = mm::copy_to_guest(&mut s.m, cr3, area.addr, r.as_bytes());
            Ok(0)
        }
        VCPUOP_SET_PERIODIC_TIMER => {
            let set: VcpuSetPeriodicTimer = mm::read_guest(&s.m, s.cr3(), arg)?;
            if set.period_ns < crate::time::MILLISECS || set.period_ns > crate::time::STIME_DELTA_MAX {
                return Err(Errno::EINVAL);
            }
            s.set_periodic(set.period_ns);
            Ok(0)
        }
        VCPUOP_STOP_PERIODIC_TIMER => {
            s.set_periodic(0);
            Ok(0)
        }
        VCPUOP_SET_SINGLESHOT_TIMER => {
            let set: VcpuSetSingleshotTimer = mm::read_guest(&s.m, s.cr3(), arg)?;
            if set.flags & VCPU_SSHOTTMR_FUTURE != 0 && set.timeout_abs_ns < s.now_ns() {
                return Err(Errno::ETIME);
            }
            s.set_singleshot(set.timeout_abs_ns);
            Ok(0)
        }
        VCPUOP_STOP_SINGLESHOT_TIMER => {
            s.stop_singleshot();
            Ok(0)
        }
        VCPUOP_REGISTER_VCPU_INFO => {
            let info: VcpuRegisterVcpuInfo = mm::read_guest(&s.m, s.cr3(), arg)?;
            s.register_vcpu_info(info.mfn, info.offset).map(|()| 0)
        }
        VCPUOP_SEND_NMI => {
            if arg != 0 {
                return Err(Errno::EINVAL);
            }
            s.vcpu.nmi_pending = true;
            Ok(0)
        }
        // Only for the hardware domain's pinned vCPUs.
        VCPUOP_GET_PHYSID => Err(Errno::EINVAL),
        VCPUOP_REGISTER_VCPU_TIME_MEMORY_AREA => {
            let area: VcpuRegisterTimeMemoryArea = mm::read_guest(&s.m, s.cr3(), arg)?;
            if !mm::guest_range_ok(area.addr, size_of::<VcpuTimeInfo>() as u64) {
                return Err(Errno::EFAULT);
            }
            s.vcpu.time.time_area = Some(area.addr);
            s.update_vcpu_system_time();
            Ok(0)
        }
        _ => Err(Errno::ENOSYS),
    }
}

/// Fails with `EFAULT` unless `len` bytes at guest `va` can be read.
fn check_readable<M: Machine>(s: &Shim<M>, va: u64, len: usize) -> Result<(), Errno> {
    let mut buf = [0u8; 256];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(buf.len());
        mm::copy_from_guest(&s.m, s.cr3(), va.wrapping_add(done as u64), &mut buf[..n])?;
        done += n;
    }
    Ok(())
}

impl<M: Machine> Shim<M> {
    /// Xen 4.17's `map_vcpu_info`: once only, inside one page of the domain's RAM. The current
    /// contents move over; then every selector bit and `evtchn_upcall_pending` are set so the
    /// guest rescans (a spurious event it copes with).
    pub fn register_vcpu_info(&mut self, mfn: u64, offset: u32) -> Result<(), Errno> {
        const SIZE: usize = size_of::<VcpuInfo>();
        if offset as usize > mm::PAGE_SIZE as usize - SIZE {
            return Err(Errno::EINVAL);
        }
        if self.vcpu.vcpu_info_registered || !self.own.is_ram(mfn) {
            return Err(Errno::EINVAL);
        }
        // Xen's `map_guest_area`: the frame is held as a writable page for good, so it can
        // never become a page table or descriptor page that the shim's vcpu_info writes
        // would then corrupt.
        self.get_page_and_type(mfn, crate::mm::frames::PageType::Writable)?;
        let new = (mfn << 12) + u64::from(offset);
        let mut cur = [0u8; SIZE];
        self.m.read_phys(self.vcpu.vcpu_info, &mut cur)?;
        self.m.write_phys(new, &cur)?;
        self.vcpu.vcpu_info = new;
        self.vcpu.vcpu_info_registered = true;
        let _ = self.m.write_u64(new + offset_of!(VcpuInfo, evtchn_pending_sel) as u64, u64::MAX);
        self.vcpu_mark_events_pending();
        Ok(())
    }
}

#[cfg(test)]
mod tests;
