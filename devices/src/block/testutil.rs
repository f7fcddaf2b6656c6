//! Test doubles for the block backend, shared by the unit tests and the fuzz target (feature
//! `testutil`): an in-memory [`BlockIo`] engine that checks every operation it is handed,
//! and a blkfront stand-in that grants pages and drives the ring as ring.h's front end does.
//!
//! [`MemDisk`] is an oracle as much as an engine: an operation outside the disk, a buffer
//! that is not inside one guest page, a read into a private copy or a write to a read-only
//! disk is a bug in the backend, and it panics.

use std::collections::VecDeque;

use vm_memory::{Bytes, GuestAddress, GuestAddressSpace, GuestMemoryBackend, GuestMemoryError};
use xen_abi::grant_table::{GrantRef, GRANT_ENTRY_V1_SIZE};
use xen_abi::io::blkif::*;
use xen_abi::io::ring::ring_size;
use zerocopy::{FromBytes, IntoBytes};

use super::{BlockIo, IoBuf, IoError, IoOp};

/// Decides the fate of an operation: `None` runs it, `Some(e)` fails it without touching
/// the disk.
pub type FailFn = Box<dyn FnMut(&IoOp) -> Option<IoError> + Send>;

/// A disk in a `Vec<u8>` behind a [`BlockIo`] whose completions the test controls.
pub struct MemDisk<S: GuestAddressSpace> {
    mem: S,
    pub data: Vec<u8>,
    /// A write or discard panics: the backend must never send one.
    pub readonly: bool,
    /// Discards fail with [`IoError::NotSupported`] when false.
    pub discard: bool,
    /// Complete everything within [`BlockIo::submit`], in queue order (the synchronous
    /// engines' behaviour); otherwise operations wait in [`MemDisk::issued`] until the test
    /// completes them.
    pub auto_complete: bool,
    /// Consulted before each operation runs.
    pub fail: Option<FailFn>,
    /// After a failed flush every later write and flush fails ([`IoError::Broken`]).
    pub broken: bool,
    /// Fail this many of the next submits (what was queued stays queued).
    pub failing_submits: u32,
    queued: Vec<(u64, IoOp)>,
    /// Issued by `submit`, not yet completed.
    pub issued: VecDeque<(u64, IoOp)>,
    done: Vec<(u64, Result<(), IoError>)>,
    /// Every operation run, in the order it ran, with its token.
    pub log: Vec<(u64, IoOp)>,
    pub submits: usize,
}

