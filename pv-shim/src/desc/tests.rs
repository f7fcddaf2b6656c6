//! Host tests of the descriptor tables on the mock guest of
//! [`shim_with_guest`](crate::testutil::shim_with_guest): frames 16..=47 mapped at
//! `GUEST_VA` (page i = frame 16 + i, writable but page 31), page tables in frames 1..=4,
//! frames 48..=63 free. Frame lists are staged in guest memory at `LIST`.

use super::*;
use crate::mm::check::check_invariants;
use crate::mm::ops::{mmu_update, mmuext_op, update_va_mapping};
use crate::shim::Shim;
use crate::testutil::{shim_with_guest, MockMachine, GUEST_VA};
use xen_abi::xen::*;

const LIST: u64 = GUEST_VA + 0x1e000;

/// Linux's 16-entry GDT (`asm/segment.h`, `GDT_ENTRY_INIT` values) as the kernel builds it:
/// ring-0 code/data that Xen raises to DPL 3; no TSS/LDT (never sent to Xen).
const LINUX_GDT: [u64; 16] = [
    0,
    0x00cf_9b00_0000_ffff, // 1 KERNEL32_CS
    0x00af_9b00_0000_ffff, // 2 KERNEL_CS
    0x00cf_9300_0000_ffff, // 3 KERNEL_DS
    0x00cf_fb00_0000_ffff, // 4 USER32_CS
    0x00cf_f300_0000_ffff, // 5 USER_DS
    0x00af_fb00_0000_ffff, // 6 USER_CS
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0x0040_f500_0000_0000, // 15 CPUNODE (expand-down data, DPL3)
];

fn dpl3(d: u64) -> u64 {
    if d & (1 << 47) != 0 {
        d | 3 << 45
    } else {
        d
    }
}

fn ok(s: &Shim<MockMachine>) {
    check_invariants(s, s.m.frames()).unwrap();
}

fn words(s: &Shim<MockMachine>) -> Vec<u64> {
    (0..s.m.frames()).map(|m| s.frame(m).canonical()).collect()
}

fn fill(s: &mut Shim<MockMachine>, mfn: u64, descs: &[u64]) {
    for (i, &d) in descs.iter().enumerate() {
        s.m.write_u64((mfn << 12) + 8 * i as u64, d).unwrap();
    }
}

fn frame_descs(s: &Shim<MockMachine>, mfn: u64) -> Vec<u64> {
    (0..512).map(|i| s.m.read_u64((mfn << 12) + 8 * i).unwrap()).collect()
}

fn gdt(s: &mut Shim<MockMachine>, frames: &[u64], ents: u64) -> Result<u64, Errno> {
    s.copy_to_guest(LIST, frames.as_bytes()).unwrap();
    set_gdt(s, Args([LIST, ents, 0, 0, 0, 0]))
}

fn upd(s: &mut Shim<MockMachine>, maddr: u64, d: u64) -> Result<u64, Errno> {
    update_descriptor(s, Args([maddr, d, 0, 0, 0, 0]))
}

fn typed(s: &Shim<MockMachine>, mfn: u64) -> (PageType, u64, u64) {
    let f = s.frame(mfn);
    (f.current_type(), f.type_count(), f.count())
}

/// A 64-bit call gate to `cs:off` with DPL `dpl` (first half).
fn call_gate(cs: u16, off: u32, dpl: u64) -> u64 {
    u64::from(off >> 16) << 48 | 0x8c00u64 << 32 | dpl << 45 | u64::from(cs) << 16 | u64::from(off & 0xffff)
}

