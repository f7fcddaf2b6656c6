//! `hello-hcpage`: `hello` for the older Linux ABI. The kernel carries a
//! `XEN_ELFNOTE_HYPERCALL_PAGE` note and makes every hypercall with
//! `call hypercall_page + nr*32` into the stubs the domain builder wrote there.
#![no_std]
#![no_main]

use xenvmm_test_guests::hypercall::{page, syscall_crash};
use xenvmm_test_guests::xen_abi::xen::StartInfo;
use xenvmm_test_guests::{hello, xen_guest};

xen_guest!(main = guest_main, hypercall = page);

const PAGE_CHECK: &str = "hypercall page filled by the domain builder";

fn guest_main(start_info: &'static StartInfo) -> ! {
    // Checked before the first call into the page: unfilled, it is all int3 and the domain
    // would die without a word.
    // SAFETY: this kernel carries the page (`hypercall = page` above).
    let bad_slot = (0..page::SLOTS).find(|&nr| unsafe { page::slot(nr) } != page::expected_slot(nr));
    if bad_slot.is_some() {
        syscall_crash(b"not ok - hypercall page filled by the domain builder\n");
    }
    hello::run("hello-hcpage", start_info, |checks| {
        checks.check(PAGE_CHECK, true, format_args!(""));
    })
}
