//! Direct PTE writes on the mock guest: the live L1 (frame 4) is mapped read-only at page 31
//! of the test address space (by its own entry 31), so a store to `L1_VA + 8 * i` is a store
//! to entry `i` of the table that maps the test address space.

use super::insn::{arith_flags, X86_EFLAGS_CF, X86_EFLAGS_ZF};
use super::*;
use crate::mm::check::check_invariants;
use crate::mm::{_PAGE_ACCESSED, _PAGE_DIRTY, _PAGE_GLOBAL, _PAGE_GUEST_KERNEL, _PAGE_USER};
use crate::shim::Outcome;
use crate::testutil::{shim_with_guest, MockMachine, GUEST_VA};
use crate::traps::{TrapEntry, RFLAGS_TF};
use xen_abi::xen::{FLAT_KERNEL_CS, FLAT_KERNEL_SS};

const FRAMES: u64 = 64;
/// The live L1 (frame 4), mapped read-only.
const L1_VA: u64 = GUEST_VA + 31 * 4096;
const L1_MFN: u64 = 4;
/// Where the test instructions are placed (page 1, frame 17).
const CODE_VA: u64 = GUEST_VA + 0x1000;
const PF_HANDLER: u64 = 0xffff_ffff_8100_0014;
/// An empty slot of the L1, and one that maps frame 21 writable.
const FREE: usize = 40;
const MAPPED: usize = 5;
/// Kernel write to a present page, as the CPU reports it at CPL3.
const EC: u64 = 0x7;

fn setup() -> Shim<MockMachine> {
    let mut s = shim_with_guest();
    s.vm_assist |= 1 << VMASST_TYPE_WRITABLE_PAGETABLES;
    s.vcpu.traps.table[14] = TrapEntry { flags: 0, cs: FLAT_KERNEL_CS, address: PF_HANDLER };
    s.mod_entry(L1_MFN, 1, 31, (L1_MFN << 12) | 0x21, false).unwrap();
    check(&s);
    s
}

fn check(s: &Shim<MockMachine>) {
    if let Err(e) = check_invariants(s, FRAMES) {
        panic!("{e}");
    }
}

fn entry(s: &Shim<MockMachine>, i: usize) -> u64 {
    s.m.read_u64((L1_MFN << 12) + 8 * i as u64).unwrap()
}

/// An entry as the shim stores it (a kernel mapping tagged, as `get_entry_ref` does).
fn stored(e: u64) -> u64 {
    if e & _PAGE_USER == 0 {
        e | _PAGE_USER | _PAGE_GUEST_KERNEL
    } else {
        e | _PAGE_GLOBAL
    }
}

fn regs() -> GuestRegs {
    GuestRegs {
        rip: CODE_VA,
        cs: u64::from(FLAT_KERNEL_CS),
        rflags: 0x202,
        rsp: GUEST_VA + 0x8008,
        ss: u64::from(FLAT_KERNEL_SS),
        vector: 14,
        error_code: EC,
        ..Default::default()
    }
}

/// Runs `code` at `CODE_VA` as the instruction that faulted at `cr2`, through the trap path.
fn run(s: &mut Shim<MockMachine>, code: &[u8], mut r: GuestRegs, cr2: u64) -> GuestRegs {
    s.copy_to_guest(CODE_VA, code).unwrap();
    r.rip = CODE_VA;
    assert_eq!(s.guest_exception(&mut r, cr2), Outcome::Resume);
    check(s);
    r
}

fn emulations(s: &mut Shim<MockMachine>) -> u64 {
    s.m.stats().emulated[EmulKind::PtWrite as usize]
}

fn frame_words(s: &Shim<MockMachine>) -> Vec<u64> {
    (0..FRAMES).map(|m| s.frame(m).canonical()).collect()
}

/// Asserts the #PF went to the guest untouched: handler entered, CR2 reported, entry and
/// every count unchanged, nothing counted as emulated.
fn assert_delivered(s: &mut Shim<MockMachine>, code: &[u8], r: GuestRegs, cr2: u64, slot: usize) {
    let (before, words, n) = (entry(s, slot), frame_words(s), emulations(s));
    let out = run(s, code, r, cr2);
    assert_eq!(out.rip, PF_HANDLER, "the #PF is delivered");
    assert_eq!(s.m.read_u64(s.vcpu.vcpu_info + 16).unwrap(), cr2, "cr2 in vcpu_info");
    let mut ec = [0u8; 8];
    crate::mm::copy_from_guest(&s.m, s.cr3(), out.rsp + 16, &mut ec).unwrap();
    assert_eq!(u64::from_le_bytes(ec), EC & !4, "the hardware error code, U cleared for the kernel");
    assert_eq!(entry(s, slot), before, "entry unchanged");
    assert_eq!(frame_words(s), words, "counts unchanged");
    assert_eq!(emulations(s), n);
}

