//! `memory`: `HYPERVISOR_memory_op` (xen-pv-contract.md §4.9, §3.1 "Read-only M2P", §2.6).
//! The queries are checked against what the builder left in start_info (nr_pages, the P2M)
//! and against the M2P the hypervisor maps read-only; then pages are ballooned out as Linux's
//! balloon driver does it (unmap, flush, `XENMEM_decrease_reservation` with their MFNs),
//! shown to be gone (they can no longer be mapped or named), populated back
//! (`XENMEM_populate_physmap`), mapped again and found zero-filled.
//!
//! The big balloon is [`BIG`] pages in one call, more than one continuation's worth; the KVM
//! test reads from `--stats` how many hostcalls (VM exits) giving them back took.
#![no_std]
#![no_main]
#![allow(unsafe_code)]

use core::ptr::{addr_of, addr_of_mut};
use xenvmm_test_guests::hypercall::hypercall6;
use xenvmm_test_guests::shared::{mfn_of, update_va_mapping};
use xenvmm_test_guests::user::mmuext1;
use xenvmm_test_guests::xen_abi::errno::Errno;
use xenvmm_test_guests::xen_abi::hypercall::{HYPERVISOR_MEMORY_OP, HYPERVISOR_MMU_UPDATE};
use xenvmm_test_guests::xen_abi::memory::*;
use xenvmm_test_guests::xen_abi::sched::{SHUTDOWN_CRASH, SHUTDOWN_POWEROFF};
use xenvmm_test_guests::xen_abi::xen::{
    MmuUpdate, StartInfo, DOMID_SELF, MACH2PHYS_VIRT_END, MACH2PHYS_VIRT_START, MMUEXT_TLB_FLUSH_LOCAL,
    MMU_MACHPHYS_UPDATE, PAGE_SHIFT, UVMF_INVLPG,
};
use xenvmm_test_guests::{layout::VIRT_BASE, println, sched, xen_guest, Checks};

xen_guest!(main = guest_main, hypercall = syscall);

/// Pages of the big balloon: more than one continuation (512 extents) of the hypervisor.
const BIG: usize = 600;
/// A kernel mapping: present, writable, accessed, dirty (Linux's `PAGE_KERNEL` under Xen).
const KERNEL_RW: u64 = 0x63;
/// An address nothing of this kernel lives at (below the hypervisor hole, canonical).
const UNMAPPED: u64 = 0x0000_1000_0000_0000;

#[repr(C, align(4096))]
struct Page([u8; 4096]);

static mut BALLOON: [Page; BIG] = [const { Page([0; 4096]) }; BIG];
static mut FRAMES: [u64; BIG + 1] = [0; BIG + 1];

fn neg(e: Errno) -> i64 {
    -i64::from(e.0)
}

fn memory_op(cmd: u64, arg: u64) -> i64 {
    // SAFETY: callers pass pointers to their own memory of the size `cmd` reads and writes,
    // or addresses the hypervisor must refuse (nothing of ours lives there).
    unsafe { hypercall6(HYPERVISOR_MEMORY_OP, cmd, arg, 0, 0, 0, 0) }
}

fn domid_query(cmd: u64, domid: u16) -> i64 {
    memory_op(cmd, &domid as *const u16 as u64)
}

fn reservation_op(cmd: u64, list: u64, n: u64, order: u32) -> i64 {
    let r = XenMemoryReservation {
        extent_start: list,
        nr_extents: n,
        extent_order: order,
        mem_flags: 0,
        domid: DOMID_SELF,
        _pad: [0; 6],
    };
    memory_op(cmd, &r as *const _ as u64)
}

fn mmu_update1(ptr: u64, val: u64) -> i64 {
    let req = MmuUpdate { ptr, val };
    // SAFETY: one readable request of ours; no done pointer.
    unsafe { hypercall6(HYPERVISOR_MMU_UPDATE, &req as *const _ as u64, 1, 0, u64::from(DOMID_SELF), 0, 0) }
}

fn m2p(mfn: u64) -> u64 {
    // SAFETY: the hypervisor maps the M2P read-only at MACH2PHYS_VIRT_START for every MFN up
    // to the max_mfn it reported (checked by the caller); a missing mapping kills the domain,
    // which is the failure this test wants to see.
    unsafe { ((MACH2PHYS_VIRT_START + 8 * mfn) as *const u64).read_volatile() }
}

