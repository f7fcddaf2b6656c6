//! xenvmm's private, versioned shim<->VMM protocol. Not part of Xen's ABI.
//!
//! ```text
//!  VMM (host)                                   shim (ring 0 in the KVM VM)
//!  ──────────                                   ───────────────────────────
//!  writes BootInfo at a GPA, enters the shim
//!  in long mode with rdi = its direct-map VA ──► checks magic/version, sets up CPU, runs guest
//!                                               rare control requests: fills its vCPU's
//!  KVM_EXIT_IO on HOSTCALL_PORT (value = vCPU) ◄── HostcallPage, then `out HOSTCALL_PORT, eax`
//!  reads the page, acts, writes `ret`  ───────► continues after the `out`
//! ```
//!
//! Hot paths (hypercalls, exceptions, events) never use this; only console_io, shutdown,
//! fatal errors and similar rare requests do. All multi-byte fields are little-endian and every
//! struct is plain data, so either side reads it with a bounds-checked copy.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Bumped whenever any struct or number in this module changes meaning.
pub const HOSTCALL_VERSION: u32 = 6;
/// `BootInfo::magic`: "XENVMMBI".
pub const BOOT_INFO_MAGIC: u64 = u64::from_le_bytes(*b"XENVMMBI");

/// The I/O port the shim writes its vCPU index to, to make a hostcall.
pub const HOSTCALL_PORT: u16 = 0x0510;

// ---- The shim's virtual layout, inside Xen's hypervisor hole (L4 slots 256..=271) ----
/// L4 slot 256: Xen's read-only M2P (`MACH2PHYS_VIRT_START`), user-readable.
pub const M2P_L4_SLOT: usize = 256;
/// L4 slot 260: the shim's image (text, data, bss), supervisor-only.
pub const SHIM_IMAGE_L4_SLOT: usize = 260;
pub const SHIM_IMAGE_BASE: u64 = 0xffff_8200_0000_0000;
/// L4 slot 261: device MMIO the shim drives (the local APIC page at [`LAPIC_VIRT`]),
/// supervisor-only, no-execute, uncached.
pub const MMIO_L4_SLOT: usize = 261;
pub const MMIO_BASE: u64 = 0xffff_8280_0000_0000;
/// Where the shim sees the local APIC (guest-physical [`LAPIC_PHYS`]).
pub const LAPIC_VIRT: u64 = MMIO_BASE;
pub const LAPIC_PHYS: u64 = 0xfee0_0000;
/// L4 slot 262: all guest-physical (= machine) memory, supervisor-only, no-execute.
pub const DIRECTMAP_L4_SLOT: usize = 262;
pub const DIRECTMAP_BASE: u64 = 0xffff_8300_0000_0000;
/// How much machine memory the direct map can cover (one L4 slot).
pub const DIRECTMAP_SIZE: u64 = 1 << 39;

/// The I/O port the shim writes to after posting ports in [`EventMailbox::to_host`]. The VMM
/// registers it with KVM_IOEVENTFD, so the write wakes the VMM's event thread inside KVM
/// without a userspace exit on the vCPU.
pub const DOORBELL_PORT: u16 = 0x0512;

/// The I/O port the shim writes a guest port number to (a 32-bit `out`) when that port is
/// set in [`EventMailbox::direct`]. The VMM registers one KVM_IOEVENTFD per such port with
/// the port number as datamatch, so the notification wakes exactly the thread that serves the
/// port (a block ring's worker), inside KVM and without going through the event thread. A
/// write that matches no registration (a port the VMM is just unbinding) exits to the VMM,
/// which treats it as a mailbox notification.
pub const DIRECT_DOORBELL_PORT: u16 = 0x0514;

/// Interrupt vectors the shim programs. The VMM's irqfd raises [`VECTOR_HOST_EVENT`] as an MSI
/// to vCPU 0's local APIC (KVM GSI routing); the shim's LAPIC one-shot timer uses
/// [`VECTOR_TIMER`]; [`VECTOR_SPURIOUS`] is the LAPIC's spurious vector.
pub const VECTOR_HOST_EVENT: u8 = 0xf0;
pub const VECTOR_TIMER: u8 = 0xf1;
pub const VECTOR_SPURIOUS: u8 = 0xff;

/// Event-channel ports the 2-level ABI has (`EVTCHN_2L_NR_CHANNELS`), as mailbox words.
pub const MAILBOX_WORDS: usize = 64;

