//! `grants`: the grant table as a Linux domU sets it up (xen-pv-contract.md §6.2;
//! `gnttab_init` / `gnttab_map` in Linux's `drivers/xen/grant-table.c`): `query_size`,
//! `set_version(1)`, `setup_table`, the returned frames mapped writable with
//! `update_va_mapping`, an entry written through that mapping and honoured by the hypervisor
//! (`GNTTABOP_copy` through the domain's own grant), and Xen's answers to what a domU may not
//! do: version 2, other domains, too many frames, bad pointers, status frames of a v1 table,
//! mapping grants nobody gave it.
#![no_std]
#![no_main]
#![allow(unsafe_code)]

use core::ptr::{addr_of, addr_of_mut};
use xenvmm_test_guests::hypercall::hypercall6;
use xenvmm_test_guests::shared::{mfn_of, update_va_mapping};
use xenvmm_test_guests::xen_abi::errno::Errno;
use xenvmm_test_guests::xen_abi::grant_table::*;
use xenvmm_test_guests::xen_abi::hypercall::HYPERVISOR_GRANT_TABLE_OP;
use xenvmm_test_guests::xen_abi::sched::{SHUTDOWN_CRASH, SHUTDOWN_POWEROFF};
use xenvmm_test_guests::xen_abi::xen::{StartInfo, DOMID_SELF};
use xenvmm_test_guests::{println, sched, xen_guest, Checks};
use zerocopy::FromZeros;

xen_guest!(main = guest_main, hypercall = syscall);

/// xenvmm runs its guest as domain 1 (domain 0 is the VMM).
const OWN_DOMID: u16 = 1;
/// Xen's default `gnttab_max_frames`, which the VMM gives a domU.
const MAX_FRAMES: u32 = 64;
const NR: usize = 4;
/// An address nothing of this kernel lives at (below the hypervisor hole, canonical).
const UNMAPPED: u64 = 0x0000_1000_0000_0000;
const HOLE: u64 = 0xffff_8000_0000_0000;
/// Present, writable, accessed, dirty, no-execute.
const PTE_RW: u64 = 0x63 | (1 << 63);

#[repr(C, align(4096))]
struct Page([u8; 4096]);

/// Where the grant frames get mapped (as Linux's `gnttab_shared_vm_area`).
static mut TABLE: [Page; NR] = [const { Page([0; 4096]) }; NR];
static mut SPARE: Page = Page([0; 4096]);
static mut SRC: Page = Page([0; 4096]);
static mut DST: Page = Page([0; 4096]);

fn neg(e: Errno) -> i64 {
    -i64::from(e.0)
}

fn gnttab_op<T>(cmd: u32, op: &mut T, count: u32) -> i64 {
    gnttab_op_raw(cmd, op as *mut T as u64, count)
}

fn gnttab_op_raw(cmd: u32, uop: u64, count: u32) -> i64 {
    // SAFETY: `uop` points at `count` argument structs of `cmd` or is an address the
    // hypervisor must refuse; every pointer inside them is checked the same way.
    unsafe { hypercall6(HYPERVISOR_GRANT_TABLE_OP, u64::from(cmd), uop, u64::from(count), 0, 0, 0) }
}

fn query(dom: u16) -> (i64, GnttabQuerySize) {
    let mut q = GnttabQuerySize { dom, ..FromZeros::new_zeroed() };
    (gnttab_op(GNTTABOP_QUERY_SIZE, &mut q, 1), q)
}

fn setup(dom: u16, nr: u32, list: u64) -> (i64, i16) {
    let mut st =
        GnttabSetupTable { dom, nr_frames: nr, status: 0x55, frame_list: list, ..FromZeros::new_zeroed() };
    (gnttab_op(GNTTABOP_SETUP_TABLE, &mut st, 1), st.status)
}

fn guest_main(si: &'static StartInfo) -> ! {
    println!("grants: grant table v1 under the PV shim");
    let mut c = Checks::new("grants");

    let (rc, q) = query(DOMID_SELF);
    c.eq(
        "query_size(DOMID_SELF)",
        (rc, q.status, q.nr_frames, q.max_nr_frames),
        (0, GNTST_OKAY, 1, MAX_FRAMES),
    );
    c.eq("query_size(domain 0) is refused", (query(0).0, query(0).1.status), (0, GNTST_PERMISSION_DENIED));
    c.eq("query_size(domain 5) does not exist", query(5).1.status, GNTST_BAD_DOMAIN);

    check_versions(&mut c);
    let frames = check_setup(&mut c);
    check_mapping(&mut c, si, &frames);
    check_refusals(&mut c);

    let failed = c.summary();
    sched::shutdown(if failed == 0 { SHUTDOWN_POWEROFF } else { SHUTDOWN_CRASH })
}

