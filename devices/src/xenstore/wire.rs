//! The byte-stream side of a store connection: framing requests out of the guest's `req`
//! ring and writing replies and watch events into its `rsp` ring (xen-pv-contract.md §7.1).
//!
//! The ring is hostile input. Indices are read once per pass and checked (`prod - cons` over
//! the ring size is corruption and stops the connection, as xenstored drops a domain with
//! bad indices); a header announcing more than `XENSTORE_PAYLOAD_MAX` bytes is a protocol
//! error that stops it too. Only the bytes of the message in progress are taken from the
//! ring, so the buffered input never exceeds one maximal message, and no requests are taken
//! while the domain has `Quota::outstanding` messages it has not read.

use std::mem::offset_of;
use std::sync::atomic::{fence, Ordering};

use vm_memory::{Bytes, GuestAddress, GuestMemoryError};
use xen_abi::io::xs_wire::*;

use super::Store;

const HDR: usize = size_of::<XsdSockmsg>();

/// Why a connection stopped.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("cannot access the xenstore ring page: {0}")]
    RingAccess(String),
    #[error("the guest's xenstore ring indices are corrupt (cons {cons:#x}, prod {prod:#x})")]
    CorruptIndices { cons: u32, prod: u32 },
    #[error("a xenstore message announces {0} payload bytes, more than XENSTORE_PAYLOAD_MAX")]
    Oversize(u32),
}

/// A whole message: header and payload.
pub type Message = (XsdSockmsg, Vec<u8>);

/// Reassembles messages from a byte stream.
#[derive(Debug, Default)]
pub struct Parser {
    buf: Vec<u8>,
}

impl Parser {
    /// How many more bytes the message in progress needs.
    pub fn wanted(&self) -> usize {
        if self.buf.len() < HDR {
            return HDR - self.buf.len();
        }
        let len = u32::from_le_bytes([self.buf[12], self.buf[13], self.buf[14], self.buf[15]]) as usize;
        (HDR + len.min(XENSTORE_PAYLOAD_MAX)).saturating_sub(self.buf.len())
    }

    /// Adds bytes (at most [`Self::wanted`] are taken; returns how many). Returns a whole
    /// message when one is complete.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(usize, Option<Message>), WireError> {
        let mut n = bytes.len().min(self.wanted());
        self.buf.extend_from_slice(&bytes[..n]);
        if self.buf.len() < HDR {
            return Ok((n, None));
        }
        if self.buf.len() == HDR {
            // The header just completed: its length says how much more belongs to it.
            let more = bytes.len().saturating_sub(n).min(self.wanted());
            self.buf.extend_from_slice(&bytes[n..n + more]);
            n += more;
        }
        let w =
            |i: usize| u32::from_le_bytes([self.buf[i], self.buf[i + 1], self.buf[i + 2], self.buf[i + 3]]);
        let hdr = XsdSockmsg { r#type: w(0), req_id: w(4), tx_id: w(8), len: w(12) };
        if hdr.len as usize > XENSTORE_PAYLOAD_MAX {
            return Err(WireError::Oversize(hdr.len));
        }
        if self.buf.len() < HDR + hdr.len as usize {
            return Ok((n, None));
        }
        let payload = self.buf.split_off(HDR);
        self.buf.clear();
        Ok((n, Some((hdr, payload))))
    }
}

/// One domain's store ring and the state of its connection.
#[derive(Debug)]
pub struct StoreRing {
    page: GuestAddress,
    domid: u16,
    parser: Parser,
    out: Vec<u8>,
    out_done: usize,
    dead: Option<WireError>,
}

const REQ: u64 = offset_of!(XenstoreDomainInterface, req) as u64;
const RSP: u64 = offset_of!(XenstoreDomainInterface, rsp) as u64;
const REQ_CONS: u64 = offset_of!(XenstoreDomainInterface, req_cons) as u64;
const REQ_PROD: u64 = offset_of!(XenstoreDomainInterface, req_prod) as u64;
const RSP_CONS: u64 = offset_of!(XenstoreDomainInterface, rsp_cons) as u64;
const RSP_PROD: u64 = offset_of!(XenstoreDomainInterface, rsp_prod) as u64;

impl StoreRing {
    /// `domid`'s ring in the page at guest-physical address `page`.
    pub fn new(page: GuestAddress, domid: u16) -> StoreRing {
        StoreRing { page, domid, parser: Parser::default(), out: Vec::new(), out_done: 0, dead: None }
    }

    /// Why the connection stopped, if it did.
    pub fn error(&self) -> Option<&WireError> {
        self.dead.as_ref()
    }

    fn at(&self, off: u64) -> Result<GuestAddress, WireError> {
        self.page
            .0
            .checked_add(off)
            .map(GuestAddress)
            .ok_or_else(|| WireError::RingAccess("address overflow".into()))
    }

    fn load<M: Bytes<GuestAddress, E = GuestMemoryError> + ?Sized>(
        &self,
        mem: &M,
        off: u64,
    ) -> Result<u32, WireError> {
        mem.load(self.at(off)?, Ordering::Acquire).map_err(|e| WireError::RingAccess(e.to_string()))
    }