/// The page through which event-channel notifications cross between the shim and the VMM
/// (host = Xen's domain 0). Bits are indexed by the *guest's* port number. Both sides only
/// ever use atomic read-modify-write on these words.
///
/// ```text
///  guest EVTCHNOP_send(p), p bound to dom0 ─► shim: to_host[p] |= bit; out DOORBELL_PORT
///                                             └► KVM ioeventfd ─► VMM event thread: swap words
///    … and p set in `direct`                 ─► shim: out DIRECT_DOORBELL_PORT, p (32 bits)
///                                             └► KVM ioeventfd (datamatch p) ─► p's own thread
///  VMM: to_guest[p] |= bit; write irqfd ─► MSI VECTOR_HOST_EVENT ─► shim: swap words, mark
///                                             each port pending as EVTCHNOP_send would
/// ```
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct EventMailbox {
    /// Ports the guest notified, for the VMM (set by the shim, cleared by the VMM).
    pub to_host: [u64; MAILBOX_WORDS],
    /// Ports the VMM raised, for the guest (set by the VMM, cleared by the shim).
    pub to_guest: [u64; MAILBOX_WORDS],
    /// Ports the VMM serves through their own ioeventfd on [`DIRECT_DOORBELL_PORT`] (set and
    /// cleared by the VMM, read by the shim on every send to domain 0).
    pub direct: [u64; MAILBOX_WORDS],
}

/// Most ports the VMM binds before boot (console, xenstore, test ports).
pub const MAX_HOST_PORTS: usize = 8;

/// A guest port the VMM (as domain 0) has bound before boot: Xen's toolstack allocates these
/// with `EVTCHNOP_alloc_unbound` and the daemons bind to them, so the guest finds them
/// already interdomain-bound to domain 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct HostPort {
    /// The guest's port number.
    pub port: u32,
    /// The VMM's (domain 0's) port number at the other end.
    pub remote_port: u32,
}

/// Most vCPUs the boot protocol describes.
pub const MAX_VCPUS: usize = 32;
/// Most distinct machine-frame ranges of guest RAM.
pub const MAX_RAM_RANGES: usize = 8;

/// A range of machine frames.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct MfnRange {
    pub first_mfn: u64,
    pub nr_frames: u64,
}

impl MfnRange {
    pub fn contains(&self, mfn: u64) -> bool {
        mfn >= self.first_mfn && mfn - self.first_mfn < self.nr_frames
    }
}

/// What the VMM tells the shim at boot. Lives in one page of shim memory.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct BootInfo {
    pub magic: u64,
    pub version: u32,
    pub nr_vcpus: u32,
    /// One past the highest machine frame that exists (RAM of the guest and of the shim).
    pub max_mfn: u64,
    /// Frames the shim may use for its own page tables and per-vCPU data.
    pub shim_free: MfnRange,
    /// Frames holding the M2P array (`max_mfn` u64 entries), already filled by the VMM.
    pub m2p: MfnRange,
    /// Frames of the shim's frame table (`max_mfn` u64 words, zeroed by the VMM): page
    /// types and reference counts of the PV MMU.
    pub frame_table: MfnRange,
    /// The domain's RAM, as machine frames (what the P2M maps to).
    pub ram: [MfnRange; MAX_RAM_RANGES],
    pub nr_ram_ranges: u32,
    pub _pad0: u32,
    /// Machine frame of shared_info (outside the domain's RAM, guest-mappable).
    pub shared_info_mfn: u64,
    /// Machine frame of each vCPU's hostcall page.
    pub hostcall_mfn: [u64; MAX_VCPUS],
    /// Machine frame of the statistics page (`ShimStats`).
    pub stats_mfn: u64,
    /// Initial state of vCPU 0 (xen-pv-contract.md §2.9).
    pub guest_l4_mfn: u64,
    pub guest_rip: u64,
    pub guest_rsp: u64,
    pub guest_rsi: u64,
    /// TSC frequency in kHz as KVM runs the vCPU.
    pub tsc_khz: u64,
    /// Host wall-clock time at VM creation (UNIX seconds, nanoseconds).
    pub wallclock_sec: u64,
    pub wallclock_nsec: u32,
    /// The domain's id (Xen's domid; 0 is the VMM).
    pub domid: u16,
    pub _pad1: u16,
    /// Frequency of the local APIC timer in Hz (KVM: 1 GHz bus, divide-by-1).
    pub lapic_timer_hz: u64,
    /// Machine frame of the [`EventMailbox`].
    pub mailbox_mfn: u64,
    /// Ports bound to the VMM before boot (`nr_host_ports` valid entries).
    pub host_ports: [HostPort; MAX_HOST_PORTS],
    pub nr_host_ports: u32,
    /// Domain-0 ports the VMM left unbound for this domain: the guest may
    /// `EVTCHNOP_bind_interdomain` to them (`nr_host_unbound` valid entries).
    pub nr_host_unbound: u32,
    pub host_unbound: [u32; MAX_HOST_PORTS],
    /// The domain's grant-table frames (Xen's `max_grant_frames`, zeroed by the VMM): outside
    /// its RAM, guest-mappable once `GNTTABOP_setup_table` has handed them out.
    pub grant_frames: MfnRange,
}

