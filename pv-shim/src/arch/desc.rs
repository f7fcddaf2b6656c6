//! The shim's descriptor tables: GDT (Xen's reserved selectors), TSS and IDT.
//!
//! The GDT is a 16-page area as in Xen: the guest's own descriptors live in pages 0..13
//! (copies of its `set_gdt` frames, see `crate::desc`) and Xen's reserved entries start at
//! byte 0xe000 (entry 7168):
//!
//! ```text
//!  0xe008 hypervisor CS (64-bit, DPL0)   0xe023 FLAT_RING3_CS32   0xe040 TSS (16 bytes)
//!  0xe010 hypervisor DS (DPL0)           0xe02b FLAT_RING3_DS32/SS 0xe050 LDT (16 bytes)
//!                                        0xe033 FLAT_RING3_CS64
//! ```
//!
//! The guest's LDT is copied into [`LDT`], a 64 KiB buffer that the descriptor at 0xe050
//! points at while LDTR is loaded (see `crate::desc::ldt`).

use super::entry;
use core::mem::size_of;
use core::ptr::addr_of;

pub const HYPERVISOR_CS: u16 = 0xe008;
pub const HYPERVISOR_DS: u16 = 0xe010;
pub const TSS_SELECTOR: u16 = 0xe040;
/// Xen's LDT selector: the shim's descriptor of the guest LDT copy.
pub const LDT_SELECTOR: u16 = 0xe050;
/// Entries of the LDT buffer (the most a guest LDT may have).
const LDT_ENTRIES: usize = 8192;
const GDT_ENTRIES: usize = 16 * 4096 / 8;
const RESERVED: usize = xen_abi::xen::FIRST_RESERVED_GDT_ENTRY as usize;

#[repr(C, align(4096))]
pub struct Gdt(pub [u64; GDT_ENTRIES]);

/// The 64-bit TSS.
#[repr(C, packed(4))]
pub struct Tss {
    _r0: u32,
    pub rsp: [u64; 3],
    _r1: u64,
    pub ist: [u64; 7],
    _r2: u64,
    _r3: u16,
    pub iomap_base: u16,
}

#[derive(Clone, Copy)]
#[repr(C)]
pub struct IdtEntry {
    off_lo: u16,
    sel: u16,
    ist: u8,
    attr: u8,
    off_mid: u16,
    off_hi: u32,
    _r: u32,
}

#[repr(C, align(4096))]
pub struct Idt(pub [IdtEntry; 256]);

pub static mut GDT: Gdt = Gdt([0; GDT_ENTRIES]);
/// The copy of the guest's LDT (only the pages loaded so far; zero elsewhere).
pub static mut LDT: Ldt = Ldt([0; LDT_ENTRIES]);
/// The entry count LDTR covers now (0: null LDTR).
static LDT_LOADED_ENTS: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);

#[repr(C, align(4096))]
pub struct Ldt(pub [u64; LDT_ENTRIES]);
pub static mut TSS: Tss = Tss { _r0: 0, rsp: [0; 3], _r1: 0, ist: [0; 7], _r2: 0, _r3: 0, iomap_base: 0 };
pub static mut IDT: Idt =
    Idt([IdtEntry { off_lo: 0, sel: 0, ist: 0, attr: 0, off_mid: 0, off_hi: 0, _r: 0 }; 256]);

fn gate(handler: u64, dpl: u8, ist: u8) -> IdtEntry {
    IdtEntry {
        off_lo: handler as u16,
        sel: HYPERVISOR_CS,
        ist,
        // Present, interrupt gate (IF cleared on entry).
        attr: 0x80 | (dpl << 5) | 0xe,
        off_mid: (handler >> 16) as u16,
        off_hi: (handler >> 32) as u32,
        _r: 0,
    }
}

#[repr(C, packed)]
struct DtPtr {
    limit: u16,
    base: u64,
}

