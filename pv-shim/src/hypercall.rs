//! The hypercall door: `syscall` from guest-kernel mode lands here with the number in `rax` and
//! arguments in `rdi, rsi, rdx, r10, r8, r9` (xen-pv-contract.md §3.4).

use crate::guest::GuestRegs;
use crate::machine::Machine;
use crate::shim::{Outcome, Shim};
use crate::{console, event, sched, time, vcpu_op, version};
use xen_abi::hypercall::*;
use xen_abi::Errno;

/// Arguments of one hypercall, copied out of the register frame once.
#[derive(Clone, Copy, Debug)]
pub struct Args(pub [u64; 6]);

impl<M: Machine> Shim<M> {
    /// Handles the hypercall in `regs` and leaves the result in `regs.rax`.
    pub fn hypercall(&mut self, regs: &mut GuestRegs) -> Outcome {
        let nr = regs.rax;
        let args = Args([regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9]);
        let slot = (nr as usize).min(NR_HYPERCALLS - 1);
        self.m.stats().hypercalls[slot] += 1;
        let r = self.dispatch(nr, args);
        if r == Err(Errno::ENOSYS) {
            self.m.stats().enosys[slot] += 1;
        }
        regs.rax = match r {
            Ok(v) => v,
            Err(e) => e.to_rax(),
        };
        if self.is_dead() {
            Outcome::Dead
        } else {
            Outcome::Resume
        }
    }

    fn dispatch(&mut self, nr: u64, a: Args) -> Result<u64, Errno> {
        match nr {
            HYPERVISOR_CONSOLE_IO => console::console_io(self, a),
            HYPERVISOR_SCHED_OP => sched::sched_op(self, a),
            HYPERVISOR_XEN_VERSION => version::xen_version(self, a),
            HYPERVISOR_EVENT_CHANNEL_OP => event::event_channel_op(self, a),
            HYPERVISOR_VCPU_OP => vcpu_op::vcpu_op(self, a),
            HYPERVISOR_SET_TIMER_OP => time::set_timer_op(self, a),
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
        for nr in [48u64, 200, u64::MAX, HYPERVISOR_MMU_UPDATE] {
            let mut r = GuestRegs { rax: nr, ..Default::default() };
            assert_eq!(s.hypercall(&mut r), Outcome::Resume);
            assert_eq!(Errno::from_rax(r.rax), Some(Errno::ENOSYS), "nr {nr}");
        }
        assert_eq!(s.m.stats.hypercalls[48], 1);
        assert_eq!(s.m.stats.enosys[NR_HYPERCALLS - 1], 2);
        assert_eq!(s.m.stats.enosys[1], 1);
    }
}
