//! An in-memory machine for host unit tests.

use crate::machine::Machine;
use xen_abi::hostcall::{BootInfo, MfnRange, ShimStats};
use xen_abi::Errno;
use zerocopy::FromZeros;

/// A machine with `frames` pages of memory that records hostcalls.
pub struct MockMachine {
    pub mem: Vec<u8>,
    pub hostcalls: Vec<(u32, [u64; 5], Vec<u8>)>,
    pub stats: ShimStats,
    /// Ports posted to the VMM, in order.
    pub notified: Vec<u32>,
    /// What the "VMM" raised for the guest.
    pub to_guest: [u64; 64],
    /// The TSC; `wait_for_interrupt` advances it to the armed timer's expiry.
    pub tsc: u64,
    /// TSC ticks per timer tick when `wait_for_interrupt` fast-forwards.
    pub tsc_per_timer_tick: u64,
    pub timer: Option<u32>,
    /// How often the timer was armed or stopped (each a VM exit on real hardware).
    pub timer_arms: u32,
    /// How often the guest slept in `wait_for_interrupt`.
    pub waits: u32,
    /// `(n, port)`: the "VMM" raises guest `port` during the `n`-th `wait_for_interrupt`.
    pub host_events_at_wait: Vec<(u32, u32)>,
    pub msrs: std::collections::BTreeMap<u32, u64>,
    pub cr0: u64,
    pub cr4: u64,
    pub cr3_loads: Vec<u64>,
    pub tlb_flushes: u32,
    pub xcr0: u64,
    pub dr: [u64; 8],
    pub wbinvds: u32,
    /// Answers of `cpuid`, by (leaf, subleaf); missing leaves answer zeros.
    pub cpuid: std::collections::BTreeMap<(u32, u32), [u32; 4]>,
    pub user_gs_sel: u16,
    /// Frame-table words (absent = 0).
    pub frame_table: std::collections::BTreeMap<u64, u64>,
    pub invlpgs: Vec<u64>,
    /// The guest part of the GDT (`FIRST_RESERVED_GDT_ENTRY` entries).
    pub gdt: Vec<u64>,
    /// The shim's LDT buffer (8192 entries) and the entry count LDTR covers (0 = null).
    pub ldt: Vec<u64>,
    pub ldt_ents: u32,
    /// What the "VMM" answers `HC_RELEASE_FRAMES`; on 0 it zeroes the frames, as
    /// `MADV_DONTNEED` does.
    pub release_answer: i64,
}

impl MockMachine {
    pub fn new(frames: u64) -> MockMachine {
        MockMachine {
            mem: vec![0; (frames * 4096) as usize],
            hostcalls: Vec::new(),
            stats: ShimStats::new_zeroed(),
            notified: Vec::new(),
            to_guest: [0; 64],
            tsc: 1_000_000,
            tsc_per_timer_tick: 1,
            timer: None,
            timer_arms: 0,
            waits: 0,
            host_events_at_wait: Vec::new(),
            msrs: Default::default(),
            // PE, MP, ET, NE, WP, PG as a 64-bit kernel runs.
            cr0: 0x8005_0033,
            // PAE, OSFXSR, OSXMMEXCPT.
            cr4: 0x620,
            cr3_loads: Vec::new(),
            tlb_flushes: 0,
            xcr0: 1,
            dr: [0, 0, 0, 0, 0, 0, 0xffff_0ff0, 0x400],
            wbinvds: 0,
            cpuid: Default::default(),
            user_gs_sel: 0,
            frame_table: Default::default(),
            invlpgs: Vec::new(),
            gdt: vec![0; xen_abi::xen::FIRST_RESERVED_GDT_ENTRY as usize],
            ldt: vec![0; crate::desc::ldt::MAX_LDT_ENTRIES as usize],
            ldt_ents: 0,
            release_answer: 0,
        }
    }

    pub fn frames(&self) -> u64 {
        self.mem.len() as u64 / 4096
    }

    /// Console text written through hostcalls.
    pub fn console(&self) -> String {
        self.hostcalls
            .iter()
            .filter(|h| h.0 == xen_abi::hostcall::HC_CONSOLE_WRITE)
            .map(|h| String::from_utf8_lossy(&h.2).into_owned())
            .collect()
    }

    fn range(&self, maddr: u64, len: usize) -> Result<core::ops::Range<usize>, Errno> {
        let start = usize::try_from(maddr).map_err(|_| Errno::EFAULT)?;
        let end = start.checked_add(len).ok_or(Errno::EFAULT)?;
        if end > self.mem.len() {
            return Err(Errno::EFAULT);
        }
        Ok(start..end)
    }
}