const MOV_RDI_RAX: [u8; 3] = [0x48, 0x89, 0x07];

#[test]
fn mov_r64_store_maps_a_new_page() {
    let mut s = setup();
    let new = (20 << 12) | 0x63;
    let r = GuestRegs { rdi: L1_VA + 8 * FREE as u64, rax: new, ..regs() };
    let out = run(&mut s, &MOV_RDI_RAX, r, r.rdi);
    assert_eq!(out.rip, CODE_VA + 3);
    assert_eq!(entry(&s, FREE), stored(new));
    assert_eq!(emulations(&mut s), 1);
    assert_eq!(s.m.stats().bounced[14], 0);
    // Overwriting it with 0 drops the reference again.
    let r = GuestRegs { rax: 0, ..r };
    run(&mut s, &MOV_RDI_RAX, r, r.rdi);
    assert_eq!(entry(&s, FREE), 0);
}

#[test]
fn mov_imm32_is_sign_extended() {
    let mut s = setup();
    // mov qword [rdi], 0x15063
    let code = [0x48, 0xc7, 0x07, 0x63, 0x50, 0x01, 0x00];
    let r = GuestRegs { rdi: L1_VA + 8 * FREE as u64, ..regs() };
    let out = run(&mut s, &code, r, r.rdi);
    assert_eq!((out.rip, entry(&s, FREE)), (CODE_VA + 7, stored(0x15063)));
    // mov qword [rdi], -1: all ones, reserved bits set: refused.
    let code = [0x48, 0xc7, 0x07, 0xff, 0xff, 0xff, 0xff];
    assert_delivered(&mut s, &code, r, r.rdi, FREE);
}

#[test]
fn xchg_returns_the_old_entry() {
    let mut s = setup();
    let old = entry(&s, MAPPED);
    let r = GuestRegs { rdi: L1_VA + 8 * MAPPED as u64, rax: 0, ..regs() };
    let out = run(&mut s, &[0x48, 0x87, 0x07], r, r.rdi);
    assert_eq!((out.rax, entry(&s, MAPPED), out.rip), (old, 0, CODE_VA + 3));
    // The 32-bit form zero-extends into the register and merges into the low half.
    let r = GuestRegs { rax: 0xffff_ffff_0001_6023, ..r };
    let out = run(&mut s, &[0x87, 0x07], r, r.rdi);
    assert_eq!((out.rax, entry(&s, MAPPED)), (0, stored(0x16023)));
}

#[test]
fn lock_cmpxchg_writes_on_match_only() {
    let mut s = setup();
    let code = [0xf0, 0x48, 0x0f, 0xb1, 0x0f]; // lock cmpxchg [rdi], rcx
    let old = entry(&s, MAPPED);
    let new = (22 << 12) | 0x63;
    let r = GuestRegs { rdi: L1_VA + 8 * MAPPED as u64, rax: old + 1, rcx: new, ..regs() };
    let out = run(&mut s, &code, r, r.rdi);
    assert_eq!((out.rax, entry(&s, MAPPED)), (old, old), "mismatch: rax loaded, nothing written");
    assert_eq!(out.rflags & X86_EFLAGS_ZF, 0);
    assert_eq!(out.rip, CODE_VA + 5);
    let out = run(&mut s, &code, out, r.rdi);
    assert_eq!((out.rax, entry(&s, MAPPED)), (old, stored(new)));
    assert_ne!(out.rflags & X86_EFLAGS_ZF, 0);
    assert_eq!(emulations(&mut s), 2);
    // A matching compare with a refused new value: #PF, nothing changed.
    let r = GuestRegs { rax: entry(&s, MAPPED), rcx: (L1_MFN << 12) | 0x63, ..r };
    assert_delivered(&mut s, &code, r, r.rdi, MAPPED);
}

