//! Test support: a tiny ELF64 writer (PT_LOAD + PT_NOTE with Xen notes, optional SHT_NOTE
//! section) and bzImage wrappers for every supported compressor, built the way Linux's
//! `arch/x86/boot` does (payload = compressed ELF followed by its u32 LE size).

use std::io::Write;

use xen_abi::elfnote::*;

use super::elfnotes::Compression;

pub const DEBIAN_VIRT_BASE: u64 = 0xffff_ffff_8000_0000;
pub const DEBIAN_ENTRY: u64 = 0xffff_ffff_8307_91c0;
pub const DEBIAN_INIT_P2M: u64 = 0x80_0000_0000;

/// A PT_LOAD segment: `data` is the file part, zero-filled up to `memsz`.
#[derive(Clone, Debug)]
pub struct Seg {
    pub paddr: u64,
    pub vaddr: u64,
    pub data: Vec<u8>,
    pub memsz: u64,
}

/// One note: `(name, type, desc)`.
pub type RawNote = (Vec<u8>, u32, Vec<u8>);

#[derive(Clone, Debug)]
pub struct TestElf {
    pub e_entry: u64,
    pub class: u8,
    pub machine: u16,
    pub segs: Vec<Seg>,
    pub notes: Vec<RawNote>,
    /// Put the notes in an SHT_NOTE section only (no PT_NOTE).
    pub notes_in_section_only: bool,
}

pub fn xen_u64(ty: u32, v: u64) -> RawNote {
    (b"Xen\0".to_vec(), ty, v.to_le_bytes().to_vec())
}

pub fn xen_u32(ty: u32, v: u32) -> RawNote {
    (b"Xen\0".to_vec(), ty, v.to_le_bytes().to_vec())
}

pub fn xen_str(ty: u32, s: &str) -> RawNote {
    let mut d = s.as_bytes().to_vec();
    d.push(0);
    (b"Xen\0".to_vec(), ty, d)
}

/// The Xen notes of Debian 6.1.0-56 (xen-pv-contract.md §2.3), in Linux's sizes.
pub fn debian_notes() -> Vec<RawNote> {
    let mut l1_mfn_valid = 1u64.to_le_bytes().to_vec();
    l1_mfn_valid.extend_from_slice(&1u64.to_le_bytes());
    vec![
        xen_str(XEN_ELFNOTE_GUEST_OS, "linux"),
        xen_str(XEN_ELFNOTE_GUEST_VERSION, "2.6"),
        xen_str(XEN_ELFNOTE_XEN_VERSION, "xen-3.0"),
        xen_u64(XEN_ELFNOTE_VIRT_BASE, DEBIAN_VIRT_BASE),
        xen_u64(XEN_ELFNOTE_INIT_P2M, DEBIAN_INIT_P2M),
        xen_u64(XEN_ELFNOTE_ENTRY, DEBIAN_ENTRY),
        xen_str(XEN_ELFNOTE_FEATURES, "!writable_page_tables|pae_pgdir_above_4gb"),
        xen_u32(XEN_ELFNOTE_SUPPORTED_FEATURES, 0x8801),
        xen_str(XEN_ELFNOTE_PAE_MODE, "yes"),
        (b"Xen\0".to_vec(), XEN_ELFNOTE_L1_MFN_VALID, l1_mfn_valid),
        xen_u32(XEN_ELFNOTE_MOD_START_PFN, 1),
        xen_str(XEN_ELFNOTE_LOADER, "generic"),
        xen_u32(XEN_ELFNOTE_SUSPEND_CANCEL, 1),
        xen_u64(XEN_ELFNOTE_HV_START_LOW, 0xffff_8000_0000_0000),
        xen_u64(XEN_ELFNOTE_PADDR_OFFSET, 0),
        xen_u32(XEN_ELFNOTE_PHYS32_ENTRY, 0x0100_0850),
        // A non-Xen note, as Linux carries (GNU build id) — must be skipped.
        (b"GNU\0".to_vec(), 3, vec![0xab; 20]),
    ]
}

