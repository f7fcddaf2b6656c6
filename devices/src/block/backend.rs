//! One blkif ring's back end (the ring half of Linux blkback): takes the guest's requests
//! off the shared ring, checks them, maps their grants, hands them to a [`BlockIo`] engine as
//! operations on guest memory, and answers each once its I/O has completed.
//!
//! # The worker loop
//!
//! No threads here: the caller (one worker per ring) drives the state machine, and the
//! order below is what makes it lose no wake-up.
//!
//! ```text
//! loop {
//!     wait for: the ring's event channel | engine.completion_fd() | stop
//!     let mut notify = false;
//!     loop {
//!         notify |= backend.process()?;      // take, check, map, queue; one engine submit
//!         notify |= backend.complete()?;     // completions: unmap, respond, publish
//!         if !backend.final_check()? {       // req_event = req_cons + 1, mb, look again
//!             break;                          // idle: the next request sends an event
//!         }
//!     }
//!     if notify { send an event on the ring's channel }
//! }
//! backend.disconnect(timeout)?;              // drain in-flight I/O, unmap every grant
//! ```
//!
//! An error from `process`/`complete`/`final_check` is logged once by the caller, which
//! keeps looping: a ring stopped by a hostile frontend ([`BlkError::Ring`]) takes no more
//! requests but still answers those in flight, as blkback does after "Halting ring
//! processing".
//!
//! # A request's life
//!
//! ```text
//!  ring slot ──copy──► raw [112] ──request::parse──► Request ──map grants──► IoOp(s) ──► engine
//!                       (once)        (checks)                (GTF_reading/writing set)
//!  engine ──(token, result)──► unmap grants (flags cleared) ──► response in rsp_prod_pvt ──► publish
//! ```
//!
//! * A guest READ maps its segments writable (the backend writes guest memory), a guest
//!   WRITE read-only; each segment becomes an [`IoBuf::Guest`] of `first_sect..=last_sect` of
//!   its granted frame. Any failed map fails the request after unmapping what was mapped.
//! * Grants are unmapped before the response is written, because blkfront revokes each
//!   grant on the response and disables the disk if `GTF_reading`/`GTF_writing` is still set.
//! * Engine completions are unordered, so a `FLUSH_DISKCACHE` with data (blkfront's FUA
//!   write) runs as three dependent steps: flush (everything answered before is durable
//!   first, `REQ_PREFLUSH`), then the write, then flush (the write itself is durable, FUA),
//!   each queued when the previous one completed; any failure answers `BLKIF_RSP_ERROR`.
//! * A disk whose raw format was only probed must never get the qcow2 magic at offset 0
//!   from the guest (a later probe would trust the guest's header and open host files it
//!   names): a write covering sector 0 is checked on a private copy of its first segment,
//!   and written from that copy, so the guest cannot change it after the check.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress, GuestAddressSpace, GuestMemoryBackend};
use xen_abi::grant_table::GrantRef;
use xen_abi::io::blkif::*;
use zerocopy::IntoBytes;

use super::disk::QCOW2_MAGIC;
use super::request::{self, Limits, Op, Transfer};
use super::{BlockIo, IoBuf, IoError, IoOp, SECTOR_SIZE};
use crate::grant::{Grant, GrantError, GrantTable, GuestWords};
use crate::ring::{BackRing, RingError, MAX_RING_PAGES};

/// Engine operations one request can need in sequence (flush, write, flush).
const MAX_STAGES: usize = 3;

/// What the backend serves: the disk as checked requests see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskInfo {
    /// Size in 512-byte sectors (the `sectors` node).
    pub sectors: u64,
    /// The disk is read-only (`info` has `VDISK_READONLY`).
    pub readonly: bool,
    /// `feature-discard` was written.
    pub discard: bool,
    /// The image was opened as raw because no format header was found, not because the
    /// user said so: the guest must not write a qcow2 header into it.
    pub probed_raw: bool,
    /// `feature-max-indirect-segments` as written (256 in xenvmm).
    pub max_indirect_segments: u32,
}

