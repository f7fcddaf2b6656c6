//! Placing the embedded PV shim in the VM: its image at its link address in Xen's hypervisor
//! hole, its own page tables (M2P, image, direct map), the M2P contents, shared_info, and the
//! `BootInfo` page it starts from.

use crate::builder::elf::{Elf, PF_W, PF_X, PT_LOAD};
use crate::memory::{FrameAlloc, Layout, PAGE_SIZE};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use xen_abi::hostcall::*;
use xen_abi::xen::{SharedInfo, MACH2PHYS_VIRT_START, XEN_LEGACY_MAX_VCPUS};
use zerocopy::{FromZeros, IntoBytes};

/// The shim, built for x86_64-unknown-none by build.rs.
pub static SHIM_ELF: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/pv-shim.elf"));

const P: u64 = 1 << 0;
const RW: u64 = 1 << 1;
const US: u64 = 1 << 2;
const PS: u64 = 1 << 7;
const NX: u64 = 1 << 63;

#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("the embedded PV shim is not a valid ELF image: {0}")]
    BadImage(String),
    #[error("cannot write the PV shim into guest memory: {0}")]
    Memory(#[from] vm_memory::GuestMemoryError),
    #[error("cannot bind guest port {port} to domain 0 before boot: {why}")]
    HostPort { port: u32, why: &'static str },
}

/// One loadable segment of the shim.
#[derive(Debug)]
struct Segment {
    vaddr: u64,
    memsz: u64,
    data: Vec<u8>,
    writable: bool,
    executable: bool,
}

/// The parsed shim image.
#[derive(Debug)]
pub struct ShimImage {
    segments: Vec<Segment>,
    pub entry: u64,
}

impl ShimImage {
    pub fn parse(elf_bytes: &[u8]) -> Result<ShimImage, ShimError> {
        let elf = Elf::parse(elf_bytes).map_err(|e| ShimError::BadImage(e.to_string()))?;
        let mut segments = Vec::new();
        for ph in elf.phdrs.iter().filter(|p| p.p_type == PT_LOAD) {
            let data = crate::builder::elf::file_range(elf_bytes, ph.p_offset, ph.p_filesz)
                .and_then(|r| elf_bytes.get(r))
                .ok_or_else(|| ShimError::BadImage("segment beyond the file".into()))?;
            if ph.p_vaddr % PAGE_SIZE != 0
                || ph.p_vaddr < SHIM_IMAGE_BASE
                || ph.p_vaddr >= SHIM_IMAGE_BASE + (1 << 30)
            {
                return Err(ShimError::BadImage(format!(
                    "segment at {:#x} outside the shim's slot",
                    ph.p_vaddr
                )));
            }
            segments.push(Segment {
                vaddr: ph.p_vaddr,
                memsz: ph.p_memsz,
                data: data.to_vec(),
                writable: ph.p_flags & PF_W != 0,
                executable: ph.p_flags & PF_X != 0,
            });
        }
        if segments.is_empty() {
            return Err(ShimError::BadImage("no loadable segments".into()));
        }
        Ok(ShimImage { segments, entry: elf.e_entry })
    }

    /// Frames the image occupies in memory.
    pub fn frames(&self) -> u64 {
        self.segments.iter().map(|s| s.memsz.div_ceil(PAGE_SIZE)).sum()
    }
}

/// Frames of shim data allocated before the image: boot info, hostcall pages, stats,
/// shared_info, the event mailbox, the grant table.
pub fn fixed_frames(nr_vcpus: u32) -> u64 {
    4 + u64::from(nr_vcpus) + MAX_GRANT_FRAMES
}

/// Grant-table frames of the domain: Xen's default `gnttab_max_frames` (64, i.e. 32768 v1
/// entries), which libxl gives a domU that does not ask for another limit.
pub const MAX_GRANT_FRAMES: u64 = 64;

/// The domain id the guest runs as (domain 0 is the VMM).
pub const GUEST_DOMID: u16 = 1;
/// KVM's local APIC timer runs at its 1 GHz bus clock with divide-by-1.
const LAPIC_TIMER_HZ: u64 = 1_000_000_000;
const PCD: u64 = 1 << 4;
const PWT: u64 = 1 << 3;

/// Where the shim's pieces ended up.
#[derive(Debug, Clone)]
pub struct PlacedShim {
    pub entry: u64,
    pub l4_gpa: u64,
    pub boot_info_gpa: u64,
    pub hostcall_gpa: Vec<u64>,
    pub stats_gpa: u64,
    pub shared_info_mfn: u64,
    pub mailbox_gpa: u64,
    /// The domain's grant-table frames (host backends read grants there).
    pub grant_frames: MfnRange,
    boot: BootInfo,
}

impl PlacedShim {
    /// The direct-map address of the boot information, passed to the shim in `rdi`.
    pub fn boot_info_va(&self) -> u64 {
        DIRECTMAP_BASE + self.boot_info_gpa
    }

    /// Records that domain 0 bound guest port `port` (its own end being `remote_port`) before
    /// boot, so that the shim finds it interdomain-bound to domain 0 (`BootInfo::host_ports`).
    pub fn bind_host_port(&mut self, port: u32, remote_port: u32) -> Result<(), ShimError> {
        let b = &mut self.boot;
        let n = b.nr_host_ports as usize;
        let err = |why| Err(ShimError::HostPort { port, why });
        if port == 0 || port >= xen_abi::event::EVTCHN_2L_NR_CHANNELS {
            return err("not a valid 2-level port");
        }
        if b.host_ports[..n].iter().any(|h| h.port == port) {
            return err("already bound");
        }
        let Some(slot) = b.host_ports.get_mut(n) else { return err("too many ports") };
        *slot = HostPort { port, remote_port };
        b.nr_host_ports += 1;
        Ok(())
    }

    /// The domain's RAM, as machine frames.
    pub fn ram(&self) -> &[MfnRange] {
        &self.boot.ram[..(self.boot.nr_ram_ranges as usize).min(MAX_RAM_RANGES)]
    }

    /// The ports bound with [`Self::bind_host_port`].
    pub fn host_ports(&self) -> &[HostPort] {
        &self.boot.host_ports[..self.boot.nr_host_ports as usize]
    }

    /// Completes `BootInfo` with vCPU 0's guest state and writes it.
    pub fn write_boot_info(
        &mut self,
        mem: &GuestMemoryMmap,
        guest_l4_mfn: u64,
        rip: u64,
        rsp: u64,
        rsi: u64,
        tsc_khz: u64,
    ) -> Result<(), ShimError> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let b = &mut self.boot;
        b.guest_l4_mfn = guest_l4_mfn;
        b.guest_rip = rip;
        b.guest_rsp = rsp;
        b.guest_rsi = rsi;
        b.tsc_khz = tsc_khz;
        b.wallclock_sec = now.as_secs();
        b.wallclock_nsec = now.subsec_nanos();
        mem.write_slice(b.as_bytes(), GuestAddress(self.boot_info_gpa))?;
        Ok(())
    }
}

