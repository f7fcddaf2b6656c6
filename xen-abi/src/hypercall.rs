//! Hypercall numbers (`xen.h`, `__HYPERVISOR_*`; Rust drops the leading underscores and
//! upper-cases the rest: `__HYPERVISOR_mmu_update` is `HYPERVISOR_MMU_UPDATE`).
//!
//! A 64-bit PV guest issues a hypercall with `syscall` from guest-kernel mode, number in `rax`,
//! arguments in `rdi, rsi, rdx, r10, r8, r9`, result in `rax`.

pub const HYPERVISOR_SET_TRAP_TABLE: u64 = 0;
pub const HYPERVISOR_MMU_UPDATE: u64 = 1;
pub const HYPERVISOR_SET_GDT: u64 = 2;
pub const HYPERVISOR_STACK_SWITCH: u64 = 3;
pub const HYPERVISOR_SET_CALLBACKS: u64 = 4;
pub const HYPERVISOR_FPU_TASKSWITCH: u64 = 5;
pub const HYPERVISOR_SCHED_OP_COMPAT: u64 = 6;
pub const HYPERVISOR_PLATFORM_OP: u64 = 7;
pub const HYPERVISOR_SET_DEBUGREG: u64 = 8;
pub const HYPERVISOR_GET_DEBUGREG: u64 = 9;
pub const HYPERVISOR_UPDATE_DESCRIPTOR: u64 = 10;
pub const HYPERVISOR_MEMORY_OP: u64 = 12;
pub const HYPERVISOR_MULTICALL: u64 = 13;
pub const HYPERVISOR_UPDATE_VA_MAPPING: u64 = 14;
pub const HYPERVISOR_SET_TIMER_OP: u64 = 15;
pub const HYPERVISOR_EVENT_CHANNEL_OP_COMPAT: u64 = 16;
pub const HYPERVISOR_XEN_VERSION: u64 = 17;
pub const HYPERVISOR_CONSOLE_IO: u64 = 18;
pub const HYPERVISOR_PHYSDEV_OP_COMPAT: u64 = 19;
pub const HYPERVISOR_GRANT_TABLE_OP: u64 = 20;
pub const HYPERVISOR_VM_ASSIST: u64 = 21;
pub const HYPERVISOR_UPDATE_VA_MAPPING_OTHERDOMAIN: u64 = 22;
pub const HYPERVISOR_IRET: u64 = 23;
pub const HYPERVISOR_VCPU_OP: u64 = 24;
pub const HYPERVISOR_SET_SEGMENT_BASE: u64 = 25;
pub const HYPERVISOR_MMUEXT_OP: u64 = 26;
pub const HYPERVISOR_XSM_OP: u64 = 27;
pub const HYPERVISOR_NMI_OP: u64 = 28;
pub const HYPERVISOR_SCHED_OP: u64 = 29;
pub const HYPERVISOR_CALLBACK_OP: u64 = 30;
pub const HYPERVISOR_XENOPROF_OP: u64 = 31;
pub const HYPERVISOR_EVENT_CHANNEL_OP: u64 = 32;
pub const HYPERVISOR_PHYSDEV_OP: u64 = 33;
pub const HYPERVISOR_HVM_OP: u64 = 34;
pub const HYPERVISOR_SYSCTL: u64 = 35;
pub const HYPERVISOR_DOMCTL: u64 = 36;
pub const HYPERVISOR_KEXEC_OP: u64 = 37;
pub const HYPERVISOR_TMEM_OP: u64 = 38;
pub const HYPERVISOR_ARGO_OP: u64 = 39;
pub const HYPERVISOR_XENPMU_OP: u64 = 40;
pub const HYPERVISOR_DM_OP: u64 = 41;
pub const HYPERVISOR_HYPFS_OP: u64 = 42;
/// Architecture-specific hypercalls; on x86 `arch_0` is `__HYPERVISOR_mca` (`arch-x86/xen-mca.h`).
pub const HYPERVISOR_ARCH_0: u64 = 48;
pub const HYPERVISOR_ARCH_1: u64 = 49;
pub const HYPERVISOR_ARCH_2: u64 = 50;
pub const HYPERVISOR_ARCH_3: u64 = 51;
pub const HYPERVISOR_ARCH_4: u64 = 52;
pub const HYPERVISOR_ARCH_5: u64 = 53;
pub const HYPERVISOR_ARCH_6: u64 = 54;
pub const HYPERVISOR_ARCH_7: u64 = 55;

/// Size of per-number tables: every hypercall number is below it (Xen's private
/// `NR_hypercalls`). The hypercall page itself has room for 4096 / 32 = 128 stubs.
pub const NR_HYPERCALLS: usize = 64;
/// Size of one hypercall-page stub (not a header constant: Xen's `hypercall_page_initialise`
/// lays stubs out 32 bytes apart).
pub const HYPERCALL_STUB_SIZE: usize = 32;

/// Xen's name for hypercall `nr`, for statistics and logs.
pub fn name(nr: u64) -> &'static str {
    match nr {
        0 => "set_trap_table",
        1 => "mmu_update",
        2 => "set_gdt",
        3 => "stack_switch",
        4 => "set_callbacks",
        5 => "fpu_taskswitch",
        6 => "sched_op_compat",
        7 => "platform_op",
        8 => "set_debugreg",
        9 => "get_debugreg",
        10 => "update_descriptor",
        12 => "memory_op",
        13 => "multicall",
        14 => "update_va_mapping",
        15 => "set_timer_op",
        16 => "event_channel_op_compat",
        17 => "xen_version",
        18 => "console_io",
        19 => "physdev_op_compat",
        20 => "grant_table_op",
        21 => "vm_assist",
        22 => "update_va_mapping_otherdomain",
        23 => "iret",
        24 => "vcpu_op",
        25 => "set_segment_base",
        26 => "mmuext_op",
        27 => "xsm_op",
        28 => "nmi_op",
        29 => "sched_op",
        30 => "callback_op",
        31 => "xenoprof_op",
        32 => "event_channel_op",
        33 => "physdev_op",
        34 => "hvm_op",
        35 => "sysctl",
        36 => "domctl",
        37 => "kexec_op",
        38 => "tmem_op",
        39 => "argo_op",
        40 => "xenpmu_op",
        41 => "dm_op",
        42 => "hypfs_op",
        48 => "mca",
        49 => "arch_1",
        50 => "arch_2",
        51 => "arch_3",
        52 => "arch_4",
        53 => "arch_5",
        54 => "arch_6",
        55 => "arch_7",
        _ => "unknown",
    }
}