impl<S: GuestAddressSpace> MemDisk<S>
where
    S::M: GuestMemoryBackend,
{
    pub fn new(mem: S, sectors: u64) -> MemDisk<S> {
        MemDisk {
            mem,
            data: vec![0; (sectors * super::SECTOR_SIZE) as usize],
            readonly: false,
            discard: true,
            auto_complete: true,
            fail: None,
            broken: false,
            failing_submits: 0,
            queued: Vec::new(),
            issued: VecDeque::new(),
            done: Vec::new(),
            log: Vec::new(),
            submits: 0,
        }
    }

    /// Completes the issued operation at `index` of [`MemDisk::issued`] (running it now).
    pub fn complete_at(&mut self, index: usize) {
        if let Some((token, op)) = self.issued.remove(index) {
            let r = self.run(token, op);
            self.done.push((token, r));
        }
    }

    /// Completes every issued operation, newest first.
    pub fn complete_all_reversed(&mut self) {
        while !self.issued.is_empty() {
            self.complete_at(self.issued.len() - 1);
        }
    }

    /// Completes every issued operation, oldest first.
    pub fn complete_all(&mut self) {
        while !self.issued.is_empty() {
            self.complete_at(0);
        }
    }

    fn bytes(&self, offset: u64, len: usize) -> std::ops::Range<usize> {
        let start = usize::try_from(offset).expect("offset fits");
        let end = start.checked_add(len).expect("length fits");
        assert!(
            end <= self.data.len(),
            "I/O at {offset:#x}+{len:#x} past the end of a {:#x}-byte disk",
            self.data.len()
        );
        start..end
    }

    fn run(&mut self, token: u64, op: IoOp) -> Result<(), IoError> {
        self.log.push((token, op.clone()));
        let is_write = matches!(op, IoOp::Write { .. } | IoOp::Discard { .. });
        assert!(!(is_write && self.readonly), "the backend sent {op:?} to a read-only disk");
        if self.broken && matches!(op, IoOp::Write { .. } | IoOp::Flush) {
            return Err(IoError::Broken);
        }
        if let Some(e) = self.fail.as_mut().and_then(|f| f(&op)) {
            if matches!(op, IoOp::Flush) {
                self.broken = true;
            }
            return Err(e);
        }
        let mem = self.mem.memory();
        match op {
            IoOp::Read { offset, bufs } => {
                let mut at = offset;
                for b in bufs {
                    let IoBuf::Guest { gpa, len } = b else { panic!("a read into a private buffer") };
                    check_in_one_page(gpa, len);
                    let r = self.bytes(at, len as usize);
                    mem.write_slice(&self.data[r], gpa).map_err(|_| IoError::BadBuffer(gpa.0))?;
                    at += u64::from(len);
                }
            }
            IoOp::Write { offset, bufs } => {
                let mut at = offset;
                for b in bufs {
                    let n = b.len();
                    let r = self.bytes(at, n);
                    match b {
                        IoBuf::Guest { gpa, len } => {
                            check_in_one_page(gpa, len);
                            mem.read_slice(&mut self.data[r], gpa).map_err(|_| IoError::BadBuffer(gpa.0))?;
                        }
                        IoBuf::Host(v) => self.data[r].copy_from_slice(&v),
                    }
                    at += n as u64;
                }
            }
            IoOp::Flush => {}
            IoOp::Discard { offset, len } => {
                if !self.discard {
                    return Err(IoError::NotSupported);
                }
                let r = self.bytes(offset, usize::try_from(len).expect("length fits"));
                self.data[r].fill(0);
            }
        }
        Ok(())
    }
}

fn check_in_one_page(gpa: GuestAddress, len: u32) {
    assert!(len > 0 && len.is_multiple_of(512), "buffer of {len} bytes");
    assert!((gpa.0 & 0xfff) + u64::from(len) <= 4096, "buffer {:#x}+{len:#x} crosses a page", gpa.0);
}

impl<S: GuestAddressSpace + Send> BlockIo for MemDisk<S>
where
    S::M: GuestMemoryBackend,
{
    fn queue(&mut self, token: u64, op: IoOp) {
        self.queued.push((token, op));
    }

    fn submit(&mut self) -> Result<(), IoError> {
        self.submits += 1;
        if self.failing_submits > 0 {
            self.failing_submits -= 1;
            return Err(IoError::Io(std::io::Error::from_raw_os_error(11)));
        }
        let queued = std::mem::take(&mut self.queued);
        self.issued.extend(queued);
        if self.auto_complete {
            self.complete_all();
        }
        Ok(())
    }

    fn completions(&mut self, out: &mut Vec<(u64, Result<(), IoError>)>) {
        out.append(&mut self.done);
    }

    fn completion_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }

    fn in_flight(&self) -> usize {
        self.queued.len() + self.issued.len() + self.done.len()
    }
}

/// blkfront's side of one ring and of the guest's grant table, reached through guest memory
/// only (ring.h's front-end macros; Linux's grant-table.c for entries).
pub struct Frontend {
    /// Guest-physical address of grant entry 0.
    pub table: GuestAddress,
    /// The ring's pages, in ring order.
    pub ring: Vec<GuestAddress>,
    pub size: u32,
    pub req_prod_pvt: u32,
    pub rsp_cons: u32,
}

