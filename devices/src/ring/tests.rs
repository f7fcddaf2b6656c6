use super::*;
use vm_memory::GuestMemoryMmap;

/// Guest memory of the tests: frames 0..0x20.
fn memory() -> GuestMemoryMmap<()> {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x20 << 12)]).unwrap()
}

fn frames(list: &[u64]) -> Vec<GuestAddress> {
    list.iter().map(|f| GuestAddress(f << 12)).collect()
}

/// blkif-sized entries (112-byte requests, 16-byte responses).
const REQ: usize = 112;
const RSP: usize = 16;

/// A frontend that follows ring.h to the letter (`FRONT_RING_*`, `RING_PUSH_REQUESTS_AND_CHECK_NOTIFY`,
/// `RING_FINAL_CHECK_FOR_RESPONSES`), reaching the pages byte by byte so that it shares no
/// code with the back end under test.
struct Front {
    pages: Vec<GuestAddress>,
    size: u32,
    req_prod_pvt: u32,
    rsp_cons: u32,
}

impl Front {
    /// `SHARED_RING_INIT` + `FRONT_RING_ATTACH` at `start`.
    fn init(mem: &GuestMemoryMmap<()>, pages: &[GuestAddress], start: u32) -> Front {
        let f = Front { pages: pages.to_vec(), size: 0, req_prod_pvt: start, rsp_cons: start };
        for i in 0..64 {
            f.poke(mem, i, 0);
        }
        f.set(mem, 0, start);
        f.set(mem, 8, start);
        f.set(mem, 4, start.wrapping_add(1));
        f.set(mem, 12, start.wrapping_add(1));
        let size = ring_size(pages.len() * 4096, REQ) as u32;
        Front { size, ..f }
    }

    fn gpa(&self, off: usize) -> GuestAddress {
        GuestAddress(self.pages[off / 4096].0 + (off % 4096) as u64)
    }

    fn poke(&self, mem: &GuestMemoryMmap<()>, off: usize, b: u8) {
        mem.write_obj(b, self.gpa(off)).unwrap();
    }

    fn peek(&self, mem: &GuestMemoryMmap<()>, off: usize) -> u8 {
        mem.read_obj(self.gpa(off)).unwrap()
    }

    fn set(&self, mem: &GuestMemoryMmap<()>, off: u64, v: u32) {
        mem.write_obj(v, GuestAddress(self.pages[0].0 + off)).unwrap();
    }

    fn get(&self, mem: &GuestMemoryMmap<()>, off: u64) -> u32 {
        mem.read_obj(GuestAddress(self.pages[0].0 + off)).unwrap()
    }

    fn entry_off(&self, idx: u32) -> usize {
        64 + (idx & (self.size - 1)) as usize * REQ
    }

    /// Writes request `req_prod_pvt` (filled with `fill`) without publishing it.
    fn queue(&mut self, mem: &GuestMemoryMmap<()>, fill: &[u8]) {
        let off = self.entry_off(self.req_prod_pvt);
        for i in 0..REQ {
            self.poke(mem, off + i, fill[i % fill.len()]);
        }
        self.req_prod_pvt = self.req_prod_pvt.wrapping_add(1);
    }

    /// `RING_PUSH_REQUESTS_AND_CHECK_NOTIFY`.
    fn push(&mut self, mem: &GuestMemoryMmap<()>) -> bool {
        let old = self.get(mem, 0);
        let new = self.req_prod_pvt;
        self.set(mem, 0, new);
        let event = self.get(mem, 4);
        new.wrapping_sub(event) < new.wrapping_sub(old)
    }

    /// Takes the next published response, if any.
    fn response(&mut self, mem: &GuestMemoryMmap<()>) -> Option<Vec<u8>> {
        if self.rsp_cons == self.get(mem, 8) {
            return None;
        }
        let off = self.entry_off(self.rsp_cons);
        self.rsp_cons = self.rsp_cons.wrapping_add(1);
        Some((0..RSP).map(|i| self.peek(mem, off + i)).collect())
    }

    fn set_rsp_event(&self, mem: &GuestMemoryMmap<()>, v: u32) {
        self.set(mem, 12, v);
    }
}

fn pattern(i: u32) -> Vec<u8> {
    i.to_le_bytes().iter().chain(b"-req").copied().collect()
}

fn expect_request(got: &[u8], i: u32) {
    let p = pattern(i);
    assert!(got.iter().enumerate().all(|(k, &b)| b == p[k % p.len()]), "request {i}: {got:?}");
}