/// Why the backend failed or stopped.
#[derive(Debug, thiserror::Error)]
pub enum BlkError {
    #[error("a blkif ring takes 1 to {MAX_RING_PAGES} grant references, not {0}")]
    RingRefs(usize),
    #[error("cannot map the ring's grant {gref:#x}")]
    MapRing {
        gref: GrantRef,
        #[source]
        source: GrantError,
    },
    #[error("the blkif ring is unusable")]
    Ring(#[from] RingError),
    #[error("the I/O engine could not submit")]
    Submit(#[source] IoError),
    #[error("{in_flight} I/O operations still in flight after {waited:?}")]
    Drain { in_flight: usize, waited: Duration },
}

/// Counters for `--stats` (blkback's `st_*`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlkStats {
    /// Reads (direct and indirect).
    pub rd_req: u64,
    /// Writes (direct and indirect).
    pub wr_req: u64,
    /// `FLUSH_DISKCACHE` requests, with or without data.
    pub f_req: u64,
    /// Discards.
    pub ds_req: u64,
    /// Indirect requests (also counted as reads or writes).
    pub indirect_req: u64,
    /// Requests with an unknown operation, and barriers.
    pub other_req: u64,
    /// Sectors of reads and writes sent to the engine.
    pub rd_sect: u64,
    pub wr_sect: u64,
    /// Responses with `BLKIF_RSP_ERROR`.
    pub err_rsp: u64,
    /// Responses with `BLKIF_RSP_EOPNOTSUPP`.
    pub notsupp_rsp: u64,
    /// Writes refused for putting the qcow2 magic into a probed raw image.
    pub qcow2_refused: u64,
    /// Engine submits (one per pass that queued something).
    pub batches: u64,
    /// Response batches after which the frontend asked to be notified.
    pub notifications: u64,
}

impl BlkStats {
    /// Adds `o`'s counts to these (a disk's rings, or its connections over time).
    pub fn add(&mut self, o: &BlkStats) {
        let BlkStats {
            rd_req,
            wr_req,
            f_req,
            ds_req,
            indirect_req,
            other_req,
            rd_sect,
            wr_sect,
            err_rsp,
            notsupp_rsp,
            qcow2_refused,
            batches,
            notifications,
        } = *o;
        self.rd_req += rd_req;
        self.wr_req += wr_req;
        self.f_req += f_req;
        self.ds_req += ds_req;
        self.indirect_req += indirect_req;
        self.other_req += other_req;
        self.rd_sect += rd_sect;
        self.wr_sect += wr_sect;
        self.err_rsp += err_rsp;
        self.notsupp_rsp += notsupp_rsp;
        self.qcow2_refused += qcow2_refused;
        self.batches += batches;
        self.notifications += notifications;
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Connected,
    /// The ring stopped taking requests; I/O in flight is still answered.
    Stopped,
    Disconnected,
}

/// Where a request stands in the engine.
#[derive(Debug)]
enum Stage {
    /// One operation; its result is the answer.
    Single,
    /// A discard: `NotSupported` answers `EOPNOTSUPP`.
    Discard,
    /// FLUSH with data: the first flush is running; `write` follows.
    PreFlush(IoOp),
    /// FLUSH with data: the write is running; a flush follows.
    Write,
    /// FLUSH with data: the last flush is running.
    PostFlush,
}

/// A request the engine is working on.
#[derive(Debug)]
struct Pending {
    id: u64,
    operation: u8,
    grants: Vec<Grant>,
    stage: Stage,
}

/// The back end of one blkif ring over guest memory `S` and engine `E`.
pub struct BlkBackend<S: GuestAddressSpace, E: BlockIo> {
    mem: S,
    grants: Arc<Mutex<GrantTable>>,
    domid: u16,
    ring: BackRing,
    ring_grants: Vec<Grant>,
    info: DiskInfo,
    engine: E,
    pending: BTreeMap<u64, Pending>,
    next_token: u64,
    state: State,
    /// A submit failed: the engine kept what it could not issue, and the next pass retries.
    unsubmitted: bool,
    /// The first ring error met while answering, returned at the end of the pass.
    error: Option<RingError>,
    stats: BlkStats,
}

fn lock(t: &Mutex<GrantTable>) -> MutexGuard<'_, GrantTable> {
    // The table's state is consistent between calls; a panic elsewhere does not change that.
    t.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<S: GuestAddressSpace, E: BlockIo> BlkBackend<S, E>
where
    S::M: GuestMemoryBackend,
{
    /// Maps the ring's grants `ring_refs` (writable, for as long as the ring is connected) for
    /// backend domain `domid` and attaches to the ring the frontend initialised in them.
    pub fn connect(
        mem: S,
        grants: Arc<Mutex<GrantTable>>,
        domid: u16,
        ring_refs: &[GrantRef],
        info: DiskInfo,
        engine: E,
    ) -> Result<Self, BlkError> {
        if ring_refs.is_empty() || ring_refs.len() > MAX_RING_PAGES {
            return Err(BlkError::RingRefs(ring_refs.len()));
        }
        let m = mem.memory();
        let words = GuestWords(&*m);
        let mut ring_grants = Vec::with_capacity(ring_refs.len());
        let attached = {
            let mut table = lock(&grants);
            let mut mapped = Ok(());
            for &gref in ring_refs {
                match table.map(&words, gref, domid, false) {
                    Ok(g) => ring_grants.push(g),
                    Err(source) => {
                        mapped = Err(BlkError::MapRing { gref, source });
                        break;
                    }
                }
            }
            let pages: Vec<GuestAddress> = ring_grants.iter().map(Grant::gpa).collect();
            let attached = mapped.and_then(|()| {
                BackRing::attach(&*m, &pages, BLKIF_RING_ENTRY_SIZE, size_of::<BlkifResponse>())
                    .map_err(BlkError::from)
            });
            if attached.is_err() {
                for g in ring_grants.drain(..) {
                    let _ = table.unmap(&words, g);
                }
            }
            attached
        };
        let ring = attached?;
        drop(m);
        Ok(BlkBackend {
            mem,
            grants,
            domid,
            ring,
            ring_grants,
            info,
            engine,
            pending: BTreeMap::new(),
            next_token: 0,
            state: State::Connected,
            unsubmitted: false,
            error: None,
            stats: BlkStats::default(),
        })
    }

    pub fn stats(&self) -> BlkStats {
        self.stats
    }

    pub fn info(&self) -> DiskInfo {
        self.info
    }

    /// The ring's indices (for `--stats` and checks).
    pub fn ring(&self) -> &BackRing {
        &self.ring
    }

    /// Requests taken and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Whether a hostile frontend stopped the ring.
    pub fn is_stopped(&self) -> bool {
        self.state == State::Stopped
    }

    pub fn engine(&self) -> &E {
        &self.engine
    }

    pub fn engine_mut(&mut self) -> &mut E {
        &mut self.engine
    }

    /// The engine, after [`disconnect`](Self::disconnect) (to serve a reconnected ring).
    pub fn into_engine(self) -> E {
        self.engine
    }

    fn limits(&self) -> Limits {
        Limits {
            sectors: self.info.sectors,
            readonly: self.info.readonly,
            discard: self.info.discard,
            max_indirect_segments: self.info.max_indirect_segments,
        }
    }

    /// One pass over the ring: takes every request there is (at most the ring's size, so a
    /// frontend refilling the ring cannot keep the pass going), checks each copy, answers
    /// the invalid ones at once, queues the rest on the engine, and submits once. Returns
    /// whether the frontend must be notified (of the immediate answers).
    pub fn process(&mut self) -> Result<bool, BlkError> {
        if self.state != State::Connected {
            return Ok(false);
        }
        let mem = self.mem.memory();
        let mut raw = [0u8; BLKIF_RING_ENTRY_SIZE];
        let mut queued = false;
        let mut ring_error = None;
        for _ in 0..self.ring.size() {
            match self.ring.take_request(&*mem, &mut raw) {
                Ok(true) => queued |= self.handle(&*mem, &raw),
                Ok(false) => break,
                Err(e) => {
                    self.state = State::Stopped;
                    ring_error = Some(e);
                    break;
                }
            }
        }
        let submitted = self.submit(queued);
        let notify = self.publish(&*mem);
        if let Some(e) = ring_error.or(self.error.take()) {
            return Err(e.into());
        }
        submitted?;
        notify
    }

    /// Drains the engine's completions: unmaps each finished request's grants, writes its
    /// response, queues the next step of a data-bearing flush (and submits those once), and
    /// publishes the responses together. Returns whether the frontend must be notified.
    pub fn complete(&mut self) -> Result<bool, BlkError> {
        if self.state == State::Disconnected {
            return Ok(false);
        }
        let mem = self.mem.memory();
        let mut done = Vec::new();
        let mut submitted = Ok(());
        // A synchronous engine completes within submit: go round again for the next step of
        // a flush sequence, at most once per step.
        for _ in 0..=MAX_STAGES {
            done.clear();
            self.engine.completions(&mut done);
            let mut queued = false;
            for (token, result) in done.drain(..) {
                queued |= self.advance(&*mem, token, result);
            }
            if !queued && !self.unsubmitted {
                break;
            }
            submitted = self.submit(queued);
            if submitted.is_err() {
                break;
            }
        }
        let notify = self.publish(&*mem);
        if let Some(e) = self.error.take() {
            return Err(e.into());
        }
        submitted?;
        notify
    }

    /// `RING_FINAL_CHECK_FOR_REQUESTS`: whether to run another pass before sleeping. When
    /// there is nothing, the frontend has been asked for an event on its next request.
    pub fn final_check(&mut self) -> Result<bool, BlkError> {
        if self.state != State::Connected {
            return Ok(false);
        }
        let mem = self.mem.memory();
        self.ring.final_check_for_requests(&*mem).map_err(|e| {
            self.state = State::Stopped;
            BlkError::from(e)
        })
    }

    /// Waits up to `timeout` for the I/O in flight (answering it as it completes), then
    /// unmaps every grant, the ring's included. If I/O is still in flight after `timeout`,
    /// nothing is unmapped and [`BlkError::Drain`] is returned; call again.
    pub fn disconnect(&mut self, timeout: Duration) -> Result<(), BlkError> {
        if self.state == State::Disconnected {
            return Ok(());
        }
        let start = Instant::now();
        let mut first_error = None;
        loop {
            if let Err(e) = self.complete() {
                first_error.get_or_insert(e);
            }
            if self.engine.in_flight() == 0 {
                break;
            }
            let waited = start.elapsed();
            if waited >= timeout {
                return Err(BlkError::Drain { in_flight: self.engine.in_flight(), waited });
            }
            std::thread::sleep(Duration::from_millis(1).min(timeout - waited));
        }
        let mem = self.mem.memory();
        let words = GuestWords(&*mem);
        let mut table = lock(&self.grants);
        // Requests the engine forgot (none, with a correct engine) lose their grants too.
        for (_, p) in std::mem::take(&mut self.pending) {
            for g in p.grants {
                let _ = table.unmap(&words, g);
            }
        }
        for g in self.ring_grants.drain(..) {
            let _ = table.unmap(&words, g);
        }
        self.state = State::Disconnected;
        first_error.map_or(Ok(()), Err)
    }

    fn submit(&mut self, queued: bool) -> Result<(), BlkError> {
        if !queued && !self.unsubmitted {
            return Ok(());
        }
        self.stats.batches += 1;
        match self.engine.submit() {
            Ok(()) => {
                self.unsubmitted = false;
                Ok(())
            }
            Err(e) => {
                self.unsubmitted = true;
                Err(BlkError::Submit(e))
            }
        }
    }

    fn publish(&mut self, mem: &S::M) -> Result<bool, BlkError> {
        let notify = self.ring.push_responses(mem)?;
        if notify {
            self.stats.notifications += 1;
        }
        Ok(notify)
    }

    /// Writes a response; a ring that cannot take it is remembered for the end of the pass.
    fn respond(&mut self, mem: &S::M, id: u64, operation: u8, status: i16) {
        match status {
            BLKIF_RSP_ERROR => self.stats.err_rsp += 1,
            BLKIF_RSP_EOPNOTSUPP => self.stats.notsupp_rsp += 1,
            _ => {}
        }
        let rsp = BlkifResponse { id, operation, status, ..Default::default() };
        if let Err(e) = self.ring.push_response(mem, rsp.as_bytes()) {
            self.state = State::Stopped;
            self.error.get_or_insert(e);
        }
    }

    fn count(&mut self, raw: &[u8; BLKIF_RING_ENTRY_SIZE]) {
        let op = if raw[0] == BLKIF_OP_INDIRECT {
            self.stats.indirect_req += 1;
            raw[1]
        } else {
            raw[0]
        };
        match op {
            BLKIF_OP_READ => self.stats.rd_req += 1,
            BLKIF_OP_WRITE => self.stats.wr_req += 1,
            BLKIF_OP_FLUSH_DISKCACHE => self.stats.f_req += 1,
            BLKIF_OP_DISCARD => self.stats.ds_req += 1,
            _ => self.stats.other_req += 1,
        }
    }

    /// Handles one copied request; returns whether it queued engine work.
    fn handle(&mut self, mem: &S::M, raw: &[u8; BLKIF_RING_ENTRY_SIZE]) -> bool {
        self.count(raw);
        let limits = self.limits();
        let domid = self.domid;
        let parsed = {
            let words = GuestWords(mem);
            let mut table = lock(&self.grants);
            request::parse(raw, &limits, &mut |gref, buf| {
                // xen_blkbk_parse_indirect: map read-only, copy, unmap at once.
                let g = table.map(&words, gref, domid, true)?;
                let gpa = g.gpa();
                let read = mem.read_slice(buf, gpa).map_err(|_| GrantError::Memory { gpa: gpa.0 });
                table.unmap(&words, g)?;
                read
            })
        };
        let req = match parsed {
            Ok(req) => req,
            Err(rej) => {
                self.respond(mem, rej.id, rej.operation, rej.status());
                return false;
            }
        };
        // Checked in parse already; a second look costs nothing and guards the one rule that
        // must never break.
        if self.info.readonly && !matches!(req.op, Op::Read(_)) {
            self.respond(mem, req.id, req.operation, BLKIF_RSP_ERROR);
            return false;
        }
        let (id, operation) = (req.id, req.operation);
        let queued = match req.op {
            Op::Read(t) => self.transfer(mem, &t, true).map(|(grants, op)| {
                self.stats.rd_sect += t.nr_sectors();
                (grants, op, Stage::Single)
            }),
            Op::Write(t) => self.transfer(mem, &t, false).map(|(grants, op)| {
                self.stats.wr_sect += t.nr_sectors();
                (grants, op, Stage::Single)
            }),
            Op::Flush(t) if t.segments.is_empty() => Ok((Vec::new(), IoOp::Flush, Stage::Single)),
            Op::Flush(t) => self.transfer(mem, &t, false).map(|(grants, write)| {
                self.stats.wr_sect += t.nr_sectors();
                (grants, IoOp::Flush, Stage::PreFlush(write))
            }),
            Op::Discard { nr_sectors: 0, .. } => {
                self.respond(mem, id, operation, BLKIF_RSP_OKAY);
                return false;
            }
            // Inside the disk (checked), so the byte values fit.
            Op::Discard { sector, nr_sectors } => Ok((
                Vec::new(),
                IoOp::Discard { offset: sector * SECTOR_SIZE, len: nr_sectors * SECTOR_SIZE },
                Stage::Discard,
            )),
        };
        match queued {
            Ok((grants, op, stage)) => {
                let token = self.next_token;
                self.next_token = self.next_token.wrapping_add(1);
                self.engine.queue(token, op);
                self.pending.insert(token, Pending { id, operation, grants, stage });
                true
            }
            Err(status) => {
                self.respond(mem, id, operation, status);
                false
            }
        }
    }

    /// Maps a transfer's segments (writable when the backend writes guest memory, for a
    /// guest read) and builds its read or write. On failure nothing stays mapped and the
    /// status to answer is returned.
    fn transfer(&mut self, mem: &S::M, t: &Transfer, read: bool) -> Result<(Vec<Grant>, IoOp), i16> {
        let words = GuestWords(mem);
        let mut table = lock(&self.grants);
        let mut grants = Vec::with_capacity(t.segments.len());
        let mut bufs = Vec::with_capacity(t.segments.len());
        let unmap_all = |table: &mut GrantTable, grants: Vec<Grant>| {
            for g in grants {
                let _ = table.unmap(&words, g);
            }
        };
        for s in &t.segments {
            match table.map(&words, s.gref, self.domid, !read) {
                Ok(g) => {
                    let gpa = GuestAddress(g.gpa().0 + u64::from(s.offset()));
                    bufs.push(IoBuf::Guest { gpa, len: s.bytes() });
                    grants.push(g);
                }
                Err(_) => {
                    unmap_all(&mut table, grants);
                    return Err(BLKIF_RSP_ERROR);
                }
            }
        }
        if read {
            return Ok((grants, IoOp::Read { offset: t.offset(), bufs }));
        }
        if self.info.probed_raw && t.sector == 0 {
            // The first segment lands at offset 0: check a private copy and write from it.
            let Some(IoBuf::Guest { gpa, len }) = bufs.first().cloned() else {
                unmap_all(&mut table, grants);
                return Err(BLKIF_RSP_ERROR);
            };
            let mut copy = vec![0u8; len as usize];
            if mem.read_slice(&mut copy, gpa).is_err() || copy.starts_with(&QCOW2_MAGIC) {
                self.stats.qcow2_refused += u64::from(copy.starts_with(&QCOW2_MAGIC));
                unmap_all(&mut table, grants);
                return Err(BLKIF_RSP_ERROR);
            }
            bufs[0] = IoBuf::Host(copy);
        }
        Ok((grants, IoOp::Write { offset: t.offset(), bufs }))
    }

    /// Moves request `token` on after `result`; returns whether it queued a next step.
    fn advance(&mut self, mem: &S::M, token: u64, result: Result<(), IoError>) -> bool {
        let Some(mut p) = self.pending.remove(&token) else {
            // Not ours (an engine bug): nothing to answer.
            return false;
        };
        let status = match (std::mem::replace(&mut p.stage, Stage::Single), result) {
            (Stage::PreFlush(write), Ok(())) => {
                p.stage = Stage::Write;
                self.engine.queue(token, write);
                self.pending.insert(token, p);
                return true;
            }
            (Stage::Write, Ok(())) => {
                p.stage = Stage::PostFlush;
                self.engine.queue(token, IoOp::Flush);
                self.pending.insert(token, p);
                return true;
            }
            (_, Ok(())) => BLKIF_RSP_OKAY,
            (Stage::Discard, Err(IoError::NotSupported)) => BLKIF_RSP_EOPNOTSUPP,
            (_, Err(_)) => BLKIF_RSP_ERROR,
        };
        self.finish(mem, p, status);
        false
    }

    /// Unmaps a request's grants, then answers it (in that order: see the module doc).
    fn finish(&mut self, mem: &S::M, p: Pending, status: i16) {
        {
            let words = GuestWords(mem);
            let mut table = lock(&self.grants);
            for g in p.grants {
                let _ = table.unmap(&words, g);
            }
        }
        self.respond(mem, p.id, p.operation, status);
    }
}

#[cfg(test)]
mod tests;
