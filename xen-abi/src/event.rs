//! Event channels (`event_channel.h`): `EVTCHNOP_*` sub-op numbers, and the `VIRQ_*` numbers
//! of `xen.h`.

pub const EVTCHNOP_BIND_INTERDOMAIN: u64 = 0;
pub const EVTCHNOP_BIND_VIRQ: u64 = 1;
pub const EVTCHNOP_BIND_PIRQ: u64 = 2;
pub const EVTCHNOP_CLOSE: u64 = 3;
pub const EVTCHNOP_SEND: u64 = 4;
pub const EVTCHNOP_STATUS: u64 = 5;
pub const EVTCHNOP_ALLOC_UNBOUND: u64 = 6;
pub const EVTCHNOP_BIND_IPI: u64 = 7;
pub const EVTCHNOP_BIND_VCPU: u64 = 8;
pub const EVTCHNOP_UNMASK: u64 = 9;
pub const EVTCHNOP_RESET: u64 = 10;
pub const EVTCHNOP_INIT_CONTROL: u64 = 11;
pub const EVTCHNOP_EXPAND_ARRAY: u64 = 12;
pub const EVTCHNOP_SET_PRIORITY: u64 = 13;
/// Defined only `#ifdef __XEN__` (the continuation of `EVTCHNOP_reset`), so `tests/layout.rs`
/// cannot see it in the guest view of the headers.
pub const EVTCHNOP_RESET_CONT: u64 = 14;

pub const VIRQ_TIMER: u32 = 0;
pub const VIRQ_DEBUG: u32 = 1;
pub const VIRQ_CONSOLE: u32 = 2;
pub const VIRQ_DOM_EXC: u32 = 3;
pub const VIRQ_TBUF: u32 = 4;
pub const VIRQ_DEBUGGER: u32 = 6;
pub const VIRQ_XENOPROF: u32 = 7;
pub const VIRQ_CON_RING: u32 = 8;
pub const VIRQ_PCPU_STATE: u32 = 9;
pub const VIRQ_MEM_EVENT: u32 = 10;
pub const VIRQ_ARGO: u32 = 11;
pub const VIRQ_ENOMEM: u32 = 12;
pub const VIRQ_XENPMU: u32 = 13;
/// Architecture-specific VIRQs; on x86 `VIRQ_ARCH_0` is `VIRQ_MCA` (`arch-x86/xen-mca.h`).
pub const VIRQ_ARCH_0: u32 = 16;
pub const VIRQ_ARCH_1: u32 = 17;
pub const VIRQ_ARCH_2: u32 = 18;
pub const VIRQ_ARCH_3: u32 = 19;
pub const VIRQ_ARCH_4: u32 = 20;
pub const VIRQ_ARCH_5: u32 = 21;
pub const VIRQ_ARCH_6: u32 = 22;
pub const VIRQ_ARCH_7: u32 = 23;
pub const NR_VIRQS: u32 = 24;

/// `EVTCHN_2L_NR_CHANNELS`: ports of the 2-level ABI on a 64-bit guest, 64 words × 64 bits.
pub const EVTCHN_2L_NR_CHANNELS: u32 = 64 * 64;
