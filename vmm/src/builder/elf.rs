//! A minimal, bounds-checked ELF64 reader: just what the domain builder needs (the file header,
//! program headers, note segments and note sections). Every offset and size comes from an
//! untrusted file, so every one is checked before use; nothing here can panic.
//!
//! goblin is deliberately not used: it parses far more than we need (symbols, dynamic tables,
//! relocations), and a hand-written reader of ~150 lines is easier to audit and fuzz.

use super::BuilderError;

const ELFMAG: &[u8; 4] = b"\x7fELF";
const ELFCLASS32: u8 = 1;
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const EM_X86_64: u16 = 62;

pub const PT_LOAD: u32 = 1;
pub const PT_NOTE: u32 = 4;
pub const SHT_NOTE: u32 = 7;
pub const PF_X: u32 = 1;
pub const PF_W: u32 = 2;
pub const PF_R: u32 = 4;

const EHDR_SIZE: usize = 64;
const PHDR_SIZE: usize = 56;
const SHDR_SIZE: usize = 64;

/// `true` when `image` starts with the ELF magic.
pub fn is_elf(image: &[u8]) -> bool {
    image.starts_with(ELFMAG)
}

/// One `Elf64_Phdr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProgramHeader {
    pub p_type: u32,
    pub p_flags: u32,
    pub p_offset: u64,
    pub p_vaddr: u64,
    pub p_paddr: u64,
    pub p_filesz: u64,
    pub p_memsz: u64,
}

impl ProgramHeader {
    /// libelf's `elf_phdr_is_loadable`: `PT_LOAD` with any of R/W/X.
    pub fn is_loadable(&self) -> bool {
        self.p_type == PT_LOAD && self.p_flags & (PF_R | PF_W | PF_X) != 0
    }
}

/// A parsed 64-bit little-endian x86-64 ELF file (borrowing the image).
#[derive(Debug)]
pub struct Elf<'a> {
    pub image: &'a [u8],
    pub e_entry: u64,
    pub phdrs: Vec<ProgramHeader>,
    /// `(offset, size)` of every `SHT_NOTE` section, already bounds-checked.
    pub note_sections: Vec<(usize, usize)>,
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(off..off.checked_add(2)?)?.try_into().ok()?))
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off.checked_add(4)?)?.try_into().ok()?))
}

fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(off..off.checked_add(8)?)?.try_into().ok()?))
}

fn truncated(what: &str) -> BuilderError {
    BuilderError::TruncatedImage(format!("the ELF {what} lies past the end of the file"))
}

/// `[off, off + len)` of `image` as a range, if it is inside the file.
pub fn file_range(image: &[u8], off: u64, len: u64) -> Option<std::ops::Range<usize>> {
    let start = usize::try_from(off).ok()?;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    (end <= image.len()).then_some(start..end)
}

