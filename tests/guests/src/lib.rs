//! Runtime shared by xenvmm's tiny Xen PV test kernels (`src/bin/*`).
//!
//! Each kernel boots exactly as a Xen PV Linux does under a Xen domain builder: an ELF with
//! `.note.Xen` notes, entered in guest-kernel mode at CPL3 with `rsi` = `start_info`. Only
//! `syscall`-based hypercalls leave the program; there are no privileged instructions (except
//! on purpose), no trap table and no event handling, so any exception kills the domain.
//! Results go to the hypervisor console as `ok - ..` / `not ok - ..` lines and end in
//! `SCHEDOP_shutdown`.
//!
//! `unsafe` lives only in [`hypercall`], [`arch`], [`emul`], [`evtchn`], [`ring`], [`shared`],
//! [`start_info`], [`time`], [`traps`], [`user`] and the code [`xen_guest!`] generates.
#![no_std]
#![deny(unsafe_code)]

pub mod arch;
pub mod check;
pub mod console;
pub mod emul;
mod entry;
pub mod evtchn;
pub mod hello;
pub mod hypercall;
pub mod layout;
pub mod ring;
pub mod sched;
pub mod shared;
pub mod start_info;
pub mod time;
pub mod traps;
pub mod user;

pub use check::Checks;
pub use console::console_write;
pub use sched::shutdown;
pub use xen_abi;

/// Prints `PANIC: <message>` and crashes the domain, as Linux's panic notifier does.
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    println!("PANIC: {}", info.message());
    if let Some(location) = info.location() {
        println!("  at {}:{}", location.file(), location.line());
    }
    shutdown(xen_abi::sched::SHUTDOWN_CRASH)
}