#[test]
fn check_descriptor_follows_xens_64bit_rules() {
    let gate = call_gate(0x10, 0x1234_5678, 3);
    let cases: &[(&str, u64, Option<u64>)] = &[
        ("null", 0, Some(0)),
        ("not present, any type", 0x0000_0e00_dead_beef, Some(0x0000_0e00_dead_beef)),
        ("not present TSS", 0x0000_0900_0000_0067, Some(0x0000_0900_0000_0067)),
        ("KERNEL_CS DPL0 -> 3", 0x00af_9b00_0000_ffff, Some(0x00af_fb00_0000_ffff)),
        ("KERNEL_DS DPL0 -> 3", 0x00cf_9300_0000_ffff, Some(0x00cf_f300_0000_ffff)),
        ("DPL1 data -> 3", 0x00cf_b300_0000_ffff, Some(0x00cf_f300_0000_ffff)),
        ("DPL2 code -> 3", 0x00af_db00_0000_ffff, Some(0x00af_fb00_0000_ffff)),
        ("USER_DS as is", 0x00cf_f300_0000_ffff, Some(0x00cf_f300_0000_ffff)),
        ("any base and limit", 0xff4f_93ff_ffff_ffff, Some(0xff4f_f3ff_ffff_ffff)),
        ("conforming code", 0x00af_9f00_0000_ffff, Some(0x00af_ff00_0000_ffff)),
        ("present type 0 kept (DPL not raised)", 0x0000_8000_1234_5678, Some(0x0000_8000_1234_5678)),
        ("upper half of a gate", 0x0000_0000_ffff_ffff, Some(0x0000_0000_ffff_ffff)),
        ("64-bit TSS", 0x0000_8900_0000_0067, None),
        ("busy TSS", 0x0000_8b00_0000_0067, None),
        ("16-bit TSS", 0x0000_8100_0000_0067, None),
        ("LDT", 0x0000_8200_0000_ffff, None),
        ("interrupt gate", 0x0000_ee00_0010_0000, None),
        ("trap gate", 0x0000_ef00_0010_0000, None),
        ("16-bit call gate", 0x0000_e400_0010_0000, None),
        ("task gate", 0x0000_e500_0010_0000, None),
        ("reserved system type 8", 0x0000_8800_0000_0000, None),
        ("call gate: DPL 0, RPL 3 in the selector", gate, Some((gate & !(3 << 45)) | 3 << 16)),
        (
            "call gate DPL0: raised to 3 into the RPL",
            call_gate(0x10, 0x1234_5678, 0),
            Some(call_gate(0x13, 0x1234_5678, 0)),
        ),
        (
            "call gate to FLAT_KERNEL_CS",
            call_gate(FLAT_KERNEL_CS, 0, 3),
            Some(call_gate(FLAT_KERNEL_CS, 0, 0)),
        ),
        ("call gate to an LDT selector", call_gate(0xe00c, 0, 3), Some(call_gate(0xe00f, 0, 0))),
        ("call gate to the last guest entry", call_gate(0xdff8, 0, 3), Some(call_gate(0xdffb, 0, 0))),
        ("call gate to the shim's CS", call_gate(0xe008, 0, 3), None),
        ("call gate to FLAT_KERNEL_CS with RPL 0", call_gate(0xe030, 0, 3), None),
        ("call gate to the shim's TSS", call_gate(0xe040, 0, 3), None),
        ("call gate with a parameter count", call_gate(0x10, 0, 3) | 1 << 32, None),
        ("call gate with reserved bit 7", call_gate(0x10, 0, 3) | 0x80 << 32, None),
    ];
    for &(name, d, want) in cases {
        assert_eq!(check_descriptor(d), want, "{name}: {d:#018x}");
        if let Some(stored) = want {
            assert_eq!(check_descriptor(stored), Some(stored), "{name}: the stored value is stable");
        }
    }
}

#[test]
fn set_gdt_validates_fixes_and_copies_the_frame() {
    let mut s = shim_with_guest();
    let base = words(&s);
    fill(&mut s, 48, &LINUX_GDT);
    let flushes = s.m.tlb_flushes;
    assert_eq!(gdt(&mut s, &[48], 16), Ok(0));
    assert_eq!(s.m.tlb_flushes, flushes + 1);
    assert_eq!(typed(&s, 48), (PageType::SegDesc, 1, 1));
    let want: Vec<u64> = LINUX_GDT.iter().map(|&d| dpl3(d)).collect();
    assert_eq!(frame_descs(&s, 48)[..16], want[..], "fixed values written back into the frame");
    assert_eq!(s.m.gdt[..512], frame_descs(&s, 48)[..], "the whole frame is copied");
    assert_eq!(s.vcpu.gdt.live(), &[48]);
    assert_eq!(s.vcpu.gdt.ents, 16);
    ok(&s);
    // Dropping it (0 entries) gives every count back and clears the copy.
    assert_eq!(gdt(&mut s, &[], 0), Ok(0));
    assert_eq!(words(&s), base);
    assert!(s.m.gdt.iter().all(|&d| d == 0));
    ok(&s);
}