/// Page tables under construction in guest memory.
struct Tables<'a> {
    mem: &'a GuestMemoryMmap,
    alloc: &'a mut FrameAlloc,
    l4: u64,
}

impl Tables<'_> {
    fn entry_addr(table_gpa: u64, va: u64, level: u32) -> GuestAddress {
        GuestAddress(table_gpa + 8 * ((va >> (12 + 9 * (level - 1))) & 511))
    }

    /// The table at `level` covering `va`, creating intermediate tables with `upper` flags.
    fn table(&mut self, va: u64, level: u32, upper: u64) -> Result<u64, ShimError> {
        let mut t = self.l4;
        for l in (level + 1..=4).rev() {
            let a = Self::entry_addr(t, va, l);
            let e: u64 = self.mem.read_obj(a)?;
            t = if e & P != 0 {
                e & 0x000f_ffff_ffff_f000
            } else {
                let n = self.alloc.alloc(1).first_mfn << 12;
                self.mem.write_slice(&[0u8; 4096], GuestAddress(n))?;
                self.mem.write_obj(n | upper, a)?;
                n
            };
        }
        Ok(t)
    }

    fn map(&mut self, va: u64, gpa: u64, level: u32, flags: u64, upper: u64) -> Result<(), ShimError> {
        let t = self.table(va, level, upper)?;
        self.mem.write_obj(gpa | flags, Self::entry_addr(t, va, level))?;
        Ok(())
    }
}

