//! Time (Xen `arch/x86/time.c`, `common/sched/core.c` timers): `vcpu_time_info` and the
//! wallclock under the version protocol, the single-shot and periodic timers on the local
//! APIC, `set_timer_op`, and the runstate area.
//!
//! Skeleton: state types only so far.

use crate::hypercall::Args;
use crate::machine::Machine;
use crate::shim::Shim;
use xen_abi::hostcall::BootInfo;
use xen_abi::Errno;

/// Domain-wide time state.
#[derive(Clone, Debug, Default)]
pub struct DomainTime {}

impl DomainTime {
    pub fn new(_boot: &BootInfo) -> DomainTime {
        DomainTime {}
    }
}

/// Per-vCPU timers and runstate registration.
#[derive(Clone, Debug, Default)]
pub struct VcpuTime {}

/// `HYPERVISOR_set_timer_op(timeout_abs_ns)`.
pub fn set_timer_op<M: Machine>(_s: &mut Shim<M>, _a: Args) -> Result<u64, Errno> {
    Err(Errno::ENOSYS)
}

impl<M: Machine> Shim<M> {
    /// Called once at boot before the guest runs: vcpu_time_info of every vCPU and the
    /// wallclock in shared_info.
    pub fn init_time(&mut self) {}
}
