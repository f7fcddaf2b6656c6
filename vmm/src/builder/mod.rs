//! The PV domain builder: turns a kernel image, an initrd and a command line into the initial
//! memory image of a 64-bit Xen PV domain, exactly as libxc's `xc_dom_*` builder would
//! (xen-pv-contract.md §2). It owns everything the guest finds in RAM at its first
//! instruction: the loaded kernel, the hypercall page, start_info, the xenstore and console
//! rings, the initial page tables, the boot stack, the initrd and the P2M list.
//!
//! ```text
//!  image ──bzimage::unpack──▶ ELF ──elfnotes::parse_xen_notes──▶ XenElfInfo   (probe_kernel)
//!                                 │
//!            layout::compute ◀────┘ (+ nr_pages, initrd size)
//!                 │
//!                 ▼  pagetables::build, hypercall_page, P2M list, start_info
//!      guest memory (vm-memory, GPA = MFN << 12 via the P2m)                  (build_domain)
//! ```
//!
//! Everything read from the image is untrusted: sizes and offsets are checked, nothing can
//! panic, and a decompressed payload is bounded (see `tests/fuzz`).
//!
//! Not done here, by design: the shared_info page contents, the M2P, grant-table seeding,
//! xenstore entries and the vCPU registers (the caller uses [`BuiltDomain`] for those), and
//! the shim's own additions to the page tables (`_PAGE_USER`, hypervisor L4 slots).

mod bzimage;
pub mod elf;
mod elfnotes;
mod hypercall_page;
mod layout;
mod pagetables;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod testutil;

use vm_memory::{Bytes, GuestAddress, GuestMemory};
use xen_abi::xen::{
    StartInfo, MAX_GUEST_CMDLINE, SIF_MOD_START_PFN, SIF_VIRT_P2M_4TOOLS, START_INFO_MAGIC_X86_64,
};
use zerocopy::{FromZeros, IntoBytes};

use crate::memory::p2m::P2m;

pub use bzimage::MAX_UNPACKED_SIZE;
pub use elfnotes::{Compression, ImageFormat, XenElfInfo};
pub use layout::{Layout, Mapping, Segment};
pub use pagetables::{L1_PROT, L1_PROT_RO, UPPER_PROT};

use layout::{PAGE_SHIFT, PAGE_SIZE};

/// Errors of the domain builder. Messages are one line, for the user of the CLI.
#[derive(Debug, thiserror::Error)]
pub enum BuilderError {
    #[error("not a bzImage or ELF file")]
    NotAKernelImage,
    #[error("kernel image is truncated: {0}")]
    TruncatedImage(String),
    #[error("corrupt kernel image: {0}")]
    CorruptImage(String),
    #[error("unsupported kernel image: {0}")]
    UnsupportedImage(String),
    #[error("unsupported compression: {0} (rebuild the kernel with XZ, gzip, zstd or lz4)")]
    UnsupportedCompression(&'static str),
    #[error("kernel image is too large: it unpacks to {size_mib} MiB, the limit is 512 MiB")]
    UnpackedTooLarge { size_mib: u64 },
    #[error("corrupt kernel image: the {format} payload does not decompress")]
    Decompress {
        format: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("unsupported kernel ELF: {0}")]
    UnsupportedElf(String),
    #[error("not a Xen PV kernel (no Xen ELF notes)")]
    NoXenNotes,
    #[error("corrupt Xen ELF note {note}: {reason}")]
    BadXenNote { note: &'static str, reason: String },
    #[error("kernel cannot run as a Xen PV domU: {0}")]
    IncompatibleKernel(String),
    #[error("kernel has invalid addresses: {0}")]
    BadKernelAddresses(String),
    #[error("memory too small: the image needs at least {needed_mib} MiB, --mem is {have_mib} MiB")]
    MemoryTooSmall { needed_mib: u64, have_mib: u64 },
    #[error(
        "the initial mapping (kernel, initrd, page tables) needs {size_mib} MiB, more than the \
         1 GiB a PV Linux kernel accepts; use a smaller initrd"
    )]
    InitialMappingTooLarge { size_mib: u64 },
    #[error("kernel command line is {len} bytes, the limit is {max}", max = MAX_GUEST_CMDLINE - 1)]
    CmdlineTooLong { len: usize },
    #[error("kernel command line contains a NUL byte")]
    CmdlineHasNul,
    #[error("the domain's P2M has {p2m} pages but the layout was made for {layout}")]
    P2mSizeMismatch { p2m: u64, layout: u64 },
    #[error("the domain's P2M has no machine frame for PFN {pfn:#x}")]
    MissingMachineFrame { pfn: u64 },
    #[error("cannot write the {what} to guest memory at {gpa:#x}")]
    WriteGuestMemory {
        what: &'static str,
        gpa: u64,
        #[source]
        source: vm_memory::GuestMemoryError,
    },
    #[error("domain builder bug: {0}")]
    Internal(&'static str),
}

/// What to build.
#[derive(Clone, Copy, Debug)]
pub struct DomainSpec<'a> {
    /// bzImage, gzip'd ELF or ELF.
    pub kernel: &'a [u8],
    /// Initial ramdisk, passed to the kernel as is (`None` or empty = no initrd).
    pub initrd: Option<&'a [u8]>,
    /// Kernel command line, at most 1023 bytes.
    pub cmdline: &'a str,
    /// Machine frame of the shared_info page (outside the domain's RAM).
    pub shared_info_mfn: u64,
    /// Guest ports of the xenstore and console event channels (must be non-zero for Linux).
    pub store_evtchn: u32,
    pub console_evtchn: u32,
}

