#!/usr/bin/env python3
"""Writes seed inputs for the kernel_image fuzz target into corpus/kernel_image/: a small
ELF64 PV kernel with Debian 12's Xen notes, plain and as bzImages compressed by the real
tools with Linux's options (gzip -9, xz --x86 --check=crc32, zstd -22 --ultra, lz4 -l);
and for the blkif target into corpus/blkif/: scripts that reach each kind of request,
out-of-order completions, the qcow2-magic refusal and a hostile req_prod (the input layout
is fuzz_targets/blkif.rs's, encoded by the blkif_* helpers below).

    python3 seeds.py && cargo +nightly fuzz run kernel_image
    python3 seeds.py && cargo +nightly fuzz run blkif
"""
import os
import shutil
import struct
import subprocess

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "kernel_image")
BLKIF_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "blkif")


def note(ty, desc, name=b"Xen\0"):
    pad = lambda b: b + b"\0" * (-len(b) % 4)
    return struct.pack("<III", len(name), len(desc), ty) + pad(name) + pad(desc)


def elf():
    q = lambda v: struct.pack("<Q", v)
    l = lambda v: struct.pack("<I", v)
    notes = b"".join([
        note(6, b"linux\0"), note(7, b"2.6\0"), note(5, b"xen-3.0\0"),
        note(3, q(0xFFFFFFFF80000000)), note(15, q(0x8000000000)),
        note(1, q(0xFFFFFFFF81000040)),
        note(10, b"!writable_page_tables|pae_pgdir_above_4gb"),  # .ascii, no NUL
        note(17, l(0x8801)), note(9, b"yes\0"), note(13, q(1) + q(1)), note(16, l(1)),
        note(8, b"generic\0"), note(14, l(1)), note(12, q(0xFFFF800000000000)),
        note(4, q(0)), note(18, l(0x1000850)), note(3, b"\xab" * 20, name=b"GNU\0"),
    ])
    # x86-ish text so that the BCJ filter has call/jmp operands to convert.
    text = bytes((0xE8 if i % 5 == 0 else (i * 7) & 0xFF) for i in range(0x6000))
    notes_off = 64 + 56 * 2
    text_off = (notes_off + len(notes) + 15) & ~15
    ehdr = (b"\x7fELF" + bytes([2, 1, 1]) + b"\0" * 9
            + struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, 0x1000000, 64, 0, 0, 64, 56, 2, 64, 0, 0))
    load = struct.pack("<IIQQQQQQ", 1, 7, text_off, 0xFFFFFFFF81000000, 0x1000000,
                       len(text), 0x10000, 0x1000)
    pnote = struct.pack("<IIQQQQQQ", 4, 4, notes_off, 0, 0, len(notes), len(notes), 4)
    f = ehdr + load + pnote + notes
    return f + b"\0" * (text_off - len(f)) + text


def bzimage(payload):
    setup_sects, payload_offset = 3, 0x3CC
    f = bytearray((setup_sects + 1) * 512)
    f[0x1F1] = setup_sects
    f[0x202:0x206] = b"HdrS"
    f[0x206:0x208] = struct.pack("<H", 0x020F)
    f[0x248:0x250] = struct.pack("<II", payload_offset, len(payload))
    return bytes(f) + b"\x90" * payload_offset + payload + b"\xee" * 64


# ---- blkif: the byte layout fuzz_targets/blkif.rs reads ----

def b_seg(gref, first=0, last=7):
    """A valid segment of grant reference gref (< 0x80)."""
    return bytes([gref, first | last << 3])


def b_sector(mode, value=0):
    """Sector mode 0: u16, 1: sector 0, 2: u8, 3: u64."""
    return [struct.pack("<H", value), b"", bytes([value]), struct.pack("<Q", value)][mode]


def b_rw(op, segs, mode=1, sector=0):
    """op 1: READ, 2: WRITE, 3: FLUSH_DISKCACHE."""
    return bytes([mode << 6 | op]) + b_sector(mode, sector) + bytes([len(segs)]) + b"".join(segs)


def b_indirect(write, nr, pages, mode=1, sector=0):
    kind = mode << 6 | (8 if write else 0) | 4
    return bytes([kind]) + b_sector(mode, sector) + struct.pack("<H", nr) + bytes((pages + [0, 0, 0])[:3])


