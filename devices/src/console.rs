//! The PV console backend, xenconsoled's job: drains the guest's output from the
//! `xencons_interface` ring at `start_info.console.domU.mfn` (xen-pv-contract.md §8).
//!
//! ```text
//!  guest (hvc_xen)                          host (this module)
//!  write out[prod & 2047 ..]                load out_cons, out_prod (acquire)
//!  wmb; out_prod += n                       n = out_prod - out_cons; n > 2048 ⇒ corrupt, leave
//!  EVTCHNOP_send(console port) ───────────► copy out[cons & 2047 ..] (≤ 2 pieces) to a buffer
//!                                           mb; out_cons = out_prod (release)
//!  sees space again  ◄───────────────────── the caller raises the console port
//! ```
//!
//! The ring is hostile input: the indices are read once each, checked before use, the copy is
//! bounded by the ring size and masked into it, and nothing outside the page is touched. A
//! ring claiming more unread bytes than it holds is left alone, as xenconsoled leaves it.
//!
//! Input goes the other way through the `in` ring ([`ConsoleRing::put_input`]): the host
//! produces, the guest consumes; a full ring takes what fits and the caller keeps the rest.

use std::mem::offset_of;
use std::sync::atomic::{fence, Ordering};
use vm_memory::{Bytes, GuestAddress, GuestMemoryError};
use xen_abi::io::console::{mask_in, mask_out, XenconsInterface, XENCONS_IN_SIZE, XENCONS_OUT_SIZE};

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("cannot access the console ring page at {page:#x}: {source}")]
    RingAccess {
        page: u64,
        #[source]
        source: GuestMemoryError,
    },
    #[error("the guest's console ring is corrupt: out_cons {cons:#x}, out_prod {prod:#x} claim more than {XENCONS_OUT_SIZE} unread bytes")]
    CorruptIndices { cons: u32, prod: u32 },
    #[error("the guest's console input ring is corrupt: in_cons {cons:#x}, in_prod {prod:#x} claim more than {XENCONS_IN_SIZE} unread bytes")]
    CorruptInput { cons: u32, prod: u32 },
}

/// The console ring page of one domain, as its backend sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConsoleRing {
    page: GuestAddress,
}

