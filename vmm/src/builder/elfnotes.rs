//! Xen ELF notes (`xen/include/public/elfnote.h`): parsing and the checks libxc applies
//! (`libelf-dominfo.c`: `elf_xen_parse`, `elf_xen_note_check`, `elf_xen_addr_calc_check`;
//! `xg_dom_elfloader.c`: the domU check). See xen-pv-contract.md §2.3.
//!
//! Sources, in libelf's order: `PT_NOTE` segments, then (only if those hold no Xen note)
//! `SHT_NOTE` sections. The legacy `__xen_guest` section string (pre-2006 kernels) is not
//! supported: such a kernel is reported as having no Xen notes.

use xen_abi::elfnote::*;

use super::elf::{parse_notes, Elf};
use super::BuilderError;

/// Xen feature bits (`xen/include/public/features.h`) that a FEATURES note can name.
pub const XENFEAT_WRITABLE_PAGE_TABLES: u32 = 0;
pub const XENFEAT_WRITABLE_DESCRIPTOR_TABLES: u32 = 1;
pub const XENFEAT_AUTO_TRANSLATED_PHYSMAP: u32 = 2;
pub const XENFEAT_SUPERVISOR_MODE_KERNEL: u32 = 3;
pub const XENFEAT_PAE_PGDIR_ABOVE_4GB: u32 = 4;
pub const XENFEAT_HVM_CALLBACK_VECTOR: u32 = 8;
pub const XENFEAT_DOM0: u32 = 11;

/// The names libelf knows (`elf_xen_feature_names`), by bit.
const FEATURE_NAMES: &[(u32, &str)] = &[
    (XENFEAT_WRITABLE_PAGE_TABLES, "writable_page_tables"),
    (XENFEAT_WRITABLE_DESCRIPTOR_TABLES, "writable_descriptor_tables"),
    (XENFEAT_AUTO_TRANSLATED_PHYSMAP, "auto_translated_physmap"),
    (XENFEAT_SUPERVISOR_MODE_KERNEL, "supervisor_mode_kernel"),
    (XENFEAT_PAE_PGDIR_ABOVE_4GB, "pae_pgdir_above_4gb"),
    (XENFEAT_HVM_CALLBACK_VECTOR, "hvm_callback_vector"),
    (XENFEAT_DOM0, "dom0"),
];

/// How the kernel image was packaged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageFormat {
    /// A plain ELF file (`vmlinux`).
    Elf,
    /// A whole-file gzip of an ELF (`vmlinux.gz`); libxc gunzips any kernel file.
    GzipElf,
    /// A bzImage whose payload is compressed with the named method.
    BzImage(Compression),
}

/// bzImage payload compressions xenvmm decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Xz,
    Zstd,
    Lz4,
}

/// What the Xen notes (and the ELF headers) say about a PV kernel, after libxc's defaults and
/// checks were applied (libelf's `struct elf_dom_parms`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XenElfInfo {
    pub format: ImageFormat,
    /// Size of the unpacked ELF, in bytes.
    pub elf_size: u64,
    /// Initial RIP: the ENTRY note, else `e_entry`.
    pub entry: u64,
    /// VA of PFN 0 of the initial mapping (VIRT_BASE; 0 when absent, as libxc does).
    pub virt_base: u64,
    /// PADDR_OFFSET (default 0 with ELF notes).
    pub elf_paddr_offset: u64,
    /// Lowest `p_paddr` / highest `p_paddr + p_memsz` of the loadable segments.
    pub pstart: u64,
    pub pend: u64,
    /// `pstart`/`pend` translated to VAs: where the kernel sits in the initial mapping.
    pub virt_kstart: u64,
    pub virt_kend: u64,
    /// HYPERCALL_PAGE: VA of the page the builder fills with hypercall stubs.
    pub hypercall_page: Option<u64>,
    /// INIT_P2M as written in the note (see [`XenElfInfo::p2m_base`] for whether it is used).
    pub init_p2m: Option<u64>,
    /// MOD_START_PFN != 0: the initrd may be left unmapped and passed by PFN.
    pub mod_start_pfn: bool,
    pub hv_start_low: Option<u64>,
    pub suspend_cancel: Option<u64>,
    /// PHYS32_ENTRY (PVH entry point). Recorded only: its presence never selects PVH.
    pub phys32_entry: Option<u64>,
    pub xen_version: String,
    pub guest_os: String,
    pub guest_version: String,
    pub loader: String,
    pub pae_mode: String,
    pub bsd_symtab: bool,
    /// Xen features the kernel supports / requires (bit i = XENFEAT i of submap 0).
    pub features_supported: u32,
    pub features_required: u32,
    /// The notes came from `SHT_NOTE` sections, not `PT_NOTE` segments.
    pub notes_from_sections: bool,
}