/// Places the shim: allocates its fixed pages, loads the image, fills the M2P and shared_info,
/// and builds the shim's page tables. Returns what the vCPU and the domain builder need.
pub fn place(
    mem: &GuestMemoryMmap,
    layout: &Layout,
    img: &ShimImage,
    alloc: &mut FrameAlloc,
    nr_vcpus: u32,
) -> Result<PlacedShim, ShimError> {
    let boot_info = alloc.alloc(1).first_mfn;
    let hostcall = alloc.alloc(u64::from(nr_vcpus));
    let stats = alloc.alloc(1).first_mfn;
    let shared_info = alloc.alloc(1).first_mfn;
    let mailbox = alloc.alloc(1).first_mfn;
    mem.write_slice(&[0u8; 4096], GuestAddress(mailbox << 12))?;
    // The grant table, all of its possible frames: zeroed, so every entry is GTF_invalid.
    let grant_frames = alloc.alloc(MAX_GRANT_FRAMES);
    mem.write_slice(
        &vec![0u8; (MAX_GRANT_FRAMES * PAGE_SIZE) as usize],
        GuestAddress(grant_frames.first_mfn << 12),
    )?;
    debug_assert_eq!(fixed_frames(nr_vcpus), 4 + hostcall.nr_frames + grant_frames.nr_frames);

    // shared_info starts zeroed with every vCPU's events masked (libxc shared_info_x86_64).
    let mut si = SharedInfo::new_zeroed();
    for v in si.vcpu_info.iter_mut().take(XEN_LEGACY_MAX_VCPUS) {
        v.evtchn_upcall_mask = 1;
    }
    mem.write_slice(si.as_bytes(), GuestAddress(shared_info << 12))?;

    // Image.
    let mut image_frames = Vec::new();
    for s in &img.segments {
        let n = s.memsz.div_ceil(PAGE_SIZE);
        let r = alloc.alloc(n);
        mem.write_slice(&s.data, GuestAddress(r.first_mfn << 12))?;
        image_frames.push((s, r));
    }

    // M2P: m2p[mfn] = pfn for the domain's RAM, ~0 for everything else.
    let m2p = alloc.alloc(layout.m2p_frames);
    let mut table = vec![u64::MAX; (layout.m2p_frames * PAGE_SIZE / 8) as usize];
    for (pfn, mfn) in layout.p2m.iter() {
        table[mfn as usize] = pfn;
    }
    mem.write_slice(table.as_bytes(), GuestAddress(m2p.first_mfn << 12))?;

    // The frame table (page types and counts): shim-private, zero = untyped and unused.
    let frame_table = alloc.alloc(layout.m2p_frames);
    mem.write_slice(
        &vec![0u8; (frame_table.nr_frames * PAGE_SIZE) as usize],
        GuestAddress(frame_table.first_mfn << 12),
    )?;

    // The shim's page tables.
    let l4 = alloc.alloc(1).first_mfn << 12;
    mem.write_slice(&[0u8; 4096], GuestAddress(l4))?;
    let mut t = Tables { mem, alloc, l4 };
    // Slot 256: the M2P, read-only and user-readable (the guest kernel runs at CPL3).
    for i in 0..m2p.nr_frames {
        t.map(MACH2PHYS_VIRT_START + i * PAGE_SIZE, (m2p.first_mfn + i) << 12, 1, P | US | NX, P | RW | US)?;
    }
    // Slot 260: the image, supervisor-only, W^X.
    for (s, r) in &image_frames {
        let flags = P | if s.writable { RW } else { 0 } | if s.executable { 0 } else { NX };
        for i in 0..r.nr_frames {
            t.map(s.vaddr + i * PAGE_SIZE, (r.first_mfn + i) << 12, 1, flags, P | RW)?;
        }
    }
    // Slot 261: the local APIC page, supervisor-only, uncached, no-execute.
    t.map(LAPIC_VIRT, LAPIC_PHYS, 1, P | RW | PCD | PWT | NX, P | RW)?;
    // Slot 262: all machine memory, 2 MiB pages, supervisor-only, no-execute.
    let mut gpa = 0;
    while gpa < layout.max_mfn << 12 {
        t.map(DIRECTMAP_BASE + gpa, gpa, 2, P | RW | PS | NX, P | RW)?;
        gpa += 2 << 20;
    }

    let mut boot = BootInfo::new_zeroed();
    boot.magic = BOOT_INFO_MAGIC;
    boot.version = HOSTCALL_VERSION;
    boot.nr_vcpus = nr_vcpus;
    boot.max_mfn = layout.max_mfn;
    boot.m2p = m2p;
    boot.frame_table = frame_table;
    for (dst, r) in boot.ram.iter_mut().zip(layout.p2m.ranges()) {
        *dst = *r;
    }
    boot.nr_ram_ranges = layout.p2m.ranges().len() as u32;
    boot.shared_info_mfn = shared_info;
    for (i, slot) in boot.hostcall_mfn.iter_mut().take(nr_vcpus as usize).enumerate() {
        *slot = hostcall.first_mfn + i as u64;
    }
    boot.stats_mfn = stats;
    boot.mailbox_mfn = mailbox;
    boot.grant_frames = grant_frames;
    boot.domid = GUEST_DOMID;
    boot.lapic_timer_hz = LAPIC_TIMER_HZ;
    boot.shim_free = alloc.remaining();

    Ok(PlacedShim {
        entry: img.entry,
        l4_gpa: l4,
        boot_info_gpa: boot_info << 12,
        hostcall_gpa: (0..u64::from(nr_vcpus)).map(|i| (hostcall.first_mfn + i) << 12).collect(),
        stats_gpa: stats << 12,
        shared_info_mfn: shared_info,
        mailbox_gpa: mailbox << 12,
        grant_frames,
        boot,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_shim_parses_and_lives_in_its_slot() {
        let img = ShimImage::parse(SHIM_ELF).unwrap();
        assert!(img.entry >= SHIM_IMAGE_BASE);
        assert!(img.frames() > 0);
        assert!(img.segments.iter().any(|s| s.executable && !s.writable));
        assert!(img.segments.iter().all(|s| !(s.executable && s.writable)), "W^X");
    }

    #[test]
    fn host_ports_are_bound_once_each_within_the_table() {
        let img = ShimImage::parse(SHIM_ELF).unwrap();
        let layout = Layout::plan(64 << 20, img.frames(), fixed_frames(1)).unwrap();
        let mem = layout.create_memory().unwrap();
        let mut placed = place(&mem, &layout, &img, &mut layout.shim_frames(), 1).unwrap();
        placed.bind_host_port(2, 7).unwrap();
        assert!(matches!(placed.bind_host_port(2, 8), Err(ShimError::HostPort { port: 2, .. })));
        assert!(placed.bind_host_port(0, 1).is_err(), "port 0 is never valid");
        assert!(placed.bind_host_port(4096, 1).is_err());
        for p in 3..3 + MAX_HOST_PORTS as u32 - 1 {
            placed.bind_host_port(p, p).unwrap();
        }
        assert!(placed.bind_host_port(100, 1).is_err(), "table full");
        assert_eq!(placed.host_ports().len(), MAX_HOST_PORTS);
        assert_eq!(placed.host_ports()[0], HostPort { port: 2, remote_port: 7 });
        placed.write_boot_info(&mem, 1, 2, 3, 4, 5).unwrap();
        let mut raw = vec![0u8; core::mem::size_of::<BootInfo>()];
        mem.read_slice(&mut raw, GuestAddress(placed.boot_info_gpa)).unwrap();
        let b = <BootInfo as zerocopy::FromBytes>::read_from_bytes(&raw).unwrap();
        assert_eq!(b.nr_host_ports as usize, MAX_HOST_PORTS);
        assert_eq!(b.host_ports[0], HostPort { port: 2, remote_port: 7 });
    }

    #[test]
    fn grant_frames_are_zeroed_outside_ram_and_in_boot_info() {
        let img = ShimImage::parse(SHIM_ELF).unwrap();
        let layout = Layout::plan(64 << 20, img.frames(), fixed_frames(1)).unwrap();
        let mem = layout.create_memory().unwrap();
        // Dirty the shim region first: placement must zero the grant frames itself.
        let r = layout.shim_region;
        mem.write_slice(&vec![0xa5u8; (r.nr_frames * PAGE_SIZE) as usize], GuestAddress(r.first_mfn << 12))
            .unwrap();
        let placed = place(&mem, &layout, &img, &mut layout.shim_frames(), 1).unwrap();
        let g = placed.grant_frames;
        assert_eq!(g, placed.boot.grant_frames);
        assert_eq!(g.nr_frames, MAX_GRANT_FRAMES);
        let m2p0 = placed.boot.m2p.first_mfn << 12;
        for mfn in g.first_mfn..g.first_mfn + g.nr_frames {
            assert!(r.contains(mfn), "grant frame {mfn:#x} in the shim region");
            assert!(!layout.p2m.ranges().iter().any(|ram| ram.contains(mfn)), "not RAM");
            let v: u64 = mem.read_obj(GuestAddress(m2p0 + 8 * mfn)).unwrap();
            assert_eq!(v, u64::MAX, "no PFN for grant frame {mfn:#x}");
            let mut page = vec![1u8; PAGE_SIZE as usize];
            mem.read_slice(&mut page, GuestAddress(mfn << 12)).unwrap();
            assert!(page.iter().all(|&b| b == 0), "grant frame {mfn:#x} zeroed");
        }
    }

    #[test]
    fn placement_fills_m2p_and_maps_the_shim() {
        let img = ShimImage::parse(SHIM_ELF).unwrap();
        let layout = Layout::plan(64 << 20, img.frames(), fixed_frames(1)).unwrap();
        let mem = layout.create_memory().unwrap();
        let mut alloc = layout.shim_frames();
        let placed = place(&mem, &layout, &img, &mut alloc, 1).unwrap();
        let m2p0 = placed.boot.m2p.first_mfn << 12;
        let (pfn, mfn) = layout.p2m.iter().nth(5).unwrap();
        let v: u64 = mem.read_obj(GuestAddress(m2p0 + 8 * mfn)).unwrap();
        assert_eq!(v, pfn);
        let v: u64 = mem.read_obj(GuestAddress(m2p0 + 8 * placed.shared_info_mfn)).unwrap();
        assert_eq!(v, u64::MAX, "shared_info is not RAM");
        // The L4 has exactly the four hole slots the shim uses.
        for slot in 0..512u64 {
            let e: u64 = mem.read_obj(GuestAddress(placed.l4_gpa + 8 * slot)).unwrap();
            let used =
                [M2P_L4_SLOT, SHIM_IMAGE_L4_SLOT, MMIO_L4_SLOT, DIRECTMAP_L4_SLOT].contains(&(slot as usize));
            assert_eq!(e & P != 0, used, "slot {slot}");
            if slot as usize == M2P_L4_SLOT {
                assert_ne!(e & US, 0);
            } else if used {
                assert_eq!(e & US, 0);
            }
        }
    }
}