#[test]
fn set_gdt_replaces_the_old_gdt_and_releases_it() {
    let mut s = shim_with_guest();
    let base = words(&s);
    fill(&mut s, 48, &LINUX_GDT);
    fill(&mut s, 49, &[0, 0x00cf_f300_0000_ffff]);
    fill(&mut s, 50, &[0, 0, 0x00af_fb00_0000_ffff]);
    assert_eq!(gdt(&mut s, &[48, 49], 600), Ok(0));
    assert_eq!(s.m.gdt[513], 0x00cf_f300_0000_ffff);
    ok(&s);
    assert_eq!(gdt(&mut s, &[50], 3), Ok(0));
    assert_eq!((typed(&s, 48), typed(&s, 49)), ((PageType::None, 0, 0), (PageType::None, 0, 0)));
    assert_eq!(s.m.gdt[2], 0x00af_fb00_0000_ffff);
    assert_eq!(s.m.gdt[513], 0, "the old second frame's copy is gone");
    ok(&s);
    // The same frame again: one reference, not two.
    assert_eq!(gdt(&mut s, &[50], 3), Ok(0));
    assert_eq!(typed(&s, 50), (PageType::SegDesc, 1, 1));
    // A frame listed twice holds two references.
    assert_eq!(gdt(&mut s, &[50, 50], 1024), Ok(0));
    assert_eq!(typed(&s, 50), (PageType::SegDesc, 2, 2));
    ok(&s);
    assert_eq!(gdt(&mut s, &[], 0), Ok(0));
    assert_eq!(words(&s), base);
}

#[test]
fn set_gdt_takes_all_frames_or_none() {
    let mut s = shim_with_guest();
    fill(&mut s, 48, &LINUX_GDT);
    fill(&mut s, 50, &[0, 0x00cf_f300_0000_ffff]);
    assert_eq!(gdt(&mut s, &[50], 2), Ok(0));
    let before = (words(&s), s.m.gdt.clone(), s.vcpu.gdt, frame_descs(&s, 48));
    fill(&mut s, 49, &[0, 0x0000_8900_0000_0067]); // a TSS
    fill(&mut s, 51, &[0x0000_ee00_0010_0000]); // an interrupt gate
    let bad: &[(&str, &[u64])] = &[
        ("TSS in the second frame", &[48, 49]),
        ("interrupt gate in the third", &[48, 50, 51]),
        ("frame mapped writable", &[48, 20]),
        ("a page table", &[48, 3]),
        ("the pinned L4", &[48, 1]),
        ("not the domain's", &[48, 0x9999]),
    ];
    for &(name, frames) in bad {
        let ents = 512 * frames.len() as u64;
        assert_eq!(gdt(&mut s, frames, ents), Err(Errno::EINVAL), "{name}");
        // Frame 48 was validated (and its DPLs fixed) before the refusal; nothing else moved.
        let after = (words(&s), s.m.gdt.clone(), s.vcpu.gdt);
        assert_eq!(after, (before.0.clone(), before.1.clone(), before.2), "{name}");
        ok(&s);
    }
    assert_eq!(frame_descs(&s, 49)[1], 0x0000_8900_0000_0067, "a refused frame is not changed");
}

#[test]
fn set_gdt_argument_errors() {
    let mut s = shim_with_guest();
    fill(&mut s, 48, &LINUX_GDT);
    let before = words(&s);
    assert_eq!(gdt(&mut s, &[48], u64::from(FIRST_RESERVED_GDT_ENTRY) + 1), Err(Errno::EINVAL));
    assert_eq!(set_gdt(&mut s, Args([0x1000, 16, 0, 0, 0, 0])), Err(Errno::EFAULT), "unmapped list");
    assert_eq!(set_gdt(&mut s, Args([HYPERVISOR_VIRT_START, 16, 0, 0, 0, 0])), Err(Errno::EFAULT));
    // The list is read only as far as the entries need: an unmapped pointer with 0 entries.
    assert_eq!(set_gdt(&mut s, Args([0x1000, 0, 0, 0, 0, 0])), Ok(0));
    // `entries` is an unsigned int: the upper half of the register is ignored.
    assert_eq!(gdt(&mut s, &[48], 1 << 32 | 16), Ok(0));
    assert_eq!(s.vcpu.gdt.ents, 16);
    assert_eq!(gdt(&mut s, &[], 0), Ok(0));
    assert_eq!(words(&s), before);
}

