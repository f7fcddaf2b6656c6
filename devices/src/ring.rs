//! The back end of a Xen shared ring (`io/ring.h`, xen-pv-contract.md §9): requests in from
//! a guest's frontend, responses out, over one to sixteen granted pages.
//!
//! # Theory
//!
//! A ring is a 64-byte header followed by `N` fixed-size entries, each the union of one
//! request and one response. The frontend's pages are granted one by one, so on this side
//! they are *not* contiguous: the ring is a virtual byte array of `pages * 4096` bytes laid
//! over a list of guest frames, and an entry may straddle two of them (blkif's 112-byte
//! entries do in any ring of more than one page).
//!
//! ```text
//!  virtual ring:  0    64                                          4096          8192
//!                 ┌────┬────────┬────────┬─── ... ───┬────────┬─────┼──┬─────────┼──┬──
//!                 │hdr │ ring[0]│ ring[1]│           │ring[35]│ring[│36]│         │ring...
//!                 └────┴────────┴────────┴─── ... ───┴────────┴─────┼──┴─────────┼──┴──
//!                 └──────────────── page 0 (gpa A) ─────────────────┘└─ page 1 (gpa B) ─
//!
//!  indices (free-running u32, slot = idx & (N-1)):
//!
//!     rsp_prod_pvt          req_cons               req_prod (the guest's word)
//!          │ being processed    │ not yet taken         │
//!  ────────┼────────────────────┼───────────────────────┼──────────►
//!          └───────── at most N requests in the ring ───┘
//! ```
//!
//! * **Taking a request** reads `req_prod` (acquire: the entries before it are complete,
//!   ring.h's `rmb`), checks it, and copies the entry at `req_cons` into a private buffer,
//!   once. The caller validates and acts on that copy only: the guest may rewrite the slot at
//!   any moment. `req_prod` is hostile: more than `N` requests past `rsp_prod_pvt`
//!   (`RING_REQUEST_PROD_OVERFLOW`), or behind `req_cons`, means the frontend is broken or
//!   malicious, and the ring stops taking requests for good (blkback's "Halting ring
//!   processing"). Requests are never taken past `N` outstanding (`RING_REQUEST_CONS_OVERFLOW`),
//!   so a response always lands in the slot of a request already copied out.
//! * **Responses** go to slot `rsp_prod_pvt` and are published together: write the entries,
//!   release fence (`wmb`), store `rsp_prod`, full fence (`mb`), then notify the frontend
//!   only if its `rsp_event` lies in `(old, new]` (`RING_PUSH_RESPONSES_AND_CHECK_NOTIFY`).
//!   `old` is the value this side published last, not a re-read of the shared word, so a
//!   guest scribbling on `rsp_prod` cannot suppress its own notifications.
//! * **Before sleeping** the consumer sets `req_event = req_cons + 1`, full fence, and looks
//!   at `req_prod` again (`RING_FINAL_CHECK_FOR_REQUESTS`): a request published after the
//!   first look either is seen by the second, or its producer sees the new `req_event` and
//!   sends an event. Without the fence both sides could miss each other and the ring would
//!   stall.
//!
//! Guest memory is reached only through vm-memory's bounds-checked copies and atomic
//! loads/stores on the index words; no Rust reference into it is ever made.

use std::mem::offset_of;
use std::sync::atomic::{fence, Ordering};

use vm_memory::{Bytes, GuestAddress, GuestMemoryError};
use xen_abi::io::ring::{ring_size, RingIdx, SringHeader, SRING_ENTRIES_OFFSET, XEN_PAGE_SIZE};

/// Most pages a ring may span (`XENBUS_MAX_RING_GRANT_ORDER` 4 → 16 pages).
pub const MAX_RING_PAGES: usize = 16;

const PAGE: u64 = XEN_PAGE_SIZE as u64;
const REQ_PROD: u64 = offset_of!(SringHeader, req_prod) as u64;
const REQ_EVENT: u64 = offset_of!(SringHeader, req_event) as u64;
const RSP_PROD: u64 = offset_of!(SringHeader, rsp_prod) as u64;
const RSP_EVENT: u64 = offset_of!(SringHeader, rsp_event) as u64;

