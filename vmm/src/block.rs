//! Disks: each [`DiskConfig`](crate::DiskConfig) becomes a xenbus `vbd` device whose rings are
//! served by threads of their own.
//!
//! ```text
//!  event thread                                 ring thread (one per ring, event-manager)
//!  ────────────                                 ─────────────────────────────────────────
//!  xenbus: frontend Initialised ─► Vbd::connect
//!    read ring-ref(s), event-channel, queues
//!    BlkBackend::connect (maps the ring grants)
//!    route the port: its kick eventfd gets a ─► kick (KVM ioeventfd, no exit to userspace)
//!    KVM ioeventfd (direct doorbell)              └► pump: take requests, submit I/O once,
//!    spawn the ring thread                           completions → responses, raise the
//!                                                    port once per batch, final check
//!                                                  completion eventfd (io_uring) ─► pump
//!  xenbus: frontend Closing/Closed ─► Vbd::disconnect: stop ─► the thread drains its I/O,
//!    join, unroute the port                        unmaps every grant, returns its counters
//! ```
//!
//! The ring threads are scoped to [`crate::Domain::run`]: they borrow guest memory, which
//! outlives them, and every one is joined before `run` returns (the xenbus layer disconnects
//! every device when the domain ends).

use crate::events::Ports;
use devices::block::backend::{BlkBackend, BlkError, BlkStats, DiskInfo};
use devices::block::disk::Disk;
use devices::block::BlockIo;
use devices::grant::GrantTable;
use devices::xenbus::{xvd_devid, Backend, DeviceSpec, Fatal, FrontendKeys};
use event_manager::{EventManager, EventOps, Events, MutEventSubscriber, SubscriberOps};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{Scope, ScopedJoinHandle};
use std::time::Duration;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use xen_abi::errno::Errno;
use xen_abi::grant_table::GrantRef;

/// Largest `ring-page-order` offered (Linux blkback's `XENBUS_MAX_RING_GRANT_ORDER`).
pub const MAX_RING_PAGE_ORDER: u32 = 4;
/// Indirect segments per request offered (Linux blkback's `MAX_INDIRECT_SEGMENTS`).
pub const MAX_INDIRECT_SEGMENTS: u32 = 256;

/// Most queues (rings) a disk offers: Linux blkback offers one per host CPU; four is also
/// blkfront's default ceiling, and more threads than host CPUs buy nothing.
pub fn max_queues() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32).clamp(1, 4)
}

/// `xvda`, `xvdb`, …, `xvdz`.
pub fn disk_name(index: usize) -> String {
    format!("xvd{}", (b'a' + (index % 26) as u8) as char)
}

/// Disk `index`'s xenstore directories, as libxl's `device_disk_add` writes them.
pub fn device_spec(index: usize, disk: &Disk) -> DeviceSpec {
    // MAX_DISKS keeps `index` far below xvd_devid's limit.
    let devid = xvd_devid(index as u32).unwrap_or(0);
    let kv = |k: &str, v: String| (k.to_string(), v);
    DeviceSpec {
        kind: "vbd",
        devid,
        frontend_keys: vec![
            kv("virtual-device", devid.to_string()),
            kv("device-type", "disk".into()),
            kv("protocol", "x86_64-abi".into()),
        ],
        backend_keys: vec![
            kv("dev", disk_name(index)),
            kv("type", "xenvmm".into()),
            kv("params", disk.path().display().to_string()),
            kv("mode", if disk.readonly() { "r" } else { "w" }.into()),
            kv("device-type", "disk".into()),
            kv("removable", "0".into()),
            kv("bootable", "1".into()),
        ],
    }
}

/// What every disk's backend shares.
pub(crate) struct BlockContext<'a> {
    pub mem: &'a GuestMemoryMmap,
    pub ports: &'a Ports<'a>,
    pub grants: Arc<Mutex<GrantTable>>,
}

/// A running ring: its thread and how to stop it.
struct RingThread<'scope> {
    port: u32,
    stop: Arc<EventFd>,
    thread: ScopedJoinHandle<'scope, BlkStats>,
}

