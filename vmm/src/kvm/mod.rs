//! KVM: opening a usable `/dev/kvm`, creating the VM and its vCPU in long mode at the shim's
//! entry, and reading KVM's own per-vCPU statistics (every VM exit, including those KVM
//! handles in the kernel). The only module of the crate that may use `unsafe`.
//!
//! Event-channel notifications cross between the shim and the VMM inside KVM (see
//! `crate::events`): an ioeventfd on [`DOORBELL_PORT`] wakes the event thread without an exit
//! to userspace, and an irqfd whose GSI KVM routes as an MSI to vCPU 0's local APIC raises
//! [`VECTOR_HOST_EVENT`] in the shim.

pub mod cpuid;
pub mod interrupt;
pub mod stats;

use kvm_bindings::{
    kvm_irq_routing_entry, kvm_irq_routing_entry__bindgen_ty_1, kvm_irq_routing_msi, kvm_segment,
    kvm_userspace_memory_region, KvmIrqRouting, KVM_IRQ_ROUTING_MSI, KVM_MAX_CPUID_ENTRIES,
};
use kvm_ioctls::{IoEventAddress, Kvm, NoDatamatch, VcpuFd, VmFd};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use xen_abi::hostcall::{DIRECT_DOORBELL_PORT, DOORBELL_PORT, LAPIC_PHYS, VECTOR_HOST_EVENT};

