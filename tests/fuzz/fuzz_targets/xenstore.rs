//! Feeds arbitrary bytes to the xenstore daemon as a guest would: the first 4 KiB become the
//! store ring page (requests, responses and all four indices), served several times with the
//! guest's request ring refilled from the rest of the input in between; and the whole input
//! also goes through the message parser in pieces of input-chosen sizes. The daemon must
//! never panic (the guest memory is the ring page alone, so an access outside it fails).
#![no_main]

use std::sync::OnceLock;

use devices::xenstore::wire::{Parser, StoreRing};
use devices::xenstore::{Quota, Store};
use libfuzzer_sys::fuzz_target;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const PAGE: u64 = 0x9000;

fn memory() -> &'static GuestMemoryMmap<()> {
    static MEM: OnceLock<GuestMemoryMmap<()>> = OnceLock::new();
    MEM.get_or_init(|| GuestMemoryMmap::from_ranges(&[(GuestAddress(PAGE), 4096)]).expect("guest memory"))
}

fuzz_target!(|data: &[u8]| {
    // The parser alone, fed in pieces whose sizes come from the input.
    let mut p = Parser::default();
    let mut rest = data;
    let mut step = 1usize;
    while !rest.is_empty() {
        let piece = &rest[..rest.len().min(step)];
        match p.push(piece) {
            Ok((n, _)) => {
                assert!(n <= piece.len());
                rest = &rest[n.max(1).min(rest.len())..];
            }
            Err(_) => break,
        }
        step = (step * 7 + usize::from(piece[0])) % 300 + 1;
    }

    // The ring service against a store, a few rounds.
    let mem = memory();
    let mut page = [0u8; 4096];
    let n = data.len().min(4096);
    page[..n].copy_from_slice(&data[..n]);
    mem.write_slice(&page, GuestAddress(PAGE)).unwrap();
    let mut store = Store::new(Quota::default());
    store.connect(1);
    let mut ring = StoreRing::new(GuestAddress(PAGE), 1);
    let mut more = data.get(4096..).unwrap_or(&[]).chunks(1024);
    for _ in 0..4 {
        let _ = ring.service(mem, &mut store);
        if let Some(req) = more.next() {
            // The guest writes more request bytes (over the request array only).
            let _ = mem.write_slice(req, GuestAddress(PAGE));
        }
    }
});