/// The domain as built: what the vCPU, the shim and the backends need to know.
#[derive(Clone, Debug)]
pub struct BuiltDomain {
    /// Initial RIP.
    pub entry: u64,
    /// Initial RSP: top of the boot stack page.
    pub stack_top: u64,
    /// Initial RSI: VA of start_info.
    pub start_info_va: u64,
    /// Machine frame of the initial L4 (CR3 = `l4_mfn << 12`; the shim pins it).
    pub l4_mfn: u64,
    /// VA of the L4 (`start_info.pt_base`).
    pub pt_base: u64,
    pub store_mfn: u64,
    pub console_mfn: u64,
    pub virt_base: u64,
    /// VA of the hypercall page, when the kernel asked for one.
    pub hypercall_page: Option<u64>,
    /// Page-table pages of the initial mapping (`start_info.nr_pt_frames`).
    pub nr_pt_frames: u64,
    /// VA of the P2M list (`start_info.mfn_list`).
    pub mfn_list: u64,
    /// The start_info page as written.
    pub start_info: StartInfo,
    pub info: XenElfInfo,
    pub layout: Layout,
}

/// A kernel image unpacked to its ELF, with its Xen notes parsed and validated.
pub struct UnpackedKernel<'a> {
    elf: std::borrow::Cow<'a, [u8]>,
    pub info: XenElfInfo,
}

/// Unpacks `image` (bzImage or ELF) once and validates its Xen notes. Decompressing a distro
/// kernel is the most expensive step of building a domain; do it once and pass the result to
/// [`build_domain_unpacked`].
pub fn unpack_kernel(image: &[u8]) -> Result<UnpackedKernel<'_>, BuilderError> {
    let (elf_bytes, format) = bzimage::unpack(image)?;
    let info = parse_checked(&elf::Elf::parse(&elf_bytes)?, format)?;
    Ok(UnpackedKernel { elf: elf_bytes, info })
}

/// Unpacks `image` and parses and validates its Xen notes, without any guest memory. The CLI
/// uses this to reject a bad kernel before creating the VM.
pub fn probe_kernel(image: &[u8]) -> Result<XenElfInfo, BuilderError> {
    unpack_kernel(image).map(|k| k.info)
}

