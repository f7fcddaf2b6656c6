//! Core structures and constants of `xen.h`, `arch-x86/xen.h` and `arch-x86/xen-x86_64.h`.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `xen_pfn_t` (`arch-x86/xen.h`): a machine frame number (a KVM guest-physical frame in xenvmm).
pub type XenPfn = u64;
/// `domid_t` (`xen.h`).
pub type DomId = u16;

/// `XEN_PAGE_SHIFT` (`io/ring.h`): Xen's interfaces always use 4 KiB pages.
pub const PAGE_SHIFT: u32 = 12;
pub const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;

pub const DOMID_FIRST_RESERVED: DomId = 0x7ff0;
pub const DOMID_SELF: DomId = 0x7ff0;
pub const DOMID_IO: DomId = 0x7ff1;
pub const DOMID_XEN: DomId = 0x7ff2;
pub const DOMID_COW: DomId = 0x7ff3;
pub const DOMID_INVALID: DomId = 0x7ff4;
pub const DOMID_IDLE: DomId = 0x7fff;
pub const DOMID_MASK: DomId = 0x7fff;

// ---- Virtual memory layout of 64-bit PV (xen-x86_64.h) ----
pub const HYPERVISOR_VIRT_START: u64 = 0xffff_8000_0000_0000;
pub const HYPERVISOR_VIRT_END: u64 = 0xffff_8800_0000_0000;
pub const MACH2PHYS_VIRT_START: u64 = 0xffff_8000_0000_0000;
pub const MACH2PHYS_VIRT_END: u64 = 0xffff_8040_0000_0000;
/// Entries of the read-only M2P table (`MACH2PHYS_NR_ENTRIES`).
pub const MACH2PHYS_NR_ENTRIES: u64 = (MACH2PHYS_VIRT_END - MACH2PHYS_VIRT_START) >> 3;
/// L4 slots reserved for the hypervisor: 256..=271 (`HYPERVISOR_VIRT_START`..`_END`; no Xen
/// name of their own).
pub const HYPERVISOR_L4_FIRST: usize = 256;
pub const HYPERVISOR_L4_LAST: usize = 271;

// ---- Reserved GDT and flat selectors (arch-x86/xen.h, xen-x86_64.h) ----
pub const FIRST_RESERVED_GDT_PAGE: u32 = 14;
pub const FIRST_RESERVED_GDT_BYTE: u32 = FIRST_RESERVED_GDT_PAGE * 4096;
pub const FIRST_RESERVED_GDT_ENTRY: u32 = FIRST_RESERVED_GDT_BYTE / 8;
pub const FLAT_RING3_CS32: u16 = 0xe023;
pub const FLAT_RING3_CS64: u16 = 0xe033;
pub const FLAT_RING3_DS32: u16 = 0xe02b;
pub const FLAT_RING3_DS64: u16 = 0x0000;
pub const FLAT_RING3_SS32: u16 = 0xe02b;
pub const FLAT_RING3_SS64: u16 = 0xe02b;
pub const FLAT_KERNEL_CS64: u16 = FLAT_RING3_CS64;
pub const FLAT_KERNEL_DS64: u16 = FLAT_RING3_DS64;
pub const FLAT_KERNEL_SS64: u16 = FLAT_RING3_SS64;
pub const FLAT_KERNEL_CS32: u16 = FLAT_RING3_CS32;
pub const FLAT_KERNEL_DS32: u16 = FLAT_RING3_DS32;
pub const FLAT_KERNEL_SS32: u16 = FLAT_RING3_SS32;
pub const FLAT_KERNEL_CS: u16 = FLAT_KERNEL_CS64;
pub const FLAT_KERNEL_DS: u16 = FLAT_KERNEL_DS64;
pub const FLAT_KERNEL_SS: u16 = FLAT_KERNEL_SS64;
pub const FLAT_USER_CS64: u16 = FLAT_RING3_CS64;
pub const FLAT_USER_DS64: u16 = FLAT_RING3_DS64;
pub const FLAT_USER_SS64: u16 = FLAT_RING3_SS64;
pub const FLAT_USER_CS32: u16 = FLAT_RING3_CS32;
pub const FLAT_USER_DS32: u16 = FLAT_RING3_DS32;
pub const FLAT_USER_SS32: u16 = FLAT_RING3_SS32;
pub const FLAT_USER_CS: u16 = FLAT_USER_CS64;
pub const FLAT_USER_DS: u16 = FLAT_USER_DS64;
pub const FLAT_USER_SS: u16 = FLAT_USER_SS64;

// ---- start_info ----
pub const MAX_GUEST_CMDLINE: usize = 1024;
pub const SIF_PRIVILEGED: u32 = 1 << 0;
pub const SIF_INITDOMAIN: u32 = 1 << 1;
pub const SIF_MULTIBOOT_MOD: u32 = 1 << 2;
pub const SIF_MOD_START_PFN: u32 = 1 << 3;
pub const SIF_VIRT_P2M_4TOOLS: u32 = 1 << 4;
pub const SIF_PM_MASK: u32 = 0xff << 8;

