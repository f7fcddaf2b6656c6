//! The small hypercalls: multicall, vm_assist, physdev_op, nmi_op, stack_switch,
//! fpu_taskswitch, set_segment_base, set/get_debugreg, and the one MMUEXT operation the PV
//! CPU needs before the PV MMU exists (`MMUEXT_NEW_USER_BASEPTR`).

use crate::hypercall::Args;
use crate::machine::{Machine, MSR_FS_BASE, MSR_GS_BASE, MSR_KERNEL_GS_BASE};
use crate::mm;
use crate::shim::Shim;
use crate::traps::{Callback, TrapEntry};
use xen_abi::hypercall::{HYPERVISOR_IRET, HYPERVISOR_MULTICALL};
use xen_abi::physdev::*;
use xen_abi::xen::*;
use xen_abi::Errno;
use zerocopy::IntoBytes;

/// Multicall entries handled before the multicall continues itself (Xen's preemption check).
const MULTICALL_BATCH: u64 = 64;

/// `VMASST_TYPE_*` a 64-bit PV guest may set (Xen `VM_ASSIST_VALID` for 64-bit PV).
pub const VM_ASSIST_VALID: u64 = (1 << VMASST_TYPE_4GB_SEGMENTS)
    | (1 << VMASST_TYPE_4GB_SEGMENTS_NOTIFY)
    | (1 << VMASST_TYPE_WRITABLE_PAGETABLES)
    | (1 << VMASST_TYPE_PAE_EXTENDED_CR3)
    | (1 << VMASST_TYPE_ARCHITECTURAL_IOPL)
    | (1 << VMASST_TYPE_RUNSTATE_UPDATE_FLAG)
    | (1 << VMASST_TYPE_M2P_STRICT);

/// `HYPERVISOR_multicall(list, nr)`: each entry as if it were its own hypercall, its result
/// written back to the entry. `iret` and nested multicalls are refused per entry (-EINVAL).
pub fn multicall<M: Machine>(s: &mut Shim<M>, a: Args) -> Result<u64, Errno> {
    let (list, nr) = (a.0[0], a.0[1] & 0xffff_ffff);
    let size = core::mem::size_of::<MulticallEntry>() as u64;
    let len = nr.checked_mul(size).ok_or(Errno::EFAULT)?;
    if !mm::guest_range_ok(list, len) {
        return Err(Errno::EFAULT);
    }
    for i in 0..nr {
        if i == MULTICALL_BATCH {
            s.continue_hypercall(HYPERVISOR_MULTICALL, [list + i * size, nr - i, 0, 0, 0, 0]);
            return Ok(0);
        }
        let at = list + i * size;
        let mut e: MulticallEntry = mm::read_guest(&s.m, s.cr3(), at)?;
        e.result = match e.op {
            HYPERVISOR_IRET | HYPERVISOR_MULTICALL => Errno::EINVAL.to_rax(),
            op => match s.dispatch_counted(op, Args(e.args)) {
                Ok(v) => v,
                Err(err) => err.to_rax(),
            },
        };
        if s.is_dead() {
            return Ok(0);
        }
        if let Some((_, args)) = s.take_continuation() {
            // The entry continues itself: keep it (with its advanced arguments) as the first
            // entry of the multicall's own continuation.
            e.args = args;
            s.copy_to_guest(at, e.as_bytes())?;
            s.continue_hypercall(HYPERVISOR_MULTICALL, [at, nr - i, 0, 0, 0, 0]);
            return Ok(0);
        }
        let result_at = at + core::mem::offset_of!(MulticallEntry, result) as u64;
        s.copy_to_guest(result_at, &e.result.to_le_bytes())?;
    }
    Ok(0)
}

/// `HYPERVISOR_vm_assist(cmd, type)`.
pub fn vm_assist<M: Machine>(s: &mut Shim<M>, a: Args) -> Result<u64, Errno> {
    let (cmd, type_) = (a.0[0] & 0xffff_ffff, a.0[1] & 0xffff_ffff);
    if type_ >= 64 || VM_ASSIST_VALID & (1 << type_) == 0 {
        return Err(Errno::EINVAL);
    }
    match cmd as u32 {
        VMASST_CMD_ENABLE => s.vm_assist |= 1 << type_,
        VMASST_CMD_DISABLE => s.vm_assist &= !(1 << type_),
        _ => return Err(Errno::ENOSYS),
    }
    Ok(0)
}

