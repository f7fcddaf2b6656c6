//! A guest user address space, built the way a PV kernel builds one (xen-pv-contract.md
//! §3.2, §3.7): a separate user L4 whose tables map one page of user code and a few pages of
//! user data at low addresses, and nothing of the kernel. The table pages are written while
//! still writable, then mapped read-only in the kernel's own mapping (Xen refuses a
//! page-table page that the guest can write), and the L4 is installed with
//! `MMUEXT_NEW_USER_BASEPTR`; `stack_switch` names the kernel stack for entries from user
//! mode.
//!
//! [`enter`] drops to user mode with the iret hypercall; user mode comes back only through a
//! trap or the syscall callback, so callers wrap it in [`crate::traps::catch`].
#![allow(unsafe_code)]

use core::arch::asm;
use core::ptr::{addr_of, addr_of_mut};
use xen_abi::hypercall::{HYPERVISOR_IRET, HYPERVISOR_MMUEXT_OP, HYPERVISOR_STACK_SWITCH};
use xen_abi::xen::{
    MmuextOp, StartInfo, DOMID_SELF, FLAT_KERNEL_SS, FLAT_RING3_CS64, FLAT_RING3_SS64,
    MMUEXT_NEW_USER_BASEPTR, UVMF_INVLPG,
};

use crate::hypercall::hypercall6;
use crate::shared::{mfn_of, update_va_mapping};

/// Where user mode sees the code page.
pub const CODE_VA: u64 = 0x40_0000;
/// User data pages follow the code page.
pub const DATA_VA: u64 = CODE_VA + 0x1000;
pub const DATA_PAGES: usize = 12;
/// The user stack grows down from the end of the data pages.
pub const STACK_TOP: u64 = DATA_VA + (DATA_PAGES as u64) * 0x1000;

/// `_PAGE_PRESENT | _PAGE_RW | _PAGE_USER | _PAGE_ACCESSED | _PAGE_DIRTY`: Linux's
/// `_PAGE_TABLE`, and the flags of the kernel's own mappings under Xen.
const TABLE: u64 = 0x67;
const PRESENT: u64 = 0x1;
const USER: u64 = 0x4;
const ACCESSED: u64 = 0x20;
const NX: u64 = 1 << 63;
/// Kernel mapping of a page, read-only.
const KERNEL_RO: u64 = 0x65;

#[repr(C, align(4096))]
struct Page([u64; 512]);

static mut UL4: Page = Page([0; 512]);
static mut UL3: Page = Page([0; 512]);
static mut UL2: Page = Page([0; 512]);
static mut UL1: Page = Page([0; 512]);
static mut DATA: [Page; DATA_PAGES] = [const { Page([0; 512]) }; DATA_PAGES];

/// The kernel stack entries from user mode land on (`stack_switch`).
#[repr(C, align(16))]
struct KernelStack([u8; 16 * 1024]);
static mut KSTACK: KernelStack = KernelStack([0; 16 * 1024]);

/// The user address space, once built.
#[derive(Clone, Copy, Debug)]
pub struct UserSpace {
    /// Machine frame of the user L4.
    pub l4_mfn: u64,
    /// The kernel stack pointer given to `stack_switch`.
    pub kernel_sp: u64,
}

/// Why [`build`] failed: the step and the hypervisor's return code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BuildError(pub &'static str, pub i64);

/// `mmuext_op` with one operation.
pub fn mmuext1(cmd: u32, arg1: u64) -> i64 {
    let op = MmuextOp { cmd, _pad: 0, arg1, arg2: 0 };
    // SAFETY: `op` is readable memory of ours; no done-count pointer.
    unsafe { hypercall6(HYPERVISOR_MMUEXT_OP, &op as *const _ as u64, 1, 0, u64::from(DOMID_SELF), 0, 0) }
}

/// `stack_switch(ss, sp)`.
pub fn stack_switch(ss: u64, sp: u64) -> i64 {
    // SAFETY: no pointer arguments.
    unsafe { hypercall6(HYPERVISOR_STACK_SWITCH, ss, sp, 0, 0, 0, 0) }
}

/// The kernel virtual address of user data at `user_va` (in `DATA_VA..STACK_TOP`).
pub fn data_kernel_va(user_va: u64) -> u64 {
    assert!((DATA_VA..STACK_TOP).contains(&user_va), "{user_va:#x} is not user data");
    addr_of!(DATA) as u64 + (user_va - DATA_VA)
}