// ---- Hostcalls ----
/// Write `args[0]` bytes from `data` to the guest console (console_io).
pub const HC_CONSOLE_WRITE: u32 = 1;
/// The domain shut down: `args[0]` = Xen shutdown reason (sched_op). Does not return.
pub const HC_SHUTDOWN: u32 = 2;
/// The domain was killed by the shim (Xen's "domain_crash"): `data` holds a `FatalReport`.
/// Does not return.
pub const HC_DOMAIN_CRASH: u32 = 3;
/// The shim itself failed (a bug in xenvmm): `data` holds a `FatalReport`. Does not return.
pub const HC_SHIM_PANIC: u32 = 4;
/// A log line from the shim: `args[0]` = length of the text in `data`.
pub const HC_LOG: u32 = 5;
/// The domain gave frames back (`XENMEM_decrease_reservation`): `data` holds `args[0]`
/// [`MfnRange`]s (at most [`RELEASE_RANGES_MAX`]) of the domain's RAM that nothing maps any
/// more. The VMM drops its memory behind them (`madvise(MADV_DONTNEED)`). An answer of 0
/// promises that every frame named reads as zeros from now on; on any other answer the shim
/// zeroes them itself.
pub const HC_RELEASE_FRAMES: u32 = 6;
/// The guest's XCR0 is now `args[0]` (a validated `xsetbv` the shim executed). KVM keeps its
/// own copy of the guest's XCR0 and loads it on every VM entry; a CPU that lets the shim's
/// `xsetbv` through without a KVM intercept (QEMU TCG's nested SVM) leaves that copy stale,
/// and the value would revert at the next VM exit. The VMM sets KVM's copy (`KVM_SET_XCRS`).
pub const HC_SET_XCR0: u32 = 7;
/// Most ranges one [`HC_RELEASE_FRAMES`] carries.
pub const RELEASE_RANGES_MAX: usize = HOSTCALL_DATA_SIZE / core::mem::size_of::<MfnRange>();

/// Bytes of payload in a hostcall page.
pub const HOSTCALL_DATA_SIZE: usize = 4096 - 64;

/// One vCPU's hostcall page.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct HostcallPage {
    pub nr: u32,
    pub _pad: u32,
    pub args: [u64; 5],
    pub ret: i64,
    pub data: [u8; HOSTCALL_DATA_SIZE],
}

/// Why the shim gave up on a domain or on itself; carried in `HostcallPage::data`.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct FatalReport {
    /// Exception vector, or `u32::MAX` when the cause is not an exception.
    pub vector: u32,
    /// 1 when the guest was in guest-kernel mode, 0 in guest-user mode, 2 in the shim.
    pub mode: u32,
    pub error_code: u64,
    pub regs: CpuRegs,
    /// NUL-padded explanation.
    pub message: [u8; 256],
}

pub const FATAL_MODE_GUEST_USER: u32 = 0;
pub const FATAL_MODE_GUEST_KERNEL: u32 = 1;
pub const FATAL_MODE_SHIM: u32 = 2;
pub const FATAL_NO_VECTOR: u32 = u32::MAX;

impl Default for CpuRegs {
    fn default() -> Self {
        zerocopy::FromZeros::new_zeroed()
    }
}

/// A register dump.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct CpuRegs {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub rsp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub rip: u64,
    pub rflags: u64,
    pub cs: u64,
    pub ss: u64,
    pub cr2: u64,
    pub cr3: u64,
    pub fs_base: u64,
    pub gs_base: u64,
}