#[test]
fn ring_sizes_follow_const_ring_size() {
    let one = BackRing::new(&frames(&[1]), REQ, RSP).unwrap();
    assert_eq!(one.size(), 32);
    let sixteen = BackRing::new(&frames(&(1..17).collect::<Vec<_>>()), REQ, RSP).unwrap();
    assert_eq!(sixteen.size(), 512);
    let three = BackRing::new(&frames(&[1, 5, 3]), REQ, RSP).unwrap();
    assert_eq!(three.size(), 64, "(3 * 4096 - 64) / 112 = 109 → 64");
    let netif_tx = BackRing::new(&frames(&[1]), 12, 4).unwrap();
    assert_eq!(netif_tx.size(), 256, "the entry is the larger of request and response");
    let responses_larger = BackRing::new(&frames(&[1]), 4, 112).unwrap();
    assert_eq!(responses_larger.size(), 32);
}

#[test]
fn refuses_rings_it_cannot_lay_out() {
    assert!(matches!(BackRing::new(&[], REQ, RSP), Err(RingError::PageCount(0))));
    let seventeen = frames(&(1..18).collect::<Vec<_>>());
    assert!(matches!(BackRing::new(&seventeen, REQ, RSP), Err(RingError::PageCount(17))));
    let odd = [GuestAddress(0x1000), GuestAddress(0x2800)];
    assert!(matches!(BackRing::new(&odd, REQ, RSP), Err(RingError::UnalignedPage(0x2800))));
    let top = [GuestAddress(!0xfff)];
    assert!(matches!(BackRing::new(&top, REQ, RSP), Err(RingError::UnalignedPage(_))));
    assert!(matches!(BackRing::new(&frames(&[1]), 4033, RSP), Err(RingError::EntrySize { .. })));
    assert!(matches!(BackRing::new(&frames(&[1]), 0, RSP), Err(RingError::EntrySize { .. })));
    assert_eq!(BackRing::new(&frames(&[1]), 4032, RSP).unwrap().size(), 1);
}

#[test]
fn takes_published_requests_in_order_as_private_copies() {
    let mem = memory();
    let pages = frames(&[3]);
    let mut front = Front::init(&mem, &pages, 0);
    let mut ring = BackRing::attach(&mem, &pages, REQ, RSP).unwrap();
    let mut buf = [0u8; REQ];
    assert!(!ring.take_request(&mem, &mut buf).unwrap(), "empty ring");
    for i in 0..3 {
        front.queue(&mem, &pattern(i));
    }
    assert!(!ring.take_request(&mem, &mut buf).unwrap(), "written but not published");
    front.push(&mem);
    for i in 0..3 {
        assert!(ring.take_request(&mem, &mut buf).unwrap());
        // The guest rewrites the slot after the copy: the copy does not change.
        front.poke(&mem, front.entry_off(i), 0xee);
        expect_request(&buf, i);
    }
    assert!(!ring.take_request(&mem, &mut buf).unwrap());
    assert_eq!((ring.req_cons(), ring.outstanding()), (3, 3));
}

#[test]
fn never_holds_more_than_the_ring_size_outstanding() {
    let mem = memory();
    let pages = frames(&[3]);
    let mut front = Front::init(&mem, &pages, 0);
    let mut ring = BackRing::attach(&mem, &pages, REQ, RSP).unwrap();
    let mut buf = [0u8; REQ];
    for i in 0..32 {
        front.queue(&mem, &pattern(i));
    }
    front.push(&mem);
    for _ in 0..32 {
        assert!(ring.take_request(&mem, &mut buf).unwrap());
    }
    assert_eq!(ring.unconsumed_requests(&mem).unwrap(), 0);
    assert!(!ring.take_request(&mem, &mut buf).unwrap());
    // One answer frees one slot; the frontend fills it, and only then is there a request.
    ring.push_response(&mem, &[1; RSP]).unwrap();
    ring.push_responses(&mem).unwrap();
    assert_eq!(front.response(&mem).unwrap(), vec![1; RSP]);
    assert!(!ring.take_request(&mem, &mut buf).unwrap());
    front.queue(&mem, &pattern(32));
    front.push(&mem);
    assert!(ring.take_request(&mem, &mut buf).unwrap());
    expect_request(&buf, 32);
    assert_eq!(ring.outstanding(), 32);
}

