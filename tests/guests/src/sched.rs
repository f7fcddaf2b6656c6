//! Ending the domain: `HYPERVISOR_sched_op(SCHEDOP_shutdown, ..)` (xen-pv-contract.md §4.7).

use crate::{hypercall, println};

/// Shuts the domain down with `reason` (`SHUTDOWN_*`); never returns.
pub fn shutdown(reason: u32) -> ! {
    shutdown_with(reason, 0)
}

/// As [`shutdown`], passing `extra` in the third argument (the start_info MFN for
/// `SHUTDOWN_suspend`). If the hypervisor ever returns (an error, or a cancelled suspend),
/// says so once and asks again, forever.
pub fn shutdown_with(reason: u32, extra: u64) -> ! {
    let rc = hypercall::sched_op_shutdown(reason, extra);
    println!("SCHEDOP_shutdown({reason}) returned {rc}");
    loop {
        hypercall::sched_op_shutdown(reason, extra);
    }
}