/// Counters the shim keeps and the VMM reads at exit (`--stats`).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct ShimStats {
    pub version: u32,
    pub _pad: u32,
    /// Hypercalls by number (`crate::hypercall::NR_HYPERCALLS` slots; the last counts numbers
    /// beyond the table).
    pub hypercalls: [u64; crate::hypercall::NR_HYPERCALLS],
    /// Hypercalls answered -ENOSYS because xenvmm does not implement them (yet), by number.
    pub enosys: [u64; crate::hypercall::NR_HYPERCALLS],
    /// Exceptions taken from the guest, by vector.
    pub exceptions: [u64; 32],
    /// Exceptions bounced to the guest's own handlers, by vector.
    pub bounced: [u64; 32],
    /// Hostcalls made (each one is a VM exit to the VMM).
    pub hostcalls: u64,
    /// Instructions emulated behind #GP/#UD (and direct page-table writes behind #PF), by
    /// [`EmulKind`] index.
    pub emulated: [u64; 16],
    /// Event upcalls delivered to the guest's event callback.
    pub upcalls: u64,
    /// Guest system calls (SYSCALL from guest user mode) bounced to the kernel.
    pub syscalls: u64,
    /// Hardware interrupts taken by the shim, by source: [0] host events, [1] timer, [2] other.
    pub interrupts: [u64; 3],
    /// Event-channel notifications sent to the VMM (EVTCHNOP_send on its ports).
    pub host_sends: u64,
    /// Doorbell writes: sends that found their mailbox word empty (the others ride along).
    pub doorbells: u64,
    /// Ports raised by the VMM (taken from the mailbox).
    pub host_raised: u64,
    /// Ports raised on VIRQ_TIMER.
    pub timer_fired: u64,
    /// Frames the domain gave back (`XENMEM_decrease_reservation`), and the
    /// [`HC_RELEASE_FRAMES`] hostcalls that returned them to the host.
    pub frames_released: u64,
    pub release_hostcalls: u64,
    /// Frames handed back to the domain (`XENMEM_populate_physmap`, `_increase_reservation`).
    pub frames_populated: u64,
    /// Emulated port I/O by port: the first [`IO_PORT_SLOTS`] ports the guest used, with
    /// their access counts (a diagnostic: a PV guest should hardly touch ports).
    pub io_ports: [u32; IO_PORT_SLOTS],
    pub io_port_counts: [u64; IO_PORT_SLOTS],
}

/// Ports [`ShimStats::io_ports`] tracks.
pub const IO_PORT_SLOTS: usize = 16;

/// Index of [`ShimStats::emulated`]: what the shim emulated for the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum EmulKind {
    ForcedCpuid = 0,
    Rdmsr = 1,
    Wrmsr = 2,
    ReadCr = 3,
    WriteCr = 4,
    PortIo = 5,
    Xsetbv = 6,
    Wbinvd = 7,
    Clts = 8,
    Rdtsc = 9,
    Other = 10,
    /// A direct write to a page-table entry (writable page tables, a #PF).
    PtWrite = 11,
}

impl EmulKind {
    pub const NAMES: [&'static str; 12] = [
        "forced cpuid",
        "rdmsr",
        "wrmsr",
        "mov from cr",
        "mov to cr",
        "port i/o",
        "xsetbv",
        "wbinvd",
        "clts",
        "rdtsc",
        "other",
        "pte write",
    ];
}

#[cfg(test)]
mod tests {
    use super::MfnRange;

    #[test]
    fn mfn_range_contains_its_first_and_last_frame_only() {
        let r = MfnRange { first_mfn: 0x100, nr_frames: 0x10 };
        assert!(!r.contains(0xff));
        assert!(r.contains(0x100));
        assert!(r.contains(0x10f));
        assert!(!r.contains(0x110));
    }

    #[test]
    fn empty_mfn_range_contains_nothing() {
        let r = MfnRange { first_mfn: 0x100, nr_frames: 0 };
        assert!(!r.contains(0xff));
        assert!(!r.contains(0x100));
    }

    #[test]
    fn mfn_range_at_the_top_of_the_number_space_does_not_overflow() {
        let r = MfnRange { first_mfn: u64::MAX - 1, nr_frames: u64::MAX };
        assert!(r.contains(u64::MAX));
        assert!(r.contains(u64::MAX - 1));
        assert!(!r.contains(0));
        assert!(!r.contains(u64::MAX - 2));
    }
}
