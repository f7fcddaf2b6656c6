//! The hypercall door: `syscall` from guest-kernel mode lands here with the number in `rax` and
//! arguments in `rdi, rsi, rdx, r10, r8, r9` (xen-pv-contract.md §3.4).

use crate::guest::GuestRegs;
use crate::machine::Machine;
use crate::shim::{Outcome, Shim};
use crate::{console, desc, event, grant, misc, mm, sched, time, traps, vcpu_op, version};
use xen_abi::hypercall::*;
use xen_abi::Errno;

/// Arguments of one hypercall, copied out of the register frame once.
#[derive(Clone, Copy, Debug)]
pub struct Args(pub [u64; 6]);

impl<M: Machine> Shim<M> {
    /// Handles the hypercall in `regs` and leaves the result in `regs.rax`.
    pub fn hypercall(&mut self, regs: &mut GuestRegs) -> Outcome {
        let nr = regs.rax;
        if nr == HYPERVISOR_IRET {
            // iret replaces the whole frame, rax included.
            self.m.stats().hypercalls[HYPERVISOR_IRET as usize] += 1;
            return self.do_iret(regs);
        }
        let args = Args([regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9]);
        let r = self.dispatch_counted(nr, args);
        if let Some((nr, a)) = self.take_continuation() {
            // Re-execute the `syscall` (2 bytes, also inside a hypercall-page stub) with the
            // handler's new arguments.
            regs.rip = regs.rip.wrapping_sub(2);
            regs.rax = nr;
            [regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9] = a;
        } else {
            regs.rax = match r {
                Ok(v) => v,
                Err(e) => e.to_rax(),
            };
        }
        if self.is_dead() {
            Outcome::Dead
        } else {
            Outcome::Resume
        }
    }

    /// Runs hypercall `nr` (not `iret`) and counts it, and its -ENOSYS answer.
    pub fn dispatch_counted(&mut self, nr: u64, a: Args) -> Result<u64, Errno> {
        let slot = (nr as usize).min(NR_HYPERCALLS - 1);
        self.m.stats().hypercalls[slot] += 1;
        let r = self.dispatch(nr, a);
        if r == Err(Errno::ENOSYS) {
            self.m.stats().enosys[slot] += 1;
        }
        r
    }

    fn dispatch(&mut self, nr: u64, a: Args) -> Result<u64, Errno> {
        match nr {
            HYPERVISOR_SET_TRAP_TABLE => traps::set_trap_table(self, a),
            HYPERVISOR_SET_GDT => desc::set_gdt(self, a),
            HYPERVISOR_UPDATE_DESCRIPTOR => desc::update_descriptor(self, a),
            HYPERVISOR_STACK_SWITCH => misc::stack_switch(self, a),
            HYPERVISOR_SET_CALLBACKS => traps::set_callbacks(self, a),
            HYPERVISOR_FPU_TASKSWITCH => misc::fpu_taskswitch(self, a),
            HYPERVISOR_SET_DEBUGREG => misc::set_debugreg(self, a),
            HYPERVISOR_GET_DEBUGREG => misc::get_debugreg(self, a),
            HYPERVISOR_MULTICALL => misc::multicall(self, a),
            HYPERVISOR_MMU_UPDATE => mm::ops::mmu_update(self, a),
            HYPERVISOR_MEMORY_OP => mm::memory_op::memory_op(self, a),
            HYPERVISOR_UPDATE_VA_MAPPING => mm::ops::update_va_mapping(self, a),
            HYPERVISOR_UPDATE_VA_MAPPING_OTHERDOMAIN => mm::ops::update_va_mapping_otherdomain(self, a),
            HYPERVISOR_SET_TIMER_OP => time::set_timer_op(self, a),
            HYPERVISOR_XEN_VERSION => version::xen_version(self, a),
            HYPERVISOR_CONSOLE_IO => console::console_io(self, a),
            HYPERVISOR_VM_ASSIST => misc::vm_assist(self, a),
            HYPERVISOR_VCPU_OP => vcpu_op::vcpu_op(self, a),
            HYPERVISOR_SET_SEGMENT_BASE => misc::set_segment_base(self, a),
            HYPERVISOR_MMUEXT_OP => mm::ops::mmuext_op(self, a),
            HYPERVISOR_NMI_OP => misc::nmi_op(self, a),
            HYPERVISOR_SCHED_OP => sched::sched_op(self, a),
            HYPERVISOR_CALLBACK_OP => traps::callback_op(self, a),
            HYPERVISOR_EVENT_CHANNEL_OP => event::event_channel_op(self, a),
            HYPERVISOR_PHYSDEV_OP => misc::physdev_op(self, a),
            HYPERVISOR_GRANT_TABLE_OP => grant::grant_table_op(self, a),
            _ => Err(Errno::ENOSYS),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{boot_info, MockMachine};

    #[test]
    fn unknown_hypercalls_are_enosys_and_counted() {
        let m = MockMachine::new(16);
        let b = boot_info(16);
        let mut s = Shim::new(m, b).unwrap();
        for nr in [48u64, 200, u64::MAX] {
            let mut r = GuestRegs { rax: nr, ..Default::default() };
            assert_eq!(s.hypercall(&mut r), Outcome::Resume);
            assert_eq!(Errno::from_rax(r.rax), Some(Errno::ENOSYS), "nr {nr}");
        }
        assert_eq!(s.m.stats.hypercalls[48], 1);
        assert_eq!(s.m.stats.enosys[NR_HYPERCALLS - 1], 2);
        assert_eq!(s.m.stats.enosys[48], 1);
    }
}