impl XenElfInfo {
    /// The INIT_P2M address libxc actually uses: only a page-aligned value below VIRT_BASE
    /// (`xc_dom_build_image`); otherwise the P2M goes inside the initial mapping.
    pub fn p2m_base(&self) -> Option<u64> {
        self.init_p2m.filter(|&b| b < self.virt_base && b & 0xfff == 0)
    }
}

/// A string note: up to the first NUL, or the whole descriptor. Linux writes FEATURES with
/// `.ascii` (no NUL; libelf then reads on into the zero padding), so a missing NUL is normal.
fn note_str(desc: &[u8]) -> String {
    let s = desc.split(|&b| b == 0).next().unwrap_or(desc);
    String::from_utf8_lossy(s).into_owned()
}

/// An integer note: 4 or 8 bytes, little-endian.
fn note_int(name: &'static str, desc: &[u8]) -> Result<u64, BuilderError> {
    match desc.len() {
        4 => Ok(u64::from(u32::from_le_bytes(desc.try_into().unwrap_or_default()))),
        8 => Ok(u64::from_le_bytes(desc.try_into().unwrap_or_default())),
        n => Err(BuilderError::BadXenNote {
            note: name,
            reason: format!("integer of {n} bytes (must be 4 or 8)"),
        }),
    }
}

/// libelf's `elf_xen_parse_features`: `|`-separated names; `!name` = required. An unknown
/// required feature is an error, an unknown optional one is ignored.
fn parse_features(s: &str, supported: &mut u32, required: &mut u32) -> Result<(), BuilderError> {
    for token in s.split('|').filter(|t| !t.is_empty()) {
        let (is_required, name) = match token.strip_prefix('!') {
            Some(n) => (true, n),
            None => (false, token),
        };
        match FEATURE_NAMES.iter().find(|(_, n)| *n == name) {
            Some(&(bit, _)) => {
                *supported |= 1 << bit;
                if is_required {
                    *required |= 1 << bit;
                }
            }
            None if is_required => {
                return Err(BuilderError::IncompatibleKernel(format!(
                    "it requires the Xen feature '{name}', which Xen does not know"
                )))
            }
            None => {}
        }
    }
    Ok(())
}

#[derive(Default)]
struct RawNotes {
    count: usize,
    entry: Option<u64>,
    hypercall_page: Option<u64>,
    virt_base: Option<u64>,
    paddr_offset: Option<u64>,
    init_p2m: Option<u64>,
    mod_start_pfn: bool,
    hv_start_low: Option<u64>,
    suspend_cancel: Option<u64>,
    phys32_entry: Option<u64>,
    xen_version: String,
    guest_os: String,
    guest_version: String,
    loader: String,
    pae_mode: String,
    bsd_symtab: bool,
    supported: u32,
    required: u32,
}