fn parse_checked(elf: &elf::Elf<'_>, format: ImageFormat) -> Result<XenElfInfo, BuilderError> {
    let info = elfnotes::parse_xen_notes(elf, format)?;
    if let Some(va) = info.hypercall_page {
        if va < info.virt_kstart || va >= info.virt_kend {
            return Err(BuilderError::BadKernelAddresses(format!(
                "HYPERCALL_PAGE {va:#x} lies outside the kernel {:#x}..{:#x}",
                info.virt_kstart, info.virt_kend
            )));
        }
    }
    Ok(info)
}

/// Builds the domain into `mem`, whose RAM is described by `p2m` (PFN -> MFN, GPA =
/// MFN << 12).
///
/// `mem` must be zero-filled (fresh anonymous memory is): the builder writes every page it
/// gives a meaning to (kernel incl. bss and gaps, hypercall page, start_info, xenstore and
/// console rings, page tables, boot stack, initrd tail, P2M), but leaves the padding below
/// the kernel, the slack after the boot stack and the free RAM untouched. Linux does not
/// rely on those being zero; a reused VM must still be cleared by the caller.
pub fn build_domain<M: GuestMemory>(
    mem: &M,
    p2m: &P2m,
    spec: &DomainSpec,
) -> Result<BuiltDomain, BuilderError> {
    if spec.cmdline.len() >= MAX_GUEST_CMDLINE {
        return Err(BuilderError::CmdlineTooLong { len: spec.cmdline.len() });
    }
    if spec.cmdline.as_bytes().contains(&0) {
        return Err(BuilderError::CmdlineHasNul);
    }
    build_domain_unpacked(mem, p2m, spec, &unpack_kernel(spec.kernel)?)
}