/// `HYPERVISOR_stack_switch(ss, sp)`: the stack used when entering the kernel from user mode.
pub fn stack_switch<M: Machine>(s: &mut Shim<M>, a: Args) -> Result<u64, Errno> {
    s.vcpu.kernel_ss = (a.0[0] as u16) | 3;
    s.vcpu.kernel_sp = a.0[1];
    Ok(0)
}

/// `HYPERVISOR_fpu_taskswitch(set)`: the virtual CR0.TS, mirrored into the real one so the
/// guest's next FPU use raises #NM (lazy FPU).
pub fn fpu_taskswitch<M: Machine>(s: &mut Shim<M>, a: Args) -> Result<u64, Errno> {
    let set = a.0[0] as i32 != 0;
    s.vcpu.virt_ts = set;
    s.m.set_cr0_ts(set);
    Ok(0)
}

/// `HYPERVISOR_set_segment_base(which, base)` (Xen `do_set_segment_base`).
pub fn set_segment_base<M: Machine>(s: &mut Shim<M>, a: Args) -> Result<u64, Errno> {
    let (which, base) = (a.0[0] as u32, a.0[1]);
    match which {
        SEGBASE_FS | SEGBASE_GS_USER | SEGBASE_GS_KERNEL => {
            if !mm::is_canonical(base) {
                return Err(Errno::EINVAL);
            }
            // Hypercalls come from kernel mode, where the active GS is the kernel's.
            let msr = match which {
                SEGBASE_FS => MSR_FS_BASE,
                SEGBASE_GS_USER => MSR_KERNEL_GS_BASE,
                _ => MSR_GS_BASE,
            };
            s.m.write_msr(msr, base);
            Ok(0)
        }
        SEGBASE_GS_USER_SEL => {
            let mut sel = base as u16;
            if sel > 3 {
                sel |= 3;
            }
            // A selector the CPU would refuse loads as null, as Xen's fixup does.
            s.m.load_user_gs_selector(sel);
            Ok(0)
        }
        _ => Err(Errno::EINVAL),
    }
}

const DR_GENERAL_DETECT: u64 = 1 << 13;
const DR7_ACTIVE_MASK: u64 = 0xff;
const DR6_DEFAULT: u64 = 0xffff_0ff0;
const DR7_DEFAULT: u64 = 0x400;
const CR4_DE: u64 = 1 << 3;

/// Xen's `breakpoint_addr_ok`: guest address space only.
fn breakpoint_addr_ok(a: u64) -> bool {
    !((1 << 47)..HYPERVISOR_VIRT_END).contains(&a)
}

/// `HYPERVISOR_set_debugreg(reg, value)` (Xen `set_debugreg`).
pub fn set_debugreg<M: Machine>(s: &mut Shim<M>, a: Args) -> Result<u64, Errno> {
    let (reg, value) = (a.0[0] as i32, a.0[1]);
    let de = s.vcpu.virt_cr4 & CR4_DE != 0;
    match reg {
        0..=3 => {
            if !breakpoint_addr_ok(value) {
                return Err(Errno::EPERM);
            }
            s.vcpu.dr[reg as usize] = value;
            s.m.write_dr(reg as u32, value);
        }
        4 | 6 => {
            if reg == 4 && de {
                return Err(Errno::ENODEV);
            }
            if value >> 32 != 0 {
                return Err(Errno::EINVAL);
            }
            // B0-B3, BD, BS, BT are the guest's; the rest reads as the architectural default.
            let v = (value & 0xe00f) | DR6_DEFAULT;
            s.vcpu.dr[6] = v;
            s.m.write_dr(6, v);
        }
        5 | 7 => {
            if reg == 5 && de {
                return Err(Errno::ENODEV);
            }
            if value >> 32 != 0 {
                return Err(Errno::EINVAL);
            }
            // Bits 11, 12, 14, 15 are reserved-zero, bit 10 reserved-one.
            let mut v = (value & !0xd800) | DR7_DEFAULT;
            if v & DR_GENERAL_DETECT != 0 {
                return Err(Errno::EPERM);
            }
            let mut io_enable = 0;
            if v & DR7_ACTIVE_MASK != 0 {
                for i in 0..4 {
                    // RW field 2 = I/O breakpoint: only with CR4.DE, and emulated, not loaded.
                    if (v >> (16 + 4 * i)) & 3 == 2 {
                        if !de {
                            return Err(Errno::EPERM);
                        }
                        io_enable |= v & (3 << (2 * i));
                    }
                }
            }
            s.vcpu.dr7_emul = io_enable;
            v &= !io_enable;
            s.vcpu.dr[7] = v;
            s.m.write_dr(7, v);
        }
        _ => return Err(Errno::ENODEV),
    }
    Ok(0)
}

