//! `mmu`: the PV MMU's rules from inside a guest (xen-pv-contract.md §3.1, §4.3–4.5): page
//! tables built, made read-only, pinned, edited with `mmu_update`, switched to with
//! `NEW_BASEPTR`; and the refusals, each checked for Xen's errno AND for nothing having
//! changed. Then, as figures (`# mmu: ...` lines, not pass/fail): `mmu_update` throughput in
//! batches of 1, 16 and 512 entries, and a fork-like pattern (build, pin, switch to, switch
//! back, unpin and free a 4-level tree) per iteration, `iters=N` times (command line).
#![no_std]
#![no_main]
#![allow(unsafe_code)]

use core::ptr::{addr_of, addr_of_mut};
use xenvmm_test_guests::hypercall::hypercall6;
use xenvmm_test_guests::shared::{map_shared_info, mfn_of, update_va_mapping, Shared};
use xenvmm_test_guests::start_info::{cmd_line, cmdline_param};
use xenvmm_test_guests::time::rdtsc;
use xenvmm_test_guests::user::mmuext1;
use xenvmm_test_guests::xen_abi::hypercall::{HYPERVISOR_MEMORY_OP, HYPERVISOR_MMU_UPDATE};
use xenvmm_test_guests::xen_abi::memory::{XenMachphysMfnList, XENMEM_MACHPHYS_MFN_LIST};
use xenvmm_test_guests::xen_abi::xen::*;
use xenvmm_test_guests::xen_abi::Errno;
use xenvmm_test_guests::{println, sched, xen_guest, Checks};

xen_guest!(main = guest_main, hypercall = syscall);

const P: u64 = 0x1;
const RW: u64 = 0x2;
const US: u64 = 0x4;
const A: u64 = 0x20;
const D: u64 = 0x40;
/// Writable data / table entry flags as Linux writes them.
const PAGE_RW: u64 = P | RW | US | A | D;
const PAGE_RO: u64 = P | US | A;
const PADDR: u64 = 0x000f_ffff_ffff_f000;

#[repr(C, align(4096))]
struct Page([u64; 512]);

const NPAGES: usize = 12;
static mut PAGES: [Page; NPAGES] = [const { Page([0; 512]) }; NPAGES];
/// Requests for batched mmu_update.
static mut REQS: [MmuUpdate; 512] = [MmuUpdate { ptr: 0, val: 0 }; 512];

fn neg(e: Errno) -> i64 {
    -i64::from(e.0)
}

fn page_va(i: usize) -> u64 {
    addr_of!(PAGES) as u64 + 4096 * i as u64
}

fn page(i: usize) -> &'static mut [u64; 512] {
    // SAFETY: single vCPU; each test page is used by one step at a time, and written only
    // while it is mapped writable.
    unsafe { &mut (*addr_of_mut!(PAGES))[i].0 }
}

fn read_word(va: u64) -> u64 {
    // SAFETY: callers pass mapped addresses of this kernel; volatile as the hypervisor
    // may rewrite the words (entry adjustments).
    unsafe { (va as *const u64).read_volatile() }
}

/// `mmu_update` of `reqs`; returns (rc, done).
fn mmu_update(reqs: &[MmuUpdate]) -> (i64, u32) {
    let mut done = 0u32;
    // SAFETY: the requests and the done counter are our own memory.
    let rc = unsafe {
        hypercall6(
            HYPERVISOR_MMU_UPDATE,
            reqs.as_ptr() as u64,
            reqs.len() as u64,
            addr_of_mut!(done) as u64,
            u64::from(DOMID_SELF),
            0,
            0,
        )
    };
    (rc, done)
}

fn mmu1(ptr: u64, val: u64) -> i64 {
    mmu_update(&[MmuUpdate { ptr, val }]).0
}

/// Remaps our test page `i` with `flags` (at its own kernel address).
fn remap(si: &StartInfo, i: usize, flags: u64) -> i64 {
    update_va_mapping(page_va(i), (mfn_of(si, page_va(i)) << 12) | flags, UVMF_INVLPG)
}

/// The machine address of the L1 entry mapping `va` in the current kernel tables, found
/// by walking them (they are mapped read-only in the initial mapping: `pt_base`).
fn l1e_maddr(si: &StartInfo, va: u64) -> u64 {
    let mut table = mfn_of(si, si.pt_base);
    for level in (2..=4u32).rev() {
        let idx = (va >> (12 + 9 * (level - 1))) & 511;
        let e = read_word(kva_of_mfn(si, table) + 8 * idx);
        table = (e & PADDR) >> 12;
    }
    (table << 12) + 8 * ((va >> 12) & 511)
}