#[test]
fn a_producer_running_more_than_the_ring_ahead_stops_the_ring_once() {
    let mem = memory();
    let pages = frames(&[3]);
    let front = Front::init(&mem, &pages, 0);
    let mut ring = BackRing::attach(&mem, &pages, REQ, RSP).unwrap();
    let mut buf = [0u8; REQ];
    front.set(&mem, 0, 32);
    assert_eq!(ring.unconsumed_requests(&mem).unwrap(), 32, "exactly a ringful is fine");
    front.set(&mem, 0, 33);
    let e = ring.take_request(&mem, &mut buf).unwrap_err();
    assert!(matches!(e, RingError::ProdOverflow { req_prod: 33, rsp_prod: 0, size: 32 }), "{e}");
    assert!(ring.is_stopped());
    // Reported once; afterwards the ring takes nothing and asks for no events, even if the
    // frontend's index looks sane again.
    front.set(&mem, 0, 1);
    assert!(!ring.take_request(&mem, &mut buf).unwrap());
    assert!(!ring.final_check_for_requests(&mem).unwrap());
    assert_eq!(ring.req_cons(), 0);
}

#[test]
fn a_producer_index_moved_backwards_stops_the_ring() {
    let mem = memory();
    let pages = frames(&[3]);
    let mut front = Front::init(&mem, &pages, 0);
    let mut ring = BackRing::attach(&mem, &pages, REQ, RSP).unwrap();
    let mut buf = [0u8; REQ];
    for i in 0..4 {
        front.queue(&mem, &pattern(i));
    }
    front.push(&mem);
    for _ in 0..4 {
        assert!(ring.take_request(&mem, &mut buf).unwrap());
    }
    ring.push_response(&mem, &[0; RSP]).unwrap();
    // req_prod between rsp_prod_pvt (1) and req_cons (4): without the check, the unsigned
    // difference would look like a ringful of new requests.
    front.set(&mem, 0, 2);
    let e = ring.take_request(&mem, &mut buf).unwrap_err();
    assert!(matches!(e, RingError::ProdRewound { req_prod: 2, req_cons: 4 }), "{e}");
    assert!(!ring.take_request(&mem, &mut buf).unwrap());
    // Requests already taken can still be answered.
    for _ in 0..3 {
        ring.push_response(&mem, &[0; RSP]).unwrap();
    }
    ring.push_responses(&mem).unwrap();
    assert_eq!(front.get(&mem, 8), 4);
}

#[test]
fn free_running_indices_wrap_past_u32_max() {
    let mem = memory();
    let pages = frames(&[3]);
    let start = u32::MAX - 40;
    let mut front = Front::init(&mem, &pages, start);
    let mut ring = BackRing::attach(&mem, &pages, REQ, RSP).unwrap();
    assert_eq!((ring.req_cons(), ring.rsp_prod_pvt()), (start, start));
    let mut buf = [0u8; REQ];
    let mut next = 0u32;
    // 100 requests in batches of 7: the indices wrap past 0 mid-batch.
    for _ in 0..15 {
        for _ in 0..7 {
            front.queue(&mem, &pattern(next));
            next += 1;
        }
        front.push(&mem);
        let mut k = 0;
        while ring.take_request(&mem, &mut buf).unwrap() {
            let i = ring.req_cons().wrapping_sub(start).wrapping_sub(1);
            expect_request(&buf, i);
            ring.push_response(&mem, &i.to_le_bytes().repeat(4)).unwrap();
            k += 1;
        }
        assert_eq!(k, 7);
        ring.push_responses(&mem).unwrap();
        while let Some(r) = front.response(&mem) {
            let i = front.rsp_cons.wrapping_sub(start).wrapping_sub(1);
            assert_eq!(r, i.to_le_bytes().repeat(4));
        }
    }
    assert_eq!(ring.req_cons(), start.wrapping_add(105));
    assert!(ring.req_cons() < start, "wrapped");
}