/// `HYPERVISOR_get_debugreg(reg)`.
pub fn get_debugreg<M: Machine>(s: &mut Shim<M>, a: Args) -> Result<u64, Errno> {
    let de = s.vcpu.virt_cr4 & CR4_DE != 0;
    match a.0[0] as i32 {
        r @ 0..=3 => Ok(s.vcpu.dr[r as usize]),
        4 if !de => Ok(s.vcpu.dr[6]),
        6 => Ok(s.vcpu.dr[6]),
        5 if !de => Ok(s.vcpu.dr[7] | s.vcpu.dr7_emul),
        7 => Ok(s.vcpu.dr[7] | s.vcpu.dr7_emul),
        _ => Err(Errno::ENODEV),
    }
}

/// `HYPERVISOR_physdev_op(cmd, arg)` as Xen answers a domU without physical devices.
pub fn physdev_op<M: Machine>(s: &mut Shim<M>, a: Args) -> Result<u64, Errno> {
    let arg = a.0[1];
    match a.0[0] {
        PHYSDEVOP_SET_IOPL => {
            let p: PhysdevSetIopl = mm::read_guest(&s.m, s.cr3(), arg)?;
            if p.iopl > 3 {
                return Err(Errno::EINVAL);
            }
            s.vcpu.iopl = p.iopl;
            Ok(0)
        }
        PHYSDEVOP_SET_IOBITMAP => {
            let p: PhysdevSetIobitmap = mm::read_guest(&s.m, s.cr3(), arg)?;
            // Xen's `guest_handle_okay(bitmap, IOBMP_BYTES)`, which checks only where the
            // bitmap starts (`__addr_ok`): canonical and outside the hypervisor hole.
            if !mm::guest_range_ok(p.bitmap, 1) || p.nr_ports > 65536 {
                return Err(Errno::EINVAL);
            }
            s.vcpu.iobitmap = (p.bitmap, p.nr_ports);
            Ok(0)
        }
        PHYSDEVOP_PIRQ_EOI_GMFN_V1 | PHYSDEVOP_PIRQ_EOI_GMFN_V2 => {
            let p: PhysdevPirqEoiGmfn = mm::read_guest(&s.m, s.cr3(), arg)?;
            // A PV guest's gmfn is a machine frame; it must be its own RAM. With no PIRQs the
            // map is never written.
            if !s.own.is_ram(p.gmfn) {
                return Err(Errno::EINVAL);
            }
            Ok(0)
        }
        // The domain has no PIRQs: every IRQ number is out of range.
        PHYSDEVOP_EOI => {
            let _: PhysdevEoi = mm::read_guest(&s.m, s.cr3(), arg)?;
            Err(Errno::EINVAL)
        }
        PHYSDEVOP_IRQ_STATUS_QUERY => {
            let _: PhysdevIrqStatusQuery = mm::read_guest(&s.m, s.cr3(), arg)?;
            Err(Errno::EINVAL)
        }
        // Hardware-domain and device-model operations.
        PHYSDEVOP_APIC_READ
        | PHYSDEVOP_APIC_WRITE
        | PHYSDEVOP_ALLOC_IRQ_VECTOR
        | PHYSDEVOP_FREE_IRQ_VECTOR
        | PHYSDEVOP_MAP_PIRQ
        | PHYSDEVOP_UNMAP_PIRQ
        | PHYSDEVOP_MANAGE_PCI_ADD
        | PHYSDEVOP_MANAGE_PCI_REMOVE
        | PHYSDEVOP_RESTORE_MSI
        | PHYSDEVOP_MANAGE_PCI_ADD_EXT
        | PHYSDEVOP_SETUP_GSI
        | PHYSDEVOP_PCI_MMCFG_RESERVED
        | PHYSDEVOP_PCI_DEVICE_ADD
        | PHYSDEVOP_PCI_DEVICE_REMOVE
        | PHYSDEVOP_RESTORE_MSI_EXT
        | PHYSDEVOP_PREPARE_MSIX
        | PHYSDEVOP_RELEASE_MSIX
        | PHYSDEVOP_DBGP_OP
        | PHYSDEVOP_PCI_DEVICE_RESET
        | PHYSDEVOP_GET_FREE_PIRQ => Err(Errno::EPERM),
        _ => Err(Errno::ENOSYS),
    }
}