/// The guest-type string Xen writes at the start of `start_info.magic` for 64-bit PV (not a
/// header constant: libxc builds it as "xen-<version>-<platform>").
pub const START_INFO_MAGIC_X86_64: &[u8] = b"xen-3.0-x86_64";

/// `struct start_info` / `start_info_t` (`xen.h`), 1168 bytes: the page the domain builder hands
/// to a PV guest in `rsi`. The `console` union is flattened to its `domU` arm.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct StartInfo {
    pub magic: [u8; 32],
    pub nr_pages: u64,
    /// Machine address of the shared_info page.
    pub shared_info: u64,
    pub flags: u32,
    pub _pad0: u32,
    pub store_mfn: XenPfn,
    pub store_evtchn: u32,
    pub _pad1: u32,
    /// `console.domU.mfn`.
    pub console_mfn: XenPfn,
    /// `console.domU.evtchn`.
    pub console_evtchn: u32,
    pub _pad2: u32,
    /// Virtual address of the initial L4.
    pub pt_base: u64,
    pub nr_pt_frames: u64,
    /// Virtual address of the P2M list.
    pub mfn_list: u64,
    pub mod_start: u64,
    pub mod_len: u64,
    pub cmd_line: [u8; MAX_GUEST_CMDLINE],
    pub first_p2m_pfn: u64,
    pub nr_p2m_frames: u64,
}

// ---- vcpu_info / shared_info ----
pub const XEN_LEGACY_MAX_VCPUS: usize = 32;
pub const XEN_PVCLOCK_TSC_STABLE_BIT: u8 = 1 << 0;
pub const XEN_PVCLOCK_GUEST_STOPPED: u8 = 1 << 1;

/// `struct vcpu_time_info` (`xen.h`), 32 bytes (`flags` exists from interface 0x00040601 on).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VcpuTimeInfo {
    pub version: u32,
    pub pad0: u32,
    pub tsc_timestamp: u64,
    pub system_time: u64,
    pub tsc_to_system_mul: u32,
    pub tsc_shift: i8,
    pub flags: u8,
    pub pad1: [u8; 2],
}

/// `struct arch_vcpu_info` (`arch-x86/xen-x86_64.h`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct ArchVcpuInfo {
    pub cr2: u64,
    pub pad: u64,
}

/// `struct vcpu_info` (`xen.h`), 64 bytes. `_pad0` is the C compiler's implicit padding.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VcpuInfo {
    pub evtchn_upcall_pending: u8,
    pub evtchn_upcall_mask: u8,
    pub _pad0: [u8; 6],
    pub evtchn_pending_sel: u64,
    pub arch: ArchVcpuInfo,
    pub time: VcpuTimeInfo,
}

/// `struct arch_shared_info` (`arch-x86/xen.h`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct ArchSharedInfo {
    pub max_pfn: u64,
    pub pfn_to_mfn_frame_list_list: u64,
    pub nmi_reason: u64,
    pub p2m_cr3: u64,
    pub p2m_vaddr: u64,
    pub p2m_generation: u64,
}

/// `struct shared_info` (`xen.h`), 3136 bytes in a 4 KiB frame.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SharedInfo {
    pub vcpu_info: [VcpuInfo; XEN_LEGACY_MAX_VCPUS],
    pub evtchn_pending: [u64; 64],
    pub evtchn_mask: [u64; 64],
    pub wc_version: u32,
    pub wc_sec: u32,
    pub wc_nsec: u32,
    pub wc_sec_hi: u32,
    pub arch: ArchSharedInfo,
}

// ---- Traps ----
/// `trap_info.flags`: the DPL a software `int n` needs (bits 0-1, what `TI_GET_DPL()` reads).
/// The header's field comment ("0-3: privilege level; 4: ...") is stale; its macros are not.
pub const TI_DPL_MASK: u8 = 3;
/// `trap_info.flags` bit 2, what `TI_SET_IF(ti, 1)` sets: mask events on delivery (an
/// "interrupt gate").
pub const TI_SET_IF: u8 = 1 << 2;

/// `struct trap_info` (`arch-x86/xen.h`), one entry of the virtual IDT.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct TrapInfo {
    pub vector: u8,
    pub flags: u8,
    pub cs: u16,
    pub _pad: u32,
    pub address: u64,
}

// ---- MMU ----
pub const MMU_NORMAL_PT_UPDATE: u64 = 0;
pub const MMU_MACHPHYS_UPDATE: u64 = 1;
pub const MMU_PT_UPDATE_PRESERVE_AD: u64 = 2;
pub const MMU_PT_UPDATE_NO_TRANSLATE: u64 = 3;

/// `struct mmu_update` (`xen.h`): `ptr[1:0]` is the command, `ptr & !3` a machine address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct MmuUpdate {
    pub ptr: u64,
    pub val: u64,
}