/// An ELF with Debian 6.1.0-56's program headers (paddr/vaddr/memsz, incl. the vaddr-0
/// per-CPU segment) but only a few file bytes per segment, and Debian's notes.
pub fn debian_like_elf() -> TestElf {
    let seg = |paddr: u64, vaddr: u64, memsz: u64, fill: u8| Seg {
        paddr,
        vaddr,
        data: (0..0x1800u32).map(|i| fill ^ (i as u8)).collect(),
        memsz,
    };
    TestElf {
        e_entry: 0x0100_0000,
        class: 2,
        machine: 62,
        segs: vec![
            seg(0x0100_0000, 0xffff_ffff_8100_0000, 0x18e_a9f0, 0x11),
            seg(0x02a0_0000, 0xffff_ffff_82a0_0000, 0x64_4000, 0x22),
            seg(0x0304_4000, 0, 0x3_5000, 0x33),
            seg(0x0307_9000, 0xffff_ffff_8307_9000, 0x198_7000, 0x44),
        ],
        notes: debian_notes(),
        notes_in_section_only: false,
    }
}

/// A small kernel: 64 KiB at paddr 16 MiB, entry at its start, Debian's notes otherwise.
pub fn small_elf() -> TestElf {
    let mut e = debian_like_elf();
    e.segs = vec![Seg {
        paddr: 0x0100_0000,
        vaddr: 0xffff_ffff_8100_0000,
        data: (0..0x8000u32).map(|i| (i * 7) as u8).collect(),
        memsz: 0x1_0000,
    }];
    e.set_note(xen_u64(XEN_ELFNOTE_ENTRY, 0xffff_ffff_8100_0040));
    e
}

impl TestElf {
    /// Replaces the note of the same type (or adds it).
    pub fn set_note(&mut self, note: RawNote) {
        self.notes.retain(|n| !(n.0 == b"Xen\0" && n.1 == note.1));
        self.notes.push(note);
    }

    pub fn remove_note(&mut self, ty: u32) {
        self.notes.retain(|n| !(n.0 == b"Xen\0" && n.1 == ty));
    }

    pub fn note_area(&self) -> Vec<u8> {
        let mut a = Vec::new();
        for (name, ty, desc) in &self.notes {
            a.extend_from_slice(&(name.len() as u32).to_le_bytes());
            a.extend_from_slice(&(desc.len() as u32).to_le_bytes());
            a.extend_from_slice(&ty.to_le_bytes());
            a.extend_from_slice(name);
            a.resize(a.len().next_multiple_of(4), 0);
            a.extend_from_slice(desc);
            a.resize(a.len().next_multiple_of(4), 0);
        }
        a
    }

