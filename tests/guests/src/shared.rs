//! Mapping shared_info into the test kernel, and guest-virtual → machine frame lookups.
#![allow(unsafe_code)]

use core::mem::offset_of;
use core::ptr::addr_of_mut;
use xen_abi::hypercall::HYPERVISOR_UPDATE_VA_MAPPING;
use xen_abi::xen::{SharedInfo, StartInfo, VcpuInfo, PAGE_SHIFT};

use crate::hypercall::hypercall6;
use crate::layout::VIRT_BASE;

#[repr(C, align(4096))]
struct Page([u8; 4096]);

static mut SHARED_INFO_PAGE: Page = Page([0; 4096]);

/// The machine frame behind a kernel virtual address of the initial mapping.
pub fn mfn_of(si: &StartInfo, va: u64) -> u64 {
    let pfn = (va - VIRT_BASE) >> PAGE_SHIFT;
    assert!(pfn < si.nr_pages, "{va:#x} is outside the initial mapping");
    // SAFETY: the builder maps the P2M list (`nr_pages` entries) at `mfn_list`.
    unsafe { (si.mfn_list as *const u64).add(pfn as usize).read_volatile() }
}

/// `update_va_mapping(va, pte, flags)`.
pub fn update_va_mapping(va: u64, pte: u64, flags: u64) -> i64 {
    // SAFETY: no pointer arguments.
    unsafe { hypercall6(HYPERVISOR_UPDATE_VA_MAPPING, va, pte, flags, 0, 0, 0) }
}

/// shared_info as this kernel mapped it; the only way to reach it.
#[derive(Clone, Copy)]
pub struct Shared(*mut SharedInfo);

/// Maps shared_info (machine address `si.shared_info`) over a page of our own .bss, as Linux
/// maps it at a fixmap slot, and returns it. Panics if the hypervisor refuses.
pub fn map_shared_info(si: &StartInfo) -> Shared {
    let va = addr_of_mut!(SHARED_INFO_PAGE) as u64;
    let rc = update_va_mapping(va, (si.shared_info & !0xfff) | 0x67, 2);
    assert!(rc == 0, "update_va_mapping of shared_info failed: {rc}");
    Shared(va as *mut SharedInfo)
}

impl Shared {
    fn vcpu0(&self) -> *mut u8 {
        // SAFETY: the pointer is the mapped shared_info page; only an address is computed.
        unsafe { core::ptr::addr_of_mut!((*self.0).vcpu_info[0]) as *mut u8 }
    }

    /// vCPU 0's `evtchn_upcall_mask`.
    pub fn upcall_mask(&self) -> u8 {
        // SAFETY: inside the mapped shared_info page; volatile as the hypervisor writes it.
        unsafe { self.vcpu0().add(offset_of!(VcpuInfo, evtchn_upcall_mask)).read_volatile() }
    }

    pub fn set_upcall_mask(&self, v: u8) {
        // SAFETY: as in upcall_mask.
        unsafe { self.vcpu0().add(offset_of!(VcpuInfo, evtchn_upcall_mask)).write_volatile(v) }
    }

    /// vCPU 0's `arch.cr2` (where the hypervisor reports a page fault's address).
    pub fn cr2(&self) -> u64 {
        // SAFETY: as in upcall_mask; the field is 8-byte aligned.
        unsafe { (self.vcpu0().add(offset_of!(VcpuInfo, arch)) as *const u64).read_volatile() }
    }

    /// The shared_info page itself, for reads of other fields.
    pub fn as_ptr(&self) -> *mut SharedInfo {
        self.0
    }
}