/// One disk's xenbus backend.
pub(crate) struct Vbd<'scope, 'env> {
    scope: &'scope Scope<'scope, 'env>,
    ctx: &'env BlockContext<'env>,
    disk: &'env Disk,
    name: String,
    rings: Vec<RingThread<'scope>>,
    /// Counters of the rings that have ended, for `--stats`.
    totals: Arc<Mutex<BlkStats>>,
}

impl<'scope, 'env> Vbd<'scope, 'env> {
    pub fn new(
        scope: &'scope Scope<'scope, 'env>,
        ctx: &'env BlockContext<'env>,
        disk: &'env Disk,
        name: String,
        totals: Arc<Mutex<BlkStats>>,
    ) -> Self {
        Vbd { scope, ctx, disk, name, rings: Vec::new(), totals }
    }

    fn info(&self) -> DiskInfo {
        DiskInfo {
            sectors: self.disk.sectors(),
            readonly: self.disk.readonly(),
            discard: self.disk.discard_supported(),
            probed_raw: self.disk.probed_raw(),
            max_indirect_segments: MAX_INDIRECT_SEGMENTS,
        }
    }

    /// Connects queue `q` of `nq`: maps its ring and starts its thread.
    fn connect_ring(&mut self, fe: &dyn FrontendKeys, q: u32, nq: u32, order: u32) -> Result<(), Fatal> {
        let prefix = if nq == 1 { String::new() } else { format!("queue-{q}/") };
        let mut refs: Vec<GrantRef> = Vec::with_capacity(1 << order);
        if order == 0 {
            refs.push(read_num(fe, &format!("{prefix}ring-ref"))?);
        } else {
            for i in 0..1u32 << order {
                refs.push(read_num(fe, &format!("{prefix}ring-ref{i}"))?);
            }
        }
        let port: u32 = read_num(fe, &format!("{prefix}event-channel"))?;
        let engine = self
            .disk
            .engine(self.ctx.mem.clone())
            .map_err(|e| Fatal::new(Errno::EIO, format!("{}: {e}", self.name)))?;
        let mut ring =
            BlkBackend::connect(self.ctx.mem, self.ctx.grants.clone(), 0, &refs, self.info(), engine)
                .map_err(|e| Fatal::new(Errno::EINVAL, format!("mapping ring {q}: {e}")))?;
        let fds = (EventFd::new(EFD_NONBLOCK), EventFd::new(EFD_NONBLOCK));
        let (kick, stop) = match fds {
            (Ok(k), Ok(s)) => (Arc::new(k), Arc::new(s)),
            (Err(e), _) | (_, Err(e)) => {
                let _ = ring.disconnect(DRAIN_WAIT);
                return Err(Fatal::new(Errno::ENOMEM, format!("eventfd: {e}")));
            }
        };
        if let Err(e) = self.ctx.ports.route(port, kick.clone()) {
            let _ = ring.disconnect(DRAIN_WAIT);
            return Err(Fatal::new(Errno::EINVAL, format!("binding event channel {port}: {e}")));
        }
        let worker = RingWorker {
            ring: Some(ring),
            kick,
            stop: stop.clone(),
            ports: self.ctx.ports,
            port,
            done: Arc::default(),
            warned: false,
            name: format!("{} queue {q}", self.name),
        };
        let spawned = std::thread::Builder::new()
            .name(format!("xenvmm-{}-q{q}", self.name))
            .spawn_scoped(self.scope, move || worker.run());
        match spawned {
            Ok(thread) => {
                self.rings.push(RingThread { port, stop, thread });
                Ok(())
            }
            Err(e) => {
                self.ctx.ports.unroute(port);
                Err(Fatal::new(Errno::ENOMEM, format!("cannot start the thread of ring {q}: {e}")))
            }
        }
    }
}

/// A number the frontend must have written (`xenbus_scanf` with `%u`; blkback's
/// `read_per_ring_refs` fails the connection without it).
fn read_num(fe: &dyn FrontendKeys, key: &str) -> Result<u32, Fatal> {
    fe.read_u32(key).ok_or_else(|| Fatal::new(Errno::EINVAL, format!("reading {}/{key}", fe.dir())))
}

