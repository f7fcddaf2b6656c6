//! The PV MMU's invariants, recomputed from scratch (host tests and fuzzing only):
//!
//! 1. every reference count in the frame table equals what the validated tables, the pins
//!    and the vCPU's base pointers actually hold;
//! 2. no frame that holds a protected type (a page table or descriptor page) is mapped
//!    writable by any validated L1, and every table entry points at a frame holding the
//!    table type one level down;
//! 3. the hypervisor slots of every validated L4 hold the shim's entries;
//! 4. every descriptor of a `SegDesc` frame is one `check_descriptor` keeps as it is, the
//!    vCPU's GDT frames hold that type, and the shim's GDT copy equals them (zero past them);
//! 5. the same for the LDT pages mapped so far (each holds one `SegDesc` reference, lies
//!    inside the LDT's entry count and is copied exactly; the rest of the buffer is zero),
//!    and LDTR covers the LDT's entries while any page is mapped and is null otherwise.

use super::frames::PageType;
use super::types::is_hole_slot;
use super::{_PAGE_PRESENT, _PAGE_RW, PADDR_MASK};
use crate::desc::check_descriptor;
use crate::desc::ldt::LDT_PAGES;
use crate::machine::Machine;
use crate::shim::Shim;
use std::collections::BTreeMap;
use std::string::String;
use xen_abi::xen::{FIRST_RESERVED_GDT_ENTRY, HYPERVISOR_L4_FIRST};

#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
struct Expected {
    count: u64,
    table_refs: u64,
    writable_refs: u64,
}