/// The kernel virtual address of a frame of the initial mapping (through the M2P).
fn kva_of_mfn(si: &StartInfo, mfn: u64) -> u64 {
    // SAFETY: the M2P is mapped read-only at MACH2PHYS_VIRT_START for every PV guest.
    let pfn = unsafe { ((MACH2PHYS_VIRT_START + 8 * mfn) as *const u64).read_volatile() };
    assert!(pfn < si.nr_pages, "mfn {mfn:#x} is not in the initial mapping");
    xenvmm_test_guests::layout::VIRT_BASE + (pfn << 12)
}

/// TSC cycles → nanoseconds with the hypervisor's scale for vCPU 0.
fn cycles_to_ns(sh: &Shared, cycles: u64) -> u64 {
    // SAFETY: inside the mapped shared_info page.
    let t = unsafe { core::ptr::read_volatile(addr_of!((*sh.as_ptr()).vcpu_info[0].time)) };
    let c = if t.tsc_shift >= 0 { cycles << t.tsc_shift } else { cycles >> -t.tsc_shift };
    ((u128::from(c) * u128::from(t.tsc_to_system_mul)) >> 32) as u64
}

fn guest_main(si: &'static StartInfo) -> ! {
    let mut c = Checks::new("mmu");
    let sh = map_shared_info(si);
    let iters = cmdline_param(cmd_line(si), "iters")
        .and_then(|b| core::str::from_utf8(b).ok()?.parse::<u64>().ok())
        .unwrap_or(200)
        .max(1);
    let l4_mfn = mfn_of(si, si.pt_base);
    // Pages: 0 = a new L1, 1 = its data page, 2 = a table mapping itself, 3..=6 = fork tree
    // (L4, L3, L2, L1), 7 = fork data, 8 = a victim mapping, 9.. spare.
    let (t, dpage, selfmap, victim) = (0usize, 1usize, 2usize, 8usize);
    page(dpage)[0] = 0xd00d;
    page(victim)[0] = 0x5a5a;
    let victim_l1e = l1e_maddr(si, page_va(victim));
    let victim_before = read_word(kva_of_mfn(si, victim_l1e >> 12) + (victim_l1e & 0xfff));

    // ---- an L1: written, made read-only, pinned ----
    page(t)[0] = (mfn_of(si, page_va(dpage)) << 12) | PAGE_RW;
    c.eq(
        "pin of a writable-mapped page is refused",
        mmuext1(MMUEXT_PIN_L1_TABLE, mfn_of(si, page_va(t))),
        neg(Errno::EINVAL),
    );
    c.eq("remap the new L1 read-only", remap(si, t, PAGE_RO), 0);
    let t_mfn = mfn_of(si, page_va(t));
    c.eq("PIN_L1_TABLE", mmuext1(MMUEXT_PIN_L1_TABLE, t_mfn), 0);
    c.eq("PIN_L1_TABLE again is -EINVAL", mmuext1(MMUEXT_PIN_L1_TABLE, t_mfn), neg(Errno::EINVAL));
    c.eq(
        "the entry got _PAGE_USER and stays as written",
        read_word(page_va(t)) & PADDR,
        mfn_of(si, page_va(dpage)) << 12,
    );

    // ---- refusals, each leaving everything as it was ----
    // `what` names the refusal just checked: its victim mapping must be as before.
    let unchanged = |c: &mut Checks, what: &str| {
        let now = read_word(kva_of_mfn(si, victim_l1e >> 12) + (victim_l1e & 0xfff));
        let data = read_word(page_va(victim));
        c.check(
            what,
            now == victim_before && data == 0x5a5a,
            format_args!("entry {now:#x} (was {victim_before:#x}), data {data:#x}"),
        );
    };
    c.eq(
        "writable mapping of a pinned L1 is -EINVAL",
        update_va_mapping(page_va(victim), (t_mfn << 12) | PAGE_RW, UVMF_INVLPG),
        neg(Errno::EINVAL),
    );
    unchanged(&mut c, "... and the victim mapping is unchanged (pinned L1)");
    // Shim memory: the frame just below the domain's first RAM frame belongs to the shim.
    let below_ram = mfn_of(si, xenvmm_test_guests::layout::VIRT_BASE) - 1;
    c.eq(
        "mapping shim memory is -EINVAL",
        update_va_mapping(page_va(victim), (below_ram << 12) | PAGE_RO, UVMF_INVLPG),
        neg(Errno::EINVAL),
    );
    unchanged(&mut c, "... and the victim mapping is unchanged (shim memory)");
    // The M2P: its first frame, from XENMEM_machphys_mfn_list.
    let mut m2p_mfn = 0u64;
    let mut list = XenMachphysMfnList {
        max_extents: 1,
        extent_start: addr_of_mut!(m2p_mfn) as u64,
        ..Default::default()
    };
    // SAFETY: the argument and its one-entry list are our own memory.
    let rc = unsafe {
        hypercall6(HYPERVISOR_MEMORY_OP, XENMEM_MACHPHYS_MFN_LIST, addr_of_mut!(list) as u64, 0, 0, 0, 0)
    };
    c.eq("machphys_mfn_list names the M2P's first frame", (rc, list.nr_extents), (0, 1));
    c.eq(
        "a writable mapping of the M2P is -EINVAL",
        update_va_mapping(page_va(victim), (m2p_mfn << 12) | PAGE_RW, UVMF_INVLPG),
        neg(Errno::EINVAL),
    );
    unchanged(&mut c, "... and the victim mapping is unchanged (M2P writable)");
    c.eq(
        "a read-only mapping of the M2P is allowed",
        update_va_mapping(page_va(victim + 1), (m2p_mfn << 12) | PAGE_RO, UVMF_INVLPG),
        0,
    );
    let same =
        (0..512).all(|k| read_word(page_va(victim + 1) + 8 * k) == read_word(MACH2PHYS_VIRT_START + 8 * k));
    c.check(
        "... and shows the M2P's first 512 entries",
        same,
        format_args!("differs from MACH2PHYS_VIRT_START"),
    );
    c.eq("map the page back", remap(si, victim + 1, PAGE_RW), 0);
    c.eq(
        "an out-of-range MFN is -EINVAL",
        update_va_mapping(page_va(victim), (0xff_ffff_f000 & PADDR) | PAGE_RO, UVMF_INVLPG),
        neg(Errno::EINVAL),
    );
    unchanged(&mut c, "... and the victim mapping is unchanged (out-of-range MFN)");
    c.eq("mmu_update into an out-of-range frame is -EINVAL", mmu1(0xff_ffff_f000, 0), neg(Errno::EINVAL));
    c.eq(
        "pinning an out-of-range frame is -EINVAL",
        mmuext1(MMUEXT_PIN_L1_TABLE, 0x0fff_ffff),
        neg(Errno::EINVAL),
    );
    // The hypervisor slots of our own L4.
    let slot_va = si.pt_base + 8 * 260;
    let slot_before = read_word(slot_va);
    c.eq(
        "mmu_update of a hypervisor L4 slot is -EINVAL",
        mmu1((l4_mfn << 12) + 8 * 260, (t_mfn << 12) | PAGE_RW),
        neg(Errno::EINVAL),
    );
    c.eq("the hypervisor slot is unchanged", read_word(slot_va), slot_before);
    // A table that maps itself writable.
    let s_mfn = mfn_of(si, page_va(selfmap));
    page(selfmap)[0] = (s_mfn << 12) | PAGE_RW;
    page(selfmap)[1] = 0x1234_5000 | PAGE_RO;
    c.eq("remap the self-mapping table read-only", remap(si, selfmap, PAGE_RO), 0);
    c.eq(
        "pinning a table that maps itself writable is -EINVAL",
        mmuext1(MMUEXT_PIN_L1_TABLE, s_mfn),
        neg(Errno::EINVAL),
    );
    c.eq(
        "its contents are untouched",
        (read_word(page_va(selfmap)), read_word(page_va(selfmap) + 8)),
        ((s_mfn << 12) | PAGE_RW, 0x1234_5000 | PAGE_RO),
    );
    c.eq("and it can be mapped writable again", remap(si, selfmap, PAGE_RW), 0);
    // The current base.
    c.eq("unpinning the current base (pinned at boot) is allowed", mmuext1(MMUEXT_UNPIN_TABLE, l4_mfn), 0);
    c.eq(
        "the base is still a table: a writable mapping of it is -EINVAL",
        update_va_mapping(page_va(victim), (l4_mfn << 12) | PAGE_RW, UVMF_INVLPG),
        neg(Errno::EINVAL),
    );
    unchanged(&mut c, "... and the victim mapping is unchanged (L4 writable)");
    c.eq("pin it back", mmuext1(MMUEXT_PIN_L4_TABLE, l4_mfn), 0);

    // ---- mmu_update: entries of the pinned L1, done counts ----
    let e1 = t_mfn * 4096 + 8;
    let (rc, done) = mmu_update(&[
        MmuUpdate { ptr: e1, val: (mfn_of(si, page_va(dpage)) << 12) | PAGE_RO },
        MmuUpdate { ptr: e1 + 8, val: (below_ram << 12) | PAGE_RO },
        MmuUpdate { ptr: e1 + 16, val: (mfn_of(si, page_va(dpage)) << 12) | PAGE_RO },
    ]);
    c.eq("a batch with a refused entry stops there (rc, done)", (rc, done), (neg(Errno::EINVAL), 1));
    c.eq("the first entry took effect", read_word(page_va(t) + 8) & PADDR, mfn_of(si, page_va(dpage)) << 12);
    c.eq("nothing after the failure", read_word(page_va(t) + 24), 0);
    c.eq("UNPIN_TABLE", mmuext1(MMUEXT_UNPIN_TABLE, t_mfn), 0);
    c.eq("UNPIN_TABLE again is -EINVAL", mmuext1(MMUEXT_UNPIN_TABLE, t_mfn), neg(Errno::EINVAL));
    c.eq("the unpinned L1 can be mapped writable again", remap(si, t, PAGE_RW), 0);

    // ---- figures: mmu_update throughput ----
    page(t).fill(0);
    c.eq("remap the L1 read-only", remap(si, t, PAGE_RO), 0);
    c.eq("pin it", mmuext1(MMUEXT_PIN_L1_TABLE, t_mfn), 0);
    let data_mfn = mfn_of(si, page_va(dpage));
    for batch in [1usize, 16, 512] {
        // SAFETY: single vCPU; REQS is only used here.
        let reqs = unsafe { &mut (&mut *addr_of_mut!(REQS))[..batch] };
        let rounds = (iters * 64).div_ceil(batch as u64).max(2);
        let start = rdtsc();
        let mut ok = true;
        for r in 0..rounds {
            let flags = if r % 2 == 0 { PAGE_RO } else { 0 };
            for (i, q) in reqs.iter_mut().enumerate() {
                *q = MmuUpdate { ptr: t_mfn * 4096 + 8 * i as u64, val: (data_mfn << 12) | flags };
            }
            ok &= mmu_update(reqs) == (0, batch as u32);
        }
        let cycles = rdtsc() - start;
        let entries = rounds * batch as u64;
        let ns = cycles_to_ns(&sh, cycles).max(1);
        let name = match batch {
            1 => "mmu_update batches of 1 all succeed",
            16 => "mmu_update batches of 16 all succeed",
            _ => "mmu_update batches of 512 all succeed",
        };
        c.check(name, ok, format_args!("{rounds} rounds"));
        println!(
            "# mmu: mmu_update batch {}: {} entries, {} cycles/entry, {} entries/s",
            batch,
            entries,
            cycles / entries,
            u128::from(entries) * 1_000_000_000 / u128::from(ns)
        );
    }
    c.eq("unpin the L1", mmuext1(MMUEXT_UNPIN_TABLE, t_mfn), 0);

    // ---- figures: fork-like pattern ----
    let (l4, l3, l2, l1, fdata) = (3usize, 4usize, 5usize, 6usize, 7usize);
    let slot511 = read_word(si.pt_base + 8 * 511);
    let start = rdtsc();
    let mut ok = true;
    for _ in 0..iters {
        // Build: kernel half shared (slot 511), one user mapping through new L3/L2/L1.
        page(l4).fill(0);
        page(l4)[511] = slot511;
        page(l4)[0] = (mfn_of(si, page_va(l3)) << 12) | PAGE_RW;
        page(l3).fill(0);
        page(l3)[0] = (mfn_of(si, page_va(l2)) << 12) | PAGE_RW;
        page(l2).fill(0);
        page(l2)[0] = (mfn_of(si, page_va(l1)) << 12) | PAGE_RW;
        page(l1).fill(0);
        page(l1)[0] = (mfn_of(si, page_va(fdata)) << 12) | PAGE_RW;
        for p in [l4, l3, l2, l1] {
            ok &= remap(si, p, PAGE_RO) == 0;
        }
        let new = mfn_of(si, page_va(l4));
        ok &= mmuext1(MMUEXT_PIN_L4_TABLE, new) == 0;
        ok &= mmuext1(MMUEXT_NEW_BASEPTR, new) == 0;
        ok &= mmuext1(MMUEXT_NEW_BASEPTR, l4_mfn) == 0;
        ok &= mmuext1(MMUEXT_UNPIN_TABLE, new) == 0;
        for p in [l4, l3, l2, l1] {
            ok &= remap(si, p, PAGE_RW) == 0;
        }
    }
    let cycles = (rdtsc() - start) / iters;
    c.check("every fork-like iteration succeeded", ok, format_args!("{iters} iterations"));
    println!(
        "# mmu: fork-like build/pin/switch/unpin/free of a 4-level tree: {} cycles ({} ns) per iteration, {} iterations",
        cycles,
        cycles_to_ns(&sh, cycles),
        iters
    );
    println!("# mmu: iters {} done", iters);

    if c.summary() != 0 {
        sched::shutdown(xenvmm_test_guests::xen_abi::sched::SHUTDOWN_CRASH);
    }
    sched::shutdown(xenvmm_test_guests::xen_abi::sched::SHUTDOWN_POWEROFF)
}
