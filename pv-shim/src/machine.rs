//! The shim's view of the machine: machine (= KVM guest-physical) memory, the hostcall door to
//! the VMM, the event mailbox, and the handful of CPU operations the PV logic needs. `arch`
//! implements it on the real CPU; tests implement it over a `Vec` and plain fields.

use xen_abi::hostcall::ShimStats;
use xen_abi::Errno;

/// Model-specific registers the PV logic reads or writes on the real CPU.
pub const MSR_FS_BASE: u32 = 0xc000_0100;
/// The active GS base (the guest kernel's while in guest kernel mode).
pub const MSR_GS_BASE: u32 = 0xc000_0101;
/// The inactive GS base (`swapgs` exchanges it with [`MSR_GS_BASE`]).
pub const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
pub const MSR_TSC_AUX: u32 = 0xc000_0103;

pub trait Machine {
    /// Copies `buf.len()` bytes of machine memory at `maddr` into `buf`.
    /// Fails with `EFAULT` when any byte lies outside machine memory.
    fn read_phys(&self, maddr: u64, buf: &mut [u8]) -> Result<(), Errno>;
    /// Copies `buf` into machine memory at `maddr`; `EFAULT` when outside machine memory.
    fn write_phys(&mut self, maddr: u64, buf: &[u8]) -> Result<(), Errno>;
    /// Makes hostcall `nr` (see `xen_abi::hostcall`) with `args` and payload `data`; returns the
    /// VMM's answer. For calls that end the domain the VMM never answers on real hardware.
    fn hostcall(&mut self, nr: u32, args: [u64; 5], data: &[u8]) -> i64;
    /// The statistics page the VMM reads at exit.
    fn stats(&mut self) -> &mut ShimStats;

    // ---- Event mailbox (xen_abi::hostcall::EventMailbox) ----
    /// Rings the port's own doorbell if the VMM set it in `direct`; otherwise atomically sets
    /// guest port `port` in `to_host` and rings the shared doorbell (ioeventfd) if its word
    /// was empty. Returns whether it rang.
    fn notify_host(&mut self, port: u32) -> bool;
    /// Atomically takes (swaps with 0) mailbox word `i` of `to_guest`.
    fn take_host_events(&mut self, word: usize) -> u64;

    // ---- Time and interrupts ----
    /// The time-stamp counter.
    fn rdtsc(&self) -> u64;
    /// Arms the local APIC one-shot timer to fire after `ticks` timer ticks
    /// (`BootInfo::lapic_timer_hz`), or disarms it with `None`.
    fn arm_timer(&mut self, ticks: Option<u32>);
    /// Whether the timer armed last is still counting down (it has neither fired nor been
    /// stopped).
    fn timer_running(&self) -> bool;
    /// Sleeps (`sti; hlt; cli`) until the next hardware interrupt; returns after it was taken.
    /// An interrupt that arrived since the last call returns at once.
    fn wait_for_interrupt(&mut self);

    // ---- CPU state the PV ABI lets the guest control ----
    /// Reads an MSR the shim knows exists (the `MSR_*` of this module).
    fn read_msr(&self, msr: u32) -> u64;
    /// Writes an MSR; the caller checked the value (canonical bases) so it cannot #GP.
    fn write_msr(&mut self, msr: u32, v: u64);
    /// Loads `sel` into the guest user's GS (the inactive one in guest kernel mode), as
    /// `swapgs; mov sel, %gs; swapgs`; a selector the CPU would refuse loads as null.
    fn load_user_gs_selector(&mut self, sel: u16);
    /// `swapgs`: exchanges the active and inactive GS bases.
    fn swapgs(&mut self);
    /// Loads CR3 (a machine address whose hypervisor slots are installed).
    fn load_cr3(&mut self, cr3: u64);
    /// Flushes the TLB (all non-global entries).
    fn flush_tlb(&mut self);
    /// Invalidates the TLB entries of one virtual address.
    fn invlpg(&mut self, va: u64);
    /// Sets or clears the real CR0.TS (lazy FPU: the guest's next FPU use raises #NM).
    fn set_cr0_ts(&mut self, ts: bool);
    fn read_cr0(&self) -> u64;
    fn read_cr4(&self) -> u64;
    fn write_cr4(&mut self, v: u64);
    /// `xsetbv`. The caller validates `v` against the CPU's XCR0 rules first (a #GP here
    /// is a shim bug); `Err` when a host mock refuses it.
    fn xsetbv(&mut self, index: u32, v: u64) -> Result<(), Errno>;
    fn xgetbv(&self, index: u32) -> u64;
    /// Executes `cpuid` (answered by KVM from the VMM's PV CPUID policy).
    fn cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4];
    /// Loads debug register `n` (0-3, 6, 7); the caller validated the value.
    fn write_dr(&mut self, n: u32, v: u64);
    fn read_dr(&self, n: u32) -> u64;
    fn wbinvd(&mut self);

    // ---- The guest part of the live GDT (`desc`): entries below FIRST_RESERVED_GDT_ENTRY ----
    /// Stores `descs` (checked by `desc::check_descriptor`) at GDT entries `first..`; entries
    /// at or past `FIRST_RESERVED_GDT_ENTRY` are ignored.
    fn write_gdt(&mut self, first: usize, descs: &[u64]);
    /// GDT entry `index` as the CPU sees it; 0 past the guest part.
    fn read_gdt(&self, index: usize) -> u64;

    // ---- The shim's copy of the guest LDT (`desc::ldt`): 8192 entries ----
    /// Stores `descs` (checked) at LDT entries `first..`; entries past 8192 are ignored.
    fn write_ldt(&mut self, first: usize, descs: &[u64]);
    /// LDT entry `index` as the CPU sees it; 0 past the buffer.
    fn read_ldt(&self, index: usize) -> u64;
    /// Points the shim's LDT descriptor (selector 0xe050) at the buffer with room for
    /// `ents` entries (1..=8192) and loads LDTR with it; 0 loads a null LDTR.
    fn load_ldt(&mut self, ents: u32);
    /// The entry count of the LDT loaded now (0: null LDTR).
    fn loaded_ldt_ents(&self) -> u32;

    // ---- The frame table (`mm::frames`): one word per machine frame, in shim memory ----
    /// The frame-table word of `mfn`; 0 for a frame beyond the table.
    fn frame_info(&self, mfn: u64) -> u64;
    /// Stores the frame-table word of `mfn`; ignored for a frame beyond the table.
    fn set_frame_info(&mut self, mfn: u64, v: u64);

    fn read_u64(&self, maddr: u64) -> Result<u64, Errno> {
        let mut b = [0u8; 8];
        self.read_phys(maddr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn write_u64(&mut self, maddr: u64, v: u64) -> Result<(), Errno> {
        self.write_phys(maddr, &v.to_le_bytes())
    }
}
