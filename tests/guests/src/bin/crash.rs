//! `crash`: prints a line, then `SCHEDOP_shutdown(SHUTDOWN_crash)`.
#![no_std]
#![no_main]

use xenvmm_test_guests::xen_abi::sched::SHUTDOWN_CRASH;
use xenvmm_test_guests::xen_abi::xen::StartInfo;
use xenvmm_test_guests::{println, shutdown, xen_guest};

xen_guest!(main = guest_main, hypercall = syscall);

fn guest_main(_start_info: &'static StartInfo) -> ! {
    println!("crash: calling SCHEDOP_shutdown(SHUTDOWN_crash)");
    shutdown(SHUTDOWN_CRASH)
}
