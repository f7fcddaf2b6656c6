//! Kernel image unpacking: a bzImage (Linux boot protocol ≥ 2.08, payload = compressed ELF),
//! a whole-file gzip, or a plain ELF. Follows `xg_dom_bzimageloader.c` and
//! xen-pv-contract.md §2.1.
//!
//! Linux appends the uncompressed size (u32 LE) after every compressed payload
//! (`size_append` in `scripts/Makefile.lib`; for gzip it is the trailer's ISIZE). Like libxc,
//! we decode one stream and require the output to have exactly that size, which also catches
//! truncation. Output is bounded by [`MAX_UNPACKED_SIZE`] so a zip bomb fails cleanly.

use std::borrow::Cow;
use std::io::Read;

use super::elf::is_elf;
use super::elfnotes::{Compression, ImageFormat};
use super::BuilderError;

/// The largest unpacked kernel we accept (Debian's is 63 MiB).
pub const MAX_UNPACKED_SIZE: u64 = 512 << 20;

/// LZMA2 dictionary memory the XZ decoder may use, in KiB (libxc allows 256 MiB).
const XZ_MEM_LIMIT_KIB: u32 = 256 << 10;

/// The lz4 legacy frame magic (`ARCHIVE_MAGICNUMBER`), stored LE: bytes `02 21 4c 18`.
const LZ4_LEGACY_MAGIC: u32 = 0x184c_2102;
/// Uncompressed size of a full lz4 legacy block (`lz4 -l`).
const LZ4_LEGACY_BLOCK_SIZE: usize = 8 << 20;

// Real-mode header fields (Documentation/arch/x86/boot.rst).
const SETUP_SECTS: usize = 0x1f1;
const HDR_MAGIC_OFF: usize = 0x202;
const HDR_VERSION: usize = 0x206;
const PAYLOAD_OFFSET: usize = 0x248;
const PAYLOAD_LENGTH: usize = 0x24c;
/// `sizeof(struct setup_header)` as libxc declares it (up to `payload_length`).
const SETUP_HEADER_END: usize = 0x250;

fn is_gzip(b: &[u8]) -> bool {
    b.starts_with(&[0x1f, 0x8b])
}

/// `true` when `image` carries the bzImage `HdrS` magic.
fn is_bzimage(image: &[u8]) -> bool {
    image.get(HDR_MAGIC_OFF..HDR_MAGIC_OFF + 4) == Some(b"HdrS")
}