/// `HYPERVISOR_nmi_op(cmd, arg)`: the NMI callback lives in the virtual IDT's vector 2.
pub fn nmi_op<M: Machine>(s: &mut Shim<M>, a: Args) -> Result<u64, Errno> {
    match a.0[0] {
        XENNMI_REGISTER_CALLBACK => {
            let cb: XennmiCallback = mm::read_guest(&s.m, s.cr3(), a.0[1])?;
            if !mm::is_canonical(cb.handler_address) {
                return Err(Errno::EINVAL);
            }
            s.vcpu.traps.table[2] =
                TrapEntry { flags: TI_SET_IF, cs: FLAT_KERNEL_CS, address: cb.handler_address };
            s.vcpu.traps.nmi = Callback { address: cb.handler_address, mask_events: true };
            Ok(0)
        }
        XENNMI_UNREGISTER_CALLBACK => {
            s.vcpu.traps.table[2] = TrapEntry::default();
            s.vcpu.traps.nmi = Callback::default();
            Ok(0)
        }
        _ => Err(Errno::ENOSYS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::tests::{put, shim, ARG, UNMAPPED};
    use crate::testutil::GUEST_VA;

    fn physdev<T: IntoBytes + zerocopy::Immutable>(
        s: &mut Shim<crate::testutil::MockMachine>,
        cmd: u64,
        arg: &T,
    ) -> Result<u64, Errno> {
        put(s, ARG, arg);
        physdev_op(s, Args([cmd, ARG, 0, 0, 0, 0]))
    }

    #[test]
    fn set_iopl_takes_levels_0_to_3() {
        let mut s = shim();
        assert_eq!(physdev(&mut s, PHYSDEVOP_SET_IOPL, &PhysdevSetIopl { iopl: 3 }), Ok(0));
        assert_eq!(s.vcpu.iopl, 3);
        assert_eq!(physdev(&mut s, PHYSDEVOP_SET_IOPL, &PhysdevSetIopl { iopl: 4 }), Err(Errno::EINVAL));
        assert_eq!(s.vcpu.iopl, 3, "a refused level changes nothing");
        assert_eq!(physdev_op(&mut s, Args([PHYSDEVOP_SET_IOPL, UNMAPPED, 0, 0, 0, 0])), Err(Errno::EFAULT));
    }

    #[test]
    fn set_iobitmap_refuses_bitmaps_in_the_hole_or_non_canonical() {
        let mut s = shim();
        let set = |s: &mut Shim<_>, bitmap: u64, nr_ports: u32| {
            physdev(s, PHYSDEVOP_SET_IOBITMAP, &PhysdevSetIobitmap { bitmap, nr_ports, _pad: 0 })
        };
        assert_eq!(set(&mut s, GUEST_VA, 0x100), Ok(0));
        assert_eq!(s.vcpu.iobitmap, (GUEST_VA, 0x100));
        // Only the start is checked, as Xen does: a bitmap may run to the top of the lower half.
        assert_eq!(set(&mut s, 0x7fff_ffff_f000, 8), Ok(0));
        for bad in [
            xen_abi::xen::HYPERVISOR_VIRT_START,
            xen_abi::xen::HYPERVISOR_VIRT_END - 1,
            0x0000_8000_0000_0000,
        ] {
            assert_eq!(set(&mut s, bad, 0x100), Err(Errno::EINVAL), "{bad:#x}");
        }
        assert_eq!(set(&mut s, GUEST_VA, 65537), Err(Errno::EINVAL));
        assert_eq!(s.vcpu.iobitmap, (0x7fff_ffff_f000, 8), "refusals change nothing");
        assert_eq!(set(&mut s, xen_abi::xen::HYPERVISOR_VIRT_END, 65536), Ok(0));
    }

    #[test]
    fn device_ops_are_eperm_and_unknown_ones_enosys() {
        let mut s = shim();
        // 29 is PHYSDEVOP_dbgp_op in Xen's headers; 32 (pci_device_reset) is Xen 4.20's.
        for cmd in [PHYSDEVOP_MAP_PIRQ, PHYSDEVOP_DBGP_OP, 29, PHYSDEVOP_PCI_DEVICE_RESET] {
            assert_eq!(physdev_op(&mut s, Args([cmd, ARG, 0, 0, 0, 0])), Err(Errno::EPERM), "{cmd}");
        }
        for cmd in [PHYSDEVOP_IRQ_UNMASK_NOTIFY, 22, 33, 1 << 32] {
            assert_eq!(physdev_op(&mut s, Args([cmd, ARG, 0, 0, 0, 0])), Err(Errno::ENOSYS), "{cmd}");
        }
    }
}
