//! The domain as the shim runs it: boot, the hypercall door, exceptions, and crashing the
//! domain the way Xen does when the guest leaves it no choice.

use crate::guest::{GuestRegs, Vcpu};
use crate::machine::Machine;
use crate::mm::frames::PageType;
use crate::mm::{self, Ownership};
use xen_abi::hostcall::{
    BootInfo, FatalReport, BOOT_INFO_MAGIC, FATAL_MODE_GUEST_KERNEL, FATAL_MODE_GUEST_USER, FATAL_NO_VECTOR,
    HC_DOMAIN_CRASH, HOSTCALL_VERSION,
};
use xen_abi::xen::{FLAT_KERNEL_CS, FLAT_KERNEL_SS, HYPERVISOR_L4_FIRST, HYPERVISOR_L4_LAST};
use xen_abi::Errno;
use zerocopy::{FromZeros, IntoBytes};

/// What the entry code does after the shim handled a trap or hypercall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Return to the guest with the (possibly updated) register frame.
    Resume,
    /// The domain is gone (shut down or crashed); the VMM has been told. Never resume it.
    Dead,
}

/// Why the shim could not start the domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootError {
    BadMagic,
    VersionMismatch {
        vmm: u32,
        shim: u32,
    },
    /// The builder's page tables do not validate.
    InitialTables(Errno),
}

/// Hypervisor-hole entries of the shim's own L4 (slots 256..=271).
pub type HoleEntries = [u64; HYPERVISOR_L4_LAST - HYPERVISOR_L4_FIRST + 1];

/// One PV domain (one vCPU so far) and the machine it runs on.
pub struct Shim<M: Machine> {
    pub m: M,
    pub boot: BootInfo,
    pub own: Ownership,
    pub vcpu: Vcpu,
    /// Event channels of the domain (`event`).
    pub ev: crate::event::EventChannels,
    /// Domain-wide time (`time`).
    pub time: crate::time::DomainTime,
    /// The grant table (`grant`).
    pub gnttab: crate::grant::GrantTable,
    /// Enabled `VMASST_TYPE_*` bits (`vm_assist`).
    pub vm_assist: u64,
    /// The domain's memory reservation (`mm::memory_op`).
    pub mem: crate::mm::memory_op::Reservation,
    /// `SCHEDOP_shutdown_code`: the reason the domain's shutdown will report (Xen's
    /// `d->shutdown_code`; the first one set wins).
    pub shutdown_code: Option<u8>,
    /// The shim's hypervisor-hole L4 entries, written into every guest L4 it adopts.
    pub hole: HoleEntries,
    /// A frame lost a type since the last full TLB flush (see `mm::types`).
    pub tlb_stale: bool,
    /// Set by a handler that stopped early to continue itself (Xen's
    /// `hypercall_create_continuation`): the hypercall and its new arguments.
    continuation: Option<(u64, [u64; 6])>,
    dead: bool,
}

impl<M: Machine> Shim<M> {
    /// Checks the VMM's boot information; nothing is touched yet.
    pub fn new(m: M, boot: BootInfo) -> Result<Shim<M>, BootError> {
        if boot.magic != BOOT_INFO_MAGIC {
            return Err(BootError::BadMagic);
        }
        if boot.version != HOSTCALL_VERSION {
            return Err(BootError::VersionMismatch { vmm: boot.version, shim: HOSTCALL_VERSION });
        }
        let own = Ownership::from_boot(&boot);
        let vcpu = Vcpu::new(0, boot.guest_l4_mfn << 12, boot.shared_info_mfn << 12);
        let ev = crate::event::EventChannels::new(&boot);
        let time = crate::time::DomainTime::new(&boot);
        let gnttab = crate::grant::GrantTable::new(&boot);
        Ok(Shim {
            m,
            boot,
            own,
            vcpu,
            ev,
            time,
            gnttab,
            vm_assist: 0,
            mem: crate::mm::memory_op::Reservation::from_boot(&boot),
            shutdown_code: None,
            hole: [0; 16],
            tlb_stale: false,
            continuation: None,
            dead: false,
        })
    }

