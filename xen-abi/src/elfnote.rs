//! Xen ELF note types (`elfnote.h`). Notes have the name `"Xen"`.

pub const XEN_ELFNOTE_NAME: &[u8] = b"Xen";

pub const XEN_ELFNOTE_INFO: u32 = 0;
pub const XEN_ELFNOTE_ENTRY: u32 = 1;
pub const XEN_ELFNOTE_HYPERCALL_PAGE: u32 = 2;
pub const XEN_ELFNOTE_VIRT_BASE: u32 = 3;
pub const XEN_ELFNOTE_PADDR_OFFSET: u32 = 4;
pub const XEN_ELFNOTE_XEN_VERSION: u32 = 5;
pub const XEN_ELFNOTE_GUEST_OS: u32 = 6;
pub const XEN_ELFNOTE_GUEST_VERSION: u32 = 7;
pub const XEN_ELFNOTE_LOADER: u32 = 8;
pub const XEN_ELFNOTE_PAE_MODE: u32 = 9;
pub const XEN_ELFNOTE_FEATURES: u32 = 10;
pub const XEN_ELFNOTE_BSD_SYMTAB: u32 = 11;
pub const XEN_ELFNOTE_HV_START_LOW: u32 = 12;
pub const XEN_ELFNOTE_L1_MFN_VALID: u32 = 13;
pub const XEN_ELFNOTE_SUSPEND_CANCEL: u32 = 14;
pub const XEN_ELFNOTE_INIT_P2M: u32 = 15;
pub const XEN_ELFNOTE_MOD_START_PFN: u32 = 16;
pub const XEN_ELFNOTE_SUPPORTED_FEATURES: u32 = 17;
pub const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
/// PVH relocation window. Newer than the Xen 4.17 headers that `tests/layout.rs` compares
/// against, so unchecked there; Debian 12's 6.1 kernel does not emit it.
pub const XEN_ELFNOTE_PHYS32_RELOC: u32 = 19;
/// The highest note type of the 4.17 headers (`XEN_ELFNOTE_MAX` = `XEN_ELFNOTE_PHYS32_ENTRY`).
/// A builder must ignore notes it does not know, including `XEN_ELFNOTE_PHYS32_RELOC`.
pub const XEN_ELFNOTE_MAX: u32 = XEN_ELFNOTE_PHYS32_ENTRY;

// ---- Notes of Xen's own core dumps, never in a guest kernel ----
pub const XEN_ELFNOTE_CRASH_INFO: u32 = 0x100_0001;
pub const XEN_ELFNOTE_CRASH_REGS: u32 = 0x100_0002;
pub const XEN_ELFNOTE_DUMPCORE_NONE: u32 = 0x200_0000;
pub const XEN_ELFNOTE_DUMPCORE_HEADER: u32 = 0x200_0001;
pub const XEN_ELFNOTE_DUMPCORE_XEN_VERSION: u32 = 0x200_0002;
pub const XEN_ELFNOTE_DUMPCORE_FORMAT_VERSION: u32 = 0x200_0003;