def b_discard(nr, mode=1, sector=0):
    return bytes([mode << 6 | 6]) + b_sector(mode, sector) + struct.pack("<H", nr)


def blkif_input(reqs, steps, cfg=0x40, grants=None, seg_pages=(), magic=0, fail=0x80, prod=0):
    """cfg: bit 0 two ring pages, 1 read-only, 2 discard, 3 probed raw, 5-6 max indirect
    segments (0, 11, 256, 4096); grants: one byte per gref 2..15 (kind | frame << 3: kind 0
    writable, 1 read-only, 3 none; frame = RAM frame 0x100 + frame); seg_pages: (frame index
    0..13, [segments]) written at frame 0x101 + index; fail: bit 7 completes at submit, bits
    0-3 fail every other read/write/flush/discard."""
    grants = grants if grants is not None else [(i + 1) << 3 | (i % 2) for i in range(14)]
    out = bytes([cfg]) + struct.pack("<H", 2040) + bytes(grants)
    out += bytes([len(seg_pages)]) + b"".join(bytes([f, len(ss)]) + b"".join(ss) for f, ss in seg_pages)
    out += struct.pack("<H", magic) + bytes([fail, len(reqs)]) + b"".join(reqs) + bytes([prod])
    return out + bytes(steps)


def blkif_seeds():
    os.makedirs(BLKIF_OUT, exist_ok=True)
    # gref g grants frame 0x101 + (g - 2) (seg_pages index g - 2): even ones writable, odd
    # ones read-only.
    seeds = {
        "read-write": blkif_input([b_rw(1, [b_seg(2), b_seg(4, 2, 3)]), b_rw(2, [b_seg(3)], 0, 64)], [0, 1, 2]),
        "indirect": blkif_input(
            [b_indirect(False, 3, [3]), b_indirect(True, 2, [5])],
            [0, 1, 2],
            seg_pages=[(1, [b_seg(2), b_seg(4), b_seg(6, 1, 1)]), (3, [b_seg(3), b_seg(5)])],
        ),
        "flush-discard": blkif_input([b_rw(3, []), b_rw(3, [b_seg(3)]), b_discard(8)], [0, 1], cfg=0x44),
        "out-of-order": blkif_input(
            [b_rw(1, [b_seg(2)]), b_rw(1, [b_seg(4)]), b_rw(3, [b_seg(5)])], [0, 3, 1, 1, 4, 1, 4, 1, 4, 1], fail=0
        ),
        "qcow2-magic": blkif_input([b_rw(2, [b_seg(3)])], [0, 1], cfg=0x48, magic=0b10),
        "hostile-prod": blkif_input([b_rw(1, [b_seg(2)])] * 3, [0, 7, 200, 0, 1, 2], fail=0),
        "two-page-ring": blkif_input([b_rw(1, [b_seg(2, 0, 0)])] * 39, [0, 1, 6, 3] + list(b_rw(1, [b_seg(4)]) * 3) + [0, 1], cfg=0x41),
    }
    for name, data in seeds.items():
        with open(os.path.join(BLKIF_OUT, name + ".bin"), "wb") as fh:
            fh.write(data)
    print(f"seeds written to {BLKIF_OUT}")


def main():
    blkif_seeds()
    os.makedirs(OUT, exist_ok=True)
    e = elf()
    size = struct.pack("<I", len(e))
    tools = {
        "gzip": (["gzip", "-n", "-9", "-c"], False),  # gzip's trailer is the size
        "xz": (["xz", "--check=crc32", "--x86", "--lzma2=,dict=32MiB", "-c"], True),
        "zstd": (["zstd", "-22", "--ultra", "-q", "-c"], True),
        "lz4": (["lz4", "-l", "-9", "-q", "-c"], True),
    }
    with open(os.path.join(OUT, "elf.bin"), "wb") as fh:
        fh.write(e)
    for name, (cmd, append_size) in tools.items():
        if shutil.which(cmd[0]) is None:
            print(f"skipping {name}: {cmd[0]} not installed")
            continue
        z = subprocess.run(cmd, input=e, stdout=subprocess.PIPE, check=True).stdout
        with open(os.path.join(OUT, f"bzimage-{name}.bin"), "wb") as fh:
            fh.write(bzimage(z + (size if append_size else b"")))
    print(f"seeds written to {OUT}")


if __name__ == "__main__":
    main()