    fn store_idx<M: Bytes<GuestAddress, E = GuestMemoryError> + ?Sized>(
        &self,
        mem: &M,
        off: u64,
        v: u32,
    ) -> Result<(), WireError> {
        fence(Ordering::SeqCst);
        mem.store(v, self.at(off)?, Ordering::Release).map_err(|e| WireError::RingAccess(e.to_string()))
    }

    /// Serves the ring once: writes queued output, takes and handles complete requests, and
    /// writes their replies, until neither side can move (bounded by the ring sizes).
    /// Returns whether an index moved (the caller then raises the store port). Never blocks.
    pub fn service<M>(&mut self, mem: &M, store: &mut Store) -> Result<bool, WireError>
    where
        M: Bytes<GuestAddress, E = GuestMemoryError> + ?Sized,
    {
        if let Some(e) = &self.dead {
            return Err(e.clone_err());
        }
        let r = self.pass(mem, store);
        if let Err(e) = &r {
            self.dead = Some(e.clone_err());
        }
        r
    }

    fn pass<M>(&mut self, mem: &M, store: &mut Store) -> Result<bool, WireError>
    where
        M: Bytes<GuestAddress, E = GuestMemoryError> + ?Sized,
    {
        let mut moved = false;
        // Each round moves at least one byte or stops; a round takes at most a ring's worth.
        for _ in 0..64 {
            let mut progress = self.write_out(mem, store)?;
            if store.queued(self.domid) < store.quota().outstanding {
                progress |= self.read_in(mem, store)?;
            }
            if !progress {
                break;
            }
            moved = true;
        }
        Ok(moved)
    }

    fn write_out<M>(&mut self, mem: &M, store: &mut Store) -> Result<bool, WireError>
    where
        M: Bytes<GuestAddress, E = GuestMemoryError> + ?Sized,
    {
        if self.out_done == self.out.len() {
            match store.pop_output(self.domid) {
                Some(m) => {
                    self.out = m;
                    self.out_done = 0;
                }
                None => return Ok(false),
            }
        }
        let cons = self.load(mem, RSP_CONS)?;
        let prod = self.load(mem, RSP_PROD)?;
        let used = prod.wrapping_sub(cons) as usize;
        if used > XENSTORE_RING_SIZE {
            return Err(WireError::CorruptIndices { cons, prod });
        }
        let n = (XENSTORE_RING_SIZE - used).min(self.out.len() - self.out_done);
        if n == 0 {
            return Ok(false);
        }
        let start = mask_idx(prod);
        let first = n.min(XENSTORE_RING_SIZE - start);
        let src = &self.out[self.out_done..self.out_done + n];
        mem.write_slice(&src[..first], self.at(RSP + start as u64)?)
            .map_err(|e| WireError::RingAccess(e.to_string()))?;
        mem.write_slice(&src[first..], self.at(RSP)?).map_err(|e| WireError::RingAccess(e.to_string()))?;
        self.out_done += n;
        self.store_idx(mem, RSP_PROD, prod.wrapping_add(n as u32))?;
        Ok(true)
    }

    fn read_in<M>(&mut self, mem: &M, store: &mut Store) -> Result<bool, WireError>
    where
        M: Bytes<GuestAddress, E = GuestMemoryError> + ?Sized,
    {
        let cons = self.load(mem, REQ_CONS)?;
        let prod = self.load(mem, REQ_PROD)?;
        let avail = prod.wrapping_sub(cons) as usize;
        if avail > XENSTORE_RING_SIZE {
            return Err(WireError::CorruptIndices { cons, prod });
        }
        let n = avail.min(self.parser.wanted());
        if n == 0 {
            return Ok(false);
        }
        let mut buf = [0u8; XENSTORE_RING_SIZE];
        let start = mask_idx(cons);
        let first = n.min(XENSTORE_RING_SIZE - start);
        let (head, tail) = buf[..n].split_at_mut(first);
        mem.read_slice(head, self.at(REQ + start as u64)?)
            .map_err(|e| WireError::RingAccess(e.to_string()))?;
        mem.read_slice(tail, self.at(REQ)?).map_err(|e| WireError::RingAccess(e.to_string()))?;
        self.store_idx(mem, REQ_CONS, cons.wrapping_add(n as u32))?;
        let (_, msg) = self.parser.push(&buf[..n])?;
        if let Some((hdr, payload)) = msg {
            store.request(self.domid, hdr, &payload);
        }
        Ok(true)
    }
}

