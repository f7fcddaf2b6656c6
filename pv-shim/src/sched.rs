//! `HYPERVISOR_sched_op` (Xen `common/sched/core.c`).

use crate::hypercall::Args;
use crate::machine::Machine;
use crate::mm;
use crate::shim::Shim;
use xen_abi::hostcall::HC_SHUTDOWN;
use xen_abi::sched::*;
use xen_abi::Errno;

pub fn sched_op<M: Machine>(s: &mut Shim<M>, a: Args) -> Result<u64, Errno> {
    match a.0[0] {
        // One vCPU: there is nobody to yield to.
        SCHEDOP_YIELD => Ok(0),
        SCHEDOP_SHUTDOWN => {
            let arg: SchedShutdown = mm::read_guest(&s.m, s.cr3(), a.0[1])?;
            // Xen passes the reason on as a u8 and accepts any value.
            let reason = u64::from(arg.reason as u8);
            s.hostcall(HC_SHUTDOWN, [reason, 0, 0, 0, 0], &[]);
            s.set_dead();
            Ok(0)
        }
        _ => Err(Errno::ENOSYS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{shim_with_guest, GUEST_VA};

    #[test]
    fn shutdown_tells_the_vmm_the_reason_and_ends_the_domain() {
        let mut s = shim_with_guest();
        let cr3 = s.cr3();
        mm::copy_to_guest(&mut s.m, cr3, GUEST_VA, &0x103u32.to_le_bytes()).unwrap();
        assert_eq!(sched_op(&mut s, Args([SCHEDOP_SHUTDOWN, GUEST_VA, 0, 0, 0, 0])), Ok(0));
        assert!(s.is_dead());
        assert_eq!(s.m.hostcalls[0].0, HC_SHUTDOWN);
        assert_eq!(s.m.hostcalls[0].1[0], 3, "reason is truncated to u8 as Xen does");
    }

    #[test]
    fn shutdown_with_bad_pointer_is_efault_and_domain_lives() {
        let mut s = shim_with_guest();
        assert_eq!(sched_op(&mut s, Args([SCHEDOP_SHUTDOWN, 0x10, 0, 0, 0, 0])), Err(Errno::EFAULT));
        assert!(!s.is_dead());
        assert!(s.m.hostcalls.is_empty());
        assert_eq!(sched_op(&mut s, Args([SCHEDOP_YIELD, 0, 0, 0, 0, 0])), Ok(0));
        assert_eq!(sched_op(&mut s, Args([99, 0, 0, 0, 0, 0])), Err(Errno::ENOSYS));
    }
}