impl RawNotes {
    /// libelf's `elf_xen_parse_note` for one note named "Xen". Unknown types are ignored.
    fn add(&mut self, n_type: u32, desc: &[u8]) -> Result<(), BuilderError> {
        self.count += 1;
        match n_type {
            XEN_ELFNOTE_ENTRY => self.entry = Some(note_int("ENTRY", desc)?),
            XEN_ELFNOTE_HYPERCALL_PAGE => self.hypercall_page = Some(note_int("HYPERCALL_PAGE", desc)?),
            XEN_ELFNOTE_VIRT_BASE => self.virt_base = Some(note_int("VIRT_BASE", desc)?),
            XEN_ELFNOTE_PADDR_OFFSET => self.paddr_offset = Some(note_int("PADDR_OFFSET", desc)?),
            XEN_ELFNOTE_INIT_P2M => self.init_p2m = Some(note_int("INIT_P2M", desc)?),
            XEN_ELFNOTE_MOD_START_PFN => self.mod_start_pfn = note_int("MOD_START_PFN", desc)? != 0,
            XEN_ELFNOTE_HV_START_LOW => self.hv_start_low = Some(note_int("HV_START_LOW", desc)?),
            XEN_ELFNOTE_SUSPEND_CANCEL => self.suspend_cancel = Some(note_int("SUSPEND_CANCEL", desc)?),
            XEN_ELFNOTE_PHYS32_ENTRY => self.phys32_entry = Some(note_int("PHYS32_ENTRY", desc)?),
            XEN_ELFNOTE_XEN_VERSION => self.xen_version = note_str(desc),
            XEN_ELFNOTE_GUEST_OS => self.guest_os = note_str(desc),
            XEN_ELFNOTE_GUEST_VERSION => self.guest_version = note_str(desc),
            XEN_ELFNOTE_LOADER => self.loader = note_str(desc),
            XEN_ELFNOTE_PAE_MODE => self.pae_mode = note_str(desc),
            XEN_ELFNOTE_BSD_SYMTAB => self.bsd_symtab = note_str(desc) == "yes",
            XEN_ELFNOTE_FEATURES => {
                let s = note_str(desc);
                parse_features(&s, &mut self.supported, &mut self.required)?;
            }
            XEN_ELFNOTE_SUPPORTED_FEATURES => {
                // An array of u32 submaps; xenvmm (like Xen today) knows submap 0 only.
                if desc.len() < 4 || !desc.len().is_multiple_of(4) {
                    return Err(BuilderError::BadXenNote {
                        note: "SUPPORTED_FEATURES",
                        reason: format!("{} bytes (must be a multiple of 4)", desc.len()),
                    });
                }
                self.supported |= u32::from_le_bytes([desc[0], desc[1], desc[2], desc[3]]);
            }
            // INFO, L1_MFN_VALID (save/restore only), PHYS32_RELOC (PVH only), future notes.
            _ => {}
        }
        Ok(())
    }
}

