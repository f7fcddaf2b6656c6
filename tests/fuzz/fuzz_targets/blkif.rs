//! Drives one blkif ring's back end (`devices::block::backend`) with a hostile guest: an
//! arbitrary grant table, ring contents and indices (one or two pages, any start index),
//! indirect and data pages, then a script of backend passes, engine completions in any
//! order, engine failures, hostile `req_prod` values, and guest rewrites of ring, grant
//! entries and pages between the steps. The engine is the in-memory `MemDisk`, which panics on any operation outside the
//! disk, any buffer that is not inside one guest page, a read into a private buffer, and any
//! write or discard to a read-only disk. It must never panic, and after a final drain and
//! disconnect:
//! - no grant is pinned (the ring's included), and every `GTF_reading`/`GTF_writing` bit
//!   still set in an entry was written there by the guest itself;
//! - every request taken was answered, and nothing is left in flight;
//! - a probed raw image does not start with the qcow2 magic.
//!
//! Input layout (seeds.py's `blkif_input` writes it): config byte, disk size (u16), start
//! index (u32, if config bit 7), one byte per grant entry 2..15 (more for a raw entry),
//! segment arrays for a few data frames, qcow2-magic frame mask (u16), engine byte (bit 7:
//! complete at submit; bits 0-3: fail reads/writes/flushes/discards), the first batch of
//! requests, a `req_prod` byte, then the script, one step per byte.
#![no_main]

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use devices::block::backend::{BlkBackend, BlkError, DiskInfo};
use devices::block::disk::QCOW2_MAGIC;
use devices::block::testutil::*;
use devices::block::{IoError, IoOp};
use devices::grant::GrantTable;
use libfuzzer_sys::fuzz_target;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use xen_abi::grant_table::{GTF_PERMIT_ACCESS, GTF_READING, GTF_READONLY, GTF_WRITING};
use xen_abi::hostcall::MfnRange;
use xen_abi::io::blkif::*;
use zerocopy::IntoBytes;

/// One grant frame (512 entries) at machine frame 0x10; RAM is frames 0x100..0x110.
const TABLE: MfnRange = MfnRange { first_mfn: 0x10, nr_frames: 1 };
const RAM: MfnRange = MfnRange { first_mfn: 0x100, nr_frames: 16 };
/// Grant entries the guest fills (0 and 1 are the ring's); references past them are invalid.
const NR_REFS: u32 = 16;
/// The ring's frames: not contiguous, so that two-page rings have entries straddling them.
const RING_FRAMES: [u64; 2] = [0x100, 0x10f];

type Mem = &'static GuestMemoryMmap<()>;

fn memory() -> Mem {
    static MEM: OnceLock<GuestMemoryMmap<()>> = OnceLock::new();
    MEM.get_or_init(|| {
        GuestMemoryMmap::from_ranges(&[
            (GuestAddress(TABLE.first_mfn << 12), 4096),
            (GuestAddress(RAM.first_mfn << 12), (RAM.nr_frames << 12) as usize),
        ])
        .expect("guest memory")
    })
}

/// The fuzz input as a stream; exhausted, it reads as zeros.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        let (b, rest) = self.0.split_first().map_or((0, &[][..]), |(b, r)| (*b, r));
        self.0 = rest;
        b
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from(self.u16()) | u32::from(self.u16()) << 16
    }
    fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | u64::from(self.u32()) << 32
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A segment, mostly a valid one over a granted reference.
fn segment(inp: &mut Input) -> BlkifRequestSegment {
    let b = inp.u8();
    if b & 0x80 != 0 {
        return seg(inp.u32(), inp.u8(), inp.u8());
    }
    let s = inp.u8();
    let (first, last) = (s & 7, (s >> 3) & 7);
    seg(u32::from(b) % (NR_REFS + 2), first.min(last), first.max(last))
}

fn grefs(inp: &mut Input, n: usize) -> Vec<u32> {
    (0..n)
        .map(|_| {
            let b = inp.u8();
            if b & 0x80 != 0 {
                inp.u32()
            } else {
                u32::from(b) % (NR_REFS + 2)
            }
        })
        .collect()
}