#[test]
fn set_gdt_takes_the_full_fourteen_frames() {
    let mut s = shim_with_guest();
    let base = words(&s);
    let frames: Vec<u64> = (48..62).collect();
    for &f in &frames {
        fill(&mut s, f, &[0, 0x00cf_9300_0000_ffff | f << 16]);
    }
    assert_eq!(gdt(&mut s, &frames, u64::from(FIRST_RESERVED_GDT_ENTRY)), Ok(0));
    assert_eq!(s.m.gdt[13 * 512 + 1], 0x00cf_f300_0000_ffff | 61 << 16);
    ok(&s);
    assert_eq!(gdt(&mut s, &[], 0), Ok(0));
    assert_eq!(words(&s), base);
}

#[test]
fn a_gdt_frame_is_never_mapped_writable() {
    let mut s = shim_with_guest();
    fill(&mut s, 48, &LINUX_GDT);
    assert_eq!(gdt(&mut s, &[48], 16), Ok(0));
    let before = words(&s);
    let page0 = GUEST_VA;
    assert_eq!(
        update_va_mapping(&mut s, Args([page0, 48 << 12 | 0x67, UVMF_INVLPG, 0, 0, 0])),
        Err(Errno::EINVAL)
    );
    assert_eq!(words(&s), before);
    // Read-only is fine (Linux maps its GDT read-only).
    assert_eq!(update_va_mapping(&mut s, Args([page0, 48 << 12 | 0x65, UVMF_INVLPG, 0, 0, 0])), Ok(0));
    assert_eq!(typed(&s, 48), (PageType::SegDesc, 1, 2));
    ok(&s);
    // Neither a page-table write nor CLEAR_PAGE may write it.
    let req = MmuUpdate { ptr: 48 << 12, val: 0x00cf_9300_0000_ffff };
    s.copy_to_guest(LIST, req.as_bytes()).unwrap();
    assert_eq!(mmu_update(&mut s, Args([LIST, 1, 0, u64::from(DOMID_SELF), 0, 0])), Err(Errno::EINVAL));
    let op = MmuextOp { cmd: MMUEXT_CLEAR_PAGE, _pad: 0, arg1: 48, arg2: 0 };
    s.copy_to_guest(LIST, op.as_bytes()).unwrap();
    assert_eq!(mmuext_op(&mut s, Args([LIST, 1, 0, u64::from(DOMID_SELF), 0, 0])), Err(Errno::EINVAL));
    assert_eq!(frame_descs(&s, 48)[3], 0x00cf_f300_0000_ffff);
    ok(&s);
}

#[test]
fn set_gdt_refuses_a_frame_mapped_writable() {
    let mut s = shim_with_guest();
    // Frame 16 is page 0 of the guest, mapped writable.
    fill(&mut s, 16, &LINUX_GDT);
    let before = words(&s);
    assert_eq!(gdt(&mut s, &[16], 16), Err(Errno::EINVAL));
    assert_eq!(words(&s), before);
    assert_eq!(s.vcpu.gdt, GdtState::default());
    // Once the mapping is read-only, the same frame is accepted.
    assert_eq!(update_va_mapping(&mut s, Args([GUEST_VA, 16 << 12 | 0x65, UVMF_INVLPG, 0, 0, 0])), Ok(0));
    assert_eq!(gdt(&mut s, &[16], 16), Ok(0));
    ok(&s);
}