fn page_va(i: usize) -> u64 {
    // SAFETY: only the address is taken.
    unsafe { addr_of!(BALLOON[i]) as u64 }
}

fn pfn_of(va: u64) -> u64 {
    (va - VIRT_BASE) >> PAGE_SHIFT
}

fn set_p2m(si: &StartInfo, pfn: u64, mfn: u64) {
    // SAFETY: the builder maps the P2M list (`nr_pages` entries) writable at `mfn_list`.
    unsafe { (si.mfn_list as *mut u64).add(pfn as usize).write_volatile(mfn) }
}

fn guest_main(si: &'static StartInfo) -> ! {
    let mut c = Checks::new("memory");
    let max_mfn = check_queries(&mut c, si);
    check_small_balloon(&mut c, si, max_mfn);
    check_big_balloon(&mut c, si);
    check_increase_reservation(&mut c, si);
    let failed = c.summary();
    sched::shutdown(if failed == 0 { SHUTDOWN_POWEROFF } else { SHUTDOWN_CRASH })
}

/// Returns the M2P's max_mfn.
fn check_queries(c: &mut Checks, si: &StartInfo) -> u64 {
    let nr = si.nr_pages as i64;
    c.eq("current_reservation is nr_pages", domid_query(XENMEM_CURRENT_RESERVATION, DOMID_SELF), nr);
    c.eq("maximum_reservation is nr_pages", domid_query(XENMEM_MAXIMUM_RESERVATION, DOMID_SELF), nr);
    c.eq(
        "another domain's reservation: -ESRCH",
        domid_query(XENMEM_CURRENT_RESERVATION, 9),
        neg(Errno::ESRCH),
    );
    c.eq("domain 0's reservation: -EPERM", domid_query(XENMEM_MAXIMUM_RESERVATION, 0), neg(Errno::EPERM));
    c.eq(
        "reservation from a bad pointer: -EFAULT",
        memory_op(XENMEM_CURRENT_RESERVATION, UNMAPPED),
        neg(Errno::EFAULT),
    );

    // SAFETY: the P2M list holds nr_pages entries (see set_p2m).
    let p2m = unsafe { core::slice::from_raw_parts(si.mfn_list as *const u64, si.nr_pages as usize) };
    let top = p2m.iter().copied().max().unwrap_or(0);
    let max_ram_page = memory_op(XENMEM_MAXIMUM_RAM_PAGE, 0);
    c.check(
        "maximum_ram_page is above every MFN of the P2M",
        max_ram_page > top as i64,
        format_args!("{max_ram_page} vs {top:#x}"),
    );

    let mut map = XenMachphysMapping::default();
    c.eq("machphys_mapping", memory_op(XENMEM_MACHPHYS_MAPPING, &mut map as *mut _ as u64), 0);
    c.eq(
        "machphys_mapping v_start/v_end",
        (map.v_start, map.v_end),
        (MACH2PHYS_VIRT_START, MACH2PHYS_VIRT_END),
    );
    c.check(
        "max_mfn covers the P2M's frames",
        map.max_mfn >= top,
        format_args!("{:#x} vs {top:#x}", map.max_mfn),
    );
    let mut bad = 0;
    for (pfn, &mfn) in p2m.iter().enumerate().step_by(97) {
        if m2p(mfn) != pfn as u64 {
            bad += 1;
        }
    }
    c.eq("the read-only M2P inverts the P2M", bad, 0);
    // An unmapped M2P entry would kill the domain here.
    let _ = m2p(map.max_mfn);
    c.check("the M2P is readable up to max_mfn", true, format_args!(""));

    let mut list = [0u64; 8];
    let mut x =
        XenMachphysMfnList { max_extents: 8, extent_start: list.as_mut_ptr() as u64, ..Default::default() };
    c.eq("machphys_mfn_list", memory_op(XENMEM_MACHPHYS_MFN_LIST, &mut x as *mut _ as u64), 0);
    let want = ((map.max_mfn + 1) * 8).div_ceil(2 << 20).min(8) as u32;
    c.eq("machphys_mfn_list: one extent per 2 MiB of M2P", x.nr_extents, want);
    c.check(
        "machphys_mfn_list names frames",
        list[..want as usize].iter().all(|&m| m != 0),
        format_args!("{list:?}"),
    );

    let mut e820 = [0u8; 40];
    let mut mm = XenMemoryMap { nr_entries: 2, _pad: 0, buffer: e820.as_mut_ptr() as u64 };
    c.eq("memory_map", memory_op(XENMEM_MEMORY_MAP, &mut mm as *mut _ as u64), 0);
    c.eq("memory_map: one entry", mm.nr_entries, 1);
    let word = |o: usize| u64::from_le_bytes(e820[o..o + 8].try_into().unwrap_or_default());
    c.eq("memory_map: RAM from 0 for nr_pages", (word(0), word(8), e820[16]), (0, si.nr_pages << 12, 1));

    c.eq(
        "add_to_physmap: -EACCES (PV)",
        memory_op(
            XENMEM_ADD_TO_PHYSMAP,
            &XenAddToPhysmap { domid: DOMID_SELF, space: XENMAPSPACE_GMFN, ..Default::default() } as *const _
                as u64,
        ),
        neg(Errno::EACCES),
    );
    c.eq("machine_memory_map: -EPERM", memory_op(XENMEM_MACHINE_MEMORY_MAP, 0), neg(Errno::EPERM));
    c.eq("unknown command: -ENOSYS", memory_op(63, 0), neg(Errno::ENOSYS));
    map.max_mfn
}

