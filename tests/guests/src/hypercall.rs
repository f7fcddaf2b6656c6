//! Entering Xen: the raw mechanisms and the typed hypercall wrappers built on them.
//!
//! 64-bit PV ABI (xen-pv-contract.md §3.4): `syscall` from guest-kernel mode, number in `rax`,
//! arguments in `rdi, rsi, rdx, r10, r8, r9`, result (a `long`, `-errno` on failure) in `rax`;
//! `rcx` and `r11` are destroyed and the hypervisor may modify the argument registers.
//!
//! A kernel reaches Xen one of two ways, chosen once per binary by
//! [`xen_guest!`](crate::xen_guest), which defines the `xen_hypercall6` symbol that
//! [`hypercall6`] calls:
//!
//! * [`syscall`]: the instruction inline, like Linux's `xen_hypercall_pv` (6.1.123 and later);
//! * [`page`]: `call hypercall_page + nr*32`, a stub the domain builder wrote (older Linux).
#![allow(unsafe_code)]

use xen_abi::console::CONSOLEIO_WRITE;
use xen_abi::hypercall::{HYPERVISOR_CONSOLE_IO, HYPERVISOR_SCHED_OP, HYPERVISOR_XEN_VERSION};
use xen_abi::sched::{SchedShutdown, SCHEDOP_SHUTDOWN, SHUTDOWN_CRASH};
use xen_abi::version::{XenFeatureInfo, XENVER_EXTRAVERSION, XENVER_GET_FEATURES, XEN_EXTRAVERSION_LEN};

/// Bare `syscall` into the hypervisor.
pub mod syscall {
    use core::arch::asm;

    /// Issues hypercall `nr` with a `syscall` instruction.
    ///
    /// # Safety
    /// The arguments must be valid for hypercall `nr`: any pointer among them must point to
    /// memory the hypervisor may read or write as that hypercall defines.
    #[inline]
    pub unsafe fn hypercall6(nr: u64, a1: u64, a2: u64, a3: u64, a4: u64, a5: u64, a6: u64) -> i64 {
        let ret: i64;
        // SAFETY: the caller vouches for the arguments; every register the hypervisor may
        // change is declared, and memory is not declared untouched.
        unsafe {
            asm!(
                "syscall",
                inlateout("rax") nr as i64 => ret,
                inlateout("rdi") a1 => _,
                inlateout("rsi") a2 => _,
                inlateout("rdx") a3 => _,
                inlateout("r10") a4 => _,
                inlateout("r8") a5 => _,
                inlateout("r9") a6 => _,
                out("rcx") _,
                out("r11") _,
            );
        }
        ret
    }
}

/// Calls into the hypercall page (`XEN_ELFNOTE_HYPERCALL_PAGE`, xen-pv-contract.md §2.12).
pub mod page {
    use core::arch::asm;
    use core::ptr::{addr_of, read_volatile};
    use xen_abi::hypercall::{HYPERCALL_STUB_SIZE, HYPERVISOR_IRET};

    /// Stubs in the page: 4096 / 32.
    pub const SLOTS: usize = 128;

    unsafe extern "C" {
        /// Defined by `xen_guest!(.., hypercall = page)`; filled by the builder before `_start`.
        static hypercall_page: [u8; 4096];
    }