impl Machine for MockMachine {
    fn read_phys(&self, maddr: u64, buf: &mut [u8]) -> Result<(), Errno> {
        let r = self.range(maddr, buf.len())?;
        buf.copy_from_slice(&self.mem[r]);
        Ok(())
    }

    fn write_phys(&mut self, maddr: u64, buf: &[u8]) -> Result<(), Errno> {
        let r = self.range(maddr, buf.len())?;
        self.mem[r].copy_from_slice(buf);
        Ok(())
    }

    fn hostcall(&mut self, nr: u32, args: [u64; 5], data: &[u8]) -> i64 {
        self.hostcalls.push((nr, args, data.to_vec()));
        if nr == xen_abi::hostcall::HC_RELEASE_FRAMES {
            if self.release_answer == 0 {
                for r in data.chunks_exact(16).take(args[0] as usize) {
                    let first = u64::from_le_bytes(r[..8].try_into().unwrap_or_default());
                    let n = u64::from_le_bytes(r[8..].try_into().unwrap_or_default());
                    for mfn in first..first + n {
                        if let Ok(range) = self.range(mfn << 12, 4096) {
                            self.mem[range].fill(0);
                        }
                    }
                }
            }
            return self.release_answer;
        }
        0
    }

    fn stats(&mut self) -> &mut ShimStats {
        &mut self.stats
    }

    fn notify_host(&mut self, port: u32) -> bool {
        self.notified.push(port);
        true
    }

    fn take_host_events(&mut self, word: usize) -> u64 {
        self.to_guest.get_mut(word).map(core::mem::take).unwrap_or(0)
    }

    fn rdtsc(&self) -> u64 {
        self.tsc
    }

    fn arm_timer(&mut self, ticks: Option<u32>) {
        self.timer = ticks;
        self.timer_arms += 1;
    }

    fn timer_running(&self) -> bool {
        self.timer.is_some()
    }

    fn wait_for_interrupt(&mut self) {
        self.waits += 1;
        let n = self.waits;
        let mut raised = false;
        for &(_, port) in self.host_events_at_wait.iter().filter(|e| e.0 == n) {
            if let Some(w) = self.to_guest.get_mut(port as usize / 64) {
                *w |= 1 << (port % 64);
                raised = true;
            }
        }
        if raised {
            // The VMM's interrupt ends the sleep before any timer.
            self.tsc += 1;
            return;
        }
        match self.timer.take() {
            Some(t) => self.tsc += u64::from(t) * self.tsc_per_timer_tick,
            None => self.tsc += 1,
        }
    }

    fn read_msr(&self, msr: u32) -> u64 {
        self.msrs.get(&msr).copied().unwrap_or(0)
    }

    fn write_msr(&mut self, msr: u32, v: u64) {
        self.msrs.insert(msr, v);
    }

    fn load_user_gs_selector(&mut self, sel: u16) {
        self.user_gs_sel = sel;
    }

    fn swapgs(&mut self) {
        let a = self.read_msr(crate::machine::MSR_GS_BASE);
        let b = self.read_msr(crate::machine::MSR_KERNEL_GS_BASE);
        self.write_msr(crate::machine::MSR_GS_BASE, b);
        self.write_msr(crate::machine::MSR_KERNEL_GS_BASE, a);
    }

    fn load_cr3(&mut self, cr3: u64) {
        self.cr3_loads.push(cr3);
    }

    fn flush_tlb(&mut self) {
        self.tlb_flushes += 1;
    }

    fn set_cr0_ts(&mut self, ts: bool) {
        self.cr0 = if ts { self.cr0 | 8 } else { self.cr0 & !8 };
    }

    fn read_cr0(&self) -> u64 {
        self.cr0
    }

    fn read_cr4(&self) -> u64 {
        self.cr4
    }

    fn write_cr4(&mut self, v: u64) {
        self.cr4 = v;
    }

    fn xsetbv(&mut self, index: u32, v: u64) -> Result<(), Errno> {
        // x87 must stay enabled, AVX needs SSE; only XCR0 exists.
        if index != 0 || v & 1 == 0 || (v & 4 != 0 && v & 2 == 0) || v & !0x7 != 0 {
            return Err(Errno::EINVAL);
        }
        self.xcr0 = v;
        Ok(())
    }

    fn xgetbv(&self, _index: u32) -> u64 {
        self.xcr0
    }

