//! `ptwr`: writable page tables (xen-pv-contract.md §3.12). With
//! `VMASST_TYPE_writable_pagetables` on, the kernel writes entries of a live, validated L1
//! (the one that maps its own .bss) directly, through a read-only mapping of that table, as
//! Linux does: `mov`, `xchg`, `lock cmpxchg`, `lock andb`/`orb`, `lock btr`/`bts`. Each must
//! take effect (read back, and the mapped page as seen through the changed entry), with the
//! flags and registers the CPU would leave. Refused: a direct write that maps the L1 itself
//! writable (a #PF for our handler, CR2 = the entry, entry unchanged), and any direct write
//! once the assist is off. Then the cost: TSC cycles of an emulated PTE write against an
//! `mmu_update` of the same entry, printed as `# ptwr:` lines.
#![no_std]
#![no_main]
#![allow(unsafe_code)]

use core::arch::asm;
use core::ptr::{addr_of, addr_of_mut};
use xenvmm_test_guests::hypercall::hypercall6;
use xenvmm_test_guests::layout::VIRT_BASE;
use xenvmm_test_guests::shared::{map_shared_info, mfn_of, update_va_mapping, Shared};
use xenvmm_test_guests::traps::{self, TrapFrame};
use xenvmm_test_guests::user::mmuext1;
use xenvmm_test_guests::xen_abi::hypercall::{HYPERVISOR_MMU_UPDATE, HYPERVISOR_VM_ASSIST};
use xenvmm_test_guests::xen_abi::sched::{SHUTDOWN_CRASH, SHUTDOWN_POWEROFF};
use xenvmm_test_guests::xen_abi::xen::{
    MmuUpdate, StartInfo, DOMID_SELF, MMUEXT_INVLPG_LOCAL, MMU_NORMAL_PT_UPDATE, UVMF_INVLPG,
    VMASST_CMD_DISABLE, VMASST_CMD_ENABLE, VMASST_TYPE_WRITABLE_PAGETABLES,
};
use xenvmm_test_guests::{println, sched, xen_guest, Checks};

xen_guest!(main = guest_main, hypercall = syscall);

const PADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
const RW: u64 = 1 << 1;
const ACCESSED: u64 = 1 << 5;
const DIRTY: u64 = 1 << 6;
/// Timed samples per figure (odd: one median).
const SAMPLES: usize = 1001;

#[repr(C, align(4096))]
struct Page([u64; 512]);

/// Two data pages; the entry of the first is the one rewritten.
static mut TARGET: [Page; 2] = [const { Page([0; 512]) }; 2];
/// Remapped read-only onto the L1 frame: the window through which entries are written.
static mut WINDOW: Page = Page([0; 512]);
static mut SAMPLES_A: [u64; SAMPLES] = [0; SAMPLES];
static mut SAMPLES_B: [u64; SAMPLES] = [0; SAMPLES];

fn vm_assist(cmd: u32, type_: u32) -> i64 {
    // SAFETY: no pointer arguments.
    unsafe { hypercall6(HYPERVISOR_VM_ASSIST, u64::from(cmd), u64::from(type_), 0, 0, 0, 0) }
}

fn mmu_update1(ptr: u64, val: u64) -> i64 {
    let req = MmuUpdate { ptr: ptr | MMU_NORMAL_PT_UPDATE, val };
    // SAFETY: `req` is readable memory of ours; no done pointer.
    unsafe { hypercall6(HYPERVISOR_MMU_UPDATE, &req as *const _ as u64, 1, 0, u64::from(DOMID_SELF), 0, 0) }
}

fn idx(va: u64, level: u32) -> usize {
    ((va >> (12 + 9 * (level - 1))) & 511) as usize
}

/// The kernel virtual address of machine frame `mfn` in the initial mapping (a P2M scan).
fn va_of_mfn(si: &StartInfo, mfn: u64) -> Option<u64> {
    // SAFETY: the builder maps the P2M list (`nr_pages` entries) at `mfn_list`.
    (0..si.nr_pages)
        .find(|&pfn| unsafe { (si.mfn_list as *const u64).add(pfn as usize).read_volatile() } == mfn)
        .map(|pfn| VIRT_BASE + (pfn << 12))
}