#[derive(Debug, thiserror::Error)]
pub enum KvmError {
    #[error("no /dev/kvm on this machine: load kvm_intel or kvm_amd, or run inside the nested test host (scripts/nested-host xenvmm ...)")]
    Missing,
    #[error("cannot open /dev/kvm: permission denied (add your user to the 'kvm' group)")]
    Permission,
    #[error("this /dev/kvm is KVM-PVM, which has no hardware virtualization and cannot run the PV shim; run xenvmm inside the nested test host (scripts/nested-host xenvmm ...)")]
    Pvm,
    #[error("cannot open /dev/kvm: {0}")]
    Open(#[source] kvm_ioctls::Error),
    #[error("KVM {what} failed: {source}")]
    Ioctl { what: &'static str, source: kvm_ioctls::Error },
    #[error("cannot create an eventfd: {0}")]
    EventFd(#[source] std::io::Error),
}

fn ioctl<T>(what: &'static str, r: Result<T, kvm_ioctls::Error>) -> Result<T, KvmError> {
    r.map_err(|source| KvmError::Ioctl { what, source })
}

/// What kind of KVM backs `/dev/kvm`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvmFlavour {
    /// Intel VMX or AMD SVM: what xenvmm runs on.
    Hardware,
    /// KVM-PVM: no hardware virtualization; ring 0 runs through the instruction emulator and
    /// the top 2 GiB of the address space are unusable.
    Pvm,
    /// Neither module is visible (e.g. no sysfs); assume hardware and let KVM fail if not.
    Unknown,
}

pub fn flavour() -> KvmFlavour {
    let has = |m: &str| std::path::Path::new("/sys/module").join(m).exists();
    if has("kvm_intel") || has("kvm_amd") {
        KvmFlavour::Hardware
    } else if has("kvm_pvm") {
        KvmFlavour::Pvm
    } else {
        KvmFlavour::Unknown
    }
}

/// Opens `/dev/kvm` and checks that it can run the shim.
pub fn open() -> Result<Kvm, KvmError> {
    if flavour() == KvmFlavour::Pvm {
        return Err(KvmError::Pvm);
    }
    Kvm::new().map_err(|e| match e.errno() {
        libc::ENOENT | libc::ENODEV | libc::ENXIO => KvmError::Missing,
        libc::EACCES | libc::EPERM => KvmError::Permission,
        _ => KvmError::Open(e),
    })
}

/// The GSI whose (only) route KVM turns into the host-event MSI.
pub const HOST_EVENT_GSI: u32 = 0;

/// The eventfds KVM signals or listens to for event-channel notifications.
#[derive(Debug)]
pub struct EventFds {
    /// Signalled by KVM when the shim writes [`DOORBELL_PORT`] (ioeventfd).
    pub doorbell: EventFd,
    /// Written by the VMM to raise [`VECTOR_HOST_EVENT`] on vCPU 0 (irqfd).
    pub irq: EventFd,
}

/// A VM with its memory registered.
pub struct Vm {
    pub kvm: Kvm,
    pub fd: VmFd,
    /// One past the highest guest-physical (= machine) address: the PV CPUID policy reports
    /// its width.
    mem_end: u64,
}

impl Vm {
    pub fn new(kvm: Kvm, mem: &GuestMemoryMmap) -> Result<Vm, KvmError> {
        let fd = ioctl("KVM_CREATE_VM", kvm.create_vm())?;
        // The in-kernel local APIC gives the shim its timer and the irqfd MSIs; the PIC and
        // IOAPIC that come with it stay unused (their inputs are never routed).
        ioctl("KVM_CREATE_IRQCHIP", fd.create_irq_chip())?;
        for (slot, region) in mem.iter().enumerate() {
            let r = kvm_userspace_memory_region {
                slot: slot as u32,
                flags: 0,
                guest_phys_addr: region.start_addr().0,
                memory_size: region.len(),
                userspace_addr: region.as_ptr() as u64,
            };
            // SAFETY: the region is a live mapping owned by `mem`, which the caller keeps alive
            // for as long as the VM exists (both live in `Domain`), and slots do not overlap.
            ioctl("KVM_SET_USER_MEMORY_REGION", unsafe { fd.set_user_memory_region(r) })?;
        }
        let mem_end = mem.iter().map(|r| r.start_addr().0 + r.len()).max().unwrap_or(0);
        Ok(Vm { kvm, fd, mem_end })
    }

    /// Connects the event-channel notifications: routes [`HOST_EVENT_GSI`] as an edge-triggered,
    /// fixed-delivery MSI for [`VECTOR_HOST_EVENT`] to the local APIC with id 0 (replacing the
    /// default PIC/IOAPIC routes, which nothing uses), attaches an irqfd to it, and registers an
    /// ioeventfd for writes of any width to [`DOORBELL_PORT`] (no datamatch: the port number is
    /// in the mailbox, not in the written value).
    pub fn connect_events(&self) -> Result<EventFds, KvmError> {
        let doorbell = EventFd::new(EFD_NONBLOCK).map_err(KvmError::EventFd)?;
        let irq = EventFd::new(EFD_NONBLOCK).map_err(KvmError::EventFd)?;
        let mut routing = KvmIrqRouting::new(1).map_err(|_| KvmError::Ioctl {
            what: "KVM_SET_GSI_ROUTING",
            source: kvm_ioctls::Error::new(libc::ENOMEM),
        })?;
        routing.as_mut_slice()[0] = kvm_irq_routing_entry {
            gsi: HOST_EVENT_GSI,
            type_: KVM_IRQ_ROUTING_MSI,
            u: kvm_irq_routing_entry__bindgen_ty_1 {
                msi: kvm_irq_routing_msi {
                    // Destination APIC id 0 (bits 19:12), physical mode, no redirection hint.
                    address_lo: LAPIC_PHYS as u32,
                    address_hi: 0,
                    // Vector in bits 7:0; delivery mode 000 (fixed), edge (bit 15 clear).
                    data: u32::from(VECTOR_HOST_EVENT),
                    ..Default::default()
                },
            },
            ..Default::default()
        };
        ioctl("KVM_SET_GSI_ROUTING", self.fd.set_gsi_routing(&routing))?;
        ioctl("KVM_IRQFD", self.fd.register_irqfd(&irq, HOST_EVENT_GSI))?;
        ioctl(
            "KVM_IOEVENTFD",
            self.fd.register_ioevent(&doorbell, &IoEventAddress::Pio(u64::from(DOORBELL_PORT)), NoDatamatch),
        )?;
        Ok(EventFds { doorbell, irq })
    }

    /// Makes KVM signal `fd` when the shim writes guest port `port` to
    /// [`DIRECT_DOORBELL_PORT`] (an ioeventfd with the port as its 32-bit datamatch).
    pub fn register_port_doorbell(&self, port: u32, fd: &EventFd) -> Result<(), KvmError> {
        ioctl(
            "KVM_IOEVENTFD",
            self.fd.register_ioevent(fd, &IoEventAddress::Pio(u64::from(DIRECT_DOORBELL_PORT)), port),
        )
    }

    /// Undoes [`Vm::register_port_doorbell`].
    pub fn unregister_port_doorbell(&self, port: u32, fd: &EventFd) -> Result<(), KvmError> {
        ioctl(
            "KVM_IOEVENTFD (deassign)",
            self.fd.unregister_ioevent(fd, &IoEventAddress::Pio(u64::from(DIRECT_DOORBELL_PORT)), port),
        )
    }

    /// Creates vCPU `id` in 64-bit mode on the shim's page tables at `entry`, with `rdi` as the
    /// shim's argument.
    pub fn create_vcpu(&self, id: u64, entry: u64, rdi: u64, cr3: u64) -> Result<VcpuFd, KvmError> {
        let vcpu = ioctl("KVM_CREATE_VCPU", self.fd.create_vcpu(id))?;
        let supported =
            ioctl("KVM_GET_SUPPORTED_CPUID", self.kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES))?;
        // As api.rs: a KVM without KVM_GET_TSC_KHZ reports 0 kHz rather than failing.
        let tsc_khz = vcpu.get_tsc_khz().unwrap_or(0);
        ioctl("KVM_SET_CPUID2", vcpu.set_cpuid2(&cpuid::pv_cpuid(&supported, tsc_khz, self.mem_end)))?;

        let mut s = ioctl("KVM_GET_SREGS", vcpu.get_sregs())?;
        let code = kvm_segment {
            base: 0,
            limit: 0xffff_ffff,
            selector: 0xe008,
            type_: 0xb,
            present: 1,
            dpl: 0,
            db: 0,
            s: 1,
            l: 1,
            g: 1,
            avl: 0,
            unusable: 0,
            padding: 0,
        };
        let data = kvm_segment { selector: 0xe010, type_: 0x3, l: 0, db: 1, ..code };
        let null = kvm_segment { selector: 0, ..data };
        s.cs = code;
        s.ds = data;
        s.es = data;
        s.ss = data;
        s.fs = null;
        s.gs = null;
        s.tr = kvm_segment { selector: 0, type_: 0xb, s: 0, l: 0, db: 0, g: 0, limit: 0x67, ..code };
        s.gdt.base = 0;
        s.gdt.limit = 0;
        s.idt.base = 0;
        s.idt.limit = 0;
        const CR0_PE: u64 = 1;
        const CR0_MP: u64 = 1 << 1;
        const CR0_ET: u64 = 1 << 4;
        const CR0_NE: u64 = 1 << 5;
        const CR0_WP: u64 = 1 << 16;
        const CR0_PG: u64 = 1 << 31;
        const CR4_PAE: u64 = 1 << 5;
        const CR4_OSFXSR: u64 = 1 << 9;
        const CR4_OSXMMEXCPT: u64 = 1 << 10;
        const EFER_SCE: u64 = 1;
        const EFER_LME: u64 = 1 << 8;
        const EFER_LMA: u64 = 1 << 10;
        const EFER_NXE: u64 = 1 << 11;
        s.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
        s.cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT;
        s.cr3 = cr3;
        s.efer = EFER_SCE | EFER_LME | EFER_LMA | EFER_NXE;
        ioctl("KVM_SET_SREGS", vcpu.set_sregs(&s))?;

        let mut r = ioctl("KVM_GET_REGS", vcpu.get_regs())?;
        r.rip = entry;
        r.rdi = rdi;
        r.rsp = 0;
        r.rflags = 2;
        ioctl("KVM_SET_REGS", vcpu.set_regs(&r))?;
        Ok(vcpu)
    }
}
