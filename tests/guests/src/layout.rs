//! Where a test kernel lives in the guest's address space; `link.ld` repeats these numbers.

/// `XEN_ELFNOTE_VIRT_BASE`: the builder maps pfn N at `VIRT_BASE + N * 4096` (as Linux).
pub const VIRT_BASE: u64 = 0xffff_ffff_8000_0000;
/// Where the kernel is linked (paddr 0x1000000, since `PADDR_OFFSET` is 0).
pub const KERNEL_START: u64 = 0xffff_ffff_8100_0000;
/// The stack `_start` switches to; the builder's boot stack is a single page.
pub const BOOT_STACK_SIZE: usize = 64 * 1024;
