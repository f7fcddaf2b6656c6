//! `GNTTABOP_copy` (Xen's `gnttab_copy_one` and its helpers): copies between frames named by
//! MFN (only with `DOMID_SELF`) or by grant reference. The domain's own grants work as in Xen
//! (the entry must grant access to the domain itself); domain 0 grants it nothing.

use super::{Dom, DOM0_NR_ENTRIES};
use crate::machine::Machine;
use crate::mm::frames::PageType;
use crate::shim::Shim;
use xen_abi::grant_table::*;
use xen_abi::xen::DOMID_SELF;
use zerocopy::IntoBytes;

/// One side of a copy once claimed (Xen's `struct gnttab_copy_buf`).
struct Buf {
    mfn: u64,
    /// The grant ref and the `GTF_*` bits this copy set in it (cleared again on release).
    grant: Option<(GrantRef, u16)>,
    /// A `Writable` type reference was taken (destination).
    typed: bool,
}

impl<M: Machine> Shim<M> {
    /// One `gnttab_copy` op: its `GNTST_*` status.
    pub(crate) fn grant_copy(&mut self, op: &GnttabCopy) -> i16 {
        // gnttab_copy_lock_domains: only DOMID_SELF may name a frame directly.
        let lock = |s: &Self, domid: u16, gref: bool| -> Result<Dom, i16> {
            if domid != DOMID_SELF && !gref {
                return Err(GNTST_PERMISSION_DENIED);
            }
            s.grant_dom_any(domid).ok_or(GNTST_BAD_DOMAIN)
        };
        let src_gref = op.flags & GNTCOPY_SOURCE_GREF != 0;
        let dst_gref = op.flags & GNTCOPY_DEST_GREF != 0;
        let (sd, dd) = match (lock(self, op.source.domid, src_gref), lock(self, op.dest.domid, dst_gref)) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => return e,
        };
        let src = match self.claim_buf(sd, op.source.u, src_gref, true) {
            Ok(b) => b,
            Err(e) => return e,
        };
        let dst = match self.claim_buf(dd, op.dest.u, dst_gref, false) {
            Ok(b) => b,
            Err(e) => {
                self.release_buf(&src);
                return e;
            }
        };
        let st = self.copy_bytes(op, &src, &dst);
        self.release_buf(&dst);
        self.release_buf(&src);
        st
    }

    fn copy_bytes(&mut self, op: &GnttabCopy, src: &Buf, dst: &Buf) -> i16 {
        let len = usize::from(op.len);
        let (so, doff) = (usize::from(op.source.offset), usize::from(op.dest.offset));
        if so + len > 4096 || doff + len > 4096 {
            return GNTST_BAD_COPY_ARG;
        }
        let mut buf = [0u8; 4096];
        let piece = &mut buf[..len];
        if self.m.read_phys((src.mfn << 12) + so as u64, piece).is_err()
            || self.m.write_phys((dst.mfn << 12) + doff as u64, piece).is_err()
        {
            return GNTST_GENERAL_ERROR;
        }
        GNTST_OKAY
    }

    /// `gnttab_copy_claim_buf`: the frame behind `u` (a grant ref if `gref`, else an MFN of the
    /// domain), pinned for reading (`readonly`) or writing.
    fn claim_buf(&mut self, dom: Dom, u: u64, gref: bool, readonly: bool) -> Result<Buf, i16> {
        let mut b = Buf { mfn: 0, grant: None, typed: false };
        if gref {
            let r = u as GrantRef;
            let (mfn, set) = self.acquire_grant_for_copy(dom, r, readonly)?;
            b.mfn = mfn;
            b.grant = Some((r, set));
        } else {
            // get_paged_frame: a frame the domain owns.
            if !self.owned(u) {
                return Err(GNTST_BAD_PAGE);
            }
            b.mfn = u;
        }
        if !readonly {
            if self.get_page_and_type(b.mfn, PageType::Writable).is_err() {
                self.release_buf(&b);
                return Err(GNTST_GENERAL_ERROR);
            }
            b.typed = true;
        }
        Ok(b)
    }

    fn release_buf(&mut self, b: &Buf) {
        if b.typed {
            self.put_page_and_type(b.mfn);
        }
        if let Some((r, set)) = b.grant {
            if let Some((at, mut e)) = self.grant_entry(r) {
                e.flags &= !set;
                let _ = self.m.write_phys(at, &e.flags.to_le_bytes());
            }
        }
    }

    /// `acquire_grant_for_copy` on a v1 table: checks entry `r` grants this domain access
    /// (`_set_status_v1` without the sub-page mask), sets `GTF_reading` (and `GTF_writing`),
    /// and returns the frame with the bits it set, which only it clears again (a backend may
    /// hold the same bits).
    fn acquire_grant_for_copy(&mut self, dom: Dom, r: GrantRef, readonly: bool) -> Result<(u64, u16), i16> {
        if dom == Dom::Dom0 {
            return Err(if r >= DOM0_NR_ENTRIES { GNTST_BAD_GNTREF } else { GNTST_GENERAL_ERROR });
        }
        let (at, mut e) = self.grant_entry(r).ok_or(GNTST_BAD_GNTREF)?;
        if e.flags & GTF_TYPE_MASK != GTF_PERMIT_ACCESS || e.domid != self.boot.domid {
            return Err(GNTST_GENERAL_ERROR);
        }
        if !readonly && e.flags & GTF_READONLY != 0 {
            return Err(GNTST_GENERAL_ERROR);
        }
        let want = if readonly { GTF_READING } else { GTF_READING | GTF_WRITING };
        let set = want & !e.flags;
        // get_paged_frame: the granted frame must be the domain's.
        let mfn = u64::from(e.frame);
        if !self.owned(mfn) {
            return Err(GNTST_BAD_PAGE);
        }
        e.flags |= set;
        if self.m.write_phys(at, e.as_bytes()).is_err() {
            return Err(GNTST_GENERAL_ERROR);
        }
        Ok((mfn, set))
    }
}