impl Backend for Vbd<'_, '_> {
    fn probe_keys(&self) -> Vec<(String, String)> {
        vec![
            ("feature-max-indirect-segments".into(), MAX_INDIRECT_SEGMENTS.to_string()),
            ("max-ring-page-order".into(), MAX_RING_PAGE_ORDER.to_string()),
            ("multi-queue-max-queues".into(), max_queues().to_string()),
        ]
    }

    fn connect(&mut self, fe: &dyn FrontendKeys) -> Result<Vec<(String, String)>, Fatal> {
        // blkback's connect_ring: only the native 64-bit layout here (a 64-bit PV guest).
        if let Some(p) = fe.read("protocol") {
            if p != b"x86_64-abi" {
                let shown = String::from_utf8_lossy(p).into_owned();
                return Err(Fatal::new(Errno::ENOSYS, format!("unknown fe protocol {shown}")));
            }
        }
        let nq = fe.read_unsigned("multi-queue-num-queues", 1);
        if nq == 0 || nq > max_queues() {
            return Err(Fatal::new(
                Errno::ENOSYS,
                format!("guest requested {nq} queues, exceeding the maximum of {}", max_queues()),
            ));
        }
        let order = fe.read_unsigned("ring-page-order", 0);
        if order > MAX_RING_PAGE_ORDER {
            return Err(Fatal::new(
                Errno::EINVAL,
                format!("{}/ring-page-order {order} exceeds {MAX_RING_PAGE_ORDER}", fe.dir()),
            ));
        }
        for q in 0..nq {
            if let Err(e) = self.connect_ring(fe, q, nq, order) {
                self.disconnect();
                return Err(e);
            }
        }
        let ro = self.disk.readonly();
        let mut keys = vec![
            ("sectors".to_string(), self.disk.sectors().to_string()),
            ("info".to_string(), (if ro { xen_abi::io::blkif::VDISK_READONLY } else { 0 }).to_string()),
            ("sector-size".to_string(), devices::block::SECTOR_SIZE.to_string()),
            ("physical-sector-size".to_string(), self.disk.physical_sector_size().to_string()),
            ("feature-persistent".to_string(), "0".to_string()),
        ];
        // A read-only disk has no cache to flush; blkback answers a flush on it with an
        // error (xen_vbd_translate), so do not invite one.
        if !ro {
            keys.push(("feature-flush-cache".to_string(), "1".to_string()));
        }
        if self.disk.discard_supported() && !ro {
            keys.extend([
                ("feature-discard".to_string(), "1".to_string()),
                ("discard-granularity".to_string(), "4096".to_string()),
                ("discard-alignment".to_string(), "0".to_string()),
                ("discard-secure".to_string(), "0".to_string()),
            ]);
        }
        Ok(keys)
    }

    fn disconnect(&mut self) {
        for r in self.rings.drain(..) {
            let _ = r.stop.write(1);
            match r.thread.join() {
                Ok(stats) => self.totals.lock().unwrap_or_else(|e| e.into_inner()).add(&stats),
                Err(_) => log::error!("the thread of a ring of {} panicked", self.name),
            }
            self.ctx.ports.unroute(r.port);
        }
    }
}

const KICK: u32 = 0;
const COMPLETION: u32 = 1;
const STOP: u32 = 2;

/// Passes over a ring before the thread yields to its other events (and comes back through
/// its own kick): a guest that keeps its ring full cannot starve the stop request.
const MAX_PASSES: usize = 64;

/// How long a disconnecting ring waits for its I/O in flight at a time, and how often.
const DRAIN_WAIT: Duration = Duration::from_secs(5);
const DRAIN_TRIES: usize = 12;

/// One ring's back end: guest memory borrowed for the life of the domain, the disk's engine.
type Ring<'a> = BlkBackend<&'a GuestMemoryMmap, Box<dyn BlockIo>>;

/// One ring's thread, as an event-manager subscriber.
struct RingWorker<'a> {
    ring: Option<Ring<'a>>,
    kick: Arc<EventFd>,
    stop: Arc<EventFd>,
    ports: &'a Ports<'a>,
    port: u32,
    done: Arc<AtomicBool>,
    warned: bool,
    name: String,
}

