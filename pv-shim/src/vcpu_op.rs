//! `HYPERVISOR_vcpu_op(cmd, vcpuid, arg)` (Xen `common/domain.c:common_vcpu_op`,
//! `arch/x86/domain.c:arch_do_vcpu_op`).
//!
//! Skeleton: nothing implemented yet.

use crate::hypercall::Args;
use crate::machine::Machine;
use crate::shim::Shim;
use xen_abi::Errno;

pub fn vcpu_op<M: Machine>(_s: &mut Shim<M>, _a: Args) -> Result<u64, Errno> {
    Err(Errno::ENOSYS)
}
