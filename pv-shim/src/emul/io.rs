//! Port I/O for a domU (Xen `guest_io_okay`, `guest_io_read`/`guest_io_write`, `rep_ins`,
//! `rep_outs` in `pv/emul-priv-op.c`; `rtc_guest_read`/`rtc_guest_write` in `time.c`).
//!
//! A domU owns no ports. Its accesses are allowed by the virtual IOPL (Xen's `iopl_ok`: the
//! guest kernel counts as CPL 1, or 0 with VMASST_TYPE_architectural_iopl; guest user mode as
//! CPL 3) and then see Xen's domU view of the port space: the RTC index latch at 0x70 and the
//! PCI CONFIG_ADDRESS latch at dword 0xcf8 remember what was written; every other read returns
//! all-ones and every other write is dropped. Without permission the guest gets #GP(0).

use super::{instruction_done, Decoded, Emulated, Op, PortSrc, StrSeg, X86_EFLAGS_DF};
use crate::guest::GuestRegs;
use crate::machine::{Machine, MSR_FS_BASE, MSR_GS_BASE};
use crate::mm;
use crate::shim::Shim;
use xen_abi::hostcall::EmulKind;

const RTC_PORT0: u32 = 0x70;
const RTC_PORT1: u32 = 0x71;
const PCI_CONF_ADDRESS: u32 = 0xcf8;
const PCI_CONF_DATA: u32 = 0xcfc;

/// Repetitions of one `rep ins/outs` done per #GP; the rest restarts the instruction (as Xen
/// stops at `hypercall_preempt_check`), so a huge rcx cannot stall the shim.
pub const REP_CHUNK: u64 = 512;

/// Xen's `iopl_ok`: does the virtual IOPL cover the current guest mode?
pub(super) fn iopl_ok<M: Machine>(s: &Shim<M>) -> bool {
    let architectural = s.vm_assist & (1 << xen_abi::xen::VMASST_TYPE_ARCHITECTURAL_IOPL) != 0;
    let cpl = match (s.vcpu.kernel_mode, architectural) {
        (true, true) => 0,
        (true, false) => 1,
        (false, _) => 3,
    };
    cpl <= s.vcpu.iopl
}

/// Xen's `guest_io_okay`: the virtual IOPL covers the guest mode, or the guest's I/O bitmap
/// (PHYSDEVOP_set_iobitmap, read through the guest kernel's page tables; an unreadable byte
/// counts as all ones, i.e. no access) has every bit of `[port, port + bytes)` clear.
pub(super) fn io_okay<M: Machine>(s: &Shim<M>, port: u32, bytes: u32) -> bool {
    if iopl_ok(s) {
        return true;
    }
    let (bitmap, limit) = s.vcpu.iobitmap;
    if bitmap == 0 || port + bytes > limit {
        return false;
    }
    let mut x = [0xffu8; 2];
    let at = bitmap.wrapping_add(u64::from(port >> 3));
    let kernel_l4 = s.vcpu.guest_table;
    for (i, b) in x.iter_mut().enumerate() {
        let mut one = [0u8];
        if mm::copy_from_guest(&s.m, kernel_l4, at.wrapping_add(i as u64), &mut one).is_err() {
            break;
        }
        *b = one[0];
    }
    let mask = u16::from_le_bytes(x);
    mask & (((1u16 << bytes) - 1) << (port & 7)) == 0
}

/// Xen's `guest_io_read` for a domU: `bytes` (1, 2, 4) from `port`, assembled byte by byte.
fn io_read<M: Machine>(s: &Shim<M>, mut port: u32, mut bytes: u32) -> u32 {
    let (mut data, mut shift) = (0u32, 0u32);
    while bytes != 0 {
        let mut size = 1;
        let mut sub = !0u32;
        if port == RTC_PORT0 {
            sub = u32::from(s.vcpu.emul.cmos_idx & 0x7f);
        } else if port == PCI_CONF_ADDRESS && bytes == 4 {
            size = 4;
            sub = s.vcpu.emul.pci_cf8;
        } else if port & 0xfffc == PCI_CONF_DATA {
            // Config data of the latched device: no device is visible to a domU.
            size = bytes.min(4 - (port & 3));
            if size == 3 {
                size = 2;
            }
        }
        if size == 4 {
            return sub;
        }
        data |= (sub & ((1u32 << (size * 8)) - 1)) << shift;
        shift += size * 8;
        port += size;
        bytes -= size;
    }
    data
}

/// Xen's `guest_io_write` for a domU.
fn io_write<M: Machine>(s: &mut Shim<M>, mut port: u32, mut bytes: u32, mut data: u32) {
    while bytes != 0 {
        let mut size = 1;
        if port == RTC_PORT0 {
            s.vcpu.emul.cmos_idx = (data & 0x7f) as u8;
        } else if port == RTC_PORT1 {
            // The RTC itself is not the domU's.
        } else if port == PCI_CONF_ADDRESS && bytes == 4 {
            s.vcpu.emul.pci_cf8 = data;
            return;
        } else if port & 0xfffc == PCI_CONF_DATA {
            size = bytes.min(4 - (port & 3));
            if size == 3 {
                size = 2;
            }
            if size == 4 {
                return;
            }
        }
        port += size;
        bytes -= size;
        data = data.checked_shr(size * 8).unwrap_or(0);
    }
}

