//! `descriptors`: the guest's own GDT (xen-pv-contract.md §3.2, §4.6). Installs Linux's
//! 16-entry GDT with `set_gdt` after mapping its frame read-only (as Linux does), checks the
//! DPL fix-up in the frame and in what the CPU sees (`lar`, `lsl`, selector loads), a TLS-like
//! entry written with `update_descriptor` and used through %fs, and the refusals, each with
//! its errno and nothing changed: a writable GDT frame, a TSS or interrupt gate, too many
//! entries, a writable mapping of a GDT frame. Then what a replaced GDT leaves behind: a loaded
//! selector keeps working, a reload faults into the guest's handler, an `iret` to a vanished
//! code segment reaches the failsafe callback.
//!
//! Then the LDT (`MMUEXT_SET_LDT`, §4.4), loaded lazily on its first use: a read-only page
//! with a data descriptor, its selectors loaded into %es/%ds (and seen by `lsl`/`lar`), a
//! selector past the entry count faulting into the guest, no writable mapping while it is in
//! use, a writable LDT page giving the guest a #PF, and `SET_LDT(0, 0)` dropping it all.
#![no_std]
#![no_main]
#![allow(unsafe_code)]

use core::arch::asm;
use core::ptr::{addr_of, addr_of_mut};
use xenvmm_test_guests::hypercall::hypercall6;
use xenvmm_test_guests::shared::{mfn_of, update_va_mapping};
use xenvmm_test_guests::traps;
use xenvmm_test_guests::xen_abi::hypercall::{
    HYPERVISOR_MMUEXT_OP, HYPERVISOR_SET_GDT, HYPERVISOR_UPDATE_DESCRIPTOR,
};
use xenvmm_test_guests::xen_abi::sched::{SHUTDOWN_CRASH, SHUTDOWN_POWEROFF};
use xenvmm_test_guests::xen_abi::xen::{
    MmuextOp, StartInfo, DOMID_SELF, FIRST_RESERVED_GDT_ENTRY, MMUEXT_SET_LDT, UVMF_INVLPG,
};
use xenvmm_test_guests::xen_abi::Errno;
use xenvmm_test_guests::{sched, xen_guest, Checks};

xen_guest!(main = guest_main, hypercall = syscall);

#[repr(C, align(4096))]
struct Page([u64; 512]);

// Linux's GDT frame, a second GDT that replaces it, a frame with a TSS, a plain page.
static mut GDT: Page = Page([0; 512]);
static mut GDT2: Page = Page([0; 512]);
static mut BAD: Page = Page([0; 512]);
static mut PLAIN: Page = Page([0; 512]);
static mut LDT: Page = Page([0; 512]);
static mut TLS_TARGET: u64 = 0x7e57_da7a_f00d_0001;
static mut AT: u64 = 0;

/// Linux's GDT (`GDT_ENTRY_INIT` values): 1 KERNEL32_CS, 2 KERNEL_CS, 3 KERNEL_DS (DPL 0,
/// raised to 3 by the hypervisor), 4 USER32_CS, 5 USER_DS, 6 USER_CS; no TSS/LDT (Linux never
/// sends those to Xen).
const LINUX_GDT: [u64; 7] = [
    0,
    0x00cf_9b00_0000_ffff,
    0x00af_9b00_0000_ffff,
    0x00cf_9300_0000_ffff,
    0x00cf_fb00_0000_ffff,
    0x00cf_f300_0000_ffff,
    0x00af_fb00_0000_ffff,
];
const DPL3: u64 = 3 << 45;
const TSS: u64 = 0x0000_8900_0000_0067;
const INTERRUPT_GATE: u64 = 0x0000_8e00_e008_0000;
/// The TLS entry (Linux's GDT_ENTRY_TLS_MIN) and its descriptor: flat 4 GiB data at base
/// 0x1000_0000, DPL 0 as given.
const TLS: usize = 12;
const TLS_BASE: u64 = 0x1000_0000;
const TLS_DESC: u64 = 0x10cf_9300_0000_ffff;

fn neg(e: Errno) -> i64 {
    -i64::from(e.0)
}

fn va<T>(p: *const T) -> u64 {
    p as u64
}