/// Reads the user data word at `user_va` through the kernel's mapping of it.
pub fn read_data(user_va: u64) -> u64 {
    // SAFETY: `data_kernel_va` checked the range; the word is in our DATA static.
    unsafe { (data_kernel_va(user_va & !7) as *const u64).read_volatile() }
}

/// Builds the user tables mapping `code_page` (a page-aligned kernel address of code that
/// runs at [`CODE_VA`]) and the data pages, installs them as the user L4, and sets the kernel
/// stack for entries from user mode. Call once.
pub fn build(si: &StartInfo, code_page: u64) -> Result<UserSpace, BuildError> {
    assert!(code_page & 0xfff == 0, "the user code page must be page-aligned");
    let l4 = addr_of_mut!(UL4) as u64;
    let l3 = addr_of_mut!(UL3) as u64;
    let l2 = addr_of_mut!(UL2) as u64;
    let l1 = addr_of_mut!(UL1) as u64;
    let idx = |va: u64, level: u32| ((va >> (12 + 9 * (level - 1))) & 511) as usize;
    // SAFETY: single vCPU; the tables are ours and not yet in use.
    unsafe {
        (*addr_of_mut!(UL4)).0[idx(CODE_VA, 4)] = (mfn_of(si, l3) << 12) | TABLE;
        (*addr_of_mut!(UL3)).0[idx(CODE_VA, 3)] = (mfn_of(si, l2) << 12) | TABLE;
        (*addr_of_mut!(UL2)).0[idx(CODE_VA, 2)] = (mfn_of(si, l1) << 12) | TABLE;
        let pt = &mut (*addr_of_mut!(UL1)).0;
        pt[idx(CODE_VA, 1)] = (mfn_of(si, code_page) << 12) | PRESENT | USER | ACCESSED;
        for i in 0..DATA_PAGES {
            let va = addr_of!(DATA) as u64 + (i as u64) * 0x1000;
            pt[idx(DATA_VA, 1) + i] = (mfn_of(si, va) << 12) | TABLE | NX;
        }
    }
    for (name, va) in [("L4", l4), ("L3", l3), ("L2", l2), ("L1", l1)] {
        let rc = update_va_mapping(va, (mfn_of(si, va) << 12) | KERNEL_RO, UVMF_INVLPG);
        if rc != 0 {
            return Err(BuildError(name, rc));
        }
    }
    let l4_mfn = mfn_of(si, l4);
    let rc = mmuext1(MMUEXT_NEW_USER_BASEPTR, l4_mfn);
    if rc != 0 {
        return Err(BuildError("MMUEXT_NEW_USER_BASEPTR", rc));
    }
    let kernel_sp = addr_of!(KSTACK) as u64 + core::mem::size_of::<KernelStack>() as u64;
    let rc = stack_switch(u64::from(FLAT_KERNEL_SS), kernel_sp);
    if rc != 0 {
        return Err(BuildError("stack_switch", rc));
    }
    Ok(UserSpace { l4_mfn, kernel_sp })
}

/// The user address of the code at kernel address `label` in the code page at `code_page`.
pub fn code_va(code_page: u64, label: u64) -> u64 {
    assert!((code_page..code_page + 0x1000).contains(&label));
    CODE_VA + (label - code_page)
}

/// Enters user mode at `rip` with stack `rsp`, `rax`, `rdi` and `rsi` through `HYPERVISOR_iret`
/// (user CS/SS, IF set, flags 0). Returns only if the hypercall fails; user mode comes back
/// through a trap or callback (wrap in [`crate::traps::catch`]).
pub fn enter(rip: u64, rsp: u64, rax: u64, rdi: u64, rsi: u64) -> i64 {
    let rc: i64;
    // SAFETY: builds an iret_context (rax r11 rcx flags rip cs rflags rsp ss) on our stack
    // and makes the iret hypercall, which does not return on success; on failure the
    // context is popped again.
    unsafe {
        asm!(
            "mov r9, rsp",
            "and rsp, -16",
            "push {ss}",
            "push {rsp_}",
            "push 0x202",
            "push {cs}",
            "push {rip}",
            "push 0",
            "push 0",
            "push 0",
            "push {rax_}",
            "mov eax, {nr}",
            "syscall",
            "mov rsp, r9",
            ss = const FLAT_RING3_SS64 as u64,
            cs = const FLAT_RING3_CS64 as u64,
            nr = const HYPERVISOR_IRET,
            rip = in(reg) rip,
            rsp_ = in(reg) rsp,
            rax_ = in(reg) rax,
            in("rdi") rdi,
            in("rsi") rsi,
            lateout("rax") rc,
            out("rcx") _,
            out("r11") _,
            out("r9") _,
        );
    }
    rc
}