impl WireError {
    fn clone_err(&self) -> WireError {
        match self {
            WireError::RingAccess(s) => WireError::RingAccess(s.clone()),
            WireError::CorruptIndices { cons, prod } => {
                WireError::CorruptIndices { cons: *cons, prod: *prod }
            }
            WireError::Oversize(n) => WireError::Oversize(*n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xenstore::Quota;
    use vm_memory::GuestMemoryMmap;

    const PAGE: u64 = 0x7000;

    fn msg(ty: u32, req_id: u32, payload: &[u8]) -> Vec<u8> {
        super::super::store::message(ty, req_id, 0, payload)
    }

    /// The guest side: writes `bytes` into req at its req_prod.
    fn guest_send(mem: &GuestMemoryMmap, bytes: &[u8]) {
        let mut prod: u32 = mem.read_obj(GuestAddress(PAGE + REQ_PROD)).unwrap();
        for &b in bytes {
            mem.write_obj(b, GuestAddress(PAGE + REQ + mask_idx(prod) as u64)).unwrap();
            prod = prod.wrapping_add(1);
        }
        mem.write_obj(prod, GuestAddress(PAGE + REQ_PROD)).unwrap();
    }

    fn guest_recv(mem: &GuestMemoryMmap) -> Vec<u8> {
        let mut cons: u32 = mem.read_obj(GuestAddress(PAGE + RSP_CONS)).unwrap();
        let prod: u32 = mem.read_obj(GuestAddress(PAGE + RSP_PROD)).unwrap();
        let mut v = Vec::new();
        while cons != prod {
            v.push(mem.read_obj(GuestAddress(PAGE + RSP + mask_idx(cons) as u64)).unwrap());
            cons = cons.wrapping_add(1);
        }
        mem.write_obj(cons, GuestAddress(PAGE + RSP_CONS)).unwrap();
        v
    }

    fn setup(start: u32) -> (GuestMemoryMmap, Store, StoreRing) {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(PAGE), 4096)]).unwrap();
        for off in [REQ_CONS, REQ_PROD, RSP_CONS, RSP_PROD] {
            mem.write_obj(start, GuestAddress(PAGE + off)).unwrap();
        }
        let mut s = Store::new(Quota::default());
        s.host_write("/local/domain/1/name", b"guest").unwrap();
        s.host_set_perms("/local/domain/1", &["b1"]).unwrap();
        s.host_set_perms("/local/domain/1/name", &["b1"]).unwrap();
        (mem, s, StoreRing::new(GuestAddress(PAGE), 1))
    }

    #[test]
    fn requests_in_pieces_across_the_wrap_get_their_replies() {
        let (mem, mut s, mut r) = setup(u32::MAX - 10);
        let m = msg(XS_READ, 5, b"name\0");
        guest_send(&mem, &m[..7]);
        assert!(r.service(&mem, &mut s).unwrap());
        assert!(guest_recv(&mem).is_empty());
        guest_send(&mem, &m[7..]);
        r.service(&mem, &mut s).unwrap();
        assert_eq!(guest_recv(&mem), msg(XS_READ, 5, b"guest"));
    }

    #[test]
    fn a_reply_larger_than_the_ring_goes_out_in_pieces() {
        let (mem, mut s, mut r) = setup(0);
        let value = vec![b'v'; 2000];
        let w = [b"big\0".as_slice(), &value].concat();
        for chunk in msg(XS_WRITE, 1, &w).chunks(1000) {
            guest_send(&mem, chunk);
            r.service(&mem, &mut s).unwrap();
        }
        guest_send(&mem, &msg(XS_READ, 2, b"big\0"));
        let mut got = Vec::new();
        for _ in 0..10 {
            r.service(&mem, &mut s).unwrap();
            got.extend(guest_recv(&mem));
        }
        assert_eq!(got, [msg(XS_WRITE, 1, b"OK\0"), msg(XS_READ, 2, &value)].concat());
    }

    #[test]
    fn hostile_rings_stop_the_connection() {
        let (mem, mut s, mut r) = setup(0);
        let mut hdr = msg(XS_READ, 1, b"");
        hdr[12..16].copy_from_slice(&(XENSTORE_PAYLOAD_MAX as u32 + 1).to_le_bytes());
        guest_send(&mem, &hdr);
        assert_eq!(r.service(&mem, &mut s), Err(WireError::Oversize(4097)));
        assert!(r.service(&mem, &mut s).is_err(), "stays stopped");

        let (mem, mut s, mut r) = setup(0);
        mem.write_obj(2000u32, GuestAddress(PAGE + REQ_PROD)).unwrap();
        assert_eq!(r.service(&mem, &mut s), Err(WireError::CorruptIndices { cons: 0, prod: 2000 }));

        // A page outside guest memory is an access error, not a panic.
        let mut far = StoreRing::new(GuestAddress(u64::MAX - 100), 1);
        assert!(matches!(far.service(&mem, &mut s), Err(WireError::RingAccess(_))));
    }

    #[test]
    fn parser_takes_only_the_message_in_progress() {
        let mut p = Parser::default();
        let m = [msg(XS_READ, 1, b"a\0"), msg(XS_READ, 2, b"b\0")].concat();
        let (n, got) = p.push(&m).unwrap();
        assert_eq!(n, 18);
        assert_eq!(got.unwrap().1, b"a\0");
        let (_, got) = p.push(&m[18..]).unwrap();
        assert_eq!(got.unwrap().0.req_id, 2);
        let (n, got) = p.push(&msg(XS_READ, 3, b"")).unwrap();
        assert_eq!((n, got.unwrap().1.len()), (16, 0));
    }
}