/// Builds and loads the GDT, TSS and IDT, and reloads every segment register.
///
/// # Safety
/// Must run once, on the boot CPU, before anything can raise an exception in the guest.
pub unsafe fn init() {
    // SAFETY: boot runs single-threaded with interrupts off; nothing else touches these yet.
    unsafe {
        let gdt = &mut *core::ptr::addr_of_mut!(GDT);
        gdt.0[RESERVED + 1] = 0x00af_9b00_0000_ffff; // 0xe008
        gdt.0[RESERVED + 2] = 0x00cf_9300_0000_ffff; // 0xe010
        gdt.0[RESERVED + 4] = 0x00cf_fb00_0000_ffff; // 0xe023
        gdt.0[RESERVED + 5] = 0x00cf_f300_0000_ffff; // 0xe02b
        gdt.0[RESERVED + 6] = 0x00af_fb00_0000_ffff; // 0xe033

        let tss = &mut *core::ptr::addr_of_mut!(TSS);
        tss.rsp[0] = addr_of!(entry::SHIM_STACK_TOP) as u64;
        tss.ist[0] = addr_of!(entry::DF_STACK_TOP) as u64;
        tss.ist[1] = addr_of!(entry::NMI_STACK_TOP) as u64;
        tss.iomap_base = size_of::<Tss>() as u16;
        let base = tss as *const Tss as u64;
        let limit = (size_of::<Tss>() - 1) as u64;
        let lo = (limit & 0xffff)
            | ((base & 0xff_ffff) << 16)
            | (0x89u64 << 40) // present, available 64-bit TSS
            | (((limit >> 16) & 0xf) << 48)
            | (((base >> 24) & 0xff) << 56);
        gdt.0[RESERVED + 8] = lo;
        gdt.0[RESERVED + 9] = base >> 32;

        let idt = &mut *core::ptr::addr_of_mut!(IDT);
        let stubs = &*addr_of!(entry::exception_stubs);
        for (v, &h) in stubs.iter().enumerate() {
            // #BP and #OF may be raised by `int3`/`into` at CPL3; NMI, #DF and #MC get their
            // own stacks so that they work even on a broken stack.
            let dpl = if v == 3 || v == 4 { 3 } else { 0 };
            let ist = match v {
                8 => 1,
                2 | 18 => 2,
                _ => 0,
            };
            idt.0[v] = gate(h, dpl, ist);
        }
        let irq = entry::irq_stubs as *const () as u64;
        for v in 32..256usize {
            // DPL0: a guest `int n` raises #GP(n*8+2), which the shim checks against the
            // guest's virtual IDT (Xen's do_general_protection).
            idt.0[v] = gate(irq + (v as u64 - 32) * 16, 0, 0);
        }

        let gdtr = DtPtr { limit: (GDT_ENTRIES * 8 - 1) as u16, base: gdt as *const Gdt as u64 };
        let idtr = DtPtr { limit: (256 * 16 - 1) as u16, base: idt as *const Idt as u64 };
        core::arch::asm!(
            "lgdt [{g}]",
            "lidt [{i}]",
            "push {cs}",
            "lea {t}, [rip + 2f]",
            "push {t}",
            "retfq",
            "2:",
            "mov ds, {ds:x}",
            "mov es, {ds:x}",
            "mov ss, {ds:x}",
            "xor {t:e}, {t:e}",
            "mov fs, {t:x}",
            "mov gs, {t:x}",
            "ltr {tss:x}",
            // LDTR leaves reset with base 0 and limit 0xffff: a guest LDT selector would read
            // descriptors from guest memory at linear 0. Null until the guest's LDT is loaded.
            "lldt {t:x}",
            g = in(reg) &gdtr,
            i = in(reg) &idtr,
            cs = const HYPERVISOR_CS as u64,
            ds = in(reg) HYPERVISOR_DS as u64,
            tss = in(reg) TSS_SELECTOR as u64,
            t = out(reg) _,
        );
    }
}

/// Stores guest descriptors at GDT entries `first..` (the guest part only; the rest ignored).
pub fn write_guest_gdt(first: usize, descs: &[u64]) {
    for (i, &d) in descs.iter().enumerate() {
        let Some(index) = first.checked_add(i).filter(|&j| j < RESERVED) else { break };
        // SAFETY: one vCPU, and the shim never runs concurrently with itself; the entry lies
        // in the guest part, which no shim selector uses. The CPU only reads it on a later
        // segment load (and may set its accessed bit), so a volatile store is enough.
        unsafe { core::ptr::addr_of_mut!(GDT.0[index]).write_volatile(d) };
    }
}

