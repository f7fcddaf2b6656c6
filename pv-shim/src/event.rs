//! Event channels, 2-level ABI (Xen `common/event_channel.c`, `event_2l.c`):
//! `HYPERVISOR_event_channel_op`, the port table, and raising ports into shared_info and the
//! vCPU's `vcpu_info`.
//!
//! Skeleton: the upcall-condition accessors below are what `traps` uses on every return to the
//! guest; `evtchn_set_pending` is Xen's 2-level raise; `EVTCHNOP_send` knows only the ports the
//! VMM bound before boot. The port table and the other operations are still to come.

use crate::hypercall::Args;
use crate::machine::Machine;
use crate::shim::Shim;
use core::mem::offset_of;
use xen_abi::hostcall::BootInfo;
use xen_abi::xen::{SharedInfo, VcpuInfo};
use xen_abi::Errno;

/// The domain's event channels.
#[derive(Clone, Debug, Default)]
pub struct EventChannels {}

impl EventChannels {
    pub fn new(_boot: &BootInfo) -> EventChannels {
        EventChannels {}
    }
}

/// `HYPERVISOR_event_channel_op(cmd, arg)`.
pub fn event_channel_op<M: Machine>(s: &mut Shim<M>, a: Args) -> Result<u64, Errno> {
    match a.0[0] {
        xen_abi::event::EVTCHNOP_SEND => {
            let port: u32 = crate::mm::read_guest(&s.m, s.cr3(), a.0[1])?;
            let hp = s.boot.host_ports;
            let n = (s.boot.nr_host_ports as usize).min(hp.len());
            if hp[..n].iter().any(|h| h.port == port && port != 0) {
                s.m.stats().doorbells += 1;
                s.m.notify_host(port);
                Ok(0)
            } else {
                Err(Errno::EINVAL)
            }
        }
        _ => Err(Errno::ENOSYS),
    }
}

const EVTCHN_PENDING: u64 = core::mem::offset_of!(SharedInfo, evtchn_pending) as u64;
const EVTCHN_MASK: u64 = core::mem::offset_of!(SharedInfo, evtchn_mask) as u64;

impl<M: Machine> Shim<M> {
    fn vcpu_info_byte(&self, off: usize) -> u8 {
        let mut b = [0u8; 1];
        // vcpu_info is shim-validated machine memory; a failed read reads as 0.
        let _ = self.m.read_phys(self.vcpu.vcpu_info + off as u64, &mut b);
        b[0]
    }

    /// `evtchn_upcall_pending && !evtchn_upcall_mask`: an upcall is due on return to the guest.
    /// Runs on every return to the guest: one 2-byte read of the adjacent pending and mask
    /// bytes, as Xen tests them with one 16-bit load.
    pub fn upcall_deliverable(&self) -> bool {
        const _: () = assert!(
            offset_of!(VcpuInfo, evtchn_upcall_mask) == offset_of!(VcpuInfo, evtchn_upcall_pending) + 1
        );
        let mut b = [0u8; 2];
        let at = self.vcpu.vcpu_info + offset_of!(VcpuInfo, evtchn_upcall_pending) as u64;
        self.m.read_phys(at, &mut b).is_ok() && b[0] != 0 && b[1] == 0
    }

    /// The vCPU's `evtchn_upcall_mask` (the guest's virtual interrupt flag, inverted).
    pub fn upcall_mask(&self) -> u8 {
        self.vcpu_info_byte(offset_of!(VcpuInfo, evtchn_upcall_mask))
    }

    pub fn set_upcall_mask(&mut self, mask: u8) {
        let at = self.vcpu.vcpu_info + offset_of!(VcpuInfo, evtchn_upcall_mask) as u64;
        let _ = self.m.write_phys(at, &[mask]);
    }

    /// Writes CR2 of a page fault into `vcpu_info.arch.cr2`, where a PV guest reads it.
    pub fn set_guest_cr2(&mut self, cr2: u64) {
        let at = self.vcpu.vcpu_info + (offset_of!(VcpuInfo, arch) as u64);
        let _ = self.m.write_u64(at, cr2);
    }

    /// Xen's `evtchn_2l_set_pending`: set the port's pending bit; if it was clear and the port
    /// is unmasked, set its selector bit and `evtchn_upcall_pending` in the vCPU's vcpu_info.
    pub fn evtchn_set_pending(&mut self, port: u32) {
        if port >= xen_abi::event::EVTCHN_2L_NR_CHANNELS {
            return;
        }
        let si = self.boot.shared_info_mfn << 12;
        let (word, bit) = (u64::from(port / 64), 1u64 << (port % 64));
        let Ok(pending) = self.m.read_u64(si + EVTCHN_PENDING + 8 * word) else { return };
        if pending & bit != 0 {
            return;
        }
        let _ = self.m.write_u64(si + EVTCHN_PENDING + 8 * word, pending | bit);
        let masked = self.m.read_u64(si + EVTCHN_MASK + 8 * word).map_or(true, |m| m & bit != 0);
        if masked {
            return;
        }
        let vi = self.vcpu.vcpu_info;
        let sel_at = vi + offset_of!(VcpuInfo, evtchn_pending_sel) as u64;
        let sel = self.m.read_u64(sel_at).unwrap_or(0);
        let _ = self.m.write_u64(sel_at, sel | (1 << word));
        let _ = self.m.write_phys(vi + offset_of!(VcpuInfo, evtchn_upcall_pending) as u64, &[1]);
    }

    /// Takes the ports the VMM raised and checks the timers: called on every hardware
    /// interrupt and after every wake-up from `wait_for_interrupt`.
    pub fn poll_sources(&mut self) {
        for w in 0..xen_abi::hostcall::MAILBOX_WORDS {
            let mut bits = self.m.take_host_events(w);
            while bits != 0 {
                let b = bits.trailing_zeros();
                bits &= bits - 1;
                self.m.stats().host_raised += 1;
                self.evtchn_set_pending(w as u32 * 64 + b);
            }
        }
    }
}