    fn cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4] {
        self.cpuid.get(&(leaf, subleaf)).copied().unwrap_or_default()
    }

    fn write_dr(&mut self, n: u32, v: u64) {
        if let Some(d) = self.dr.get_mut(n as usize) {
            *d = v;
        }
    }

    fn read_dr(&self, n: u32) -> u64 {
        self.dr.get(n as usize).copied().unwrap_or(0)
    }

    fn wbinvd(&mut self) {
        self.wbinvds += 1;
    }

    fn invlpg(&mut self, va: u64) {
        self.invlpgs.push(va);
    }

    fn write_gdt(&mut self, first: usize, descs: &[u64]) {
        for (i, &d) in descs.iter().enumerate() {
            if let Some(e) = first.checked_add(i).and_then(|j| self.gdt.get_mut(j)) {
                *e = d;
            }
        }
    }

    fn read_gdt(&self, index: usize) -> u64 {
        self.gdt.get(index).copied().unwrap_or(0)
    }

    fn write_ldt(&mut self, first: usize, descs: &[u64]) {
        for (i, &d) in descs.iter().enumerate() {
            if let Some(e) = first.checked_add(i).and_then(|j| self.ldt.get_mut(j)) {
                *e = d;
            }
        }
    }

    fn read_ldt(&self, index: usize) -> u64 {
        self.ldt.get(index).copied().unwrap_or(0)
    }

    fn load_ldt(&mut self, ents: u32) {
        self.ldt_ents = ents.min(crate::desc::ldt::MAX_LDT_ENTRIES);
    }

    fn loaded_ldt_ents(&self) -> u32 {
        self.ldt_ents
    }

    fn frame_info(&self, mfn: u64) -> u64 {
        self.frame_table.get(&mfn).copied().unwrap_or(0)
    }

    fn set_frame_info(&mut self, mfn: u64, v: u64) {
        if mfn < self.frames() {
            if v == 0 {
                self.frame_table.remove(&mfn);
            } else {
                self.frame_table.insert(mfn, v);
            }
        }
    }
}

/// Boot info describing all of the mock's memory as the domain's RAM.
pub fn boot_info(frames: u64) -> BootInfo {
    let mut b = BootInfo::new_zeroed();
    b.magic = xen_abi::hostcall::BOOT_INFO_MAGIC;
    b.version = xen_abi::hostcall::HOSTCALL_VERSION;
    b.nr_vcpus = 1;
    b.max_mfn = frames;
    b.ram[0] = MfnRange { first_mfn: 0, nr_frames: frames };
    b.nr_ram_ranges = 1;
    b
}

/// Guest-virtual base of the test address space built by [`shim_with_guest`].
pub const GUEST_VA: u64 = 0xffff_ffff_8000_0000;
/// First machine frame mapped at [`GUEST_VA`].
pub const GUEST_FIRST_DATA_MFN: u64 = 16;

/// A shim over a 64-frame mock whose guest maps `GUEST_VA + i*4K` to frame 16 + i (i < 32),
/// writable, with page tables in frames 1..=4; page 31 is mapped read-only.
pub fn shim_with_guest() -> crate::shim::Shim<MockMachine> {
    shim_with_guest_boot(|_| {})
}

/// [`shim_with_guest`] with the boot information edited by `edit` first (e.g. to carve
/// non-RAM frames out of the mock).
pub fn shim_with_guest_boot(edit: impl FnOnce(&mut BootInfo)) -> crate::shim::Shim<MockMachine> {
    let mut m = MockMachine::new(64);
    let va = GUEST_VA;
    let idx = |v: u64, l: u32| crate::mm::table_index(v, l) as u64;
    m.write_u64((1 << 12) + 8 * idx(va, 4), (2 << 12) | 0x67).unwrap();
    m.write_u64((2 << 12) + 8 * idx(va, 3), (3 << 12) | 0x67).unwrap();
    m.write_u64((3 << 12) + 8 * idx(va, 2), (4 << 12) | 0x67).unwrap();
    for i in 0..32u64 {
        let flags = if i == 31 { 0x21 } else { 0x23 };
        m.write_u64((4 << 12) + 8 * i, ((GUEST_FIRST_DATA_MFN + i) << 12) | flags).unwrap();
    }
    let mut b = boot_info(64);
    b.guest_l4_mfn = 1;
    edit(&mut b);
    let mut s = crate::shim::Shim::new(m, b).unwrap();
    s.boot_domain(&[0; 16]).unwrap();
    s
}
