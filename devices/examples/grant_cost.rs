//! What a grant costs the block backend, against the copy that persistent grants would make the
//! frontend do instead (blkfront bounces every segment through its persistently granted pages
//! when the backend offers `feature-persistent`). The figures decide `feature-persistent=0`.
//!
//!     cargo run --release -p devices --example grant_cost

use devices::grant::{GrantTable, GuestWords};
use std::time::Instant;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use xen_abi::grant_table::GTF_PERMIT_ACCESS;
use xen_abi::hostcall::MfnRange;

const RUNS: u32 = 1_000_000;

fn main() {
    // Frame 0x10: the grant table; frames 0x100..0x200: the domain's RAM.
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x200 << 12)]).unwrap();
    let frames = MfnRange { first_mfn: 0x10, nr_frames: 1 };
    let ram = [MfnRange { first_mfn: 0x100, nr_frames: 0x100 }];
    let mut table = GrantTable::new(frames, &ram);
    for gref in 0..256u64 {
        let entry = GuestAddress((0x10 << 12) + gref * 8);
        mem.write_obj(GTF_PERMIT_ACCESS, entry).unwrap(); // flags; domid 0 follows as 0
        mem.write_obj((0x100 + gref) as u32, GuestAddress(entry.0 + 4)).unwrap();
    }
    let words = GuestWords(&mem);
    let t = Instant::now();
    for i in 0..RUNS {
        let g = table.map(&words, i % 256, 0, i % 2 == 0).unwrap();
        table.unmap(&words, g).unwrap();
    }
    let map_ns = t.elapsed().as_nanos() as f64 / f64::from(RUNS);

    let src = vec![0x5au8; 4096];
    let mut dst = vec![0u8; 4096];
    let t = Instant::now();
    for i in 0..RUNS {
        dst.copy_from_slice(&src);
        dst[(i % 4096) as usize] ^= 1;
        std::hint::black_box(&mut dst);
    }
    let copy_ns = t.elapsed().as_nanos() as f64 / f64::from(RUNS);
    println!("grant map + unmap (checks, GTF_reading/writing set and cleared): {map_ns:.0} ns per segment");
    println!("4 KiB copy (what persistent grants make blkfront do per segment): {copy_ns:.0} ns per segment");
}