fn rd(p: *const Page, i: usize) -> u64 {
    // SAFETY: `i` < 512 (indexing panics otherwise); the page is mapped readable.
    unsafe { addr_of!((*p).0[i]).read_volatile() }
}

fn wr(p: *mut Page, i: usize, v: u64) {
    // SAFETY: called only while the page is mapped writable, or inside `catch` to prove it
    // is not (the #PF handler escapes).
    unsafe { addr_of_mut!((*p).0[i]).write_volatile(v) }
}

fn set_gdt(frames: &[u64], ents: u64) -> i64 {
    // SAFETY: set_gdt only reads the frame list.
    unsafe { hypercall6(HYPERVISOR_SET_GDT, frames.as_ptr() as u64, ents, 0, 0, 0, 0) }
}

fn set_ldt(base: u64, ents: u64) -> i64 {
    let op = MmuextOp { cmd: MMUEXT_SET_LDT, _pad: 0, arg1: base, arg2: ents };
    // SAFETY: mmuext_op only reads the one request.
    unsafe { hypercall6(HYPERVISOR_MMUEXT_OP, &op as *const _ as u64, 1, 0, u64::from(DOMID_SELF), 0, 0) }
}

fn update_descriptor(maddr: u64, d: u64) -> i64 {
    // SAFETY: no guest pointers: the hypervisor writes the frame itself.
    unsafe { hypercall6(HYPERVISOR_UPDATE_DESCRIPTOR, maddr, d, 0, 0, 0, 0) }
}

/// Maps `page` (a kernel address of the initial mapping) to its own frame, RW or RO.
fn map(si: &StartInfo, page: u64, rw: bool) -> i64 {
    update_va_mapping(page, (mfn_of(si, page) << 12) | if rw { 0x67 } else { 0x65 }, UVMF_INVLPG)
}

/// `lar`: the access-rights bits the CPU reads from the live GDT, if it grants them at CPL3.
fn lar(sel: u16) -> Option<u32> {
    let (r, ok): (u32, u8);
    // SAFETY: lar only reads the descriptor table; it never faults on a selector.
    unsafe {
        asm!("xor {r:e}, {r:e}", "lar {r:e}, {s:e}", "setz {z}", r = out(reg) r, s = in(reg) u32::from(sel), z = out(reg_byte) ok)
    };
    (ok != 0).then_some(r & 0x00f0_ff00)
}

/// `lsl`: the segment limit the CPU reads from the live GDT.
fn lsl(sel: u16) -> Option<u32> {
    let (r, ok): (u32, u8);
    // SAFETY: as lar.
    unsafe {
        asm!("xor {r:e}, {r:e}", "lsl {r:e}, {s:e}", "setz {z}", r = out(reg) r, s = in(reg) u32::from(sel), z = out(reg_byte) ok)
    };
    (ok != 0).then_some(r)
}

fn ds() -> u16 {
    let v: u16;
    // SAFETY: reads a segment register.
    unsafe { asm!("mov {0:x}, ds", out(reg) v, options(nomem, nostack)) };
    v
}

fn es() -> u16 {
    let v: u16;
    // SAFETY: reads a segment register.
    unsafe { asm!("mov {0:x}, es", out(reg) v, options(nomem, nostack)) };
    v
}

fn load_ds(sel: u16) {
    // SAFETY: in 64-bit mode DS does not affect addressing; a refused selector faults into
    // our handler (callers use `catch`).
    unsafe { asm!("mov ds, {0:x}", in(reg) sel, options(nostack)) };
}

fn load_es(sel: u16) {
    // SAFETY: as load_ds.
    unsafe { asm!("mov es, {0:x}", in(reg) sel, options(nostack)) };
}

/// Loads `sel` into FS (which sets the FS base from its descriptor) and reads the u64 at
/// linear address `target` through it; FS is null again afterwards.
fn read_through_fs(sel: u16, base: u64, target: u64) -> u64 {
    let v: u64;
    // SAFETY: the descriptor's base plus the offset is `target`, a readable static.
    unsafe {
        asm!("mov fs, {s:x}", "mov {v}, fs:[{o}]", "xor {t:e}, {t:e}", "mov fs, {t:x}",
            s = in(reg) sel, o = in(reg) target.wrapping_sub(base), v = out(reg) v, t = out(reg) _,
            options(nostack, readonly))
    };
    v
}