#[derive(Debug, thiserror::Error)]
pub enum RingError {
    #[error("a shared ring spans 1 to {MAX_RING_PAGES} pages, not {0}")]
    PageCount(usize),
    #[error("ring page {0:#x} is not page-aligned")]
    UnalignedPage(u64),
    #[error("{pages} ring page(s) cannot hold one entry of {req_size}-byte requests and {rsp_size}-byte responses")]
    EntrySize { req_size: usize, rsp_size: usize, pages: usize },
    #[error("cannot access the shared ring at {gpa:#x}")]
    Access {
        gpa: u64,
        #[source]
        source: GuestMemoryError,
    },
    #[error(
        "the frontend's req_prod {req_prod:#x} is {} requests past the responses ({rsp_prod:#x}); the ring holds {size}",
        req_prod.wrapping_sub(*rsp_prod)
    )]
    ProdOverflow { req_prod: RingIdx, rsp_prod: RingIdx, size: u32 },
    #[error("the frontend's req_prod {req_prod:#x} moved back behind requests already taken (req_cons {req_cons:#x})")]
    ProdRewound { req_prod: RingIdx, req_cons: RingIdx },
    #[error("a response was pushed with no request left to answer (req_cons {req_cons:#x})")]
    NoRequestToAnswer { req_cons: RingIdx },
    #[error("a {got}-byte buffer for the ring's {want}-byte entries")]
    BufferSize { got: usize, want: usize },
}

/// The back end's private state of one shared ring (ring.h's `<name>_back_ring`).
#[derive(Clone, Debug)]
pub struct BackRing {
    pages: Vec<GuestAddress>,
    req_size: usize,
    rsp_size: usize,
    entry_size: usize,
    size: u32,
    req_cons: RingIdx,
    rsp_prod_pvt: RingIdx,
    /// The `rsp_prod` this side published last (the `old` of the notify check).
    rsp_published: RingIdx,
    /// Set when the frontend's `req_prod` proved it broken: no request is taken any more.
    stopped: bool,
}

impl BackRing {
    /// A ring over `pages` (guest-physical addresses of its granted frames, in ring order)
    /// whose entries hold `req_size`-byte requests and `rsp_size`-byte responses, with both
    /// private indices at 0 (`BACK_RING_INIT`, for a ring the frontend has just initialised).
    pub fn new(pages: &[GuestAddress], req_size: usize, rsp_size: usize) -> Result<BackRing, RingError> {
        if pages.is_empty() || pages.len() > MAX_RING_PAGES {
            return Err(RingError::PageCount(pages.len()));
        }
        if let Some(p) = pages.iter().find(|p| !p.0.is_multiple_of(PAGE) || p.0.checked_add(PAGE).is_none()) {
            return Err(RingError::UnalignedPage(p.0));
        }
        let entry_size = req_size.max(rsp_size);
        let size = ring_size(pages.len() * XEN_PAGE_SIZE, entry_size);
        if req_size == 0 || rsp_size == 0 || size == 0 {
            return Err(RingError::EntrySize { req_size, rsp_size, pages: pages.len() });
        }
        Ok(BackRing {
            pages: pages.to_vec(),
            req_size,
            rsp_size,
            entry_size,
            // At most 65536 / 1 entries: fits.
            size: size as u32,
            req_cons: 0,
            rsp_prod_pvt: 0,
            rsp_published: 0,
            stopped: false,
        })
    }

    /// The ring as the frontend left it (`BACK_RING_ATTACH` at the shared `rsp_prod`, as
    /// blkback's `xen_blkif_map` does, so that a backend reconnecting to a live ring picks up
    /// where the responses stop). Refuses a ring whose `req_prod` is more than `N` past
    /// `rsp_prod`.
    pub fn attach<M>(
        mem: &M,
        pages: &[GuestAddress],
        req_size: usize,
        rsp_size: usize,
    ) -> Result<BackRing, RingError>
    where
        M: Bytes<GuestAddress, E = GuestMemoryError> + ?Sized,
    {
        let mut ring = BackRing::new(pages, req_size, rsp_size)?;
        let rsp_prod = ring.load(mem, RSP_PROD)?;
        let req_prod = ring.load(mem, REQ_PROD)?;
        if req_prod.wrapping_sub(rsp_prod) > ring.size {
            return Err(RingError::ProdOverflow { req_prod, rsp_prod, size: ring.size });
        }
        ring.req_cons = rsp_prod;
        ring.rsp_prod_pvt = rsp_prod;
        ring.rsp_published = rsp_prod;
        Ok(ring)
    }