impl<'a> RingWorker<'a> {
    /// Serves the ring until stopped; then drains its I/O, unmaps every grant and returns its
    /// counters.
    fn run(self) -> BlkStats {
        let done = self.done.clone();
        let name = self.name.clone();
        let mut em = match EventManager::<RingWorker<'a>>::new() {
            Ok(em) => em,
            Err(e) => {
                log::error!("{name}: cannot start its event loop: {e:?}");
                return self.finish();
            }
        };
        let id = em.add_subscriber(self);
        while !done.load(Ordering::Relaxed) {
            if let Err(e) = em.run() {
                log::error!("{name}: event loop failed: {e:?}");
                break;
            }
        }
        match em.remove_subscriber(id) {
            Ok(w) => w.finish(),
            Err(_) => BlkStats::default(),
        }
    }

    /// Drains the ring's I/O and unmaps its grants (the frontend may then revoke them).
    fn finish(mut self) -> BlkStats {
        let Some(mut ring) = self.ring.take() else { return BlkStats::default() };
        for _ in 0..DRAIN_TRIES {
            match ring.disconnect(DRAIN_WAIT) {
                Err(BlkError::Drain { in_flight, waited }) => {
                    log::warn!("{}: {in_flight} I/O operations still running after {waited:?}", self.name)
                }
                Err(e) => {
                    self.warn(&e);
                    break;
                }
                Ok(()) => break,
            }
        }
        ring.stats()
    }

    fn warn(&mut self, e: &BlkError) {
        if !self.warned {
            self.warned = true;
            log::warn!("{}: {e}", self.name);
        }
    }

    /// Serves the ring: requests in, responses out, one notification per batch, and the final
    /// check that re-arms `req_event` so no request is left behind (backend.rs's worker loop).
    fn pump(&mut self) {
        let Some(mut ring) = self.ring.take() else { return };
        let mut notify = false;
        let mut idle = false;
        for _ in 0..MAX_PASSES {
            match ring.process() {
                Ok(n) => notify |= n,
                Err(e) => self.warn(&e),
            }
            match ring.complete() {
                Ok(n) => notify |= n,
                Err(e) => self.warn(&e),
            }
            match ring.final_check() {
                Ok(true) => {}
                Ok(false) => {
                    idle = true;
                    break;
                }
                Err(e) => {
                    self.warn(&e);
                    idle = true;
                    break;
                }
            }
        }
        self.ring = Some(ring);
        if notify {
            if let Err(e) = self.ports.raise(self.port) {
                log::error!("{}: cannot notify the guest: {e}", self.name);
            }
        }
        if !idle {
            // Still busy: come back after the other events.
            let _ = self.kick.write(1);
        }
    }
}