/// `iret` (hypercall 23) to the next instruction with code selector `cs` (RPL 0: guest
/// kernel mode), and reads CS there. A refused CS lands in the failsafe callback.
fn iret_to_cs(cs: u64) -> u16 {
    let got: u64;
    // SAFETY: the iret context is built on our stack exactly as Linux's; execution continues
    // at 2: with the same stack; a refused frame escapes through the failsafe callback.
    unsafe {
        asm!(
            "lea rcx, [rip + 2f]",
            "mov [rip + {at}], rcx",
            "mov rax, rsp",
            "push 0xe02b", "push rax", "push 0x202", "push {cs}", "push rcx",
            "push 0", "push rcx", "push r11", "push rax",
            "mov eax, 23",
            "syscall",
            "2:",
            "mov {got:e}, cs",
            cs = in(reg) cs, at = sym AT, got = out(reg) got,
            out("rax") _, out("rcx") _, out("r11") _,
        )
    };
    got as u16
}

fn guest_main(si: &'static StartInfo) -> ! {
    let mut c = Checks::new("descriptors");
    c.eq("set_trap_table", traps::install(), 0);
    c.eq("syscall and failsafe callbacks", traps::install_callbacks(0, 0), (0, 0));
    let (gdt, gdt2, bad, plain) =
        (addr_of_mut!(GDT), addr_of_mut!(GDT2), addr_of_mut!(BAD), addr_of_mut!(PLAIN));
    let gdt_mfn = mfn_of(si, va(gdt));
    for (i, &d) in LINUX_GDT.iter().enumerate() {
        wr(gdt, i, d);
    }

    // ---- set_gdt needs a frame nobody can write ----
    c.eq("set_gdt of a frame still mapped writable: -EINVAL", set_gdt(&[gdt_mfn], 16), neg(Errno::EINVAL));
    wr(gdt, 20, 0x5a);
    c.eq("  the frame is still ours to write", rd(gdt, 20), 0x5a);
    wr(gdt, 20, 0);
    c.eq("  and the CPU has no such selector", lar(0x1b), None);
    c.eq("map the GDT frame read-only", map(si, va(gdt), false), 0);
    c.eq("set_gdt(Linux's GDT, 16 entries)", set_gdt(&[gdt_mfn], 16), 0);

    // ---- the DPL fix-up, in the frame and in what the CPU sees ----
    c.eq("KERNEL_CS stored with DPL 3", rd(gdt, 2), LINUX_GDT[2] | DPL3);
    c.eq("KERNEL_DS stored with DPL 3", rd(gdt, 3), LINUX_GDT[3] | DPL3);
    c.eq("USER_DS stored as given", rd(gdt, 5), LINUX_GDT[5]);
    c.eq("lar(KERNEL_CS|3): 64-bit code, DPL 3", lar(0x13), Some(0x00a0_fb00));
    c.eq("lar(KERNEL_DS|3): data, DPL 3", lar(0x1b), Some(0x00c0_f300));
    c.eq("lsl(USER_DS): 4 GiB", lsl(0x2b), Some(0xffff_ffff));
    c.eq("an empty entry grants nothing", lar(0x3b), None);
    load_ds(0x1b);
    load_es(0x2b);
    c.eq("mov ds/es with the guest's selectors", (ds(), es()), (0x1b, 0x2b));

    // ---- no writable mapping of a GDT frame ----
    c.eq("writable mapping of the GDT frame: -EINVAL", map(si, va(gdt), true), neg(Errno::EINVAL));
    let f = traps::catch(|| wr(gdt, 20, 1));
    c.eq("  the mapping stays read-only (#PF on a write)", f.map(|f| f.vector), Some(14));
    c.eq("  and the frame unchanged", rd(gdt, 20), 0);

    // ---- update_descriptor: a TLS entry, used through %fs ----
    let tls_at = (gdt_mfn << 12) + 8 * TLS as u64;
    c.eq("update_descriptor(TLS entry)", update_descriptor(tls_at, TLS_DESC), 0);
    c.eq("  stored with DPL 3", rd(gdt, TLS), TLS_DESC | DPL3);
    c.eq("  the CPU sees it", lar(0x63), Some(0x00c0_f300));
    let target = va(addr_of!(TLS_TARGET));
    // SAFETY: a plain read of our static.
    let want = unsafe { addr_of!(TLS_TARGET).read_volatile() };
    c.eq("  a load through %fs uses its base", read_through_fs(0x63, TLS_BASE, target), want);
    for (name, maddr, d) in [
        ("update_descriptor(TSS): -EINVAL", tls_at, TSS),
        ("update_descriptor(interrupt gate): -EINVAL", tls_at, INTERRUPT_GATE),
        ("update_descriptor misaligned: -EINVAL", tls_at + 4, TLS_DESC),
        ("update_descriptor into the L4: -EINVAL", mfn_of(si, si.pt_base) << 12, 0),
    ] {
        c.eq(name, update_descriptor(maddr, d), neg(Errno::EINVAL));
        c.eq("  TLS entry unchanged", (rd(gdt, TLS), lar(0x63)), (TLS_DESC | DPL3, Some(0x00c0_f300)));
    }
    let plain_at = (mfn_of(si, va(plain)) << 12) + 8 * 5;
    c.eq("update_descriptor of a plain page", update_descriptor(plain_at, LINUX_GDT[3]), 0);
    c.eq("  stored fixed up", rd(plain, 5), LINUX_GDT[3] | DPL3);

    // ---- set_gdt refusals leave the old GDT in place ----
    c.eq(
        "set_gdt with 7169 entries: -EINVAL",
        set_gdt(&[gdt_mfn; 15], u64::from(FIRST_RESERVED_GDT_ENTRY) + 1),
        neg(Errno::EINVAL),
    );
    // SAFETY: 0x10 is in the never-mapped first page; set_gdt only reads there.
    let r = unsafe { hypercall6(HYPERVISOR_SET_GDT, 0x10, 16, 0, 0, 0, 0) };
    c.eq("set_gdt with an unreadable frame list: -EFAULT", r, neg(Errno::EFAULT));
    wr(bad, 1, LINUX_GDT[5]);
    wr(bad, 9, TSS);
    c.eq("map a frame holding a TSS read-only", map(si, va(bad), false), 0);
    let bad_mfn = mfn_of(si, va(bad));
    c.eq(
        "set_gdt with a TSS in the second frame: -EINVAL",
        set_gdt(&[gdt_mfn, bad_mfn], 1024),
        neg(Errno::EINVAL),
    );
    c.eq("  the old GDT is live", (lar(0x1b), lar(0x63)), (Some(0x00c0_f300), Some(0x00c0_f300)));
    c.eq("  nothing of the refused frame is", lar(0x100b), None);
    c.eq("  which may be mapped writable again", map(si, va(bad), true), 0);
    c.eq("  and was not changed", (rd(bad, 1), rd(bad, 9)), (LINUX_GDT[5], TSS));
    c.eq("  the GDT frame still refuses a writable mapping", map(si, va(gdt), true), neg(Errno::EINVAL));

    // ---- a guest code segment through iret ----
    wr(gdt2, 4, LINUX_GDT[5] & !(1 << 47)); // USER_DS, not present
    wr(gdt2, 5, LINUX_GDT[5]);
    wr(gdt2, 6, 0x0000_8000_0000_0000); // present, system type 0: accepted, never loadable
    wr(gdt2, 7, LINUX_GDT[2]); // a second KERNEL_CS
    c.eq("map a second GDT frame read-only", map(si, va(gdt2), false), 0);
    let gdt2_mfn = mfn_of(si, va(gdt2));
    c.eq("set_gdt(second GDT) replaces the first", set_gdt(&[gdt2_mfn], 8), 0);
    c.eq("  the first frame may be mapped writable again", map(si, va(gdt), true), 0);
    c.eq("iret to the guest's own code segment 0x3b", iret_to_cs(0x38), 0x3b);

    // ---- what the replaced GDT leaves behind ----
    c.eq("loaded selectors survive the switch", (ds(), es()), (0x1b, 0x2b));
    let f = traps::catch(|| load_ds(0x1b));
    c.eq(
        "reloading a vanished selector: #GP(sel)",
        f.map(|f| (f.vector, f.error_code)),
        Some((13, Some(0x18))),
    );
    let f = traps::catch(|| load_ds(0x23));
    c.eq(
        "loading a not-present segment: #NP(sel)",
        f.map(|f| (f.vector, f.error_code)),
        Some((11, Some(0x20))),
    );
    let f = traps::catch(|| load_ds(0x33));
    c.eq(
        "loading a system descriptor: #GP(sel)",
        f.map(|f| (f.vector, f.error_code)),
        Some((13, Some(0x30))),
    );
    load_ds(0x2b);
    c.eq("the new GDT's data selector loads", ds(), 0x2b);
    wr(gdt, 7, 0);
    c.eq("set_gdt(first frame again)", (map(si, va(gdt), false), set_gdt(&[gdt_mfn], 16)), (0, 0));
    let f = traps::catch(|| {
        iret_to_cs(0x38);
    });
    c.eq(
        "iret to a code segment no longer there: failsafe",
        f.map(|f| (f.vector, f.cs & 0xffff)),
        // A guest-kernel frame shows its CS with RPL 0, as in the refused iret context.
        Some((traps::VEC_FAILSAFE, 0x38)),
    );
    c.eq("set_gdt(0 entries) drops the GDT", set_gdt(&[], 0), 0);
    c.eq("  both frames are writable again", (map(si, va(gdt), true), map(si, va(gdt2), true)), (0, 0));
    c.eq("  and the CPU sees no guest selector", (lar(0x1b), lar(0x2b)), (None, None));

    ldt(si, &mut c);

    sched::shutdown(if c.summary() != 0 { SHUTDOWN_CRASH } else { SHUTDOWN_POWEROFF })
}