    /// Entries in the ring (`RING_SIZE`, a power of two).
    pub fn size(&self) -> u32 {
        self.size
    }

    pub fn pages(&self) -> &[GuestAddress] {
        &self.pages
    }

    pub fn req_cons(&self) -> RingIdx {
        self.req_cons
    }

    pub fn rsp_prod_pvt(&self) -> RingIdx {
        self.rsp_prod_pvt
    }

    /// Requests taken and not yet answered.
    pub fn outstanding(&self) -> u32 {
        self.req_cons.wrapping_sub(self.rsp_prod_pvt)
    }

    /// Whether a bad `req_prod` stopped the ring (responses can still be pushed).
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Requests that can be taken now (`RING_HAS_UNCONSUMED_REQUESTS`, which never counts
    /// past `N` outstanding). A broken `req_prod` stops the ring and is returned once; a
    /// stopped ring has none.
    pub fn unconsumed_requests<M>(&mut self, mem: &M) -> Result<u32, RingError>
    where
        M: Bytes<GuestAddress, E = GuestMemoryError> + ?Sized,
    {
        if self.stopped {
            return Ok(0);
        }
        let checked = self.load(mem, REQ_PROD).and_then(|req_prod| {
            // Both differences are taken from rsp_prod_pvt, where a well-behaved frontend's
            // window starts: req_cons is at most N past it (we never take more), and a valid
            // req_prod lies between req_cons and rsp_prod_pvt + N.
            let ahead = req_prod.wrapping_sub(self.rsp_prod_pvt);
            let taken = self.outstanding();
            if ahead > self.size {
                Err(RingError::ProdOverflow { req_prod, rsp_prod: self.rsp_prod_pvt, size: self.size })
            } else if ahead < taken {
                Err(RingError::ProdRewound { req_prod, req_cons: self.req_cons })
            } else {
                Ok(ahead - taken)
            }
        });
        if checked.is_err() {
            self.stopped = true;
        }
        checked
    }

    /// Copies the next request into `out` (exactly the request size) and consumes it.
    /// Returns `false` when there is none to take (or the ring is stopped).
    pub fn take_request<M>(&mut self, mem: &M, out: &mut [u8]) -> Result<bool, RingError>
    where
        M: Bytes<GuestAddress, E = GuestMemoryError> + ?Sized,
    {
        if out.len() != self.req_size {
            return Err(RingError::BufferSize { got: out.len(), want: self.req_size });
        }
        if self.unconsumed_requests(mem)? == 0 {
            return Ok(false);
        }
        // The acquire load of req_prod above orders this copy after the guest's entry writes.
        self.copy_entry(self.req_cons, out, |gpa, piece| mem.read_slice(piece, gpa))?;
        self.req_cons = self.req_cons.wrapping_add(1);
        Ok(true)
    }

    /// Writes `rsp` (exactly the response size) into slot `rsp_prod_pvt`, the slot of the
    /// oldest request not yet answered; it becomes visible at the next
    /// [`push_responses`](Self::push_responses).
    pub fn push_response<M>(&mut self, mem: &M, rsp: &[u8]) -> Result<(), RingError>
    where
        M: Bytes<GuestAddress, E = GuestMemoryError> + ?Sized,
    {
        if rsp.len() != self.rsp_size {
            return Err(RingError::BufferSize { got: rsp.len(), want: self.rsp_size });
        }
        if self.outstanding() == 0 {
            return Err(RingError::NoRequestToAnswer { req_cons: self.req_cons });
        }
        let mut buf = rsp.to_vec();
        self.copy_entry(self.rsp_prod_pvt, &mut buf, |gpa, piece| mem.write_slice(piece, gpa))?;
        self.rsp_prod_pvt = self.rsp_prod_pvt.wrapping_add(1);
        Ok(())
    }

    /// Publishes the responses pushed so far (`RING_PUSH_RESPONSES_AND_CHECK_NOTIFY`) and
    /// returns whether the frontend asked to be notified of them.
    pub fn push_responses<M>(&mut self, mem: &M) -> Result<bool, RingError>
    where
        M: Bytes<GuestAddress, E = GuestMemoryError> + ?Sized,
    {
        let old = self.rsp_published;
        let new = self.rsp_prod_pvt;
        if new == old {
            return Ok(false);
        }
        // wmb: the entries are visible before the index that publishes them.
        fence(Ordering::Release);
        self.store(mem, RSP_PROD, new, Ordering::Release)?;
        self.rsp_published = new;
        // mb: the frontend sees the new rsp_prod before we read its rsp_event; otherwise it
        // could re-arm rsp_event after our read, check rsp_prod before our store, and sleep.
        fence(Ordering::SeqCst);
        let event = self.load(mem, RSP_EVENT)?;
        Ok(new.wrapping_sub(event) < new.wrapping_sub(old))
    }

    /// `RING_FINAL_CHECK_FOR_REQUESTS`: whether there are requests to take; if there are
    /// none, first asks the frontend to notify on the next one (`req_event = req_cons + 1`)
    /// and looks once more, so that a caller that sleeps on `false` misses no request.
    pub fn final_check_for_requests<M>(&mut self, mem: &M) -> Result<bool, RingError>
    where
        M: Bytes<GuestAddress, E = GuestMemoryError> + ?Sized,
    {
        if self.stopped {
            return Ok(false);
        }
        if self.unconsumed_requests(mem)? > 0 {
            return Ok(true);
        }
        self.store(mem, REQ_EVENT, self.req_cons.wrapping_add(1), Ordering::Release)?;
        // mb: req_event is visible before req_prod is read again (pairs with the frontend's
        // mb between publishing req_prod and reading req_event).
        fence(Ordering::SeqCst);
        Ok(self.unconsumed_requests(mem)? > 0)
    }

    /// Runs `op` over the pieces (at most one per page crossed) of the entry at index `idx`,
    /// with `buf` as the entry's first bytes.
    fn copy_entry<F>(&self, idx: RingIdx, buf: &mut [u8], mut op: F) -> Result<(), RingError>
    where
        F: FnMut(GuestAddress, &mut [u8]) -> Result<(), GuestMemoryError>,
    {
        let slot = (idx & (self.size - 1)) as usize;
        // slot < N and 64 + N * entry_size <= pages * 4096, so no overflow and every piece
        // lies within the ring's pages.
        let mut off = SRING_ENTRIES_OFFSET + slot * self.entry_size;
        let mut rest = buf;
        while !rest.is_empty() {
            let page = self.pages[off / XEN_PAGE_SIZE];
            let in_page = off % XEN_PAGE_SIZE;
            let n = rest.len().min(XEN_PAGE_SIZE - in_page);
            let gpa = GuestAddress(page.0 + in_page as u64);
            let (piece, tail) = std::mem::take(&mut rest).split_at_mut(n);
            op(gpa, piece).map_err(|source| RingError::Access { gpa: gpa.0, source })?;
            off += n;
            rest = tail;
        }
        Ok(())
    }

    fn load<M>(&self, mem: &M, off: u64) -> Result<u32, RingError>
    where
        M: Bytes<GuestAddress, E = GuestMemoryError> + ?Sized,
    {
        let gpa = GuestAddress(self.pages[0].0 + off);
        mem.load(gpa, Ordering::Acquire).map_err(|source| RingError::Access { gpa: gpa.0, source })
    }

    fn store<M>(&self, mem: &M, off: u64, val: u32, order: Ordering) -> Result<(), RingError>
    where
        M: Bytes<GuestAddress, E = GuestMemoryError> + ?Sized,
    {
        let gpa = GuestAddress(self.pages[0].0 + off);
        mem.store(val, gpa, order).map_err(|source| RingError::Access { gpa: gpa.0, source })
    }
}

#[cfg(test)]
mod tests;
