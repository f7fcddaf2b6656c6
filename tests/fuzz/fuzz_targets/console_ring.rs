//! Feeds arbitrary console ring pages (contents and indices) to the console backend: it must
//! never panic, never touch memory outside the ring page (the fuzzed guest memory is that one
//! page, so any such access fails and is caught below), take exactly the bytes a model ring
//! holds and free exactly their space, and leave a corrupt ring untouched; and the same for
//! keyboard input put into the `in` ring.
#![no_main]

use std::mem::offset_of;
use std::sync::OnceLock;

use devices::console::{ConsoleError, ConsoleRing};
use libfuzzer_sys::fuzz_target;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use xen_abi::io::console::{mask_in, mask_out, XenconsInterface, XENCONS_IN_SIZE, XENCONS_OUT_SIZE};

const PAGE: u64 = 0x7000;
const OUT: usize = offset_of!(XenconsInterface, out);
const OUT_CONS: usize = offset_of!(XenconsInterface, out_cons);
const OUT_PROD: usize = offset_of!(XenconsInterface, out_prod);
const IN: usize = offset_of!(XenconsInterface, r#in);
const IN_CONS: usize = offset_of!(XenconsInterface, in_cons);
const IN_PROD: usize = offset_of!(XenconsInterface, in_prod);

fn memory() -> &'static GuestMemoryMmap<()> {
    static MEM: OnceLock<GuestMemoryMmap<()>> = OnceLock::new();
    MEM.get_or_init(|| GuestMemoryMmap::from_ranges(&[(GuestAddress(PAGE), 4096)]).expect("guest memory"))
}

fn u32_at(page: &[u8; 4096], off: usize) -> u32 {
    u32::from_le_bytes(page[off..off + 4].try_into().unwrap())
}

fuzz_target!(|data: &[u8]| {
    let mem = memory();
    let mut page = [0u8; 4096];
    let n = data.len().min(4096);
    page[..n].copy_from_slice(&data[..n]);
    // Short inputs still reach the interesting index pairs: the last 8 input bytes are the
    // indices when the input does not cover them.
    if n < OUT_CONS + 8 && n >= 8 {
        page[OUT_CONS..OUT_CONS + 8].copy_from_slice(&data[n - 8..n]);
    }
    mem.write_slice(&page, GuestAddress(PAGE)).unwrap();
    let (cons, prod) = (u32_at(&page, OUT_CONS), u32_at(&page, OUT_PROD));
    let unread = prod.wrapping_sub(cons) as usize;

    let ring = ConsoleRing::new(GuestAddress(PAGE));
    let mut buf = [0u8; XENCONS_OUT_SIZE];
    let mut after = [0u8; 4096];
    match ring.take_output(mem, &mut buf) {
        Ok(bytes) => {
            assert!(unread <= XENCONS_OUT_SIZE);
            assert_eq!(bytes.len(), unread);
            for (i, b) in bytes.iter().enumerate() {
                assert_eq!(*b, page[OUT + mask_out(cons.wrapping_add(i as u32))]);
            }
            mem.read_slice(&mut after, GuestAddress(PAGE)).unwrap();
            assert_eq!(u32_at(&after, OUT_CONS), prod, "out_cons advanced to out_prod");
            page[OUT_CONS..OUT_CONS + 4].copy_from_slice(&prod.to_le_bytes());
            assert!(after == page, "only out_cons changed");
            assert!(ring.take_output(mem, &mut buf).unwrap().is_empty(), "nothing left");
        }
        Err(ConsoleError::CorruptIndices { cons: c, prod: p }) => {
            assert!(unread > XENCONS_OUT_SIZE);
            assert_eq!((c, p), (cons, prod));
            mem.read_slice(&mut after, GuestAddress(PAGE)).unwrap();
            assert!(after == page, "a corrupt ring is left untouched");
        }
        Err(e) => panic!("the backend reached outside its ring page: {e}"),
    }

    // Input: the guest's in_cons is hostile; what goes in must fit what the ring has free,
    // land at the producer's positions, and only in[] and in_prod may change.
    mem.write_slice(&page, GuestAddress(PAGE)).unwrap();
    let (icons, iprod) = (u32_at(&page, IN_CONS), u32_at(&page, IN_PROD));
    let used = iprod.wrapping_sub(icons) as usize;
    let input: Vec<u8> = data.iter().rev().take(1500).copied().collect();
    match ring.put_input(mem, &input) {
        Ok(k) => {
            assert!(used <= XENCONS_IN_SIZE && k == input.len().min(XENCONS_IN_SIZE - used));
            mem.read_slice(&mut after, GuestAddress(PAGE)).unwrap();
            assert_eq!(u32_at(&after, IN_PROD), iprod.wrapping_add(k as u32));
            for (i, b) in input[..k].iter().enumerate() {
                assert_eq!(after[IN + mask_in(iprod.wrapping_add(i as u32))], *b);
            }
            for (off, (a, b)) in after.iter().zip(page.iter()).enumerate() {
                let in_ring = (IN..IN + XENCONS_IN_SIZE).contains(&off);
                let is_prod = (IN_PROD..IN_PROD + 4).contains(&off);
                assert!(a == b || in_ring || is_prod, "byte {off} changed outside in[] and in_prod");
            }
        }
        Err(ConsoleError::CorruptInput { .. }) => {
            assert!(used > XENCONS_IN_SIZE);
            mem.read_slice(&mut after, GuestAddress(PAGE)).unwrap();
            assert!(after == page, "a corrupt input ring is left untouched");
        }
        Err(e) => panic!("the backend reached outside its ring page: {e}"),
    }
});