const OUT: u64 = offset_of!(XenconsInterface, out) as u64;
const OUT_CONS: u64 = offset_of!(XenconsInterface, out_cons) as u64;
const OUT_PROD: u64 = offset_of!(XenconsInterface, out_prod) as u64;
const IN: u64 = offset_of!(XenconsInterface, r#in) as u64;
const IN_CONS: u64 = offset_of!(XenconsInterface, in_cons) as u64;
const IN_PROD: u64 = offset_of!(XenconsInterface, in_prod) as u64;

impl ConsoleRing {
    /// The ring in the page at guest-physical (machine) address `page`.
    pub const fn new(page: GuestAddress) -> ConsoleRing {
        ConsoleRing { page }
    }

    pub fn page(&self) -> GuestAddress {
        self.page
    }

    fn at(&self, off: u64) -> Result<GuestAddress, ConsoleError> {
        self.page
            .0
            .checked_add(off)
            .map(GuestAddress)
            .ok_or_else(|| self.access(GuestMemoryError::InvalidGuestAddress(self.page)))
    }

    fn access(&self, source: GuestMemoryError) -> ConsoleError {
        ConsoleError::RingAccess { page: self.page.0, source }
    }

    /// Takes what the guest wrote since the last call: copies `out[out_cons..out_prod]` into
    /// `buf`, then publishes `out_cons = out_prod` so the guest may reuse the space, and
    /// returns the bytes (empty if there were none). The caller should then raise the
    /// console port so that a guest waiting for space wakes up.
    ///
    /// A corrupt ring is left unchanged ([`ConsoleError::CorruptIndices`]).
    pub fn take_output<'b, M>(
        &self,
        mem: &M,
        buf: &'b mut [u8; XENCONS_OUT_SIZE],
    ) -> Result<&'b [u8], ConsoleError>
    where
        M: Bytes<GuestAddress, E = GuestMemoryError> + ?Sized,
    {
        let cons: u32 = mem.load(self.at(OUT_CONS)?, Ordering::Acquire).map_err(|e| self.access(e))?;
        // Acquire: the bytes below are read only after the guest's out_prod (its wmb pairs).
        let prod: u32 = mem.load(self.at(OUT_PROD)?, Ordering::Acquire).map_err(|e| self.access(e))?;
        let len = prod.wrapping_sub(cons) as usize;
        if len == 0 {
            return Ok(&buf[..0]);
        }
        if len > XENCONS_OUT_SIZE {
            return Err(ConsoleError::CorruptIndices { cons, prod });
        }
        let start = mask_out(cons);
        let first = len.min(XENCONS_OUT_SIZE - start);
        let (head, tail) = buf[..len].split_at_mut(first);
        mem.read_slice(head, self.at(OUT + start as u64)?).map_err(|e| self.access(e))?;
        mem.read_slice(tail, self.at(OUT)?).map_err(|e| self.access(e))?;
        // xen_mb(): the copy is complete before the guest can see the space as free.
        fence(Ordering::SeqCst);
        mem.store(prod, self.at(OUT_CONS)?, Ordering::Release).map_err(|e| self.access(e))?;
        Ok(&buf[..len])
    }

    /// Puts keyboard input into the guest's `in` ring: as much of `data` as there is room for
    /// (`in` holds [`XENCONS_IN_SIZE`] bytes), then publishes `in_prod`. Returns how many bytes
    /// went in; the caller keeps the rest and raises the console port if any went in.
    ///
    /// `in_cons` is the guest's and hostile: a value claiming more unread bytes than the ring
    /// holds leaves the ring unchanged ([`ConsoleError::CorruptInput`]).
    pub fn put_input<M>(&self, mem: &M, data: &[u8]) -> Result<usize, ConsoleError>
    where
        M: Bytes<GuestAddress, E = GuestMemoryError> + ?Sized,
    {
        // Acquire: the guest has finished reading the bytes before the space it frees.
        let cons: u32 = mem.load(self.at(IN_CONS)?, Ordering::Acquire).map_err(|e| self.access(e))?;
        let prod: u32 = mem.load(self.at(IN_PROD)?, Ordering::Acquire).map_err(|e| self.access(e))?;
        let used = prod.wrapping_sub(cons) as usize;
        if used > XENCONS_IN_SIZE {
            return Err(ConsoleError::CorruptInput { cons, prod });
        }
        let n = data.len().min(XENCONS_IN_SIZE - used);
        if n == 0 {
            return Ok(0);
        }
        let start = mask_in(prod);
        let first = n.min(XENCONS_IN_SIZE - start);
        mem.write_slice(&data[..first], self.at(IN + start as u64)?).map_err(|e| self.access(e))?;
        mem.write_slice(&data[first..n], self.at(IN)?).map_err(|e| self.access(e))?;
        // wmb: the bytes are visible before the index that publishes them.
        fence(Ordering::SeqCst);
        mem.store(prod.wrapping_add(n as u32), self.at(IN_PROD)?, Ordering::Release)
            .map_err(|e| self.access(e))?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    fn set_in(mem: &GuestMemoryMmap, cons: u32, prod: u32) {
        mem.write_obj(cons, GuestAddress(PAGE + IN_CONS)).unwrap();
        mem.write_obj(prod, GuestAddress(PAGE + IN_PROD)).unwrap();
    }

    #[test]
    fn input_fills_the_in_ring_across_the_wrap_and_stops_when_full() {
        let mem = page_only();
        let ring = ConsoleRing::new(GuestAddress(PAGE));
        // The guest has consumed everything up to 1020: 4 bytes before the wrap.
        set_in(&mem, u32::MAX - 3, u32::MAX - 3);
        assert_eq!(ring.put_input(&mem, b"hello").unwrap(), 5);
        let prod: u32 = mem.read_obj(GuestAddress(PAGE + IN_PROD)).unwrap();
        assert_eq!(prod, 1, "free-running index wrapped");
        let mut got = [0u8; 5];
        for (i, b) in got.iter_mut().enumerate() {
            *b = mem
                .read_obj(GuestAddress(PAGE + IN + mask_in((u32::MAX - 3).wrapping_add(i as u32)) as u64))
                .unwrap();
        }
        assert_eq!(&got, b"hello");
        // Fill up: only what fits goes in.
        let big = vec![b'x'; 2000];
        assert_eq!(ring.put_input(&mem, &big).unwrap(), XENCONS_IN_SIZE - 5);
        assert_eq!(ring.put_input(&mem, b"more").unwrap(), 0, "full");
    }

    #[test]
    fn a_corrupt_in_cons_leaves_the_input_ring_alone() {
        let mem = page_only();
        let ring = ConsoleRing::new(GuestAddress(PAGE));
        set_in(&mem, 5000, 5000 + XENCONS_IN_SIZE as u32 + 1);
        assert!(matches!(ring.put_input(&mem, b"a"), Err(ConsoleError::CorruptInput { .. })));
        let prod: u32 = mem.read_obj(GuestAddress(PAGE + IN_PROD)).unwrap();
        assert_eq!(prod, 5000 + XENCONS_IN_SIZE as u32 + 1);
        // cons ahead of prod (a "negative" count) is corrupt too.
        set_in(&mem, 10, 5);
        assert!(matches!(ring.put_input(&mem, b"a"), Err(ConsoleError::CorruptInput { .. })));
    }

    const PAGE: u64 = 0x5000;

    /// Guest memory holding exactly the ring page: any access outside it fails.
    fn page_only() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(PAGE), 4096)]).unwrap()
    }

    fn set_indices(mem: &GuestMemoryMmap, cons: u32, prod: u32) {
        mem.write_obj(cons, GuestAddress(PAGE + OUT_CONS)).unwrap();
        mem.write_obj(prod, GuestAddress(PAGE + OUT_PROD)).unwrap();
    }

    fn out_cons(mem: &GuestMemoryMmap) -> u32 {
        mem.read_obj(GuestAddress(PAGE + OUT_CONS)).unwrap()
    }

    /// Writes `data` into `out` from free-running index `at`, as the guest does.
    fn produce(mem: &GuestMemoryMmap, at: u32, data: &[u8]) {
        for (i, b) in data.iter().enumerate() {
            let pos = mask_out(at.wrapping_add(i as u32)) as u64;
            mem.write_obj(*b, GuestAddress(PAGE + OUT + pos)).unwrap();
        }
    }

    fn take(mem: &GuestMemoryMmap) -> Result<Vec<u8>, ConsoleError> {
        let mut buf = [0u8; XENCONS_OUT_SIZE];
        ConsoleRing::new(GuestAddress(PAGE)).take_output(mem, &mut buf).map(<[u8]>::to_vec)
    }

    #[test]
    fn empty_ring_yields_nothing_and_changes_nothing() {
        let mem = page_only();
        set_indices(&mem, 77, 77);
        assert_eq!(take(&mem).unwrap(), b"");
        assert_eq!(out_cons(&mem), 77);
    }

    #[test]
    fn takes_the_unread_bytes_and_frees_their_space() {
        let mem = page_only();
        produce(&mem, 0, b"hello, ring\n");
        set_indices(&mem, 0, 12);
        assert_eq!(take(&mem).unwrap(), b"hello, ring\n");
        assert_eq!(out_cons(&mem), 12);
        assert_eq!(take(&mem).unwrap(), b"", "a second call finds nothing new");
    }

    #[test]
    fn output_that_wraps_past_the_end_of_the_array_comes_out_in_order() {
        let mem = page_only();
        let data: Vec<u8> = (0..100u8).collect();
        produce(&mem, 2000, &data);
        set_indices(&mem, 2000, 2100);
        assert_eq!(take(&mem).unwrap(), data);
        assert_eq!(out_cons(&mem), 2100);
    }

    #[test]
    fn a_completely_full_ring_is_taken_whole() {
        let mem = page_only();
        let data: Vec<u8> = (0..XENCONS_OUT_SIZE).map(|i| (i * 7) as u8).collect();
        produce(&mem, 5000, &data);
        set_indices(&mem, 5000, 5000 + XENCONS_OUT_SIZE as u32);
        assert_eq!(take(&mem).unwrap(), data);
    }

    #[test]
    fn indices_that_wrap_around_u32_are_free_running() {
        let mem = page_only();
        let cons = u32::MAX - 9;
        produce(&mem, cons, b"0123456789abcdef");
        set_indices(&mem, cons, cons.wrapping_add(16));
        assert_eq!(take(&mem).unwrap(), b"0123456789abcdef");
        assert_eq!(out_cons(&mem), 6);
    }

    #[test]
    fn rejects_indices_claiming_more_than_the_ring_holds_and_leaves_them() {
        let mem = page_only();
        for (cons, prod) in [(0, 2049), (10, 5), (0, u32::MAX), (u32::MAX, 2048)] {
            set_indices(&mem, cons, prod);
            match take(&mem) {
                Err(ConsoleError::CorruptIndices { cons: c, prod: p }) => assert_eq!((c, p), (cons, prod)),
                other => panic!("({cons}, {prod}): {other:?}"),
            }
            assert_eq!(out_cons(&mem), cons, "out_cons untouched");
        }
    }

    #[test]
    fn a_ring_outside_guest_memory_is_an_error_not_a_panic() {
        let mem = page_only();
        let mut buf = [0u8; XENCONS_OUT_SIZE];
        for page in [0, PAGE + 4096, PAGE + 1, !0xfff, u64::MAX - 100] {
            let r = ConsoleRing::new(GuestAddress(page)).take_output(&mem, &mut buf);
            assert!(matches!(r, Err(ConsoleError::RingAccess { .. })), "{page:#x}: {r:?}");
        }
    }

    #[test]
    fn matches_a_model_ring_for_many_pseudo_random_states() {
        let mem = page_only();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..2000 {
            let mut page = [0u8; 4096];
            page.iter_mut().for_each(|b| *b = next() as u8);
            mem.write_slice(&page, GuestAddress(PAGE)).unwrap();
            let cons = next() as u32;
            let len = (next() % 2600) as u32;
            set_indices(&mem, cons, cons.wrapping_add(len));
            let got = take(&mem);
            if len as usize > XENCONS_OUT_SIZE {
                assert!(matches!(got, Err(ConsoleError::CorruptIndices { .. })));
                assert_eq!(out_cons(&mem), cons);
            } else {
                let want: Vec<u8> =
                    (0..len).map(|i| page[OUT as usize + mask_out(cons.wrapping_add(i))]).collect();
                assert_eq!(got.unwrap(), want);
                assert_eq!(out_cons(&mem), cons.wrapping_add(len));
            }
        }
    }
}