#[test]
fn entries_straddling_pages_of_a_scattered_multi_page_ring_are_copied_whole() {
    let mem = memory();
    // Four frames, neither contiguous nor in address order.
    let pages = frames(&[9, 2, 0x1f, 5]);
    let mut front = Front::init(&mem, &pages, 0);
    let mut ring = BackRing::attach(&mem, &pages, REQ, RSP).unwrap();
    assert_eq!(ring.size(), 128);
    let straddling: Vec<u32> = (0..128)
        .filter(|&i| (64 + i as usize * REQ) / 4096 != (64 + i as usize * REQ + REQ - 1) / 4096)
        .collect();
    assert_eq!(straddling, vec![72, 109], "entries 72 and 109 cross pages 1|2 and 2|3");
    let mut buf = [0u8; REQ];
    // Two laps so that every slot holds a request and then a response.
    for lap in 0..2u32 {
        for i in 0..128 {
            front.queue(&mem, &pattern(lap * 128 + i));
        }
        front.push(&mem);
        for i in 0..128 {
            assert!(ring.take_request(&mem, &mut buf).unwrap());
            expect_request(&buf, lap * 128 + i);
        }
        for i in 0..128u32 {
            let mut rsp = [0u8; RSP];
            rsp[..4].copy_from_slice(&(lap * 128 + i).to_le_bytes());
            rsp[12..].copy_from_slice(&(!i).to_le_bytes());
            ring.push_response(&mem, &rsp).unwrap();
        }
        ring.push_responses(&mem).unwrap();
        for i in 0..128u32 {
            let r = front.response(&mem).unwrap();
            assert_eq!(r[..4], (lap * 128 + i).to_le_bytes());
            assert_eq!(r[12..], (!i).to_le_bytes());
        }
    }
}

#[test]
fn responses_notify_only_when_rsp_event_is_passed() {
    let mem = memory();
    let pages = frames(&[3]);
    let mut front = Front::init(&mem, &pages, 0);
    let mut ring = BackRing::attach(&mem, &pages, REQ, RSP).unwrap();
    let mut buf = [0u8; REQ];
    for i in 0..20 {
        front.queue(&mem, &pattern(i));
    }
    front.push(&mem);
    while ring.take_request(&mem, &mut buf).unwrap() {}
    let respond = |ring: &mut BackRing, n: usize| {
        for _ in 0..n {
            ring.push_response(&mem, &[0; RSP]).unwrap();
        }
        ring.push_responses(&mem).unwrap()
    };
    // rsp_event = 1 from SHARED_RING_INIT: the first response notifies.
    assert!(respond(&mut ring, 1));
    // The frontend has not re-armed: rsp_event 1 is not in (1, 2].
    assert!(!respond(&mut ring, 1));
    // Re-armed to 3 (the frontend consumed 2): 3 is in (2, 4].
    front.set_rsp_event(&mem, 3);
    assert!(respond(&mut ring, 2));
    // The frontend wants to hear only at 10: nothing until rsp_prod reaches it.
    front.set_rsp_event(&mem, 10);
    assert!(!respond(&mut ring, 5), "rsp_prod 9");
    assert!(respond(&mut ring, 1), "rsp_prod 10");
    // Publishing nothing new never notifies.
    assert!(!ring.push_responses(&mem).unwrap());
    assert_eq!(front.get(&mem, 8), 10);
}

#[test]
fn notify_check_wraps_like_ring_h() {
    let mem = memory();
    let pages = frames(&[3]);
    let start = u32::MAX - 1;
    let mut front = Front::init(&mem, &pages, start);
    let mut ring = BackRing::attach(&mem, &pages, REQ, RSP).unwrap();
    let mut buf = [0u8; REQ];
    for i in 0..4 {
        front.queue(&mem, &pattern(i));
    }
    front.push(&mem);
    while ring.take_request(&mem, &mut buf).unwrap() {}
    // rsp_event = start + 1 = u32::MAX; publishing start → start + 4 (= 2) passes it.
    for _ in 0..4 {
        ring.push_response(&mem, &[0; RSP]).unwrap();
    }
    assert!(ring.push_responses(&mem).unwrap());
    assert_eq!(front.get(&mem, 8), 2);
}

#[test]
fn a_scribbled_rsp_prod_does_not_suppress_notifications() {
    let mem = memory();
    let pages = frames(&[3]);
    let mut front = Front::init(&mem, &pages, 0);
    let mut ring = BackRing::attach(&mem, &pages, REQ, RSP).unwrap();
    let mut buf = [0u8; REQ];
    front.queue(&mem, &pattern(0));
    front.push(&mem);
    assert!(ring.take_request(&mem, &mut buf).unwrap());
    ring.push_response(&mem, &[0; RSP]).unwrap();
    // The guest writes the backend's index to the value about to be published.
    front.set(&mem, 8, 1);
    assert!(ring.push_responses(&mem).unwrap());
}