#[test]
fn update_descriptor_writes_the_frame_and_the_live_copy() {
    let mut s = shim_with_guest();
    fill(&mut s, 48, &LINUX_GDT);
    assert_eq!(gdt(&mut s, &[48, 48], 1024), Ok(0));
    let before = words(&s);
    // A TLS entry (12), given with DPL 0: stored with DPL 3, in the frame and both copies.
    let tls = 0x00cf_9300_0000_ffff | 0x1234 << 16;
    assert_eq!(upd(&mut s, (48 << 12) + 8 * 12, tls), Ok(0));
    let stored = dpl3(tls);
    assert_eq!(s.m.read_u64((48 << 12) + 8 * 12).unwrap(), stored);
    assert_eq!((s.m.gdt[12], s.m.gdt[512 + 12]), (stored, stored));
    assert_eq!(words(&s), before, "the type reference taken for the write is dropped");
    ok(&s);
    // Refused: nothing changes.
    for (name, maddr, d) in [
        ("TSS", (48 << 12) + 8 * 12, 0x0000_8900_0000_0067u64),
        ("interrupt gate", (48 << 12) + 8 * 12, 0x0000_ee00_0010_0000),
        ("misaligned", (48 << 12) + 8 * 12 + 4, 0),
        ("a page table", 4 << 12, 0),
        ("the L4", 1 << 12, 0),
        ("not the domain's", 0x9999 << 12, 0),
        ("beyond any frame", !7, 0),
    ] {
        let l1 = frame_descs(&s, 4);
        assert_eq!(upd(&mut s, maddr, d), Err(Errno::EINVAL), "{name}");
        assert_eq!(s.m.read_u64((48 << 12) + 8 * 12).unwrap(), stored, "{name}");
        assert_eq!(s.m.gdt[12], stored, "{name}");
        assert_eq!(frame_descs(&s, 4), l1, "{name}");
        assert_eq!(words(&s), before, "{name}");
    }
    ok(&s);
}

#[test]
fn update_descriptor_on_plain_frames() {
    let mut s = shim_with_guest();
    let before = words(&s);
    // A data frame mapped writable (type Writable, count 1) and a free one (untyped).
    for mfn in [20u64, 55] {
        assert_eq!(upd(&mut s, (mfn << 12) + 8, 0x00cf_9300_0000_ffff), Ok(0));
        assert_eq!(s.m.read_u64((mfn << 12) + 8).unwrap(), 0x00cf_f300_0000_ffff);
        assert_eq!(words(&s), before, "mfn {mfn}");
    }
    // Not part of the GDT: the shim's copy is untouched.
    assert!(s.m.gdt.iter().all(|&d| d == 0));
    // The frame can then become a GDT frame with what was stored.
    assert_eq!(gdt(&mut s, &[55], 2), Ok(0));
    assert_eq!(s.m.gdt[1], 0x00cf_f300_0000_ffff);
    ok(&s);
}

#[test]
fn validation_stops_at_the_first_bad_descriptor_having_fixed_those_before() {
    let mut s = shim_with_guest();
    fill(&mut s, 48, &[0, 0x00cf_9300_0000_ffff, 0x0000_8900_0000_0067, 0x00af_9b00_0000_ffff]);
    assert_eq!(gdt(&mut s, &[48], 4), Err(Errno::EINVAL));
    assert_eq!(
        frame_descs(&s, 48)[..4],
        [0, 0x00cf_f300_0000_ffff, 0x0000_8900_0000_0067, 0x00af_9b00_0000_ffff]
    );
    assert_eq!(typed(&s, 48), (PageType::None, 0, 0));
    ok(&s);
}

#[test]
fn hypercalls_are_dispatched() {
    let mut s = shim_with_guest();
    fill(&mut s, 48, &LINUX_GDT);
    s.copy_to_guest(LIST, [48u64].as_bytes()).unwrap();
    let mut r = crate::guest::GuestRegs {
        rax: xen_abi::hypercall::HYPERVISOR_SET_GDT,
        rdi: LIST,
        rsi: 16,
        ..Default::default()
    };
    s.hypercall(&mut r);
    assert_eq!(r.rax, 0);
    let mut r = crate::guest::GuestRegs {
        rax: xen_abi::hypercall::HYPERVISOR_UPDATE_DESCRIPTOR,
        rdi: (48 << 12) + 8 * 14,
        rsi: 0x0000_8900_0000_0067,
        ..Default::default()
    };
    s.hypercall(&mut r);
    assert_eq!(Errno::from_rax(r.rax), Some(Errno::EINVAL));
}