fn check_versions(c: &mut Checks) {
    for (v, want) in [(1, 0), (2, neg(Errno::ENOSYS)), (0, neg(Errno::EINVAL)), (3, neg(Errno::EINVAL))] {
        let mut sv = GnttabSetVersion { version: v };
        let rc = gnttab_op(GNTTABOP_SET_VERSION, &mut sv, 1);
        c.check(
            "set_version: 1 accepted, 2 -ENOSYS (no v2), others -EINVAL; version 1 written back",
            rc == want && sv.version == 1,
            format_args!("version {v}: rc {rc}, version now {}", sv.version),
        );
    }
    let mut gv = GnttabGetVersion { dom: DOMID_SELF, pad: 0, version: 0 };
    c.eq("get_version(DOMID_SELF)", (gnttab_op(GNTTABOP_GET_VERSION, &mut gv, 1), gv.version), (0, 1));
    let mut gv = GnttabGetVersion { dom: 0, pad: 0, version: 0 };
    c.eq("get_version(domain 0) is -EPERM", gnttab_op(GNTTABOP_GET_VERSION, &mut gv, 1), neg(Errno::EPERM));
    let mut gv = GnttabGetVersion { dom: 9, pad: 0, version: 0 };
    c.eq("get_version(domain 9) is -ESRCH", gnttab_op(GNTTABOP_GET_VERSION, &mut gv, 1), neg(Errno::ESRCH));
    let mut gs = GnttabGetStatusFrames { nr_frames: 1, dom: DOMID_SELF, status: 0x55, frame_list: UNMAPPED };
    let rc = gnttab_op(GNTTABOP_GET_STATUS_FRAMES, &mut gs, 1);
    c.eq("get_status_frames of a v1 table", (rc, gs.status), (0, GNTST_GENERAL_ERROR));
}

fn check_setup(c: &mut Checks) -> [u64; NR] {
    let mut frames = [0u64; NR + 1];
    let (rc, st) = setup(DOMID_SELF, NR as u32, frames.as_mut_ptr() as u64);
    c.eq("setup_table(DOMID_SELF, 4)", (rc, st), (0, GNTST_OKAY));
    c.check(
        "setup_table lists 4 distinct frames and nothing more",
        frames[..NR].iter().all(|&f| f != 0)
            && (1..NR).all(|i| !frames[..i].contains(&frames[i]))
            && frames[NR] == 0,
        format_args!("{frames:#x?}"),
    );
    let (_, q) = query(DOMID_SELF);
    c.eq("query_size after setup_table", q.nr_frames, NR as u32);
    let mut again = [0u64; NR];
    let (rc, st) = setup(OWN_DOMID, 2, again.as_mut_ptr() as u64);
    c.eq(
        "setup_table by own domid, fewer frames: same frames",
        (rc, st, &again[..2]),
        (0, GNTST_OKAY, &frames[..2]),
    );
    c.eq("the table never shrinks", query(DOMID_SELF).1.nr_frames, NR as u32);
    let mut out = [0u64; NR];
    out.copy_from_slice(&frames[..NR]);
    out
}