#[test]
fn final_check_arms_req_event_so_the_next_request_notifies() {
    let mem = memory();
    let pages = frames(&[3]);
    let mut front = Front::init(&mem, &pages, 0);
    let mut ring = BackRing::attach(&mem, &pages, REQ, RSP).unwrap();
    let mut buf = [0u8; REQ];
    for i in 0..3 {
        front.queue(&mem, &pattern(i));
    }
    // req_event = 1 from SHARED_RING_INIT: the first push notifies.
    assert!(front.push(&mem));
    // Pending work: true, and req_event is left alone.
    assert!(ring.final_check_for_requests(&mem).unwrap());
    assert_eq!(front.get(&mem, 4), 1);
    while ring.take_request(&mem, &mut buf).unwrap() {}
    // Idle: the check arms req_event at req_cons + 1 and finds nothing.
    assert!(!ring.final_check_for_requests(&mem).unwrap());
    assert_eq!(front.get(&mem, 4), 4);
    // So the frontend's next push notifies, and a second one (not re-armed) does not.
    front.queue(&mem, &pattern(3));
    assert!(front.push(&mem));
    front.queue(&mem, &pattern(4));
    assert!(!front.push(&mem), "the backend is known to be awake");
    assert!(ring.final_check_for_requests(&mem).unwrap());
}

#[test]
fn final_check_sees_a_request_published_before_req_event_was_armed() {
    // The lost-wakeup race: the frontend published (and found req_event not passed, so sent
    // no event) just before the backend armed req_event. The re-check must see the request.
    let mem = memory();
    let pages = frames(&[3]);
    let mut front = Front::init(&mem, &pages, 0);
    let mut ring = BackRing::attach(&mem, &pages, REQ, RSP).unwrap();
    let mut buf = [0u8; REQ];
    front.queue(&mem, &pattern(0));
    front.push(&mem);
    assert!(ring.take_request(&mem, &mut buf).unwrap());
    // Backend is "about to sleep"; req_event is still 1, so this push sends no event.
    front.queue(&mem, &pattern(1));
    assert!(!front.push(&mem));
    assert!(ring.final_check_for_requests(&mem).unwrap(), "the re-check finds it");
}

#[test]
fn responses_need_a_request_to_answer_and_the_right_sizes() {
    let mem = memory();
    let pages = frames(&[3]);
    let _front = Front::init(&mem, &pages, 0);
    let mut ring = BackRing::attach(&mem, &pages, REQ, RSP).unwrap();
    assert!(matches!(ring.push_response(&mem, &[0; RSP]), Err(RingError::NoRequestToAnswer { req_cons: 0 })));
    assert!(matches!(ring.push_response(&mem, &[0; 8]), Err(RingError::BufferSize { got: 8, want: 16 })));
    let mut small = [0u8; 64];
    assert!(matches!(ring.take_request(&mem, &mut small), Err(RingError::BufferSize { got: 64, want: 112 })));
}

#[test]
fn attaching_to_a_live_ring_starts_at_its_responses() {
    let mem = memory();
    let pages = frames(&[3]);
    let front = Front::init(&mem, &pages, 0);
    front.set(&mem, 8, 40); // rsp_prod
    front.set(&mem, 0, 45); // req_prod: 5 unanswered requests
    let mut ring = BackRing::attach(&mem, &pages, REQ, RSP).unwrap();
    assert_eq!((ring.req_cons(), ring.rsp_prod_pvt()), (40, 40));
    assert_eq!(ring.unconsumed_requests(&mem).unwrap(), 5);
    front.set(&mem, 0, 40 + 33);
    assert!(matches!(BackRing::attach(&mem, &pages, REQ, RSP), Err(RingError::ProdOverflow { .. })));
}

#[test]
fn an_inaccessible_ring_page_is_an_error_not_a_panic() {
    let mem = memory();
    let pages = [GuestAddress(3 << 12), GuestAddress(0x100 << 12)];
    let mut front = Front::init(&mem, &pages[..1], 0);
    front.size = 64;
    let mut ring = BackRing::attach(&mem, &pages, REQ, RSP).unwrap();
    let mut buf = [0u8; REQ];
    front.set(&mem, 0, 37);
    for _ in 0..36 {
        assert!(ring.take_request(&mem, &mut buf).unwrap());
    }
    // Entry 36 starts on the second page, which is not guest memory.
    assert!(matches!(ring.take_request(&mem, &mut buf), Err(RingError::Access { gpa: 0x100000, .. })));
}