/// Checks every invariant over frames `0..frames`; `Err` describes the first violation.
pub fn check_invariants<M: Machine>(s: &Shim<M>, frames: u64) -> Result<(), String> {
    let mut exp: BTreeMap<u64, Expected> = BTreeMap::new();
    let add_table_ref = |exp: &mut BTreeMap<u64, Expected>, mfn: u64| {
        let e = exp.entry(mfn).or_default();
        e.count += 1;
        e.table_refs += 1;
    };
    for mfn in 0..frames {
        let f = s.frame(mfn);
        if f.pinned() {
            add_table_ref(&mut exp, mfn);
        }
        if f.current_type() == PageType::SegDesc {
            for i in 0..512u64 {
                let d = s.m.read_u64((mfn << 12) + 8 * i).map_err(|_| format!("read {mfn:#x}"))?;
                if check_descriptor(d) != Some(d) {
                    return Err(format!("SegDesc {mfn:#x}[{i}] holds {d:#x}, not a checked descriptor"));
                }
            }
        }
        let Some(level) = f.current_type().level() else { continue };
        if f.validating() {
            return Err(format!("mfn {mfn:#x} is still marked validating"));
        }
        for i in 0..512usize {
            let e = s.m.read_u64((mfn << 12) + 8 * i as u64).map_err(|_| format!("read {mfn:#x}"))?;
            if level == 4 && is_hole_slot(i) {
                if e != s.hole[i - HYPERVISOR_L4_FIRST] {
                    return Err(format!("L4 {mfn:#x} slot {i} is {e:#x}, not the shim's"));
                }
                continue;
            }
            if e & _PAGE_PRESENT == 0 {
                continue;
            }
            let t = (e & PADDR_MASK) >> 12;
            if !s.own.is_ram(t) {
                continue; // shared_info, M2P
            }
            if level == 1 {
                let x = exp.entry(t).or_default();
                x.count += 1;
                if e & _PAGE_RW != 0 {
                    x.writable_refs += 1;
                    if s.frame(t).current_type().is_protected() {
                        return Err(format!(
                            "L1 {mfn:#x}[{i}] maps {:?} frame {t:#x} writable",
                            s.frame(t).current_type()
                        ));
                    }
                }
            } else {
                let want = PageType::table(level - 1);
                if s.frame(t).current_type() != want {
                    return Err(format!(
                        "L{level} {mfn:#x}[{i}] points at {t:#x}, a {:?}, not {want:?}",
                        s.frame(t).current_type()
                    ));
                }
                add_table_ref(&mut exp, t);
            }
        }
    }
    // A registered vcpu_info frame is held writable for good (Xen's `map_guest_area`).
    if s.vcpu.vcpu_info_registered {
        let x = exp.entry(s.vcpu.vcpu_info >> 12).or_default();
        x.count += 1;
        x.writable_refs += 1;
    }
    for base in [s.vcpu.guest_table >> 12, s.vcpu.guest_table_user >> 12] {
        if base != 0 {
            add_table_ref(&mut exp, base);
        }
    }
    for (i, &mfn) in s.vcpu.gdt.live().iter().enumerate() {
        add_table_ref(&mut exp, mfn);
        if s.frame(mfn).current_type() != PageType::SegDesc {
            return Err(format!("GDT frame {mfn:#x} is a {:?}", s.frame(mfn).current_type()));
        }
        for j in 0..512usize {
            let d = s.m.read_u64((mfn << 12) + 8 * j as u64).map_err(|_| format!("read {mfn:#x}"))?;
            let copy = s.m.read_gdt(i * 512 + j);
            // The CPU may have set the accessed bit of a code/data descriptor in the copy.
            if copy != d && copy != d | 1 << 40 {
                return Err(format!(
                    "GDT entry {} is {copy:#x}, its frame {mfn:#x} holds {d:#x}",
                    i * 512 + j
                ));
            }
        }
    }
    for j in s.vcpu.gdt.nr_frames * 512..FIRST_RESERVED_GDT_ENTRY as usize {
        if s.m.read_gdt(j) != 0 {
            return Err(format!("GDT entry {j} past the guest's frames is {:#x}", s.m.read_gdt(j)));
        }
    }
    let (sh, ents) = (s.vcpu.ldt_shadow, s.vcpu.ldt.1);
    for p in 0..LDT_PAGES {
        let mapped = sh.mapped & (1 << p) != 0;
        let mfn = sh.frames[p];
        if mapped {
            add_table_ref(&mut exp, mfn);
            if s.frame(mfn).current_type() != PageType::SegDesc {
                return Err(format!("LDT page {p} frame {mfn:#x} is a {:?}", s.frame(mfn).current_type()));
            }
            if (p * 512) as u32 >= ents {
                return Err(format!("LDT page {p} mapped past the LDT's {ents} entries"));
            }
        }
        for j in 0..512usize {
            let copy = s.m.read_ldt(p * 512 + j);
            let d = if mapped {
                s.m.read_u64((mfn << 12) + 8 * j as u64).map_err(|_| format!("read {mfn:#x}"))?
            } else {
                0
            };
            if copy != d && copy != d | 1 << 40 {
                return Err(format!("LDT entry {} is {copy:#x}, expected {d:#x}", p * 512 + j));
            }
        }
    }
    let want_ents = if sh.mapped != 0 { ents } else { 0 };
    if s.m.loaded_ldt_ents() != want_ents {
        return Err(format!("LDTR covers {} entries, expected {want_ents}", s.m.loaded_ldt_ents()));
    }
    for mfn in 0..frames {
        let f = s.frame(mfn);
        let e = exp.get(&mfn).copied().unwrap_or_default();
        let type_count = e.writable_refs + e.table_refs;
        if e.writable_refs > 0 && f.current_type() != PageType::Writable
            || e.table_refs > 0 && !f.current_type().is_protected()
        {
            return Err(format!("mfn {mfn:#x} is {:?} but referenced as {e:?}", f.current_type()));
        }
        if e.writable_refs > 0 && e.table_refs > 0 {
            return Err(format!(
                "mfn {mfn:#x} is both a table ({} refs) and writable-mapped ({})",
                e.table_refs, e.writable_refs
            ));
        }
        if f.count() != e.count || f.type_count() != type_count {
            return Err(format!(
                "mfn {mfn:#x} ({:?}): count {} type count {}, expected {} and {} ({e:?})",
                f.current_type(),
                f.count(),
                f.type_count(),
                e.count,
                type_count
            ));
        }
    }
    Ok(())
}