    /// Serialises: ehdr | phdrs | notes | segment data | shdrs (null + note section).
    pub fn build(&self) -> Vec<u8> {
        let notes = self.note_area();
        let nphdr = self.segs.len() + usize::from(!self.notes_in_section_only);
        let notes_off = 64 + 56 * nphdr;
        let mut data_off = (notes_off + notes.len()).next_multiple_of(16);
        let mut phdrs = Vec::new();
        let mut body = Vec::new();
        for s in &self.segs {
            phdrs.push((1u32, 7u32, data_off as u64, s.vaddr, s.paddr, s.data.len() as u64, s.memsz));
            body.extend_from_slice(&s.data);
            data_off += s.data.len();
        }
        if !self.notes_in_section_only {
            phdrs.push((4, 4, notes_off as u64, 0, 0, notes.len() as u64, notes.len() as u64));
        }
        let shoff = data_off.next_multiple_of(8);
        let mut f = Vec::new();
        f.extend_from_slice(b"\x7fELF");
        f.extend_from_slice(&[self.class, 1, 1, 0]);
        f.resize(16, 0);
        f.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        f.extend_from_slice(&self.machine.to_le_bytes());
        f.extend_from_slice(&1u32.to_le_bytes());
        f.extend_from_slice(&self.e_entry.to_le_bytes());
        f.extend_from_slice(&64u64.to_le_bytes()); // e_phoff
        f.extend_from_slice(&(shoff as u64).to_le_bytes());
        f.extend_from_slice(&0u32.to_le_bytes()); // e_flags
        f.extend_from_slice(&64u16.to_le_bytes()); // e_ehsize
        f.extend_from_slice(&56u16.to_le_bytes());
        f.extend_from_slice(&(nphdr as u16).to_le_bytes());
        f.extend_from_slice(&64u16.to_le_bytes());
        f.extend_from_slice(&2u16.to_le_bytes()); // e_shnum: null + notes
        f.extend_from_slice(&0u16.to_le_bytes()); // e_shstrndx
        for (ty, flags, off, vaddr, paddr, filesz, memsz) in phdrs {
            f.extend_from_slice(&ty.to_le_bytes());
            f.extend_from_slice(&flags.to_le_bytes());
            for v in [off, vaddr, paddr, filesz, memsz, 0x1000] {
                f.extend_from_slice(&v.to_le_bytes());
            }
        }
        assert_eq!(f.len(), notes_off);
        f.extend_from_slice(&notes);
        f.resize((notes_off + notes.len()).next_multiple_of(16), 0);
        f.extend_from_slice(&body);
        f.resize(shoff, 0);
        f.extend_from_slice(&[0; 64]);
        let mut sh = vec![0u8; 64];
        sh[4..8].copy_from_slice(&7u32.to_le_bytes()); // SHT_NOTE
        sh[24..32].copy_from_slice(&(notes_off as u64).to_le_bytes());
        sh[32..40].copy_from_slice(&(notes.len() as u64).to_le_bytes());
        f.extend_from_slice(&sh);
        f
    }
}

/// `elf` compressed as Linux's `arch/x86/boot/compressed` does for `c`.
pub fn compress(c: Compression, elf: &[u8]) -> Vec<u8> {
    let size = (elf.len() as u32).to_le_bytes();
    let mut out = match c {
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(elf).unwrap();
            return e.finish().unwrap(); // ISIZE ends the stream; nothing appended
        }
        Compression::Xz => {
            let mut opts = lzma_rust2::XzOptions::with_preset(6);
            opts.set_check_sum_type(lzma_rust2::CheckType::Crc32);
            opts.prepend_pre_filter(lzma_rust2::FilterType::BcjX86, 0);
            let mut w = lzma_rust2::XzWriter::new(Vec::new(), opts).unwrap();
            w.write_all(elf).unwrap();
            w.finish().unwrap()
        }
        Compression::Zstd => {
            ruzstd::encoding::compress_to_vec(elf, ruzstd::encoding::CompressionLevel::Fastest)
        }
        Compression::Lz4 => {
            let mut v = 0x184c_2102u32.to_le_bytes().to_vec();
            // Small blocks so that the test covers several of them and a short last one.
            for chunk in elf.chunks(16 << 10) {
                let b = lz4_flex::block::compress(chunk);
                v.extend_from_slice(&(b.len() as u32).to_le_bytes());
                v.extend_from_slice(&b);
            }
            v
        }
    };
    out.extend_from_slice(&size);
    out
}

/// A bzImage (boot protocol 2.15) around `payload`, with `trailing` junk after it (real
/// bzImages carry more code and data there).
pub fn bzimage(payload: &[u8], trailing: usize) -> Vec<u8> {
    let setup_sects = 3u8;
    let payload_offset = 0x3cc_u32;
    let mut f = vec![0u8; (usize::from(setup_sects) + 1) * 512];
    f[0x1f1] = setup_sects;
    f[0x202..0x206].copy_from_slice(b"HdrS");
    f[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
    f[0x248..0x24c].copy_from_slice(&payload_offset.to_le_bytes());
    f[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    f.extend(std::iter::repeat_n(0x90, payload_offset as usize));
    f.extend_from_slice(payload);
    f.extend(std::iter::repeat_n(0xee, trailing));
    f
}