/// The machine frame of the L1 that maps `va`, walked from `pt_base` (the builder's tables
/// are in the initial mapping, read-only).
fn l1_of(si: &StartInfo, va: u64) -> Option<u64> {
    let mut table = si.pt_base;
    for level in (2..=4).rev() {
        // SAFETY: `table` is a page-table page of the initial mapping, readable.
        let e = unsafe { (table as *const u64).add(idx(va, level)).read_volatile() };
        if e & 1 == 0 {
            return None;
        }
        if level == 2 {
            return Some((e & PADDR_MASK) >> 12);
        }
        table = va_of_mfn(si, (e & PADDR_MASK) >> 12)?;
    }
    None
}

fn read(p: u64) -> u64 {
    // SAFETY: callers pass mapped, aligned addresses of ours.
    unsafe { (p as *const u64).read_volatile() }
}

fn invlpg(va: u64) {
    assert_eq!(mmuext1(MMUEXT_INVLPG_LOCAL, va), 0);
}

/// Runs `f`; the #PF it took, if any.
fn faulted(f: impl FnOnce()) -> Option<TrapFrame> {
    traps::catch(f)
}

fn tsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: rdtsc is allowed in guest kernel mode (CR4.TSD clear).
    unsafe { asm!("lfence", "rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack)) };
    u64::from(hi) << 32 | u64::from(lo)
}

fn median(s: &mut [u64]) -> (u64, u64, u64) {
    s.sort_unstable();
    let n = s.len();
    (s[n / 2], s[n / 10], s[n * 9 / 10])
}

fn guest_main(si: &'static StartInfo) -> ! {
    let mut c = Checks::new("ptwr");
    c.eq("set_trap_table", traps::install(), 0);
    let shared = map_shared_info(si);
    c.eq("vm_assist(writable_pagetables)", vm_assist(VMASST_CMD_ENABLE, VMASST_TYPE_WRITABLE_PAGETABLES), 0);

    let t0 = addr_of!(TARGET) as u64;
    let t1 = t0 + 4096;
    let window = addr_of!(WINDOW) as u64;
    let Some(l1) = l1_of(si, t0) else {
        c.check("the L1 mapping .bss is found", false, format_args!("walk failed"));
        sched::shutdown(SHUTDOWN_CRASH);
    };
    // SAFETY: both pages are ours, mapped writable.
    unsafe {
        (*addr_of_mut!(TARGET))[0].0[0] = 0xaaaa;
        (*addr_of_mut!(TARGET))[1].0[0] = 0xbbbb;
    }
    c.eq("the window maps the L1 read-only", update_va_mapping(window, (l1 << 12) | 0x61, UVMF_INVLPG), 0);
    let ptep = window + 8 * idx(t0, 1) as u64;
    let orig = read(ptep);
    c.eq("the entry read through the window maps TARGET", (orig & PADDR_MASK) >> 12, mfn_of(si, t0));
    let other = (orig & !PADDR_MASK) | (mfn_of(si, t1) << 12);

    check_stores(&mut c, ptep, t0, orig, other);
    check_refusals(&mut c, shared, ptep, orig, l1);
    if c.failed() == 0 {
        bench(ptep, l1, orig);
    }
    c.eq("entry restored", read(ptep), orig);
    c.eq(
        "the window is plain memory again",
        update_va_mapping(window, (mfn_of(si, window) << 12) | 0x67, UVMF_INVLPG),
        0,
    );
    let failed = c.summary();
    sched::shutdown(if failed == 0 { SHUTDOWN_POWEROFF } else { SHUTDOWN_CRASH })
}

// One instruction each on the entry at `p` (through the read-only window onto the L1):
// the stores Linux makes to PTEs, for the shim to emulate or refuse.

fn mov(p: u64, v: u64) {
    // SAFETY: `p` is the 8-byte-aligned window address of an entry; the store either is
    // emulated or faults into our handler.
    unsafe { asm!("mov [{p}], {v}", p = in(reg) p, v = in(reg) v, options(nostack)) }
}

fn mov32(p: u64, v: u32) {
    // SAFETY: as in `mov`.
    unsafe { asm!("mov [{p}], {v:e}", p = in(reg) p, v = in(reg) v, options(nostack)) }
}

fn mov_misaligned(p: u64, v: u64) {
    // SAFETY: as in `mov`; four bytes into the entry, still inside the page.
    unsafe { asm!("mov [{p} + 4], {v}", p = in(reg) p, v = in(reg) v, options(nostack)) }
}

fn xchg(p: u64, v: u64) -> u64 {
    let mut v = v;
    // SAFETY: as in `mov`.
    unsafe { asm!("xchg [{p}], {v}", p = in(reg) p, v = inout(reg) v, options(nostack)) };
    v
}

/// `lock cmpxchg`: (rax after, ZF).
fn cmpxchg(p: u64, expect: u64, new: u64) -> (u64, u8) {
    let (mut rax, zf): (u64, u8) = (expect, 0);
    let mut zf = zf;
    // SAFETY: as in `mov`.
    unsafe {
        asm!("lock cmpxchg [{p}], {n}", "setz {z}", p = in(reg) p, n = in(reg) new,
             z = out(reg_byte) zf, inout("rax") rax, options(nostack))
    };
    (rax, zf)
}

fn lock_andb_not_rw(p: u64) {
    // SAFETY: as in `mov`.
    unsafe { asm!("lock and byte ptr [{p}], 0xfd", p = in(reg) p, options(nostack)) }
}

fn lock_orb_ad(p: u64) {
    // SAFETY: as in `mov`.
    unsafe { asm!("lock or byte ptr [{p}], 0x60", p = in(reg) p, options(nostack)) }
}

/// `lock btsq $1` (RW): CF.
fn lock_bts_rw(p: u64) -> u8 {
    let cf: u8;
    // SAFETY: as in `mov`.
    unsafe {
        asm!("lock bts qword ptr [{p}], 1", "setc {c}", p = in(reg) p, c = out(reg_byte) cf, options(nostack))
    };
    cf
}

/// `lock btrq $5` (Accessed): CF.
fn lock_btr_accessed(p: u64) -> u8 {
    let cf: u8;
    // SAFETY: as in `mov`.
    unsafe {
        asm!("lock btr qword ptr [{p}], 5", "setc {c}", p = in(reg) p, c = out(reg_byte) cf, options(nostack))
    };
    cf
}

fn write(p: u64, v: u64) {
    // SAFETY: `p` is a page of ours; a write through a read-only entry faults into our handler.
    unsafe { (p as *mut u64).write_volatile(v) }
}

fn check_stores(c: &mut Checks, ptep: u64, t0: u64, orig: u64, other: u64) {
    // mov: TARGET[0]'s address now shows TARGET[1]'s frame.
    let f = faulted(|| mov(ptep, other));
    c.check("mov r64 to the entry is emulated", f.is_none(), format_args!("{f:x?}"));
    c.eq("mov: entry read back", read(ptep), other);
    invlpg(t0);
    c.eq("mov: the page seen through the new entry", read(t0), 0xbbbb);

    // xchg: back to the original, the old value in the register.
    let mut old = 0;
    let f = faulted(|| old = xchg(ptep, orig));
    c.check("xchg is emulated", f.is_none(), format_args!("{f:x?}"));
    c.eq("xchg: the old entry in the register", old, other);
    c.eq("xchg: entry read back", read(ptep), orig);
    invlpg(t0);
    c.eq("xchg: the original page again", read(t0), 0xaaaa);

    // lock cmpxchg, mismatch then match.
    let mut r = (0, 9);
    let f = faulted(|| r = cmpxchg(ptep, orig ^ ACCESSED, other));
    c.check("lock cmpxchg (mismatch) is emulated", f.is_none(), format_args!("{f:x?}"));
    c.eq("cmpxchg mismatch: rax = entry, ZF clear, entry unchanged", (r.0, r.1, read(ptep)), (orig, 0, orig));
    let f = faulted(|| r = cmpxchg(ptep, orig, other));
    c.check("lock cmpxchg (match) is emulated", f.is_none(), format_args!("{f:x?}"));
    c.eq("cmpxchg match: ZF set, entry replaced", (r.1, read(ptep)), (1, other));
    invlpg(t0);
    c.eq("cmpxchg: the page seen through the new entry", read(t0), 0xbbbb);
    mov(ptep, orig);
    invlpg(t0);

    // lock andb $~RW: write-protect (Linux's ptep_set_wrprotect); a write then faults.
    let f = faulted(|| lock_andb_not_rw(ptep));
    c.check("lock andb is emulated", f.is_none(), format_args!("{f:x?}"));
    c.eq("andb: RW cleared", read(ptep), orig & !RW);
    invlpg(t0);
    let f = faulted(|| write(t0, 1));
    c.eq(
        "a write through the write-protected entry faults",
        f.map(|f| (f.vector, f.error_code)),
        Some((14, Some(3))),
    );
    // lock btsq $1: writable again, CF = the old bit.
    let mut cf = 9;
    let f = faulted(|| cf = lock_bts_rw(ptep));
    c.check("lock btsq is emulated", f.is_none(), format_args!("{f:x?}"));
    c.eq("btsq: CF clear, RW back", (cf, read(ptep)), (0, orig));
    invlpg(t0);
    let f = faulted(|| write(t0, 0xaaaa));
    c.check("the page is writable again", f.is_none(), format_args!("{f:x?}"));

    // lock btrq $5: Accessed (Linux's ptep_test_and_clear_young); the CPU sets it again.
    let f = faulted(|| cf = lock_btr_accessed(ptep));
    c.check("lock btrq is emulated", f.is_none(), format_args!("{f:x?}"));
    c.eq("btrq: CF set, Accessed clear", (cf, read(ptep) & ACCESSED), (1, 0));
    invlpg(t0);
    c.eq("the page is still there", read(t0), 0xaaaa);
    c.eq("the CPU set Accessed in the read-only L1", read(ptep) & ACCESSED, ACCESSED);
    // lock orb $(A|D).
    let f = faulted(|| lock_orb_ad(ptep));
    c.check("lock orb is emulated", f.is_none(), format_args!("{f:x?}"));
    c.eq("orb: Accessed and Dirty set", read(ptep) & (ACCESSED | DIRTY), ACCESSED | DIRTY);
    mov(ptep, orig);
    c.eq("mov: the original entry", read(ptep), orig);
}

fn check_refusals(c: &mut Checks, shared: Shared, ptep: u64, orig: u64, l1: u64) {
    // The L1 itself, writable: refused, the #PF is ours.
    let bad = (orig & !PADDR_MASK) | (l1 << 12) | RW;
    let f = faulted(|| mov(ptep, bad));
    c.eq("mapping the L1 writable: #PF with P|W", f.map(|f| (f.vector, f.error_code)), Some((14, Some(3))));
    c.eq("the #PF reports the entry's address in CR2", shared.cr2(), ptep);
    c.eq("the entry is unchanged", read(ptep), orig);
    // A half-entry store that would do the same.
    let f = faulted(|| mov32(ptep, bad as u32));
    c.eq("32-bit store of that entry: #PF", f.map(|f| f.vector), Some(14));
    // A misaligned store.
    let f = faulted(|| mov_misaligned(ptep, orig));
    c.eq("a misaligned store: #PF", f.map(|f| f.vector), Some(14));
    c.eq("the entry is still unchanged", read(ptep), orig);

    // The assist off: every direct write faults, even a valid one.
    c.eq("vm_assist disable", vm_assist(VMASST_CMD_DISABLE, VMASST_TYPE_WRITABLE_PAGETABLES), 0);
    let f = faulted(|| mov(ptep, orig));
    c.eq(
        "without the assist a direct write faults",
        f.map(|f| (f.vector, f.error_code)),
        Some((14, Some(3))),
    );
    c.eq("vm_assist enable", vm_assist(VMASST_CMD_ENABLE, VMASST_TYPE_WRITABLE_PAGETABLES), 0);
}

/// Cycles of one emulated `mov` to the entry against one `mmu_update` of it, alternating two
/// values (Accessed clear and set) so every sample changes the entry.
fn bench(ptep: u64, l1: u64, orig: u64) {
    let vals = [orig & !ACCESSED, orig];
    let maddr = (l1 << 12) | (ptep & 0xfff);
    // SAFETY: single vCPU; the sample arrays are ours.
    let (a, b) = unsafe { (&mut *addr_of_mut!(SAMPLES_A), &mut *addr_of_mut!(SAMPLES_B)) };
    for i in 0..SAMPLES {
        let v = vals[i & 1];
        let t = tsc();
        mov(ptep, v);
        a[i] = tsc() - t;
        let t = tsc();
        let rc = mmu_update1(maddr, v);
        b[i] = tsc() - t;
        assert_eq!(rc, 0);
    }
    let base = {
        let t = tsc();
        tsc() - t
    };
    let (m, p10, p90) = median(a);
    println!("# ptwr: emulated PTE write (mov): median {m} cycles (p10 {p10}, p90 {p90}; {SAMPLES} samples)");
    let (m2, p10, p90) = median(b);
    println!("# ptwr: mmu_update of one entry: median {m2} cycles (p10 {p10}, p90 {p90}; {SAMPLES} samples)");
    println!("# ptwr: TSC read pair (included above): {base} cycles");
    assert_eq!(mmu_update1(maddr, orig), 0);
}