impl Frontend {
    /// `SHARED_RING_INIT` over `ring` with indices at `start`.
    pub fn new<M: Bytes<GuestAddress, E = GuestMemoryError> + ?Sized>(
        mem: &M,
        table: GuestAddress,
        ring: &[GuestAddress],
        start: u32,
    ) -> Frontend {
        mem.write_slice(&[0; 64], ring[0]).expect("ring header");
        let f = Frontend {
            table,
            ring: ring.to_vec(),
            size: ring_size(ring.len() * 4096, BLKIF_RING_ENTRY_SIZE) as u32,
            req_prod_pvt: start,
            rsp_cons: start,
        };
        f.set(mem, 0, start);
        f.set(mem, 8, start);
        f.set(mem, 4, start.wrapping_add(1));
        f.set(mem, 12, start.wrapping_add(1));
        f
    }

    fn set<M: Bytes<GuestAddress, E = GuestMemoryError> + ?Sized>(&self, mem: &M, off: u64, v: u32) {
        mem.write_obj(v, GuestAddress(self.ring[0].0 + off)).expect("ring index");
    }

    pub fn get<M: Bytes<GuestAddress, E = GuestMemoryError> + ?Sized>(&self, mem: &M, off: u64) -> u32 {
        mem.read_obj(GuestAddress(self.ring[0].0 + off)).expect("ring index")
    }

    /// Writes `req_prod` directly (a hostile frontend).
    pub fn set_req_prod<M: Bytes<GuestAddress, E = GuestMemoryError> + ?Sized>(&self, mem: &M, v: u32) {
        self.set(mem, 0, v);
    }

    /// Writes `rsp_event`.
    pub fn set_rsp_event<M: Bytes<GuestAddress, E = GuestMemoryError> + ?Sized>(&self, mem: &M, v: u32) {
        self.set(mem, 12, v);
    }

    /// Writes grant entry `gref`: `{flags, domid, frame}`.
    pub fn grant<M: Bytes<GuestAddress, E = GuestMemoryError> + ?Sized>(
        &self,
        mem: &M,
        gref: GrantRef,
        flags: u16,
        domid: u16,
        frame: u32,
    ) {
        let at = GuestAddress(self.table.0 + u64::from(gref) * GRANT_ENTRY_V1_SIZE);
        mem.write_obj(frame, GuestAddress(at.0 + 4)).expect("grant entry");
        mem.write_obj(domid, GuestAddress(at.0 + 2)).expect("grant entry");
        mem.write_obj(flags, at).expect("grant entry");
    }

    /// The flags of grant entry `gref`.
    pub fn grant_flags<M: Bytes<GuestAddress, E = GuestMemoryError> + ?Sized>(
        &self,
        mem: &M,
        gref: GrantRef,
    ) -> u16 {
        mem.read_obj(GuestAddress(self.table.0 + u64::from(gref) * GRANT_ENTRY_V1_SIZE)).expect("grant entry")
    }

    /// Guest-physical address of byte `off` of the virtual ring.
    pub fn ring_gpa(&self, off: usize) -> GuestAddress {
        GuestAddress(self.ring[off / 4096].0 + (off % 4096) as u64)
    }

    /// Byte offset in the virtual ring of the entry at index `idx`.
    pub fn entry_off(&self, idx: u32) -> usize {
        64 + (idx & (self.size - 1)) as usize * BLKIF_RING_ENTRY_SIZE
    }

    /// Writes `raw` into slot `req_prod_pvt` (byte by byte, across pages) without publishing.
    pub fn queue<M: Bytes<GuestAddress, E = GuestMemoryError> + ?Sized>(
        &mut self,
        mem: &M,
        raw: &[u8; BLKIF_RING_ENTRY_SIZE],
    ) {
        let off = self.entry_off(self.req_prod_pvt);
        for (i, b) in raw.iter().enumerate() {
            mem.write_obj(*b, self.ring_gpa(off + i)).expect("ring entry");
        }
        self.req_prod_pvt = self.req_prod_pvt.wrapping_add(1);
    }