/// [`build_domain`] for a kernel already unpacked by [`unpack_kernel`]; `spec.kernel` is not
/// read again.
pub fn build_domain_unpacked<M: GuestMemory>(
    mem: &M,
    p2m: &P2m,
    spec: &DomainSpec,
    kernel: &UnpackedKernel<'_>,
) -> Result<BuiltDomain, BuilderError> {
    if spec.cmdline.len() >= MAX_GUEST_CMDLINE {
        return Err(BuilderError::CmdlineTooLong { len: spec.cmdline.len() });
    }
    if spec.cmdline.as_bytes().contains(&0) {
        return Err(BuilderError::CmdlineHasNul);
    }
    let elf = elf::Elf::parse(&kernel.elf)?;
    let info = kernel.info.clone();

    let initrd = spec.initrd.filter(|i| !i.is_empty());
    let nr_pages = p2m.nr_pages();
    let layout = layout::compute(&info, nr_pages, initrd.map(|i| i.len() as u64))?;
    if layout.nr_pages != nr_pages {
        return Err(BuilderError::P2mSizeMismatch { p2m: nr_pages, layout: layout.nr_pages });
    }
    let w = GuestWriter { mem, p2m };

    load_kernel(&w, &elf, &info, &layout)?;
    if let Some(va) = info.hypercall_page {
        let pfn = (va - info.virt_base) >> PAGE_SHIFT;
        w.write("hypercall page", pfn, 0, &hypercall_page::hypercall_page())?;
    }

    let (mut flags, mut mod_start, mut mod_len) = (SIF_VIRT_P2M_4TOOLS, 0, 0);
    if let (Some(data), Some(seg)) = (initrd, layout.initrd) {
        w.write("initrd", seg.pfn, 0, data)?;
        let tail = seg.pages * PAGE_SIZE - data.len() as u64;
        w.zero("initrd", seg.pfn, data.len() as u64, tail)?;
        mod_len = seg.pages * PAGE_SIZE;
        match seg.va {
            Some(va) => mod_start = va,
            None => {
                mod_start = seg.pfn;
                flags |= SIF_MOD_START_PFN;
            }
        }
    }

    write_p2m_list(&w, p2m, &layout)?;

    for run in pagetables::build(&layout, |pfn| p2m.pfn_to_mfn(pfn))? {
        w.write("page tables", run.pfn, 0, run.entries.as_bytes())?;
    }
    w.zero("xenstore ring", layout.xenstore_pfn, 0, PAGE_SIZE)?;
    // Xen >= 4.21 sets the ring's `connection` byte to DISCONNECTED (1) here and xenconsoled
    // clears it; newer hvc_xen drops output while it is 1. xenvmm's console backend serves the
    // ring from the first instruction, so the byte stays 0 (CONNECTED), as older Xen left it.
    w.zero("console ring", layout.console_pfn, 0, PAGE_SIZE)?;
    w.zero("boot stack", layout.bootstack_pfn, 0, PAGE_SIZE)?;

    let mfn = |pfn| p2m.pfn_to_mfn(pfn).ok_or(BuilderError::MissingMachineFrame { pfn });
    let mut si = StartInfo::new_zeroed();
    si.magic[..START_INFO_MAGIC_X86_64.len()].copy_from_slice(START_INFO_MAGIC_X86_64);
    si.nr_pages = nr_pages;
    si.shared_info = spec.shared_info_mfn << PAGE_SHIFT;
    si.flags = flags;
    si.store_mfn = mfn(layout.xenstore_pfn)?;
    si.store_evtchn = spec.store_evtchn;
    si.console_mfn = mfn(layout.console_pfn)?;
    si.console_evtchn = spec.console_evtchn;
    si.pt_base = layout.va_of(layout.pgtables.pfn);
    si.nr_pt_frames = layout.nr_pt_frames();
    si.mfn_list = layout.p2m.va.unwrap_or_default();
    si.mod_start = mod_start;
    si.mod_len = mod_len;
    si.cmd_line[..spec.cmdline.len()].copy_from_slice(spec.cmdline.as_bytes());
    if let Some(seg) = layout.p2m_segment {
        si.first_p2m_pfn = seg.pfn;
        si.nr_p2m_frames = seg.pages;
    }
    w.write("start_info", layout.start_info_pfn, 0, si.as_bytes())?;
    let si_len = std::mem::size_of::<StartInfo>() as u64;
    w.zero("start_info", layout.start_info_pfn, si_len, PAGE_SIZE - si_len)?;

    Ok(BuiltDomain {
        entry: info.entry,
        stack_top: layout.va_of(layout.bootstack_pfn + 1),
        start_info_va: layout.va_of(layout.start_info_pfn),
        l4_mfn: mfn(layout.pgtables.pfn)?,
        pt_base: si.pt_base,
        store_mfn: si.store_mfn,
        console_mfn: si.console_mfn,
        virt_base: info.virt_base,
        hypercall_page: info.hypercall_page,
        nr_pt_frames: si.nr_pt_frames,
        mfn_list: si.mfn_list,
        start_info: si,
        info,
        layout,
    })
}

/// Copies the loadable segments into the kernel segment by `p_paddr` (libelf
/// `elf_load_binary`: file bytes, then zeros up to `p_memsz`, in header order), then zeroes
/// whatever of the kernel's pages no segment covers.
fn load_kernel<M: GuestMemory>(
    w: &GuestWriter<'_, M>,
    elf: &elf::Elf<'_>,
    info: &XenElfInfo,
    layout: &Layout,
) -> Result<(), BuilderError> {
    let base = layout.kernel.pfn;
    let mut covered: Vec<(u64, u64)> = Vec::new();
    for p in elf.loadable() {
        // paddr_range() validated every segment: inside [pstart, pend) and inside the file.
        let off = p.p_paddr - info.pstart;
        let data = elf::file_range(elf.image, p.p_offset, p.p_filesz)
            .map(|r| &elf.image[r])
            .ok_or(BuilderError::Internal("segment outside the ELF after validation"))?;
        w.write("kernel", base, off, data)?;
        w.zero("kernel", base, off + p.p_filesz, p.p_memsz - p.p_filesz)?;
        covered.push((off, off + p.p_memsz));
    }
    covered.sort_unstable();
    let mut pos = 0;
    for (start, end) in covered.into_iter().chain([(layout.kernel.pages * PAGE_SIZE, u64::MAX)]) {
        if start > pos {
            w.zero("kernel", base, pos, start - pos)?;
        }
        pos = pos.max(end);
    }
    Ok(())
}