/// Unmaps balloon pages `range` as Linux's balloon driver does, and records their MFNs in
/// FRAMES (from index 0).
fn unmap(si: &StartInfo, range: core::ops::Range<usize>) -> bool {
    let mut ok = true;
    for (k, i) in range.enumerate() {
        // SAFETY: FRAMES is only used from this single vCPU.
        unsafe { (*addr_of_mut!(FRAMES))[k] = mfn_of(si, page_va(i)) };
        ok &= update_va_mapping(page_va(i), 0, 0) == 0;
        set_p2m(si, pfn_of(page_va(i)), u64::MAX);
    }
    ok && mmuext1(MMUEXT_TLB_FLUSH_LOCAL, 0) == 0
}

fn frames() -> u64 {
    addr_of!(FRAMES) as u64
}

/// Fills mapped balloon pages `range` with `byte`.
fn fill(range: core::ops::Range<usize>, byte: u8) {
    for i in range {
        // SAFETY: the page is ours and mapped.
        unsafe { (*addr_of_mut!(BALLOON[i])).0.fill(byte) };
    }
}

fn frame(k: usize) -> u64 {
    // SAFETY: single vCPU; FRAMES is ours.
    unsafe { (*addr_of!(FRAMES))[k] }
}

/// Populates balloon pages `range` back (their PFNs in FRAMES, one more than released) and
/// maps them; returns whether every page reads as zeros.
fn repopulate(c: &mut Checks, si: &StartInfo, range: core::ops::Range<usize>, what: &str) -> bool {
    let n = range.len();
    for (k, i) in range.clone().enumerate() {
        // SAFETY: as in `unmap`.
        unsafe { (*addr_of_mut!(FRAMES))[k] = pfn_of(page_va(i)) };
    }
    // SAFETY: as in `unmap`.
    unsafe { (*addr_of_mut!(FRAMES))[n] = 0x7_0000 };
    let rc = reservation_op(XENMEM_POPULATE_PHYSMAP, frames(), n as u64 + 1, 0);
    c.eq(what, rc, n as i64);
    let mut zero = true;
    let mut m2p_ok = true;
    let mut mapped = true;
    for (k, i) in range.enumerate() {
        let mfn = frame(k);
        m2p_ok &= m2p(mfn) == pfn_of(page_va(i));
        set_p2m(si, pfn_of(page_va(i)), mfn);
        mapped &= update_va_mapping(page_va(i), (mfn << 12) | KERNEL_RW, UVMF_INVLPG) == 0;
        // SAFETY: the page is mapped again (checked below before the result counts).
        zero &= mapped && unsafe { (*addr_of!(BALLOON[i])).0.iter().all(|&b| b == 0) };
    }
    c.check("populate_physmap set the M2P of each frame", m2p_ok, format_args!(""));
    c.check("populated frames map again", mapped, format_args!(""));
    zero
}

