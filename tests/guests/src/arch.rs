//! The few CPU instructions a test kernel executes on purpose, other than `syscall`.
#![allow(unsafe_code)]

use core::arch::asm;

/// Raises #UD. With no trap table registered, Xen crashes the domain.
pub fn ud2() -> ! {
    // SAFETY: only raises an exception; the instruction never completes.
    unsafe { asm!("ud2", options(noreturn, nomem, nostack)) }
}