/// One request, biased towards well-formed ones of every kind.
fn request(inp: &mut Input, id: u64) -> [u8; BLKIF_RING_ENTRY_SIZE] {
    let kind = inp.u8();
    let sector = match kind >> 6 {
        0 => u64::from(inp.u16()),
        1 => 0,
        2 => u64::from(inp.u8()),
        _ => inp.u64(),
    };
    match kind % 8 {
        0 => {
            let mut raw = [0u8; BLKIF_RING_ENTRY_SIZE];
            raw.iter_mut().for_each(|b| *b = inp.u8());
            raw
        }
        op @ (1 | 2 | 3) => {
            let op = [BLKIF_OP_READ, BLKIF_OP_WRITE, BLKIF_OP_FLUSH_DISKCACHE][usize::from(op) - 1];
            let n = usize::from(inp.u8()) % 13;
            let segs: Vec<_> = (0..n).map(|_| segment(inp)).collect();
            rw_request(op, id, sector, &segs)
        }
        4 | 5 => {
            let op = if kind & 0x10 != 0 { inp.u8() } else { (kind >> 3) & 1 };
            let nr = inp.u16() % 1100;
            let pages = grefs(inp, 3);
            indirect_request(op, id, sector, nr, &pages)
        }
        6 => discard_request(id, sector, u64::from(inp.u16()) | u64::from(kind & 0x10) << 59),
        _ => rw_request(inp.u8(), id, sector, &[segment(inp)]),
    }
}

/// Writes a grant entry: mostly valid grants of RAM frames to domain 0.
fn grant(inp: &mut Input, front: &Frontend, gref: u32) {
    let mem = memory();
    let k = inp.u8();
    let frame = (RAM.first_mfn + u64::from(k >> 3) % RAM.nr_frames) as u32;
    match k % 4 {
        0 => front.grant(mem, gref, GTF_PERMIT_ACCESS, 0, frame),
        1 => front.grant(mem, gref, GTF_PERMIT_ACCESS | GTF_READONLY, 0, frame),
        2 => front.grant(mem, gref, inp.u16(), inp.u16() & 3, inp.u32()),
        _ => front.grant(mem, gref, 0, 0, 0),
    }
}

fn flags_of(gref: u32) -> u16 {
    memory().read_obj(GuestAddress((TABLE.first_mfn << 12) + 8 * u64::from(gref))).expect("grant entry")
}