    /// `RING_PUSH_REQUESTS_AND_CHECK_NOTIFY`.
    pub fn push<M: Bytes<GuestAddress, E = GuestMemoryError> + ?Sized>(&mut self, mem: &M) -> bool {
        let old = self.get(mem, 0);
        let new = self.req_prod_pvt;
        self.set(mem, 0, new);
        let event = self.get(mem, 4);
        new.wrapping_sub(event) < new.wrapping_sub(old)
    }

    /// Queues and publishes one request.
    pub fn request<M: Bytes<GuestAddress, E = GuestMemoryError> + ?Sized>(
        &mut self,
        mem: &M,
        raw: &[u8; BLKIF_RING_ENTRY_SIZE],
    ) -> bool {
        self.queue(mem, raw);
        self.push(mem)
    }

    /// Takes every published response.
    pub fn responses<M: Bytes<GuestAddress, E = GuestMemoryError> + ?Sized>(
        &mut self,
        mem: &M,
    ) -> Vec<BlkifResponse> {
        let prod = self.get(mem, 8);
        let mut out = Vec::new();
        while self.rsp_cons != prod && out.len() < self.size as usize {
            let off = self.entry_off(self.rsp_cons);
            let mut raw = [0u8; 16];
            for (i, b) in raw.iter_mut().enumerate() {
                *b = mem.read_obj(self.ring_gpa(off + i)).expect("ring entry");
            }
            out.push(BlkifResponse::read_from_bytes(&raw).expect("16 bytes"));
            self.rsp_cons = self.rsp_cons.wrapping_add(1);
        }
        out
    }
}

/// A segment `first..=last` of the page granted as `gref`.
pub fn seg(gref: GrantRef, first: u8, last: u8) -> BlkifRequestSegment {
    BlkifRequestSegment { gref, first_sect: first, last_sect: last, _pad0: 0 }
}

/// A ring entry holding `bytes` (zero-padded).
pub fn entry(bytes: &[u8]) -> [u8; BLKIF_RING_ENTRY_SIZE] {
    let mut raw = [0u8; BLKIF_RING_ENTRY_SIZE];
    raw[..bytes.len()].copy_from_slice(bytes);
    raw
}

/// A direct request (`nr_segments` = `segs.len()`, of which the first 11 are stored).
pub fn rw_request(op: u8, id: u64, sector: u64, segs: &[BlkifRequestSegment]) -> [u8; BLKIF_RING_ENTRY_SIZE] {
    let mut r = BlkifRequest {
        operation: op,
        nr_segments: segs.len() as u8,
        id,
        sector_number: sector,
        ..Default::default()
    };
    let n = segs.len().min(BLKIF_MAX_SEGMENTS_PER_REQUEST);
    r.seg[..n].copy_from_slice(&segs[..n]);
    entry(r.as_bytes())
}

/// An indirect request over indirect pages `grefs`.
pub fn indirect_request(
    op: u8,
    id: u64,
    sector: u64,
    nr: u16,
    grefs: &[GrantRef],
) -> [u8; BLKIF_RING_ENTRY_SIZE] {
    let mut r = BlkifRequestIndirect {
        operation: BLKIF_OP_INDIRECT,
        indirect_op: op,
        nr_segments: nr,
        id,
        sector_number: sector,
        ..Default::default()
    };
    let n = grefs.len().min(BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST);
    r.indirect_grefs[..n].copy_from_slice(&grefs[..n]);
    entry(r.as_bytes())
}

/// A discard request.
pub fn discard_request(id: u64, sector: u64, nr_sectors: u64) -> [u8; BLKIF_RING_ENTRY_SIZE] {
    let r = BlkifRequestDiscard {
        operation: BLKIF_OP_DISCARD,
        id,
        sector_number: sector,
        nr_sectors,
        ..Default::default()
    };
    entry(r.as_bytes())
}