#[test]
fn cmpxchg8b_is_emulated_and_cmpxchg16b_is_not() {
    let mut s = setup();
    let old = entry(&s, MAPPED);
    let new: u64 = (23 << 12) | 0x25;
    let r = GuestRegs {
        rdi: L1_VA + 8 * MAPPED as u64,
        rax: old & 0xffff_ffff,
        rdx: old >> 32,
        rbx: new & 0xffff_ffff,
        rcx: new >> 32,
        ..regs()
    };
    let out = run(&mut s, &[0xf0, 0x0f, 0xc7, 0x0f], r, r.rdi);
    assert_eq!(entry(&s, MAPPED), stored(new));
    assert_ne!(out.rflags & X86_EFLAGS_ZF, 0);
    let out = run(&mut s, &[0xf0, 0x0f, 0xc7, 0x0f], r, r.rdi);
    assert_eq!(out.rflags & X86_EFLAGS_ZF, 0, "compare fails now");
    assert_eq!(out.rax | out.rdx << 32, stored(new));
    let r = GuestRegs { rdi: L1_VA + 16 * 3, ..r };
    assert_delivered(&mut s, &[0xf0, 0x48, 0x0f, 0xc7, 0x0f], r, r.rdi, 6);
}

#[test]
fn lock_and_or_byte_change_flags_of_the_entry() {
    let mut s = setup();
    let old = entry(&s, MAPPED);
    assert_ne!(old & _PAGE_RW, 0);
    let r = GuestRegs { rdi: L1_VA + 8 * MAPPED as u64, rax: 0x02, ..regs() };
    // lock and byte [rdi], 0xfd: write-protect (Linux's ptep_set_wrprotect).
    let out = run(&mut s, &[0xf0, 0x80, 0x27, 0xfd], r, r.rdi);
    assert_eq!((entry(&s, MAPPED), out.rip), (old & !_PAGE_RW, CODE_VA + 4));
    assert_eq!(s.frame(21).current_type(), PageType::None, "no writable mapping left");
    // lock or byte [rdi], al: writable again.
    run(&mut s, &[0xf0, 0x08, 0x07], r, r.rdi);
    assert_eq!(entry(&s, MAPPED), old);
    // lock or qword [rdi], imm8 (sign-extended 0x80 = PSE and all high bits): refused.
    assert_delivered(&mut s, &[0xf0, 0x48, 0x83, 0x0f, 0x80], r, r.rdi, MAPPED);
}

#[test]
fn lock_btr_and_bts_report_the_bit_in_cf() {
    let mut s = setup();
    let old = entry(&s, MAPPED);
    assert_ne!(old & _PAGE_ACCESSED, 0);
    let r = GuestRegs { rdi: L1_VA + 8 * MAPPED as u64, rflags: 0x202, ..regs() };
    // lock btr qword [rdi], 5 (Linux's ptep_test_and_clear_young)
    let words = frame_words(&s);
    let out = run(&mut s, &[0xf0, 0x48, 0x0f, 0xba, 0x37, 0x05], r, r.rdi);
    assert_eq!(entry(&s, MAPPED), old & !_PAGE_ACCESSED);
    assert_ne!(out.rflags & X86_EFLAGS_CF, 0, "was set");
    assert_eq!(frame_words(&s), words, "an A/D-only change keeps every count");
    let out = run(&mut s, &[0xf0, 0x48, 0x0f, 0xba, 0x37, 0x05], out, r.rdi);
    assert_eq!(out.rflags & X86_EFLAGS_CF, 0, "was clear");
    // lock bts [rdi], rax with rax = 64 + 6: the next entry's Dirty bit.
    let next = entry(&s, MAPPED + 1);
    let r = GuestRegs { rax: 70, ..r };
    run(&mut s, &[0xf0, 0x48, 0x0f, 0xab, 0x07], r, r.rdi + 8);
    assert_eq!(entry(&s, MAPPED + 1), next | _PAGE_DIRTY);
    // lock and byte [rdi], 0x9f: clear A and D.
    let r = GuestRegs { rdi: r.rdi + 8, ..r };
    run(&mut s, &[0xf0, 0x80, 0x27, 0x9f], r, r.rdi);
    assert_eq!(entry(&s, MAPPED + 1), next & !(_PAGE_ACCESSED | _PAGE_DIRTY));
    assert_eq!(frame_words(&s), words);
}

