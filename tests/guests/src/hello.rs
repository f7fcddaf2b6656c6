//! The `hello` kernels' program: greet, check what the builder and the hypervisor report,
//! then shut down with the reason from `shutdown=<reason>` on the command line (default
//! poweroff), or crash if any check failed.

use xen_abi::errno::Errno;
use xen_abi::hypercall::HYPERVISOR_ARCH_0;
use xen_abi::sched::{SHUTDOWN_CRASH, SHUTDOWN_POWEROFF, SHUTDOWN_SUSPEND};
use xen_abi::version::{
    XenFeatureInfo, XENFEAT_AUTO_TRANSLATED_PHYSMAP, XENFEAT_GNTTAB_MAP_AVAIL_BITS,
    XENFEAT_MMU_PT_UPDATE_PRESERVE_AD, XENFEAT_WRITABLE_PAGE_TABLES, XENVER_VERSION, XEN_EXTRAVERSION_LEN,
};
use xen_abi::xen::{StartInfo, SIF_INITDOMAIN, START_INFO_MAGIC_X86_64};

use crate::check::Checks;
use crate::start_info::{cmd_line, cmdline_param, parse_shutdown_reason, start_info_mfn};
use crate::{hypercall, println, sched};

/// The first console line of every hello kernel.
pub const GREETING: &str = "Hello from a Xen PV guest!";

/// A guest-user-half address nothing maps: the builder maps only the kernel's region.
const UNMAPPED: u64 = 0x0000_1000_0000_0000;
/// A hypercall number past every table (and past the hypercall page).
const OUT_OF_RANGE_HYPERCALL: u64 = 200;

/// Runs the hello program; `extra` adds the caller's own checks right after the greeting.
pub fn run(program: &'static str, si: &'static StartInfo, extra: impl FnOnce(&mut Checks)) -> ! {
    println!("{GREETING}");
    let mut checks = Checks::new(program);
    extra(&mut checks);
    check_start_info(&mut checks, si);
    check_xen_version(&mut checks);
    check_error_paths(&mut checks);
    let reason = requested_shutdown(&mut checks, si);
    if checks.summary() != 0 {
        sched::shutdown(SHUTDOWN_CRASH);
    }
    match reason {
        SHUTDOWN_SUSPEND => sched::shutdown_with(reason, start_info_mfn(si).unwrap_or(0)),
        _ => sched::shutdown(reason),
    }
}

fn neg(e: Errno) -> i64 {
    -i64::from(e.0)
}

/// Bytes up to the first NUL, as text if they are UTF-8.
fn c_str(bytes: &[u8]) -> &str {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    core::str::from_utf8(&bytes[..end]).unwrap_or("<not UTF-8>")
}

fn check_start_info(c: &mut Checks, si: &StartInfo) {
    c.check(
        "start_info.magic starts with xen-3.0-x86_64",
        si.magic.starts_with(START_INFO_MAGIC_X86_64),
        format_args!("magic is {:?}", c_str(&si.magic)),
    );
    c.check("start_info.nr_pages > 0", si.nr_pages > 0, format_args!("0"));
    c.check("start_info.store_evtchn != 0", si.store_evtchn != 0, format_args!("0"));
    c.check("start_info.console.domU.evtchn != 0", si.console_evtchn != 0, format_args!("0"));
    c.check("start_info.pt_base != 0", si.pt_base != 0, format_args!("0"));
    c.check("start_info.mfn_list != 0", si.mfn_list != 0, format_args!("0"));
    c.check(
        "start_info.flags has no SIF_INITDOMAIN",
        si.flags & SIF_INITDOMAIN == 0,
        format_args!("flags {:#x}", si.flags),
    );
    println!("# nr_pages {} pt_base {:#x} mfn_list {:#x}", si.nr_pages, si.pt_base, si.mfn_list);
    println!("# cmd_line {:?}", c_str(cmd_line(si)));
}

fn check_xen_version(c: &mut Checks) {
    let version = hypercall::xen_version(XENVER_VERSION);
    c.check(
        "xen_version(XENVER_version) major >= 3",
        version >= 0 && version >> 16 >= 3,
        format_args!("returned {version:#x}"),
    );
    println!("# Xen {}.{}", version >> 16, version & 0xffff);

    let mut extra = [0xff; XEN_EXTRAVERSION_LEN];
    let rc = hypercall::xen_version_extraversion(&mut extra);
    c.check(
        "xen_version(XENVER_extraversion) fills a NUL-terminated string",
        rc == 0 && extra.contains(&0),
        format_args!("returned {rc}, buffer {extra:02x?}"),
    );
    println!("# extraversion {:?}", c_str(&extra));

    let mut info = XenFeatureInfo::default();
    let rc = hypercall::xen_version_get_features(&mut info);
    c.eq("xen_version(XENVER_get_features, submap 0) succeeds", rc, 0);
    println!("# features submap 0 = {:#x}", info.submap);
    let mut feature = |name: &str, bit: u32, want_set: bool| {
        let set = info.submap & (1 << bit) != 0;
        let detail = format_args!("returned {rc}, submap {:#x}", info.submap);
        c.check(name, rc == 0 && set == want_set, detail);
    };
    feature("XENFEAT_mmu_pt_update_preserve_ad set", XENFEAT_MMU_PT_UPDATE_PRESERVE_AD, true);
    feature("XENFEAT_gnttab_map_avail_bits set", XENFEAT_GNTTAB_MAP_AVAIL_BITS, true);
    feature("XENFEAT_writable_page_tables clear", XENFEAT_WRITABLE_PAGE_TABLES, false);
    feature("XENFEAT_auto_translated_physmap clear", XENFEAT_AUTO_TRANSLATED_PHYSMAP, false);

    let mut info = XenFeatureInfo { submap_idx: 1, ..Default::default() };
    let rc = hypercall::xen_version_get_features(&mut info);
    c.eq("xen_version(XENVER_get_features, submap 1) returns -EINVAL", rc, neg(Errno::EINVAL));
}

fn check_error_paths(c: &mut Checks) {
    c.eq(
        "unimplemented hypercall 48 (arch_0) returns -ENOSYS",
        hypercall::hypercall_null_args(HYPERVISOR_ARCH_0),
        neg(Errno::ENOSYS),
    );
    c.eq(
        "out-of-range hypercall 200 returns -ENOSYS",
        hypercall::syscall_null_args(OUT_OF_RANGE_HYPERCALL),
        neg(Errno::ENOSYS),
    );
    c.eq(
        "console_io write of an unmapped buffer returns -EFAULT",
        hypercall::console_io_write_raw(UNMAPPED, i32::MAX as u32),
        neg(Errno::EFAULT),
    );
}

/// The reason `shutdown=<reason>` asks for, else poweroff; an unknown reason fails a check.
fn requested_shutdown(c: &mut Checks, si: &StartInfo) -> u32 {
    let Some(word) = cmdline_param(cmd_line(si), "shutdown") else {
        return SHUTDOWN_POWEROFF;
    };
    let reason = parse_shutdown_reason(word);
    c.check(
        "cmd_line shutdown=<reason> is understood",
        reason.is_some(),
        format_args!("shutdown={:?}", c_str(word)),
    );
    reason.unwrap_or(SHUTDOWN_CRASH)
}