fn check_mapping(c: &mut Checks, si: &StartInfo, frames: &[u64; NR]) {
    let base = addr_of_mut!(TABLE) as u64;
    for (i, f) in frames.iter().enumerate() {
        let rc = update_va_mapping(base + 4096 * i as u64, (f << 12) | PTE_RW, 2);
        c.eq("update_va_mapping of a grant frame, writable", rc, 0);
    }
    // xenvmm's table frames are consecutive: the one after the last handed out is not ours yet.
    let spare = addr_of_mut!(SPARE) as u64;
    let rc = update_va_mapping(spare, ((frames[NR - 1] + 1) << 12) | PTE_RW, 2);
    c.eq("a grant frame not handed out cannot be mapped", rc, neg(Errno::EINVAL));

    // Grant our own SRC page to ourselves in entry 515 (frame 1, index 3), through the mapping.
    let src_mfn = mfn_of(si, addr_of!(SRC) as u64);
    let dst_mfn = mfn_of(si, addr_of!(DST) as u64);
    // SAFETY: SRC is ours; nothing else refers to it.
    unsafe { core::ptr::copy_nonoverlapping(b"through grants".as_ptr(), addr_of_mut!(SRC) as *mut u8, 14) };
    let entry = (base + 4096 + 3 * 8) as *mut GrantEntryV1;
    // SAFETY: `entry` lies in TABLE[1], now the second grant frame, mapped writable. As Linux:
    // domid and frame first, then (after a barrier) the flags.
    unsafe {
        (*entry).domid = OWN_DOMID;
        (*entry).frame = src_mfn as u32;
        core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
        (*entry).flags = GTF_PERMIT_ACCESS | GTF_READONLY;
    }
    let mut cp = GnttabCopy::new_zeroed();
    cp.source = GnttabCopyPtr { u: 515, domid: DOMID_SELF, offset: 0, _pad: 0 };
    cp.dest = GnttabCopyPtr { u: dst_mfn, domid: DOMID_SELF, offset: 100, _pad: 0 };
    cp.len = 14;
    cp.flags = GNTCOPY_SOURCE_GREF;
    cp.status = 0x55;
    let rc = gnttab_op(GNTTABOP_COPY, &mut cp, 1);
    // SAFETY: DST is ours; the hypervisor wrote it during the hypercall.
    let got = unsafe { core::ptr::read_volatile(addr_of!(DST)).0 };
    c.eq(
        "copy through the grant written in the mapped frame",
        (rc, cp.status, &got[100..114]),
        (0, GNTST_OKAY, &b"through grants"[..]),
    );
    // SAFETY: as above.
    let flags = unsafe { core::ptr::read_volatile(addr_of!((*entry).flags)) };
    c.eq("the copy left the entry's flags as they were", flags, GTF_PERMIT_ACCESS | GTF_READONLY);
    // A read-only grant is no destination.
    cp.source = GnttabCopyPtr { u: src_mfn, domid: DOMID_SELF, offset: 0, _pad: 0 };
    cp.dest = GnttabCopyPtr { u: 515, domid: DOMID_SELF, offset: 0, _pad: 0 };
    cp.flags = GNTCOPY_DEST_GREF;
    let rc = gnttab_op(GNTTABOP_COPY, &mut cp, 1);
    c.eq("copy into a read-only grant", (rc, cp.status), (0, GNTST_GENERAL_ERROR));
}

fn check_refusals(c: &mut Checks) {
    let mut list = [0u64; 2];
    let l = list.as_mut_ptr() as u64;
    c.eq("setup_table beyond max_nr_frames", setup(DOMID_SELF, MAX_FRAMES + 1, l), (0, GNTST_GENERAL_ERROR));
    c.eq("setup_table(domain 0)", setup(0, 1, l), (0, GNTST_PERMISSION_DENIED));
    c.eq("setup_table(domain 9)", setup(9, 1, l), (0, GNTST_BAD_DOMAIN));
    c.eq("setup_table to an unmapped frame list", setup(DOMID_SELF, 1, UNMAPPED), (0, GNTST_BAD_VIRT_ADDR));
    c.eq("setup_table to a frame list in the hole", setup(DOMID_SELF, 1, HOLE), (neg(Errno::EFAULT), 0x55));
    c.eq(
        "setup_table at an unmapped address",
        gnttab_op_raw(GNTTABOP_SETUP_TABLE, UNMAPPED, 1),
        neg(Errno::EFAULT),
    );
    let mut st = GnttabSetupTable { dom: DOMID_SELF, nr_frames: 1, frame_list: l, ..FromZeros::new_zeroed() };
    c.eq("setup_table with count 2", gnttab_op(GNTTABOP_SETUP_TABLE, &mut st, 2), neg(Errno::EINVAL));
    c.eq(
        "grant_table_op with a negative count",
        gnttab_op(GNTTABOP_SETUP_TABLE, &mut st, u32::MAX),
        neg(Errno::EINVAL),
    );
    c.eq("GNTTABOP_dump_table", gnttab_op(GNTTABOP_DUMP_TABLE, &mut st, 1), neg(Errno::ENOSYS));

    let mut m = GnttabMapGrantRef {
        flags: GNTMAP_HOST_MAP,
        dom: 0,
        r#ref: 8,
        status: 0x55,
        ..FromZeros::new_zeroed()
    };
    let rc = gnttab_op(GNTTABOP_MAP_GRANT_REF, &mut m, 1);
    c.eq("map_grant_ref from domain 0: nothing granted", (rc, m.status), (0, GNTST_GENERAL_ERROR));
    let mut u = GnttabUnmapGrantRef { handle: 0, status: 0x55, ..FromZeros::new_zeroed() };
    let rc = gnttab_op(GNTTABOP_UNMAP_GRANT_REF, &mut u, 1);
    c.eq("unmap_grant_ref of a handle never given", (rc, u.status), (0, GNTST_BAD_HANDLE));
}