#[test]
fn half_entry_stores_are_merged() {
    let mut s = setup();
    let old = entry(&s, MAPPED);
    let at = L1_VA + 8 * MAPPED as u64;
    // mov [rdi], eax on the upper half: NX.
    let r = GuestRegs { rdi: at + 4, rax: 0x8000_0000 | (old >> 32), ..regs() };
    run(&mut s, &[0x89, 0x07], r, r.rdi);
    assert_eq!(entry(&s, MAPPED), old | 1 << 63);
    // mov [rdi], ax and mov [rdi], ah on the low half.
    let r = GuestRegs { rdi: at, rax: (old & 0xffff) & !0x20, ..regs() };
    run(&mut s, &[0x66, 0x89, 0x07], r, r.rdi);
    assert_eq!(entry(&s, MAPPED), (old | 1 << 63) & !0x20);
    let r = GuestRegs { rdi: at + 1, rax: 0x5500, ..regs() };
    run(&mut s, &[0x88, 0x27], r, r.rdi);
    assert_eq!(entry(&s, MAPPED) >> 8 & 0xff, 0x55);
}

#[test]
fn segment_bases_and_rip_relative_addressing() {
    let mut s = setup();
    let slot = L1_VA + 8 * FREE as u64;
    s.m.msrs.insert(MSR_GS_BASE, L1_VA);
    // mov gs:[8 * FREE], rax
    let mut code = vec![0x65, 0x48, 0x89, 0x04, 0x25];
    code.extend_from_slice(&(8 * FREE as u32).to_le_bytes());
    let r = GuestRegs { rax: (20 << 12) | 0x63, ..regs() };
    run(&mut s, &code, r, slot);
    assert_eq!(entry(&s, FREE), stored(r.rax));
    // mov [rip + disp], rax
    let disp = (slot + 8).wrapping_sub(CODE_VA + 7) as u32;
    let mut code = vec![0x48, 0x89, 0x05];
    code.extend_from_slice(&disp.to_le_bytes());
    let out = run(&mut s, &code, r, slot + 8);
    assert_eq!((entry(&s, FREE + 1), out.rip), (stored(r.rax), CODE_VA + 7));
}

#[test]
fn mapping_a_page_table_writable_is_refused() {
    let mut s = setup();
    for table in [L1_MFN, 3, 2, 1] {
        let r = GuestRegs { rdi: L1_VA + 8 * FREE as u64, rax: (table << 12) | 0x63, ..regs() };
        assert_delivered(&mut s, &MOV_RDI_RAX, r, r.rdi, FREE);
    }
    // ... while a read-only mapping of one is fine.
    let r = GuestRegs { rdi: L1_VA + 8 * FREE as u64, rax: (3 << 12) | 0x61, ..regs() };
    run(&mut s, &MOV_RDI_RAX, r, r.rdi);
    assert_eq!(entry(&s, FREE), stored(r.rax));
}

#[test]
fn misaligned_and_other_page_stores_are_not_emulated() {
    let mut s = setup();
    let r = GuestRegs { rdi: L1_VA + 8 * FREE as u64 + 4, rax: (20 << 12) | 0x63, ..regs() };
    assert_delivered(&mut s, &MOV_RDI_RAX, r, r.rdi, FREE);
    let r = GuestRegs { rdi: L1_VA + 8 * FREE as u64 + 2, ..r };
    assert_delivered(&mut s, &[0x89, 0x07], r, r.rdi, FREE);
    // A store at the end of the page running into the next one.
    let r = GuestRegs { rdi: L1_VA + 4092, ..r };
    assert_delivered(&mut s, &MOV_RDI_RAX, r, r.rdi, 511);
    // The instruction writes elsewhere than the faulting page.
    let r = GuestRegs { rdi: L1_VA - 4096 + 8 * FREE as u64, ..r };
    assert_delivered(&mut s, &MOV_RDI_RAX, r, L1_VA + 8 * FREE as u64, FREE);
}

#[test]
fn only_kernel_write_faults_with_the_assist_on_are_emulated() {
    let r = GuestRegs { rdi: L1_VA + 8 * FREE as u64, rax: (20 << 12) | 0x63, ..regs() };
    let mut s = setup();
    s.vm_assist = 0;
    assert_delivered(&mut s, &MOV_RDI_RAX, r, r.rdi, FREE);

    let mut s = setup();
    s.copy_to_guest(CODE_VA, &MOV_RDI_RAX).unwrap();
    for ec in [0x5, 0x6, 0xf, 0x17] {
        let mut rr = GuestRegs { error_code: ec, ..r };
        assert_eq!(s.ptwr_page_fault(&mut rr, r.rdi), None, "error code {ec:#x}");
    }
    s.vcpu.kernel_mode = false;
    let mut rr = r;
    assert_eq!(s.ptwr_page_fault(&mut rr, r.rdi), None, "user mode");
    assert_eq!(rr, r);
    assert_eq!(entry(&s, FREE), 0);
}