/// Counts an access to `port` in the first free or matching slot of the statistics.
fn count_port<M: Machine>(s: &mut Shim<M>, port: u32) {
    let st = s.m.stats();
    for i in 0..st.io_ports.len() {
        if st.io_port_counts[i] == 0 {
            st.io_ports[i] = port;
        }
        if st.io_ports[i] == port {
            st.io_port_counts[i] += 1;
            return;
        }
    }
}

/// in/out/ins/outs from either guest mode.
pub(super) fn port_io<M: Machine>(s: &mut Shim<M>, regs: &mut GuestRegs, insn: Decoded) -> Emulated {
    let port = |p: PortSrc, regs: &GuestRegs| match p {
        PortSrc::Imm(n) => u32::from(n),
        PortSrc::Dx => u32::from(regs.rdx as u16),
    };
    let (first, bytes) = match insn.op {
        Op::In { port: p, size } | Op::Out { port: p, size } => (port(p, regs), u32::from(size)),
        Op::Ins { size, .. } | Op::Outs { size, .. } => (port(PortSrc::Dx, regs), u32::from(size)),
        _ => return Emulated::NotEmulated,
    };
    if !io_okay(s, first, bytes) {
        return Emulated::GP0;
    }
    let len = u64::from(insn.len);
    match insn.op {
        Op::In { port: p, size } => {
            let v = u64::from(io_read(s, port(p, regs), size.into()));
            regs.rax = match size {
                1 => (regs.rax & !0xff) | v,
                2 => (regs.rax & !0xffff) | v,
                // A 32-bit register write zero-extends.
                _ => v,
            };
        }
        Op::Out { port: p, size } => {
            let p = port(p, regs);
            io_write(s, p, size.into(), regs.rax as u32);
        }
        Op::Ins { size, rep, addr32 } => return string_io(s, regs, insn, size, rep, addr32, None),
        Op::Outs { size, rep, addr32, seg } => return string_io(s, regs, insn, size, rep, addr32, Some(seg)),
        _ => return Emulated::NotEmulated,
    }
    s.count(EmulKind::PortIo);
    count_port(s, first);
    instruction_done(s, regs, len)
}

/// The first byte of `[va, va + n)` that is not mapped (writable, for `write`), if any.
fn first_unmapped<M: Machine>(s: &Shim<M>, va: u64, n: u64, write: bool) -> Option<u64> {
    let last = va.wrapping_add(n - 1);
    [va, last & !(mm::PAGE_SIZE - 1)]
        .into_iter()
        .map(|p| p.max(va))
        .find(|&p| mm::translate(&s.m, s.cr3(), p, write).is_err())
}

/// `[rep] ins` (`outs_seg` = None: port → ES:rDI) or `[rep] outs` (seg:rSI → port).
fn string_io<M: Machine>(
    s: &mut Shim<M>,
    regs: &mut GuestRegs,
    insn: Decoded,
    size: u8,
    rep: bool,
    addr32: bool,
    outs_seg: Option<StrSeg>,
) -> Emulated {
    let p = u32::from(regs.rdx as u16);
    let n = u64::from(size);
    let amask = if addr32 { 0xffff_ffff } else { u64::MAX };
    let mut count = if rep { regs.rcx & amask } else { 1 };
    let base = match outs_seg {
        Some(StrSeg::Fs) => s.m.read_msr(MSR_FS_BASE),
        Some(StrSeg::Gs) => s.m.read_msr(MSR_GS_BASE),
        Some(StrSeg::Flat) | None => 0,
    };
    let step = if regs.rflags & X86_EFLAGS_DF != 0 { n.wrapping_neg() } else { n };
    let mut done = 0u64;
    while count != 0 && done < REP_CHUNK {
        let index = if outs_seg.is_some() { regs.rsi } else { regs.rdi } & amask;
        let va = base.wrapping_add(index);
        if !mm::guest_range_ok(va, n) {
            return Emulated::GP0;
        }
        let mut buf = [0u8; 4];
        let chunk = &mut buf[..usize::from(size)];
        if outs_seg.is_some() {
            if mm::copy_from_guest(&s.m, s.cr3(), va, chunk).is_err() {
                let addr = first_unmapped(s, va, n, false).unwrap_or(va);
                return Emulated::PageFault { addr, error_code: 0 };
            }
            io_write(s, p, size.into(), u32::from_le_bytes(buf));
            // With a 32-bit address size the index register is written as esi (zero-extended).
            regs.rsi = regs.rsi.wrapping_add(step) & amask;
        } else {
            chunk.copy_from_slice(&io_read(s, p, size.into()).to_le_bytes()[..usize::from(size)]);
            let cr3 = s.cr3();
            if mm::copy_to_guest(&mut s.m, cr3, va, chunk).is_err() {
                let addr = first_unmapped(s, va, n, true).unwrap_or(va);
                return Emulated::PageFault { addr, error_code: super::PFEC_WRITE_ACCESS };
            }
            regs.rdi = regs.rdi.wrapping_add(step) & amask;
        }
        count -= 1;
        done += 1;
        if rep {
            regs.rcx = count;
        }
    }
    s.count(EmulKind::PortIo);
    count_port(s, p);
    if count != 0 {
        // Cut short: rip stays on the instruction, which faults again and goes on.
        return Emulated::Done;
    }
    instruction_done(s, regs, u64::from(insn.len))
}
