#!/usr/bin/env python3
"""Writes seed inputs for the kernel_image fuzz target into corpus/kernel_image/: a small
ELF64 PV kernel with Debian 12's Xen notes, plain and as bzImages compressed by the real
tools with Linux's options (gzip -9, xz --x86 --check=crc32, zstd -22 --ultra, lz4 -l).

    python3 seeds.py && cargo +nightly fuzz run kernel_image
"""
import os
import shutil
import struct
import subprocess

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "kernel_image")


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


def main():
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