impl<'a> Elf<'a> {
    /// Parses the headers of `image` and checks that it is an x86-64 ELF64 little-endian file
    /// whose program headers (and section headers, if any) lie inside the file.
    pub fn parse(image: &'a [u8]) -> Result<Elf<'a>, BuilderError> {
        if !is_elf(image) {
            return Err(BuilderError::NotAKernelImage);
        }
        if image.len() < EHDR_SIZE {
            return Err(truncated("file header"));
        }
        match image[4] {
            ELFCLASS64 => {}
            ELFCLASS32 => {
                return Err(BuilderError::UnsupportedElf(
                    "it is a 32-bit ELF; xenvmm runs 64-bit PV kernels only".into(),
                ))
            }
            c => return Err(BuilderError::CorruptImage(format!("unknown ELF class {c}"))),
        }
        if image[5] != ELFDATA2LSB {
            return Err(BuilderError::UnsupportedElf("it is not little-endian".into()));
        }
        let machine = u16_at(image, 18).ok_or_else(|| truncated("file header"))?;
        if machine != EM_X86_64 {
            return Err(BuilderError::UnsupportedElf(format!(
                "it is built for ELF machine {machine}, not x86-64 (62)"
            )));
        }
        let hdr = |off| u64_at(image, off).ok_or_else(|| truncated("file header"));
        let e_entry = hdr(24)?;
        let e_phoff = hdr(32)?;
        let e_shoff = hdr(40)?;
        let hdr16 = |off| u16_at(image, off).ok_or_else(|| truncated("file header"));
        let e_phentsize = hdr16(54)?;
        let e_phnum = hdr16(56)?;
        let e_shentsize = hdr16(58)?;
        let e_shnum = hdr16(60)?;

        let mut phdrs = Vec::with_capacity(usize::from(e_phnum));
        if e_phnum > 0 {
            if usize::from(e_phentsize) < PHDR_SIZE {
                return Err(BuilderError::CorruptImage(format!(
                    "ELF program header size {e_phentsize} is smaller than {PHDR_SIZE}"
                )));
            }
            let table_len = u64::from(e_phentsize) * u64::from(e_phnum);
            file_range(image, e_phoff, table_len).ok_or_else(|| truncated("program headers"))?;
        }
        for i in 0..u64::from(e_phnum) {
            // In range: the whole table was checked above.
            let base = usize::try_from(e_phoff + i * u64::from(e_phentsize))
                .map_err(|_| truncated("program headers"))?;
            let ph = |off: usize| u64_at(image, base + off).ok_or_else(|| truncated("program headers"));
            let p_type = u32_at(image, base).ok_or_else(|| truncated("program headers"))?;
            let p_flags = u32_at(image, base + 4).ok_or_else(|| truncated("program headers"))?;
            phdrs.push(ProgramHeader {
                p_type,
                p_flags,
                p_offset: ph(8)?,
                p_vaddr: ph(16)?,
                p_paddr: ph(24)?,
                p_filesz: ph(32)?,
                p_memsz: ph(40)?,
            });
        }

        // Section headers matter only as a fallback source of notes; a kernel whose section
        // table is missing or stripped is fine, one that points outside the file is corrupt.
        let mut note_sections = Vec::new();
        if e_shnum > 0 && e_shoff != 0 {
            if usize::from(e_shentsize) < SHDR_SIZE {
                return Err(BuilderError::CorruptImage(format!(
                    "ELF section header size {e_shentsize} is smaller than {SHDR_SIZE}"
                )));
            }
            let table_len = u64::from(e_shentsize) * u64::from(e_shnum);
            file_range(image, e_shoff, table_len).ok_or_else(|| truncated("section headers"))?;
            // Index 0 is the reserved null section (libelf starts at 1 too).
            for i in 1..u64::from(e_shnum) {
                let base = usize::try_from(e_shoff + i * u64::from(e_shentsize))
                    .map_err(|_| truncated("section headers"))?;
                let sh_type = u32_at(image, base + 4).ok_or_else(|| truncated("section headers"))?;
                if sh_type != SHT_NOTE {
                    continue;
                }
                let sh_offset = u64_at(image, base + 24).ok_or_else(|| truncated("section headers"))?;
                let sh_size = u64_at(image, base + 32).ok_or_else(|| truncated("section headers"))?;
                let r = file_range(image, sh_offset, sh_size).ok_or_else(|| truncated("note section"))?;
                note_sections.push((r.start, r.len()));
            }
        }

        Ok(Elf { image, e_entry, phdrs, note_sections })
    }

    /// The loadable segments (libelf's definition), in file order.
    pub fn loadable(&self) -> impl Iterator<Item = &ProgramHeader> {
        self.phdrs.iter().filter(|p| p.is_loadable())
    }

    /// `(pstart, pend)`: the physical range the loadable segments cover, by `p_paddr`
    /// (never `p_vaddr`: Linux's per-CPU segment has vaddr 0). Each segment must be
    /// self-consistent: `filesz <= memsz`, file data inside the file, no address overflow.
    pub fn paddr_range(&self) -> Result<(u64, u64), BuilderError> {
        let mut range: Option<(u64, u64)> = None;
        for p in self.loadable() {
            if p.p_filesz > p.p_memsz {
                return Err(BuilderError::CorruptImage(format!(
                    "ELF segment at paddr {:#x} has filesz {:#x} > memsz {:#x}",
                    p.p_paddr, p.p_filesz, p.p_memsz
                )));
            }
            file_range(self.image, p.p_offset, p.p_filesz).ok_or_else(|| {
                BuilderError::TruncatedImage(format!(
                    "ELF segment at paddr {:#x} needs file bytes {:#x}+{:#x}, the file has {:#x}",
                    p.p_paddr,
                    p.p_offset,
                    p.p_filesz,
                    self.image.len()
                ))
            })?;
            let end = p.p_paddr.checked_add(p.p_memsz).ok_or_else(|| {
                BuilderError::CorruptImage(format!(
                    "ELF segment at paddr {:#x} wraps around the address space",
                    p.p_paddr
                ))
            })?;
            range = Some(match range {
                None => (p.p_paddr, end),
                Some((s, e)) => (s.min(p.p_paddr), e.max(end)),
            });
        }
        range.ok_or_else(|| BuilderError::CorruptImage("the ELF has no loadable segments".into()))
    }

    /// `(offset, size)` of every `PT_NOTE` segment's file data. Like libelf, segments with
    /// `p_offset == 0` are skipped (some binutils versions leave it unset).
    pub fn note_segments(&self) -> Result<Vec<(usize, usize)>, BuilderError> {
        let mut out = Vec::new();
        for p in self.phdrs.iter().filter(|p| p.p_type == PT_NOTE && p.p_offset != 0) {
            let r =
                file_range(self.image, p.p_offset, p.p_filesz).ok_or_else(|| truncated("note segment"))?;
            out.push((r.start, r.len()));
        }
        Ok(out)
    }
}

/// One ELF note: `(type, name, desc)`. Names are compared up to their first NUL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Note<'a> {
    pub n_type: u32,
    pub name: &'a [u8],
    pub desc: &'a [u8],
}

