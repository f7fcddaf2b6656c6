//! Emulation behind #GP and #UD (Xen `pv/emul-priv-op.c`, `pv/emul-inv-op.c`): the forced
//! CPUID prefix, MSRs, control registers, port I/O, xsetbv, wbinvd, clts.
//!
//! Skeleton: nothing is emulated yet.

/// Per-vCPU emulator state.
#[derive(Clone, Debug, Default)]
pub struct EmulState {}