fuzz_target!(|data: &[u8]| {
    let mem = memory();
    let mut inp = Input(data);
    mem.write_slice(&[0; 4096], GuestAddress(TABLE.first_mfn << 12)).unwrap();
    for f in 0..RAM.nr_frames {
        mem.write_slice(&[0; 4096], GuestAddress((RAM.first_mfn + f) << 12)).unwrap();
    }

    let cfg = inp.u8();
    let nr_pages = 1 + usize::from(cfg & 1);
    let info = DiskInfo {
        sectors: 8 + u64::from(inp.u16() % 2048),
        readonly: cfg & 2 != 0,
        discard: cfg & 4 != 0,
        probed_raw: cfg & 8 != 0,
        max_indirect_segments: [0, 11, 256, 4096][usize::from(cfg >> 5) & 3],
    };
    let start = if cfg & 0x80 != 0 { inp.u32() } else { 0 };
    let pages: Vec<GuestAddress> = RING_FRAMES[..nr_pages].iter().map(|f| GuestAddress(f << 12)).collect();
    let mut front = Frontend::new(mem, GuestAddress(TABLE.first_mfn << 12), &pages, start);
    let ring_refs: Vec<u32> = (0..nr_pages as u32).collect();
    for (&gref, f) in ring_refs.iter().zip(RING_FRAMES) {
        front.grant(mem, gref, GTF_PERMIT_ACCESS, 0, f as u32);
    }
    for gref in 2..NR_REFS {
        grant(&mut inp, &front, gref);
    }
    // Segment arrays (indirect pages) in a few data frames.
    for _ in 0..inp.u8() % 4 {
        let frame = RAM.first_mfn + 1 + u64::from(inp.u8()) % 14;
        let segs: Vec<_> = (0..inp.u8() % 64).map(|_| segment(&mut inp)).collect();
        mem.write_slice(segs.as_bytes(), GuestAddress(frame << 12)).unwrap();
    }
    // The qcow2 magic at the start of some data frames.
    let magic = inp.u16();
    for f in 0..14u64 {
        if magic & (1 << f) != 0 {
            mem.write_slice(&QCOW2_MAGIC, GuestAddress((RAM.first_mfn + 1 + f) << 12)).unwrap();
        }
    }
    let mut guest_flags: Vec<u16> = (0..NR_REFS).map(flags_of).collect();

    let fail_mask = inp.u8();
    let mut disk = MemDisk::new(mem, info.sectors);
    disk.readonly = info.readonly;
    disk.discard = cfg & 0x10 != 0 || info.discard;
    disk.auto_complete = fail_mask & 0x80 != 0;
    if fail_mask & 0x0f != 0 {
        let mut n = 0u32;
        disk.fail = Some(Box::new(move |op| {
            n += 1;
            let kind = match op {
                IoOp::Read { .. } => 1,
                IoOp::Write { .. } => 2,
                IoOp::Flush => 4,
                IoOp::Discard { .. } => 8,
            };
            (fail_mask & kind != 0 && n % 2 == 1).then(|| IoError::Io(std::io::Error::other("injected")))
        }));
    }

    let grants = Arc::new(Mutex::new(GrantTable::new(TABLE, &[RAM])));
    // The frontend's first batch, maybe with a hostile req_prod.
    let mut id = 0u64;
    for _ in 0..inp.u8() % 40 {
        let raw = request(&mut inp, id);
        front.queue(mem, &raw);
        id += 1;
    }
    match inp.u8() {
        0xff => front.set_req_prod(mem, inp.u32()),
        0xf0.. => front.set_req_prod(mem, front.req_prod_pvt.wrapping_add(u32::from(inp.u8()))),
        _ => {
            front.push(mem);
        }
    }
    let mut be = match BlkBackend::connect(mem, grants.clone(), 0, &ring_refs, info, disk) {
        Ok(be) => be,
        Err(BlkError::Ring(_)) => {
            assert_eq!(grants.lock().unwrap().nr_active(), 0, "a refused ring leaves nothing mapped");
            return;
        }
        Err(e) => panic!("connect: {e}"),
    };

    for _ in 0..64 {
        if inp.is_empty() {
            break;
        }
        match inp.u8() % 8 {
            0 => {
                if let Err(BlkError::Ring(_)) = be.process() {
                    assert!(be.is_stopped());
                }
            }
            1 => {
                let _ = be.complete();
            }
            2 => {
                let _ = be.final_check();
            }
            3 => {
                let n = be.engine().issued.len().max(1);
                let i = usize::from(inp.u8()) % n;
                be.engine_mut().complete_at(i);
            }
            4 => be.engine_mut().complete_all_reversed(),
            5 => {
                // The guest rewrites a byte of the ring, a grant entry or a data page.
                let b = inp.u8();
                let what = inp.u16();
                let entry_byte = u64::from(what >> 2) % (8 * u64::from(NR_REFS));
                let at = match what % 3 {
                    0 => front.ring_gpa(usize::from(what >> 2) % (nr_pages * 4096)),
                    1 => GuestAddress((TABLE.first_mfn << 12) + entry_byte),
                    _ => GuestAddress((RAM.first_mfn << 12) + u64::from(what >> 2) % (RAM.nr_frames << 12)),
                };
                mem.write_obj(b, at).unwrap();
                // The in-use bits are in the flags' low byte: a write there is the guest's.
                if what % 3 == 1 && entry_byte % 8 == 0 {
                    let gref = (entry_byte / 8) as u32;
                    guest_flags[gref as usize] = flags_of(gref);
                }
            }
            6 => {
                for _ in 0..1 + inp.u8() % 4 {
                    let raw = request(&mut inp, id);
                    front.queue(mem, &raw);
                    id += 1;
                }
                front.push(mem);
            }
            _ => {
                let b = inp.u8();
                if b & 1 != 0 {
                    be.engine_mut().failing_submits = 1;
                } else {
                    // A hostile req_prod near the real one: ahead by more than a ringful,
                    // or behind requests already taken.
                    front.set_req_prod(
                        mem,
                        front.req_prod_pvt.wrapping_add(u32::from(b >> 1)).wrapping_sub(64),
                    );
                }
            }
        }
    }

    // Drain: everything completes from here on.
    let disk = be.engine_mut();
    disk.failing_submits = 0;
    disk.auto_complete = true;
    disk.complete_all();
    if let Err(e @ BlkError::Drain { .. }) = be.disconnect(Duration::ZERO) {
        panic!("{e}");
    }
    assert_eq!(be.in_flight(), 0);
    assert_eq!(be.ring().outstanding(), 0, "every request taken was answered");
    assert_eq!(grants.lock().unwrap().nr_active(), 0, "every grant unmapped");
    for gref in 0..NR_REFS {
        let left = flags_of(gref) & (GTF_READING | GTF_WRITING);
        let guest = guest_flags[gref as usize] & (GTF_READING | GTF_WRITING);
        assert_eq!(left & !guest, 0, "grant {gref}: in-use bits {left:#x} left by the backend");
    }
    if info.probed_raw {
        assert_ne!(be.engine().data[..4], QCOW2_MAGIC);
    }
});