    /// Issues hypercall `nr` by calling its stub: `call hypercall_page + nr*32`.
    ///
    /// # Safety
    /// As [`super::syscall::hypercall6`]; additionally the kernel must carry the page
    /// (`xen_guest!(.., hypercall = page)`) and `nr` must have a slot (panics otherwise).
    #[inline]
    pub unsafe fn hypercall6(nr: u64, a1: u64, a2: u64, a3: u64, a4: u64, a5: u64, a6: u64) -> i64 {
        assert!(nr < SLOTS as u64, "hypercall {nr} has no slot in the hypercall page");
        let slot = addr_of!(hypercall_page) as u64 + nr * HYPERCALL_STUB_SIZE as u64;
        let ret: i64;
        // SAFETY: the slot holds `push rcx; push r11; mov $nr,%eax; syscall; pop r11; pop rcx;
        // ret` (the builder's duty), so this is `syscall` with the caller-vouched arguments.
        unsafe {
            asm!(
                "call {slot}",
                slot = in(reg) slot,
                lateout("rax") ret,
                inlateout("rdi") a1 => _,
                inlateout("rsi") a2 => _,
                inlateout("rdx") a3 => _,
                inlateout("r10") a4 => _,
                inlateout("r8") a5 => _,
                inlateout("r9") a6 => _,
                out("rcx") _,
                out("r11") _,
            );
        }
        ret
    }

    /// The 32 bytes the builder must write at slot `nr` (`hypercall_page_initialise_ring3_kernel`).
    pub fn expected_slot(nr: usize) -> [u8; HYPERCALL_STUB_SIZE] {
        let mut slot = [0xcc; HYPERCALL_STUB_SIZE];
        let [n0, n1, n2, n3] = (nr as u32).to_le_bytes();
        if nr as u64 == HYPERVISOR_IRET {
            // push %rcx; push %r11; push %rax; mov $23,%eax; syscall
            slot[..11].copy_from_slice(&[0x51, 0x41, 0x53, 0x50, 0xb8, n0, n1, n2, n3, 0x0f, 0x05]);
        } else {
            // push %rcx; push %r11; mov $nr,%eax; syscall; pop %r11; pop %rcx; ret
            slot[..14].copy_from_slice(&[
                0x51, 0x41, 0x53, 0xb8, n0, n1, n2, n3, 0x0f, 0x05, 0x41, 0x5b, 0x59, 0xc3,
            ]);
        }
        slot
    }

    /// Slot `nr` as the builder left it.
    ///
    /// # Safety
    /// The kernel must carry the page (`xen_guest!(.., hypercall = page)`).
    #[inline]
    pub unsafe fn slot(nr: usize) -> [u8; HYPERCALL_STUB_SIZE] {
        assert!(nr < SLOTS);
        // SAFETY: the page exists (caller) and is mapped readable as part of the text
        // segment; volatile because the builder, not the program, wrote it.
        unsafe { read_volatile(addr_of!(hypercall_page).cast::<[u8; HYPERCALL_STUB_SIZE]>().add(nr)) }
    }
}

unsafe extern "C" {
    /// Defined by `xen_guest!` in each kernel: one of the `hypercall6`s above.
    fn xen_hypercall6(nr: u64, a1: u64, a2: u64, a3: u64, a4: u64, a5: u64, a6: u64) -> i64;
}

/// Issues hypercall `nr` with this kernel's mechanism.
///
/// # Safety
/// As [`syscall::hypercall6`].
#[inline]
pub unsafe fn hypercall6(nr: u64, a1: u64, a2: u64, a3: u64, a4: u64, a5: u64, a6: u64) -> i64 {
    // SAFETY: `xen_guest!` defines the symbol; the caller vouches for the arguments.
    unsafe { xen_hypercall6(nr, a1, a2, a3, a4, a5, a6) }
}

/// [`hypercall6`] for hypercalls with at most three arguments.
///
/// # Safety
/// As [`syscall::hypercall6`].
#[inline]
pub unsafe fn hypercall3(nr: u64, a1: u64, a2: u64, a3: u64) -> i64 {
    // SAFETY: the caller vouches for the arguments.
    unsafe { hypercall6(nr, a1, a2, a3, 0, 0, 0) }
}

/// Issues hypercall `nr` with every argument 0: for probing numbers the hypervisor should
/// reject. Safe because a 0 pointer argument names the never-mapped first page of the
/// guest-user half, so no hypercall can write through it.
pub fn hypercall_null_args(nr: u64) -> i64 {
    // SAFETY: see above.
    unsafe { hypercall3(nr, 0, 0, 0) }
}

