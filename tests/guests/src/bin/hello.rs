//! `hello`: the first PV kernel. Greets, checks start_info and a few hypercalls, then shuts
//! down (reason from `shutdown=<reason>` on the command line, default poweroff; crash if a
//! check failed). Hypercalls are a bare `syscall`, as in Linux 6.1.123 and later.
#![no_std]
#![no_main]

use xenvmm_test_guests::xen_abi::xen::StartInfo;
use xenvmm_test_guests::{hello, xen_guest};

xen_guest!(main = guest_main, hypercall = syscall);

fn guest_main(start_info: &'static StartInfo) -> ! {
    hello::run("hello", start_info, |_| {})
}