#[test]
fn writes_to_read_only_upper_tables_are_not_emulated() {
    let mut s = setup();
    // Page 30 maps the L2 (frame 3) read-only.
    s.mod_entry(L1_MFN, 1, 30, (3 << 12) | 0x21, false).unwrap();
    let at = GUEST_VA + 30 * 4096 + 8;
    let r = GuestRegs { rdi: at, rax: 0, ..regs() };
    assert_delivered(&mut s, &MOV_RDI_RAX, r, at, FREE);
    assert_eq!(s.m.read_u64((3 << 12) + 8).unwrap(), 0);
    // A read-only data page is not a table either.
    let r = GuestRegs { rdi: L1_VA + 8, ..regs() };
    s.mod_entry(L1_MFN, 1, 31, (47 << 12) | 0x21, false).unwrap();
    assert_delivered(&mut s, &MOV_RDI_RAX, r, L1_VA + 8, FREE);
}

#[test]
fn non_stores_and_wide_stores_are_not_emulated() {
    let mut s = setup();
    let r = GuestRegs { rdi: L1_VA + 8 * FREE as u64, rax: (20 << 12) | 0x63, ..regs() };
    for code in [
        &[0x0f, 0x0b][..],   // ud2
        &[0x48, 0x8b, 0x07], // a load
        &[0x48, 0xff, 0x07], // inc: not in the table
        &[0x0f, 0x11, 0x07], // movups: 16 bytes
        &[0xf3, 0x48, 0xab], // rep stosq
        &[0x48, 0x89, 0xc7], // register to register
    ] {
        assert_delivered(&mut s, code, r, r.rdi, FREE);
    }
}

#[test]
fn an_instruction_running_into_an_unmapped_page_faults_at_the_fetch() {
    let mut s = setup();
    // The first byte of the store at the very end of the mapped range (page 32 is not
    // mapped). Page 31 is the L1: its last entry's top bytes hold the opcode, not present.
    let end = GUEST_VA + 32 * 4096;
    s.m.write_phys((L1_MFN << 12) + 4095, &[0x48]).unwrap();
    let mut r = GuestRegs { rip: end - 1, rdi: L1_VA + 8 * FREE as u64, ..regs() };
    assert_eq!(
        s.ptwr_page_fault(&mut r, L1_VA + 8 * FREE as u64),
        Some(Emulated::PageFault { addr: end, error_code: PFEC_INSN_FETCH as u32 })
    );
}

#[test]
fn single_step_raises_debug_after_the_store() {
    let mut s = setup();
    s.copy_to_guest(CODE_VA, &MOV_RDI_RAX).unwrap();
    let mut r = GuestRegs { rdi: L1_VA + 8 * FREE as u64, rax: (20 << 12) | 0x63, ..regs() };
    r.rflags |= RFLAGS_TF;
    assert_eq!(
        s.ptwr_page_fault(&mut r, L1_VA + 8 * FREE as u64),
        Some(Emulated::Raise { vector: 1, error_code: None })
    );
    assert_eq!((r.rip, entry(&s, FREE)), (CODE_VA + 3, stored((20 << 12) | 0x63)));
}

/// The flags of add/sub/cmp match the CPU's.
#[test]
#[allow(unsafe_code)]
fn arithmetic_flags_match_the_cpu() {
    fn native(a: u64, b: u64, sub: bool) -> u64 {
        let f: u64;
        // SAFETY: register-only arithmetic and a push/pop of the flags.
        unsafe {
            if sub {
                core::arch::asm!("sub {a}, {b}", "pushfq", "pop {f}", a = inout(reg) a => _, b = in(reg) b, f = out(reg) f);
            } else {
                core::arch::asm!("add {a}, {b}", "pushfq", "pop {f}", a = inout(reg) a => _, b = in(reg) b, f = out(reg) f);
            }
        }
        f & 0x8d5
    }
    let mut x = 0x1234_5678_9abc_def0u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let specials = [0, 1, 0x7fff_ffff_ffff_ffff, 0x8000_0000_0000_0000, u64::MAX, 0x0f, 0x10];
    for i in 0..20_000 {
        let (a, b) = if i < 49 { (specials[i % 7], specials[i / 7]) } else { (next(), next()) };
        for sub in [false, true] {
            let r = if sub { a.wrapping_sub(b) } else { a.wrapping_add(b) };
            assert_eq!(arith_flags(a, b, r, 8, sub), native(a, b, sub), "{a:#x} {b:#x} sub={sub}");
        }
    }
}