    /// Adopts the initial page tables and returns vCPU 0's first guest frame
    /// (xen-pv-contract.md §2.9): guest kernel mode at the ENTRY note, `rsi` = start_info.
    pub fn boot_domain(&mut self, hole: &HoleEntries) -> Result<GuestRegs, BootError> {
        self.hole = *hole;
        // The builder's L4, validated, pinned (as libxc pins it) and the kernel base pointer.
        let l4 = self.boot.guest_l4_mfn;
        self.pin_table(l4, PageType::L4).map_err(BootError::InitialTables)?;
        self.get_page_and_type(l4, PageType::L4).map_err(BootError::InitialTables)?;
        self.vcpu.guest_table = l4 << 12;
        self.init_time();
        Ok(GuestRegs {
            rip: self.boot.guest_rip,
            rsp: self.boot.guest_rsp,
            rsi: self.boot.guest_rsi,
            cs: u64::from(FLAT_KERNEL_CS),
            ss: u64::from(FLAT_KERNEL_SS),
            // Hardware IF is always 1 while the guest runs; its virtual IF is the upcall mask.
            rflags: 0x202,
            ..GuestRegs::default()
        })
    }

    pub fn is_dead(&self) -> bool {
        self.dead
    }

    /// The one door to the VMM: every hostcall is a VM exit, so every one is counted here.
    pub fn hostcall(&mut self, nr: u32, args: [u64; 5], data: &[u8]) -> i64 {
        self.m.stats().hostcalls += 1;
        self.m.hostcall(nr, args, data)
    }

    /// Makes the running hypercall continue itself: the guest re-executes it with `args`.
    pub fn continue_hypercall(&mut self, nr: u64, args: [u64; 6]) {
        self.continuation = Some((nr, args));
    }

    pub(crate) fn take_continuation(&mut self) -> Option<(u64, [u64; 6])> {
        self.continuation.take()
    }

    /// Marks the domain dead after a hostcall that ended it.
    pub(crate) fn set_dead(&mut self) {
        self.dead = true;
    }

    /// Copies `bytes` to guest virtual `va` through the current page tables.
    pub fn copy_to_guest(&mut self, va: u64, bytes: &[u8]) -> Result<(), xen_abi::Errno> {
        let cr3 = self.cr3();
        mm::copy_to_guest(&mut self.m, cr3, va, bytes)
    }

    /// The L4 (machine address) that guest pointers are translated through now.
    pub fn cr3(&self) -> u64 {
        self.vcpu.current_cr3()
    }

    /// Xen's `domain_crash`: tell the VMM why, with the guest's registers, and stop.
    pub fn crash_domain(
        &mut self,
        regs: &GuestRegs,
        cr2: u64,
        vector: u32,
        why: core::fmt::Arguments,
    ) -> Outcome {
        let mut r = FatalReport::new_zeroed();
        r.vector = vector;
        r.mode = if self.vcpu.kernel_mode { FATAL_MODE_GUEST_KERNEL } else { FATAL_MODE_GUEST_USER };
        r.error_code = if vector == FATAL_NO_VECTOR { 0 } else { regs.error_code };
        r.regs = regs.to_report(cr2, self.cr3());
        let mut w = crate::console::ByteWriter::new(&mut r.message);
        let _ = core::fmt::write(&mut w, why);
        self.hostcall(HC_DOMAIN_CRASH, [0; 5], r.as_bytes());
        self.dead = true;
        Outcome::Dead
    }
}

/// The mnemonic of exception `vector`.
pub fn exception_name(vector: u32) -> &'static str {
    const NAMES: [&str; 32] = [
        "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "#CSO", "#TS", "#NP", "#SS", "#GP",
        "#PF", "#15", "#MF", "#AC", "#MC", "#XM", "#VE", "#CP", "#22", "#23", "#24", "#25", "#26", "#27",
        "#HV", "#VC", "#SX", "#31",
    ];
    NAMES.get(vector as usize).copied().unwrap_or("interrupt")
}