/// LDT entry 1: data, DPL 0 as given (stored with DPL 3), byte-granular limit 0x1234.
const LDT_DATA: u64 = 0x0040_9300_0000_1234;
/// LDT entry 2: flat 4 GiB data, DPL 3.
const LDT_FLAT: u64 = 0x00cf_f300_0000_ffff;

fn ldt(si: &StartInfo, c: &mut Checks) {
    let ldt = addr_of_mut!(LDT);
    wr(ldt, 1, LDT_DATA);
    wr(ldt, 2, LDT_FLAT);
    c.eq("map the LDT page read-only", map(si, va(ldt), false), 0);
    c.eq("SET_LDT(page, 4 entries)", set_ldt(va(ldt), 4), 0);
    load_es(0x0f);
    load_ds(0x17);
    c.eq("mov es/ds with LDT selectors (TI, RPL 3)", (es(), ds()), (0x0f, 0x17));
    c.eq("  lsl shows the LDT entry's limit", lsl(0x0f), Some(0x1234));
    c.eq("  lar: data, DPL 3", (lar(0x0f), lar(0x17)), (Some(0x0040_f300), Some(0x00c0_f300)));
    c.eq("  stored with DPL 3 in the page", rd(ldt, 1), LDT_DATA | DPL3);
    c.eq("  the LDT page refuses a writable mapping", map(si, va(ldt), true), neg(Errno::EINVAL));
    let f = traps::catch(|| load_ds(0x27));
    c.eq(
        "a selector past the 4 entries: #GP(sel)",
        f.map(|f| (f.vector, f.error_code)),
        Some((13, Some(0x24))),
    );
    let f = traps::catch(|| load_ds(0x1f));
    c.eq("an empty LDT entry: #GP(sel)", f.map(|f| (f.vector, f.error_code)), Some((13, Some(0x1c))));

    c.eq("SET_LDT(0, 0)", set_ldt(0, 0), 0);
    c.eq("  loaded selectors survive", (es(), ds()), (0x0f, 0x17));
    let f = traps::catch(|| load_es(0x0f));
    c.eq(
        "  the selector faults again: #GP(sel)",
        f.map(|f| (f.vector, f.error_code)),
        Some((13, Some(0x0c))),
    );
    c.eq("  lsl sees no LDT", lsl(0x0f), None);
    c.eq("  the page may be mapped writable again", map(si, va(ldt), true), 0);

    c.eq("SET_LDT(a writable page, 4)", set_ldt(va(ldt), 4), 0);
    let f = traps::catch(|| load_es(0x0f));
    c.eq("  its first use: #PF, a supervisor read", f.map(|f| (f.vector, f.error_code)), Some((14, Some(0))));
    c.eq("  the page is still writable", map(si, va(ldt), true), 0);
    c.eq("SET_LDT(0, 0) again", set_ldt(0, 0), 0);
    load_es(0);
    load_ds(0);
}