impl MutEventSubscriber for RingWorker<'_> {
    fn init(&mut self, ops: &mut EventOps<'_>) {
        let mut add = |e: Events| {
            if let Err(err) = ops.add(e) {
                log::error!("{}: cannot watch a descriptor: {err:?}", self.name);
            }
        };
        add(Events::with_data(self.kick.as_ref(), KICK, EventSet::IN));
        add(Events::with_data(self.stop.as_ref(), STOP, EventSet::IN));
        if let Some(fd) = self.ring.as_ref().and_then(|r| r.engine().completion_fd()) {
            add(Events::with_data_raw(fd, COMPLETION, EventSet::IN));
        }
        // Requests the frontend queued before the ring had a thread.
        self.pump();
    }

    fn process(&mut self, events: Events, _ops: &mut EventOps<'_>) {
        match events.data() {
            KICK => {
                let _ = self.kick.read();
            }
            STOP => {
                self.done.store(true, Ordering::Relaxed);
                return;
            }
            _ => {}
        }
        self.pump();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use devices::block::disk::DiskOptions;
    use devices::block::testutil::{rw_request, seg, Frontend};
    use std::collections::BTreeMap;
    use std::time::Instant;
    use vm_memory::{Bytes, GuestAddress};
    use xen_abi::grant_table::{GTF_PERMIT_ACCESS, GTF_READING, GTF_WRITING};
    use xen_abi::hostcall::MfnRange;
    use xen_abi::io::blkif::{BLKIF_OP_READ, BLKIF_OP_WRITE, BLKIF_RSP_OKAY};

    /// The frontend's directory as blkfront writes it.
    struct Keys(BTreeMap<String, String>);

    impl FrontendKeys for Keys {
        fn domid(&self) -> u16 {
            1
        }
        fn dir(&self) -> &str {
            "/local/domain/1/device/vbd/51712"
        }
        fn read(&self, key: &str) -> Option<&[u8]> {
            self.0.get(key).map(|v| v.as_bytes())
        }
    }

    const TABLE: u64 = 0x10;
    const MAILBOX: u64 = 0x20;
    const RAM: MfnRange = MfnRange { first_mfn: 0x100, nr_frames: 0x100 };

    fn page(mfn: u64) -> GuestAddress {
        GuestAddress(mfn << 12)
    }

    /// A fresh ring of `frames` (granted as `grefs`) for the backend, like blkfront's setup.
    fn ring(mem: &GuestMemoryMmap, frames: &[u64], grefs: &[u32]) -> Frontend {
        let pages: Vec<GuestAddress> = frames.iter().map(|&f| page(f)).collect();
        let fe = Frontend::new(mem, page(TABLE), &pages, 0);
        for (&g, &f) in grefs.iter().zip(frames) {
            fe.grant(mem, g, GTF_PERMIT_ACCESS, 0, f as u32);
        }
        fe
    }

    /// Waits for the backend's responses on `fe` (its thread answers on its own time).
    fn responses(
        mem: &GuestMemoryMmap,
        fe: &mut Frontend,
        n: usize,
    ) -> Vec<xen_abi::io::blkif::BlkifResponse> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut got = Vec::new();
        while got.len() < n && Instant::now() < deadline {
            got.extend(fe.responses(mem));
            std::thread::sleep(Duration::from_millis(2));
        }
        got
    }

    #[test]
    fn two_queues_are_served_by_their_threads_and_a_closed_disk_reconnects_with_new_rings() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x200 << 12)]).unwrap();
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let ports = Ports::new(&mem, MAILBOX << 12, &irq, None);
        let ctx = BlockContext {
            mem: &mem,
            ports: &ports,
            grants: Arc::new(Mutex::new(GrantTable::new(
                MfnRange { first_mfn: TABLE, nr_frames: 1 },
                &[RAM],
            ))),
        };
        let file = std::env::temp_dir().join(format!("xenvmm-vbd-test-{}.img", std::process::id()));
        let content: Vec<u8> = (0..1u32 << 20).map(|i| (i / 512) as u8 ^ (i as u8)).collect();
        std::fs::write(&file, &content).unwrap();
        let disk = Disk::open(&DiskOptions::parse(file.to_str().unwrap()).unwrap()).unwrap();
        let totals = Arc::new(Mutex::new(BlkStats::default()));
        let nq = max_queues().min(2);
        std::thread::scope(|s| {
            let mut vbd = Vbd::new(s, &ctx, &disk, "xvda".into(), totals.clone());
            let probe: BTreeMap<String, String> = vbd.probe_keys().into_iter().collect();
            assert_eq!(probe["max-ring-page-order"], "4");
            assert_eq!(probe["feature-max-indirect-segments"], "256");

            // blkfront with `nq` queues of two-page rings: queue q at frames 0x100+2q.., grants
            // 8+2q.., port 5+q.
            let mut keys = BTreeMap::new();
            keys.insert("ring-page-order".to_string(), "1".to_string());
            keys.insert("protocol".to_string(), "x86_64-abi".to_string());
            if nq > 1 {
                keys.insert("multi-queue-num-queues".to_string(), nq.to_string());
            }
            let mut fes = Vec::new();
            for q in 0..nq {
                let prefix = if nq > 1 { format!("queue-{q}/") } else { String::new() };
                let (f, g) = (0x100 + 2 * u64::from(q), 8 + 2 * q);
                fes.push(ring(&mem, &[f, f + 1], &[g, g + 1]));
                keys.insert(format!("{prefix}ring-ref0"), g.to_string());
                keys.insert(format!("{prefix}ring-ref1"), (g + 1).to_string());
                keys.insert(format!("{prefix}event-channel"), (5 + q).to_string());
            }
            let published: BTreeMap<String, String> = vbd.connect(&Keys(keys)).unwrap().into_iter().collect();
            assert_eq!(published["sectors"], "2048");
            assert_eq!(published["feature-flush-cache"], "1");

            // Each queue reads a different 4 KiB into its own data page (frame 0x120+q, gref 40+q),
            // woken the way the shim wakes it: its port's doorbell.
            for (q, fe) in fes.iter_mut().enumerate() {
                let (frame, gref) = (0x120 + q as u64, 40 + q as u32);
                fe.grant(&mem, gref, GTF_PERMIT_ACCESS, 0, frame as u32);
                fe.request(&mem, &rw_request(BLKIF_OP_READ, 7 + q as u64, 8 * q as u64, &[seg(gref, 0, 7)]));
                ports.routed(5 + q as u32).expect("the port has a doorbell").write(1).unwrap();
                let rsp = responses(&mem, fe, 1);
                assert_eq!(rsp.len(), 1, "queue {q} answered");
                assert_eq!((rsp[0].id, rsp[0].status), (7 + q as u64, BLKIF_RSP_OKAY));
                let mut data = vec![0u8; 4096];
                mem.read_slice(&mut data, page(frame)).unwrap();
                assert_eq!(data, content[4096 * q..4096 * (q + 1)], "queue {q} read the right sectors");
                assert_eq!(fe.grant_flags(&mem, gref) & (GTF_READING | GTF_WRITING), 0, "grant released");
            }
            assert!(irq.read().is_ok(), "the guest was notified");

            // The frontend closes: the threads stop, every grant (rings included) is released
            // and the ports lose their doorbells.
            vbd.disconnect();
            for g in 8..8 + 2 * nq {
                assert_eq!(
                    fes[0].grant_flags(&mem, g) & (GTF_READING | GTF_WRITING),
                    0,
                    "ring grant {g} released"
                );
            }
            assert!(ports.routed(5).is_none());

            // ... and connects again with one new single-page ring and a new port (as Linux
            // does after a PV bootloader), which serves a write.
            let mut fe = ring(&mem, &[0x110], &[30]);
            let keys = Keys(BTreeMap::from([
                ("ring-ref".to_string(), "30".to_string()),
                ("event-channel".to_string(), "9".to_string()),
            ]));
            vbd.connect(&keys).unwrap();
            mem.write_slice(&[0xab; 512], page(0x130)).unwrap();
            fe.grant(&mem, 50, GTF_PERMIT_ACCESS, 0, 0x130);
            fe.request(&mem, &rw_request(BLKIF_OP_WRITE, 99, 100, &[seg(50, 0, 0)]));
            ports.routed(9).expect("the new port has a doorbell").write(1).unwrap();
            let rsp = responses(&mem, &mut fe, 1);
            assert_eq!((rsp.len(), rsp[0].status), (1, BLKIF_RSP_OKAY));
            vbd.disconnect();
        });
        let on_disk = std::fs::read(&file).unwrap();
        assert_eq!(&on_disk[100 * 512..101 * 512], &[0xab; 512][..], "the write reached the image");
        let t = *totals.lock().unwrap();
        assert_eq!((t.rd_req, t.wr_req, t.err_rsp), (u64::from(nq), 1, 0));
        drop(disk);
        let _ = std::fs::remove_file(&file);
    }

    #[test]
    fn disks_are_named_as_linux_names_them() {
        assert_eq!(disk_name(0), "xvda");
        assert_eq!(disk_name(1), "xvdb");
        assert_eq!(disk_name(25), "xvdz");
    }

    #[test]
    fn queues_offered_are_between_one_and_four() {
        assert!((1..=4).contains(&max_queues()));
    }
}