pub const MMUEXT_PIN_L1_TABLE: u32 = 0;
pub const MMUEXT_PIN_L2_TABLE: u32 = 1;
pub const MMUEXT_PIN_L3_TABLE: u32 = 2;
pub const MMUEXT_PIN_L4_TABLE: u32 = 3;
pub const MMUEXT_UNPIN_TABLE: u32 = 4;
pub const MMUEXT_NEW_BASEPTR: u32 = 5;
pub const MMUEXT_TLB_FLUSH_LOCAL: u32 = 6;
pub const MMUEXT_INVLPG_LOCAL: u32 = 7;
pub const MMUEXT_TLB_FLUSH_MULTI: u32 = 8;
pub const MMUEXT_INVLPG_MULTI: u32 = 9;
pub const MMUEXT_TLB_FLUSH_ALL: u32 = 10;
pub const MMUEXT_INVLPG_ALL: u32 = 11;
pub const MMUEXT_FLUSH_CACHE: u32 = 12;
pub const MMUEXT_SET_LDT: u32 = 13;
pub const MMUEXT_NEW_USER_BASEPTR: u32 = 15;
pub const MMUEXT_CLEAR_PAGE: u32 = 16;
pub const MMUEXT_COPY_PAGE: u32 = 17;
pub const MMUEXT_FLUSH_CACHE_GLOBAL: u32 = 18;
pub const MMUEXT_MARK_SUPER: u32 = 19;
pub const MMUEXT_UNMARK_SUPER: u32 = 20;

/// `struct mmuext_op` (`xen.h`), 24 bytes. The unions are flattened: `arg1` is `arg1.mfn` or
/// `arg1.linear_addr`; `arg2` is `arg2.nr_ents` (the low 32 bits), `arg2.vcpumask` (a guest
/// pointer) or `arg2.src_mfn`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct MmuextOp {
    pub cmd: u32,
    pub _pad: u32,
    pub arg1: u64,
    pub arg2: u64,
}

pub const UVMF_NONE: u64 = 0;
pub const UVMF_TLB_FLUSH: u64 = 1;
pub const UVMF_INVLPG: u64 = 2;
pub const UVMF_FLUSHTYPE_MASK: u64 = 3;
pub const UVMF_MULTI: u64 = 0;
pub const UVMF_LOCAL: u64 = 0;
pub const UVMF_ALL: u64 = 1 << 2;

// ---- multicall ----
/// `struct multicall_entry` (`xen.h`), 64 bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct MulticallEntry {
    pub op: u64,
    pub result: u64,
    pub args: [u64; 6],
}

// ---- vm_assist (`VMASST_CMD_*`, `VMASST_TYPE_*` in lower case in `xen.h`) ----
pub const VMASST_CMD_ENABLE: u32 = 0;
pub const VMASST_CMD_DISABLE: u32 = 1;
pub const VMASST_TYPE_4GB_SEGMENTS: u32 = 0;
pub const VMASST_TYPE_4GB_SEGMENTS_NOTIFY: u32 = 1;
pub const VMASST_TYPE_WRITABLE_PAGETABLES: u32 = 2;
pub const VMASST_TYPE_PAE_EXTENDED_CR3: u32 = 3;
pub const VMASST_TYPE_ARCHITECTURAL_IOPL: u32 = 4;
pub const VMASST_TYPE_RUNSTATE_UPDATE_FLAG: u32 = 5;
pub const VMASST_TYPE_M2P_STRICT: u32 = 32;

// ---- set_segment_base ----
pub const SEGBASE_FS: u32 = 0;
pub const SEGBASE_GS_USER: u32 = 1;
pub const SEGBASE_GS_KERNEL: u32 = 2;
pub const SEGBASE_GS_USER_SEL: u32 = 3;

// ---- iret (xen-x86_64.h) ----
/// `VGCF_in_syscall` / `VGCF_IN_SYSCALL`.
pub const VGCF_IN_SYSCALL: u64 = 1 << 8;

/// `struct iret_context` (`arch-x86/xen-x86_64.h`): what `rsp` points at for `HYPERVISOR_iret`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct IretContext {
    pub rax: u64,
    pub r11: u64,
    pub rcx: u64,
    pub flags: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

// ---- vcpu_guest_context flags (arch-x86/xen.h) ----
/// `VGCF_i387_valid` / `VGCF_I387_VALID`.
pub const VGCF_I387_VALID: u64 = 1 << 0;
/// `VGCF_in_kernel` / `VGCF_IN_KERNEL`.
pub const VGCF_IN_KERNEL: u64 = 1 << 2;
/// `VGCF_failsafe_disables_events`.
pub const VGCF_FAILSAFE_DISABLES_EVENTS: u64 = 1 << 3;
/// `VGCF_syscall_disables_events`.
pub const VGCF_SYSCALL_DISABLES_EVENTS: u64 = 1 << 4;
/// `VGCF_online`.
pub const VGCF_ONLINE: u64 = 1 << 5;

/// Xen's fixed PAT for PV guests (part of the ABI; Linux reads it back with RDMSR). Xen's
/// `XEN_MSR_PAT` lives in its private `asm/processor.h`, not in the public headers.
pub const XEN_MSR_PAT: u64 = 0x0000_0501_0007_0406;