/// Writes the guest-visible P2M list: `p2m[pfn] = mfn`, the rest of the last page `~0`.
fn write_p2m_list<M: GuestMemory>(
    w: &GuestWriter<'_, M>,
    p2m: &P2m,
    layout: &Layout,
) -> Result<(), BuilderError> {
    const PER_PAGE: usize = (PAGE_SIZE / 8) as usize;
    let mut mfns = p2m.iter().map(|(_, mfn)| mfn);
    let mut page = [u64::MAX; PER_PAGE];
    for i in 0..layout.p2m.pages {
        page.fill(u64::MAX);
        for slot in page.iter_mut() {
            match mfns.next() {
                Some(mfn) => *slot = mfn,
                None => break,
            }
        }
        w.write("P2M list", layout.p2m.pfn + i, 0, page.as_bytes())?;
    }
    Ok(())
}

/// Writes to the domain's pseudo-physical memory through the P2M, one contiguous machine
/// range at a time. The only code of the builder that touches guest memory.
struct GuestWriter<'a, M> {
    mem: &'a M,
    p2m: &'a P2m,
}

impl<M: GuestMemory> GuestWriter<'_, M> {
    /// The MFN of `pfn` and how many frames follow it contiguously in machine memory.
    fn lookup(&self, pfn: u64) -> Result<(u64, u64), BuilderError> {
        let mut base = 0u64;
        for r in self.p2m.ranges() {
            if pfn >= base && pfn - base < r.nr_frames {
                return Ok((r.first_mfn + (pfn - base), r.nr_frames - (pfn - base)));
            }
            base += r.nr_frames;
        }
        Err(BuilderError::MissingMachineFrame { pfn })
    }

    /// Calls `f(gpa, pos, len)` for each machine-contiguous piece of the `len` bytes at byte
    /// `offset` of PFN `pfn`; `pos` is the piece's position within those bytes.
    fn for_each_piece(
        &self,
        pfn: u64,
        offset: u64,
        len: u64,
        mut f: impl FnMut(u64, u64, u64) -> Result<(), BuilderError>,
    ) -> Result<(), BuilderError> {
        let overflow = BuilderError::Internal("guest write past the end of the address space");
        let mut addr = (pfn << PAGE_SHIFT).checked_add(offset).ok_or(overflow)?;
        let mut pos = 0;
        while pos < len {
            let (mfn, frames) = self.lookup(addr >> PAGE_SHIFT)?;
            let in_page = addr & (PAGE_SIZE - 1);
            let room = (frames.saturating_mul(PAGE_SIZE) - in_page).min(len - pos);
            f((mfn << PAGE_SHIFT) | in_page, pos, room)?;
            pos += room;
            addr += room;
        }
        Ok(())
    }

    fn write(&self, what: &'static str, pfn: u64, offset: u64, data: &[u8]) -> Result<(), BuilderError> {
        self.for_each_piece(pfn, offset, data.len() as u64, |gpa, pos, len| {
            // pos + len <= data.len() by construction.
            let chunk = &data[pos as usize..(pos + len) as usize];
            self.mem.write_slice(chunk, GuestAddress(gpa)).map_err(|source| BuilderError::WriteGuestMemory {
                what,
                gpa,
                source,
            })
        })
    }

    fn zero(&self, what: &'static str, pfn: u64, offset: u64, len: u64) -> Result<(), BuilderError> {
        static ZEROS: [u8; 1 << 16] = [0; 1 << 16];
        self.for_each_piece(pfn, offset, len, |gpa, _, len| {
            let mut done = 0;
            while done < len {
                let n = (len - done).min(ZEROS.len() as u64);
                self.mem
                    .write_slice(&ZEROS[..n as usize], GuestAddress(gpa + done))
                    .map_err(|source| BuilderError::WriteGuestMemory { what, gpa: gpa + done, source })?;
                done += n;
            }
            Ok(())
        })
    }
}
