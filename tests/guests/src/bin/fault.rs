//! `fault`: prints a line, then executes `ud2` with no trap table registered; Xen crashes
//! the domain (there is nowhere to bounce the #UD to).
#![no_std]
#![no_main]

use xenvmm_test_guests::xen_abi::xen::StartInfo;
use xenvmm_test_guests::{arch, println, xen_guest};

xen_guest!(main = guest_main, hypercall = syscall);

fn guest_main(_start_info: &'static StartInfo) -> ! {
    println!("fault: executing ud2 with no trap table");
    arch::ud2()
}