fn check_small_balloon(c: &mut Checks, si: &StartInfo, max_mfn: u64) {
    const N: usize = 4;
    fill(0..N, 0xa5);
    c.check("balloon pages unmapped", unmap(si, 0..N), format_args!(""));
    let mfns: [u64; N] = core::array::from_fn(frame);
    c.check("their frames are below max_mfn", mfns.iter().all(|&m| m <= max_mfn), format_args!("{mfns:?}"));
    c.eq(
        "decrease_reservation of 4 pages",
        reservation_op(XENMEM_DECREASE_RESERVATION, frames(), N as u64, 0),
        N as i64,
    );
    let nr = si.nr_pages as i64;
    c.eq(
        "current_reservation dropped by 4",
        domid_query(XENMEM_CURRENT_RESERVATION, DOMID_SELF),
        nr - N as i64,
    );
    c.eq("maximum_reservation unchanged", domid_query(XENMEM_MAXIMUM_RESERVATION, DOMID_SELF), nr);
    c.eq(
        "a released frame cannot be mapped",
        update_va_mapping(page_va(0), (mfns[0] << 12) | KERNEL_RW, UVMF_INVLPG),
        neg(Errno::EINVAL),
    );
    c.eq(
        "nor mapped read-only",
        update_va_mapping(page_va(1), (mfns[1] << 12) | 0x61, UVMF_INVLPG),
        neg(Errno::EINVAL),
    );
    c.eq("nor named in the M2P", mmu_update1((mfns[2] << 12) | MMU_MACHPHYS_UPDATE, 5), neg(Errno::EINVAL));
    c.eq("its M2P entry is invalid", m2p(mfns[3]), u64::MAX);
    c.eq("releasing it again does nothing", reservation_op(XENMEM_DECREASE_RESERVATION, frames(), 1, 0), 0);
    // A frame still mapped (our own balloon page N) is refused.
    // SAFETY: as in `unmap`.
    unsafe { (*addr_of_mut!(FRAMES))[0] = mfn_of(si, page_va(N)) };
    c.eq("a mapped frame is not released", reservation_op(XENMEM_DECREASE_RESERVATION, frames(), 1, 0), 0);
    c.eq("extent_order 10 is refused", reservation_op(XENMEM_DECREASE_RESERVATION, frames(), 1, 10), 0);
    c.eq(
        "a list at a bad address does nothing",
        reservation_op(XENMEM_DECREASE_RESERVATION, UNMAPPED, 1, 0),
        0,
    );
    let zero = repopulate(c, si, 0..N, "populate_physmap gives back only what was released");
    c.check("repopulated pages read as zeros", zero, format_args!(""));
    c.eq("current_reservation is back", domid_query(XENMEM_CURRENT_RESERVATION, DOMID_SELF), nr);
}

fn check_big_balloon(c: &mut Checks, si: &StartInfo) {
    fill(0..BIG, 0x3c);
    c.check("big balloon unmapped", unmap(si, 0..BIG), format_args!(""));
    let rc = reservation_op(XENMEM_DECREASE_RESERVATION, frames(), BIG as u64, 0);
    c.eq("decrease_reservation of 600 pages (continued)", rc, BIG as i64);
    let nr = si.nr_pages as i64;
    c.eq(
        "current_reservation dropped by 600",
        domid_query(XENMEM_CURRENT_RESERVATION, DOMID_SELF),
        nr - BIG as i64,
    );
    println!("# memory: ballooned out {BIG} pages");
    let zero = repopulate(c, si, 0..BIG, "populate_physmap of 600 pages");
    c.check("the big balloon reads as zeros", zero, format_args!(""));
}

fn check_increase_reservation(c: &mut Checks, si: &StartInfo) {
    c.check("page unmapped", unmap(si, 0..1), format_args!(""));
    c.eq("decrease one", reservation_op(XENMEM_DECREASE_RESERVATION, frames(), 1, 0), 1);
    c.eq(
        "increase_reservation beyond the boot reservation",
        reservation_op(XENMEM_INCREASE_RESERVATION, frames(), 2, 0),
        1,
    );
    let mfn = frame(0);
    c.eq("increase_reservation leaves the M2P to the guest", m2p(mfn), u64::MAX);
    let pfn = pfn_of(page_va(0));
    c.eq("MMU_MACHPHYS_UPDATE names it", mmu_update1((mfn << 12) | MMU_MACHPHYS_UPDATE, pfn), 0);
    c.eq("the M2P follows", m2p(mfn), pfn);
    set_p2m(si, pfn, mfn);
    c.eq("and it maps", update_va_mapping(page_va(0), (mfn << 12) | KERNEL_RW, UVMF_INVLPG), 0);
}