/// GDT entry `index` of the guest part; 0 past it.
pub fn read_guest_gdt(index: usize) -> u64 {
    if index >= RESERVED {
        return 0;
    }
    // SAFETY: a plain read of a GDT entry, never concurrent with a write (one vCPU).
    unsafe { core::ptr::addr_of!(GDT.0[index]).read_volatile() }
}

/// True when `sel` names a GDT descriptor that ring 0 can load into a data segment register
/// for ring 3: present, code/data, data or readable code, DPL 3. (LDT selectors never are:
/// the shim does not load the guest's LDT yet.)
pub fn loadable_ring3_data_selector(sel: u16) -> bool {
    let index = usize::from(sel >> 3);
    if sel & 4 != 0 || index == 0 || index >= GDT_ENTRIES {
        return false;
    }
    // SAFETY: a plain read of a GDT entry; the GDT is only written at boot and by set_gdt and
    // update_descriptor on this same vCPU, never concurrently with this read.
    let d = unsafe { core::ptr::addr_of!(GDT.0[index]).read_volatile() };
    let present = d & (1 << 47) != 0;
    let code_data = d & (1 << 44) != 0;
    let dpl = (d >> 45) & 3;
    let code = d & (1 << 43) != 0;
    let readable = d & (1 << 41) != 0;
    present && code_data && dpl == 3 && (!code || readable)
}

/// Stores guest LDT descriptors at entries `first..` of the LDT buffer (past it ignored).
pub fn write_guest_ldt(first: usize, descs: &[u64]) {
    for (i, &d) in descs.iter().enumerate() {
        let Some(index) = first.checked_add(i).filter(|&j| j < LDT_ENTRIES) else { break };
        // SAFETY: one vCPU, never concurrent with itself; the CPU only reads the entry on a
        // later segment load (and may set its accessed bit), so a volatile store is enough.
        unsafe { core::ptr::addr_of_mut!(LDT.0[index]).write_volatile(d) };
    }
}

/// Entry `index` of the LDT buffer; 0 past it.
pub fn read_guest_ldt(index: usize) -> u64 {
    if index >= LDT_ENTRIES {
        return 0;
    }
    // SAFETY: a plain read, never concurrent with a write (one vCPU).
    unsafe { core::ptr::addr_of!(LDT.0[index]).read_volatile() }
}

/// Loads LDTR with the LDT buffer limited to `ents` entries, or with the null selector for 0.
pub fn load_ldt(ents: u32) {
    let ents = ents.min(LDT_ENTRIES as u32);
    let sel = if ents == 0 {
        0u16
    } else {
        let base = core::ptr::addr_of!(LDT) as u64;
        let limit = u64::from(ents) * 8 - 1;
        let lo = (limit & 0xffff)
            | ((base & 0xff_ffff) << 16)
            | (0x82u64 << 40) // present, DPL0, LDT
            | (((limit >> 16) & 0xf) << 48)
            | (((base >> 24) & 0xff) << 56);
        let index = usize::from(LDT_SELECTOR >> 3);
        // SAFETY: the reserved LDT slot is used by no loaded selector but LDTR, which is
        // reloaded right after; one vCPU, never concurrent with itself.
        unsafe {
            core::ptr::addr_of_mut!(GDT.0[index]).write_volatile(lo);
            core::ptr::addr_of_mut!(GDT.0[index + 1]).write_volatile(base >> 32);
        }
        LDT_SELECTOR
    };
    // SAFETY: `sel` is null or the present LDT descriptor just written, so `lldt` cannot
    // fault; LDTR only affects later loads of LDT selectors, which are the guest's.
    unsafe { core::arch::asm!("lldt {0:x}", in(reg) sel, options(nostack, preserves_flags)) };
    LDT_LOADED_ENTS.store(ents, core::sync::atomic::Ordering::Relaxed);
}

/// The entry count LDTR covers now.
pub fn loaded_ldt_ents() -> u32 {
    LDT_LOADED_ENTS.load(core::sync::atomic::Ordering::Relaxed)
}