/// Splits a note area into notes (4-byte aligned name and desc, as libelf does for both ELF
/// classes). A note running past the end of the area is corruption, not a silent stop.
pub fn parse_notes(area: &[u8]) -> Result<Vec<Note<'_>>, BuilderError> {
    let bad = |why: String| BuilderError::CorruptImage(format!("malformed ELF note: {why}"));
    let mut notes = Vec::new();
    let mut off = 0usize;
    while off < area.len() {
        let namesz = u32_at(area, off).ok_or_else(|| bad("header cut short".into()))? as usize;
        let descsz = u32_at(area, off + 4).ok_or_else(|| bad("header cut short".into()))? as usize;
        let n_type = u32_at(area, off + 8).ok_or_else(|| bad("header cut short".into()))?;
        let name_off = off + 12;
        let name_end = name_off
            .checked_add(namesz)
            .filter(|&e| e <= area.len())
            .ok_or_else(|| bad(format!("name of {namesz} bytes runs past the note area")))?;
        let desc_off = name_off
            .checked_add(namesz.next_multiple_of(4))
            .ok_or_else(|| bad("name size overflows".into()))?;
        let desc_end = desc_off
            .checked_add(descsz)
            .filter(|&e| e <= area.len())
            .ok_or_else(|| bad(format!("descriptor of {descsz} bytes runs past the note area")))?;
        let name = &area[name_off..name_end];
        let name = name.split(|&b| b == 0).next().unwrap_or(name);
        notes.push(Note { n_type, name, desc: &area[desc_off..desc_end] });
        // The final note's padding may be missing; anything past the area ends the loop.
        off = desc_off.saturating_add(descsz.next_multiple_of(4));
        if notes.len() > 65_536 {
            return Err(bad("too many notes".into()));
        }
    }
    Ok(notes)
}