/// Reads, defaults and validates the Xen notes of `elf`.
pub fn parse_xen_notes(elf: &Elf<'_>, format: ImageFormat) -> Result<XenElfInfo, BuilderError> {
    let mut raw = RawNotes::default();
    for (off, len) in elf.note_segments()? {
        for note in parse_notes(&elf.image[off..off + len])? {
            if note.name == XEN_ELFNOTE_NAME {
                raw.add(note.n_type, note.desc)?;
            }
        }
    }
    let mut notes_from_sections = false;
    if raw.count == 0 {
        for &(off, len) in &elf.note_sections {
            for note in parse_notes(&elf.image[off..off + len])? {
                if note.name == XEN_ELFNOTE_NAME {
                    raw.add(note.n_type, note.desc)?;
                    notes_from_sections = true;
                }
            }
        }
    }
    if raw.count == 0 {
        return Err(BuilderError::NoXenNotes);
    }

    // elf_xen_note_check.
    if !raw.loader.starts_with("generic") && !raw.guest_os.starts_with("linux") {
        return Err(BuilderError::IncompatibleKernel(format!(
            "GUEST_OS is '{}' and LOADER is '{}'; only Linux or 'generic' loader images load",
            raw.guest_os, raw.loader
        )));
    }
    if !raw.xen_version.starts_with("xen-3.0") {
        return Err(BuilderError::IncompatibleKernel(format!(
            "XEN_VERSION is '{}', not xen-3.0",
            raw.xen_version
        )));
    }
    // xg_dom_elfloader.c refuses dom0-only kernels; xenvmm has no translated (HVM/PVH-style)
    // paging, so a kernel that insists on it cannot run either.
    if raw.required & (1 << XENFEAT_DOM0) != 0 {
        return Err(BuilderError::IncompatibleKernel(
            "it requires the dom0 feature and cannot run unprivileged (domU)".into(),
        ));
    }
    if raw.required & (1 << XENFEAT_AUTO_TRANSLATED_PHYSMAP) != 0 {
        return Err(BuilderError::IncompatibleKernel(
            "it requires auto_translated_physmap, which a PV domain does not have".into(),
        ));
    }

    // elf_xen_addr_calc_check. libxc computes these modulo 2^64; so do we, then checks order.
    if raw.paddr_offset.is_some() && raw.virt_base.is_none() {
        return Err(BuilderError::BadKernelAddresses("PADDR_OFFSET is set but VIRT_BASE is not".into()));
    }
    let virt_base = raw.virt_base.unwrap_or(0);
    let elf_paddr_offset = raw.paddr_offset.unwrap_or(0);
    let (pstart, pend) = elf.paddr_range()?;
    let virt_offset = virt_base.wrapping_sub(elf_paddr_offset);
    let virt_kstart = pstart.wrapping_add(virt_offset);
    let virt_kend = pend.wrapping_add(virt_offset);
    let entry = raw.entry.unwrap_or(elf.e_entry);
    if virt_kstart > virt_kend || entry < virt_kstart || entry > virt_kend || virt_base > virt_kstart {
        return Err(BuilderError::BadKernelAddresses(format!(
            "need VIRT_BASE <= kernel start <= ENTRY <= kernel end, have {virt_base:#x}, \
             {virt_kstart:#x}, {entry:#x}, {virt_kend:#x}"
        )));
    }
    if let Some(p2m) = raw.init_p2m {
        if p2m >= virt_kstart && p2m < virt_kend {
            return Err(BuilderError::BadKernelAddresses(format!(
                "INIT_P2M {p2m:#x} lies inside the kernel {virt_kstart:#x}..{virt_kend:#x}"
            )));
        }
    }

    Ok(XenElfInfo {
        format,
        elf_size: elf.image.len() as u64,
        entry,
        virt_base,
        elf_paddr_offset,
        pstart,
        pend,
        virt_kstart,
        virt_kend,
        hypercall_page: raw.hypercall_page,
        init_p2m: raw.init_p2m,
        mod_start_pfn: raw.mod_start_pfn,
        hv_start_low: raw.hv_start_low,
        suspend_cancel: raw.suspend_cancel,
        phys32_entry: raw.phys32_entry,
        xen_version: raw.xen_version,
        guest_os: raw.guest_os,
        guest_version: raw.guest_version,
        loader: raw.loader,
        pae_mode: raw.pae_mode,
        bsd_symtab: raw.bsd_symtab,
        features_supported: raw.supported,
        features_required: raw.required,
        notes_from_sections,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_string_of_debian_parses_as_libelf_does() {
        let (mut sup, mut req) = (0, 0);
        parse_features("!writable_page_tables|pae_pgdir_above_4gb", &mut sup, &mut req).unwrap();
        assert_eq!(sup, 1 << 0 | 1 << 4);
        assert_eq!(req, 1 << 0);
    }

    #[test]
    fn unknown_required_feature_is_refused_unknown_optional_ignored() {
        let (mut sup, mut req) = (0, 0);
        parse_features("frobnicate|pae_pgdir_above_4gb", &mut sup, &mut req).unwrap();
        assert_eq!(sup, 1 << 4);
        assert!(parse_features("!frobnicate", &mut sup, &mut req).is_err());
    }

    #[test]
    fn integer_notes_must_be_4_or_8_bytes() {
        assert_eq!(note_int("X", &[1, 0, 0, 0]).unwrap(), 1);
        assert_eq!(note_int("X", &[0, 0, 0, 0, 1, 0, 0, 0]).unwrap(), 1 << 32);
        for n in [0, 1, 2, 3, 5, 7, 9, 16] {
            assert!(note_int("X", &vec![0; n]).is_err(), "{n} bytes accepted");
        }
    }

    #[test]
    fn string_notes_end_at_nul_or_descriptor_end() {
        assert_eq!(note_str(b"linux\0junk"), "linux");
        assert_eq!(note_str(b"!writable_page_tables"), "!writable_page_tables");
    }
}