/// Returns the ELF inside `image` and how it was packaged.
pub fn unpack(image: &[u8]) -> Result<(Cow<'_, [u8]>, ImageFormat), BuilderError> {
    if is_elf(image) {
        return Ok((Cow::Borrowed(image), ImageFormat::Elf));
    }
    if is_gzip(image) {
        let elf = decompress(Compression::Gzip, image)?;
        if !is_elf(&elf) {
            return Err(BuilderError::CorruptImage("the gzip file does not contain an ELF kernel".into()));
        }
        return Ok((Cow::Owned(elf), ImageFormat::GzipElf));
    }
    if !is_bzimage(image) {
        return Err(BuilderError::NotAKernelImage);
    }
    if image.len() < SETUP_HEADER_END {
        return Err(BuilderError::TruncatedImage(format!(
            "{} bytes, shorter than the bzImage setup header",
            image.len()
        )));
    }
    let u16_at = |o: usize| u16::from_le_bytes([image[o], image[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes([image[o], image[o + 1], image[o + 2], image[o + 3]]);
    let version = u16_at(HDR_VERSION);
    if version < 0x0208 {
        return Err(BuilderError::UnsupportedImage(format!(
            "bzImage boot protocol {}.{:02} is older than 2.08 and has no ELF payload",
            version >> 8,
            version & 0xff
        )));
    }
    let payload_start = (u64::from(image[SETUP_SECTS]) + 1) * 512 + u64::from(u32_at(PAYLOAD_OFFSET));
    let payload_len = u64::from(u32_at(PAYLOAD_LENGTH));
    let file_len = image.len() as u64;
    if payload_start >= file_len || payload_start + payload_len > file_len {
        return Err(BuilderError::TruncatedImage(format!(
            "the bzImage payload is at {payload_start:#x}+{payload_len:#x}, the file has {file_len:#x} bytes"
        )));
    }
    // In range: both ends were checked against the file length above.
    let payload = &image[payload_start as usize..(payload_start + payload_len) as usize];
    let compression = match payload {
        [0x1f, 0x8b, ..] => Compression::Gzip,
        [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => Compression::Xz,
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Compression::Zstd,
        [0x02, 0x21, ..] => Compression::Lz4,
        [b'B', b'Z', b'h', ..] => return Err(BuilderError::UnsupportedCompression("bzip2")),
        [0x5d, 0x00, ..] => return Err(BuilderError::UnsupportedCompression("lzma")),
        [0x89, b'L', b'Z', b'O', ..] => return Err(BuilderError::UnsupportedCompression("lzo")),
        _ => {
            let magic: Vec<String> = payload.iter().take(4).map(|b| format!("{b:02x}")).collect();
            return Err(BuilderError::CorruptImage(format!(
                "unknown bzImage payload format (magic {})",
                magic.join(" ")
            )));
        }
    };
    let elf = decompress(compression, payload)?;
    if !is_elf(&elf) {
        return Err(BuilderError::CorruptImage("the bzImage payload does not contain an ELF kernel".into()));
    }
    Ok((Cow::Owned(elf), ImageFormat::BzImage(compression)))
}

fn compression_name(c: Compression) -> &'static str {
    match c {
        Compression::Gzip => "gzip",
        Compression::Xz => "XZ",
        Compression::Zstd => "zstd",
        Compression::Lz4 => "lz4",
    }
}

/// Decompresses one Linux-style compressed blob: `stream || u32 LE uncompressed size` (for
/// gzip the size is the last field of the stream itself).
pub fn decompress(c: Compression, blob: &[u8]) -> Result<Vec<u8>, BuilderError> {
    let name = compression_name(c);
    let Some(split) = blob.len().checked_sub(4).filter(|&n| n >= 2) else {
        return Err(BuilderError::TruncatedImage(format!("the {name} payload is {} bytes", blob.len())));
    };
    let (stream, size) = blob.split_at(split);
    // gzip's own trailer ends with ISIZE, which doubles as the size (no bytes are appended).
    let stream = if c == Compression::Gzip { blob } else { stream };
    let expected = u64::from(u32::from_le_bytes([size[0], size[1], size[2], size[3]]));
    if expected > MAX_UNPACKED_SIZE {
        return Err(BuilderError::UnpackedTooLarge { size_mib: expected.div_ceil(1 << 20) });
    }
    let out = match c {
        Compression::Gzip => read_bounded(name, flate2::read::GzDecoder::new(stream), expected)?,
        Compression::Xz => {
            let r = lzma_rust2::XzReader::new_mem_limit(stream, false, XZ_MEM_LIMIT_KIB);
            read_bounded(name, r, expected)?
        }
        Compression::Zstd => {
            let r = ruzstd::decoding::StreamingDecoder::new(stream).map_err(|e| {
                BuilderError::Decompress { format: name, source: std::io::Error::other(e.to_string()) }
            })?;
            read_bounded(name, r, expected)?
        }
        Compression::Lz4 => lz4_legacy(stream, expected)?,
    };
    if out.len() as u64 != expected {
        return Err(BuilderError::CorruptImage(format!(
            "the {name} payload unpacks to {} bytes, but the image says {expected}",
            out.len()
        )));
    }
    Ok(out)
}

/// Reads at most `expected + 1` bytes from `r`: one byte more than promised is enough to know
/// the size is wrong, and the promise is itself bounded by [`MAX_UNPACKED_SIZE`].
fn read_bounded(name: &'static str, r: impl Read, expected: u64) -> Result<Vec<u8>, BuilderError> {
    let mut out = Vec::new();
    r.take(expected + 1)
        .read_to_end(&mut out)
        .map_err(|source| BuilderError::Decompress { format: name, source })?;
    Ok(out)
}

/// The lz4 legacy frame that `lz4 -l` writes: the magic, then blocks of
/// `[u32 LE compressed size][raw LZ4 block]` up to the end of the stream (further magics may
/// appear between blocks). Stops once `expected` bytes were produced, ignoring what follows.
fn lz4_legacy(stream: &[u8], expected: u64) -> Result<Vec<u8>, BuilderError> {
    let expected = usize::try_from(expected)
        .map_err(|_| BuilderError::UnpackedTooLarge { size_mib: expected.div_ceil(1 << 20) })?;
    let read_u32 = |b: &[u8], at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(b.get(at..at.checked_add(4)?)?.try_into().ok()?))
    };
    if read_u32(stream, 0) != Some(LZ4_LEGACY_MAGIC) {
        return Err(BuilderError::CorruptImage("lz4 payload is not a legacy frame".into()));
    }
    let mut out: Vec<u8> = Vec::new();
    let mut pos = 4usize;
    while pos < stream.len() && out.len() < expected {
        let chunk = read_u32(stream, pos)
            .ok_or_else(|| BuilderError::TruncatedImage("lz4 block header cut short".into()))?;
        pos += 4;
        if chunk == LZ4_LEGACY_MAGIC {
            continue;
        }
        let end = pos.checked_add(chunk as usize).filter(|&e| e <= stream.len()).ok_or_else(|| {
            BuilderError::TruncatedImage(format!("lz4 block of {chunk} bytes runs past the payload"))
        })?;
        let produced = out.len();
        let room = (expected - produced).min(LZ4_LEGACY_BLOCK_SIZE);
        out.resize(produced + room, 0);
        let n = lz4_flex::block::decompress_into(&stream[pos..end], &mut out[produced..]).map_err(|e| {
            BuilderError::Decompress { format: "lz4", source: std::io::Error::other(e.to_string()) }
        })?;
        out.truncate(produced + n);
        pos = end;
    }
    Ok(out)
}