/// As [`hypercall_null_args`], but always by a bare `syscall` (for numbers past the 128
/// slots of the hypercall page).
pub fn syscall_null_args(nr: u64) -> i64 {
    // SAFETY: as hypercall_null_args.
    unsafe { syscall::hypercall6(nr, 0, 0, 0, 0, 0, 0) }
}

/// `HYPERVISOR_console_io(CONSOLEIO_write, count, buf)` for `buf` in this program.
pub fn console_io_write(buf: &[u8]) -> i64 {
    console_io_write_raw(buf.as_ptr() as u64, buf.len() as u32)
}

/// `HYPERVISOR_console_io(CONSOLEIO_write, count, addr)` for any guest address: safe
/// because CONSOLEIO_write only reads guest memory (error-path tests pass bad addresses).
pub fn console_io_write_raw(addr: u64, count: u32) -> i64 {
    // SAFETY: see above.
    unsafe { hypercall3(HYPERVISOR_CONSOLE_IO, CONSOLEIO_WRITE, count.into(), addr) }
}

/// `HYPERVISOR_xen_version(cmd, NULL)`, for sub-ops that take no buffer (`XENVER_version`).
pub fn xen_version(cmd: u64) -> i64 {
    // SAFETY: NULL buffer: nothing is written (see hypercall_null_args).
    unsafe { hypercall3(HYPERVISOR_XEN_VERSION, cmd, 0, 0) }
}

/// `HYPERVISOR_xen_version(XENVER_extraversion, buf)`.
pub fn xen_version_extraversion(buf: &mut [u8; XEN_EXTRAVERSION_LEN]) -> i64 {
    let buf = buf.as_mut_ptr() as u64;
    // SAFETY: the sub-op writes exactly `xen_extraversion_t` (16 bytes) into `buf`.
    unsafe { hypercall3(HYPERVISOR_XEN_VERSION, XENVER_EXTRAVERSION, buf, 0) }
}

/// `HYPERVISOR_xen_version(XENVER_get_features, info)`.
pub fn xen_version_get_features(info: &mut XenFeatureInfo) -> i64 {
    let info = info as *mut XenFeatureInfo as u64;
    // SAFETY: the sub-op reads and writes exactly `struct xen_feature_info`.
    unsafe { hypercall3(HYPERVISOR_XEN_VERSION, XENVER_GET_FEATURES, info, 0) }
}

/// `HYPERVISOR_sched_op(SCHEDOP_shutdown, &{reason}, extra)`; `extra` is the start_info MFN
/// for `SHUTDOWN_suspend` (Linux's `HYPERVISOR_suspend`), else 0.
pub fn sched_op_shutdown(reason: u32, extra: u64) -> i64 {
    let arg = SchedShutdown { reason };
    let arg = &arg as *const SchedShutdown as u64;
    // SAFETY: the sub-op only reads `struct sched_shutdown`.
    unsafe { hypercall3(HYPERVISOR_SCHED_OP, SCHEDOP_SHUTDOWN, arg, extra) }
}

/// Last words of a kernel that cannot trust its hypercall page: writes `msg` and crashes the
/// domain, both with a bare `syscall`.
pub fn syscall_crash(msg: &[u8]) -> ! {
    let reason = SchedShutdown { reason: SHUTDOWN_CRASH };
    let (msg, len, reason) = (msg.as_ptr() as u64, msg.len() as u64, &reason as *const _ as u64);
    loop {
        // SAFETY: console_io only reads `msg`; SCHEDOP_shutdown only reads `reason`.
        unsafe {
            syscall::hypercall6(HYPERVISOR_CONSOLE_IO, CONSOLEIO_WRITE, len, msg, 0, 0, 0);
            syscall::hypercall6(HYPERVISOR_SCHED_OP, SCHEDOP_SHUTDOWN, reason, 0, 0, 0, 0);
        }
    }
}
