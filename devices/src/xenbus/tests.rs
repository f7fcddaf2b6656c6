//! The handshake over a real [`Store`], with the guest's side played through its own
//! connection as blkfront, netfront and PV-GRUB drive it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use xen_abi::io::xs_wire::*;
use xen_abi::Errno;

use super::*;
use crate::xenstore::{introduce, DomainEntries, Quota};

const D: u16 = 1;
const FE: &str = "/local/domain/1/device/vbd/51712";
const BE: &str = "/local/domain/0/backend/vbd/1/51712";
const ERR: &str = "/local/domain/0/error/backend/vbd/1/51712/error";
/// The frontend directory relative to the guest's home, as the guest names it.
const FE_REL: &str = "device/vbd/51712";

/// What the test backend saw.
#[derive(Default)]
struct Log {
    /// The frontend keys each `connect` read.
    connects: Vec<BTreeMap<&'static str, String>>,
    disconnects: usize,
    /// The next `connect` fails with this.
    fail: Option<Fatal>,
}

/// A backend that reads the keys blkback reads and publishes a 1 MiB disk.
struct TestBackend(Arc<Mutex<Log>>);

impl Backend for TestBackend {
    fn probe_keys(&self) -> Vec<(String, String)> {
        [
            ("feature-max-indirect-segments", "256"),
            ("max-ring-page-order", "4"),
            ("multi-queue-max-queues", "4"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .to_vec()
    }

    fn connect(&mut self, fe: &dyn FrontendKeys) -> Result<Vec<(String, String)>, Fatal> {
        let mut log = self.0.lock().unwrap();
        assert_eq!(fe.domid(), D);
        let mut seen = BTreeMap::new();
        for key in ["ring-ref", "event-channel", "protocol", "queue-0/ring-ref"] {
            if let Some(v) = fe.read_str(key) {
                seen.insert(key, v.to_owned());
            }
        }
        log.connects.push(seen);
        if let Some(f) = log.fail.take() {
            return Err(f);
        }
        if fe.read_u32("ring-ref").is_none() {
            return Err(Fatal::new(Errno::EINVAL, format!("reading {}/ring-ref", fe.dir())));
        }
        Ok([("sectors", "2048"), ("info", "0"), ("sector-size", "512"), ("feature-flush-cache", "1")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .to_vec())
    }

    fn disconnect(&mut self) {
        self.0.lock().unwrap().disconnects += 1;
    }
}

fn vbd(devid: u32) -> DeviceSpec {
    let kv = |k: &str, v: &str| (k.to_owned(), v.to_owned());
    DeviceSpec {
        kind: "vbd",
        devid,
        frontend_keys: vec![
            kv("virtual-device", &devid.to_string()),
            kv("device-type", "disk"),
            kv("protocol", "x86_64-abi"),
        ],
        backend_keys: vec![
            kv("mode", "w"),
            kv("type", "raw"),
            kv("params", "/images/disk.img"),
            kv("dev", "xvda"),
        ],
    }
}

/// A store with domain 1 introduced as libxl leaves it, and an empty bus for it.
fn bare() -> (Store, Xenbus<'static>) {
    let mut s = Store::new(Quota::default());
    introduce(&mut s, &DomainEntries { domid: D, name: "guest".into(), mem_kib: 1 << 19, vcpus: 1 }).unwrap();
    let xb = Xenbus::new(&mut s, D);
    (s, xb)
}

/// The bus with xvda added.
fn setup() -> (Store, Xenbus<'static>, Arc<Mutex<Log>>) {
    let (mut s, mut xb) = bare();
    let log = Arc::new(Mutex::new(Log::default()));
    xb.add(&mut s, vbd(51712), Box::new(TestBackend(log.clone()))).unwrap();
    (s, xb, log)
}

/// One request from the guest; returns the reply's type and payload (its watch events skipped).
fn guest(s: &mut Store, ty: u32, tx: u32, payload: &[u8]) -> (u32, Vec<u8>) {
    s.request(D, XsdSockmsg { r#type: ty, req_id: 9, tx_id: tx, len: payload.len() as u32 }, payload);
    let m = std::iter::from_fn(|| s.pop_output(D))
        .find(|m| m[..4] != XS_WATCH_EVENT.to_le_bytes())
        .expect("a reply");
    (u32::from_le_bytes(m[..4].try_into().unwrap()), m[16..].to_vec())
}

/// The guest writes `value` at `path` (relative to its home unless absolute).
fn guest_write(s: &mut Store, path: &str, value: &[u8]) -> Result<(), String> {
    let mut p = path.as_bytes().to_vec();
    p.push(0);
    p.extend_from_slice(value);
    match guest(s, XS_WRITE, 0, &p) {
        (XS_WRITE, _) => Ok(()),
        (_, e) => Err(String::from_utf8_lossy(&e).trim_end_matches('\0').to_owned()),
    }
}

/// The guest writes its frontend's `state`.
fn fe_state(s: &mut Store, state: &str) {
    guest_write(s, &format!("{FE_REL}/state"), state.as_bytes()).unwrap();
}

/// blkfront's `talk_to_blkback`: the ring keys in one transaction, then Initialised.
fn blkfront_talks(s: &mut Store, ring_ref: &str, port: &str) {
    let (ty, id) = guest(s, XS_TRANSACTION_START, 0, b"\0");
    assert_eq!(ty, XS_TRANSACTION_START);
    let tx: u32 = std::str::from_utf8(&id[..id.len() - 1]).unwrap().parse().unwrap();
    for (k, v) in [
        ("ring-ref", ring_ref),
        ("event-channel", port),
        ("protocol", "x86_64-abi"),
        ("feature-persistent", "1"),
    ] {
        assert_eq!(guest(s, XS_WRITE, tx, format!("{FE_REL}/{k}\0{v}").as_bytes()).0, XS_WRITE);
    }
    assert_eq!(guest(s, XS_TRANSACTION_END, tx, b"T\0").0, XS_TRANSACTION_END);
    fe_state(s, "3");
}

fn read(s: &Store, path: &str) -> Option<String> {
    s.host_read(path).ok().map(|v| String::from_utf8_lossy(v).into_owned())
}

fn be_state(s: &Store) -> String {
    read(s, &format!("{BE}/state")).unwrap()
}

fn perms(s: &mut Store, path: &str) -> Vec<String> {
    let p = s.host(XS_GET_PERMS, format!("{path}\0").as_bytes()).unwrap();
    p.split(|&b| b == 0).filter(|p| !p.is_empty()).map(|p| String::from_utf8(p.to_vec()).unwrap()).collect()
}

fn connects(log: &Arc<Mutex<Log>>) -> usize {
    log.lock().unwrap().connects.len()
}

fn disconnects(log: &Arc<Mutex<Log>>) -> usize {
    log.lock().unwrap().disconnects
}

#[test]
fn add_writes_both_directories_with_libxls_keys_and_permissions() {
    let (mut s, _xb, _log) = setup();
    for (k, v) in [
        ("backend", BE),
        ("backend-id", "0"),
        ("state", "1"),
        ("virtual-device", "51712"),
        ("device-type", "disk"),
    ] {
        assert_eq!(read(&s, &format!("{FE}/{k}")).as_deref(), Some(v), "{FE}/{k}");
    }
    for (k, v) in [("frontend", FE), ("frontend-id", "1"), ("online", "1"), ("state", "2"), ("mode", "w")] {
        assert_eq!(read(&s, &format!("{BE}/{k}")).as_deref(), Some(v), "{BE}/{k}");
    }
    // libxl__device_generic_add: frontend_perms and backend_perms, inherited by the keys.
    assert_eq!(perms(&mut s, FE), ["n1", "r0"]);
    assert_eq!(perms(&mut s, &format!("{FE}/virtual-device")), ["n1", "r0"]);
    assert_eq!(perms(&mut s, BE), ["n0", "r1"]);
    assert_eq!(perms(&mut s, &format!("{BE}/state")), ["n0", "r1"]);

    // The guest writes its frontend directory, reads but cannot write the backend's.
    guest_write(&mut s, &format!("{FE_REL}/ring-ref"), b"8").unwrap();
    guest_write(&mut s, &format!("{FE_REL}/queue-0/event-channel"), b"5").unwrap();
    assert_eq!(
        guest(&mut s, XS_READ, 0, format!("{BE}/sector-size\0").as_bytes()),
        (XS_ERROR, b"ENOENT\0".to_vec())
    );
    assert_eq!(guest(&mut s, XS_READ, 0, format!("{BE}/state\0").as_bytes()), (XS_READ, b"2".to_vec()));
    for path in [format!("{BE}/state"), format!("{BE}/sectors"), format!("{BE}/online")] {
        assert_eq!(guest_write(&mut s, &path, b"4"), Err("EACCES".into()), "{path}");
    }
    assert_eq!(guest(&mut s, XS_RM, 0, format!("{BE}\0").as_bytes()), (XS_ERROR, b"EACCES\0".to_vec()));
    // Nor can it make up devices of its own.
    assert_eq!(guest_write(&mut s, "device/vbd/51728/state", b"1"), Err("EACCES".into()));
}

#[test]
fn probe_keys_are_written_before_initwait() {
    let (mut s, mut xb) = bare();
    let watcher = s.open_client();
    s.call(watcher, XS_WATCH, b"/local/domain/0/backend\0w\0").unwrap();
    let log = Arc::new(Mutex::new(Log::default()));
    xb.add(&mut s, vbd(51712), Box::new(TestBackend(log))).unwrap();
    let events: Vec<String> = std::iter::from_fn(|| s.pop_output(watcher))
        .map(|m| String::from_utf8_lossy(&m[16..]).split('\0').next().unwrap().to_owned())
        .collect();
    let last_state = events.iter().rposition(|p| *p == format!("{BE}/state")).unwrap();
    for key in ["feature-max-indirect-segments", "max-ring-page-order", "multi-queue-max-queues"] {
        let at = events.iter().position(|p| *p == format!("{BE}/{key}")).unwrap_or_else(|| panic!("{key}"));
        assert!(at < last_state, "{key} written before InitWait");
    }
    assert_eq!(read(&s, &format!("{BE}/max-ring-page-order")).as_deref(), Some("4"));
    assert_eq!(be_state(&s), "2");
}

#[test]
fn blkfront_handshake_connects_once_and_publishes_the_backend_keys() {
    let (mut s, mut xb, log) = setup();
    // The watch's first event: the frontend is Initialising, the backend waits.
    assert!(!xb.process(&mut s));
    assert_eq!((be_state(&s).as_str(), connects(&log)), ("2", 0));

    blkfront_talks(&mut s, "8", "5");
    assert!(xb.process(&mut s), "the backend wrote its keys and state");
    assert_eq!(connects(&log), 1);
    let seen = log.lock().unwrap().connects[0].clone();
    assert_eq!(seen.get("ring-ref").map(String::as_str), Some("8"));
    assert_eq!(seen.get("event-channel").map(String::as_str), Some("5"));
    assert_eq!(seen.get("protocol").map(String::as_str), Some("x86_64-abi"));
    for (k, v) in [
        ("sectors", "2048"),
        ("info", "0"),
        ("sector-size", "512"),
        ("feature-flush-cache", "1"),
        ("state", "4"),
    ] {
        assert_eq!(read(&s, &format!("{BE}/{k}")).as_deref(), Some(v), "{k}");
    }
    // The guest reads them (blkfront_connect's xenbus_gather) and goes Connected itself.
    assert_eq!(guest(&mut s, XS_READ, 0, format!("{BE}/sectors\0").as_bytes()), (XS_READ, b"2048".to_vec()));
    fe_state(&mut s, "4");
    assert!(!xb.process(&mut s), "Connected already: nothing to do");
    assert_eq!(connects(&log), 1, "connect is called once");
    assert_eq!(xb.backend_state("vbd", 51712), Some(XenbusState::Connected));
    assert_eq!(s.queued(xb.conn()), 0);
}

#[test]
fn netfront_connects_from_initialising_straight_to_connected() {
    let (mut s, mut xb) = bare();
    let log = Arc::new(Mutex::new(Log::default()));
    let spec = DeviceSpec {
        kind: "vif",
        devid: 0,
        frontend_keys: vec![("mac".into(), "00:16:3e:00:00:01".into()), ("handle".into(), "0".into())],
        backend_keys: vec![("handle".into(), "0".into())],
    };
    xb.add(&mut s, spec, Box::new(TestBackend(log.clone()))).unwrap();
    assert_eq!(perms(&mut s, "/local/domain/1/device/vif/0"), ["n1", "r0"]);
    assert_eq!(perms(&mut s, "/local/domain/0/backend/vif/1/0"), ["n0", "r1"]);
    xb.process(&mut s);
    guest_write(&mut s, "device/vif/0/ring-ref", b"9").unwrap();
    guest_write(&mut s, "device/vif/0/state", b"4").unwrap();
    assert!(xb.process(&mut s));
    assert_eq!(connects(&log), 1);
    assert_eq!(read(&s, "/local/domain/0/backend/vif/1/0/state").as_deref(), Some("4"));
}

#[test]
fn a_frontend_that_closes_and_initialises_again_gets_a_new_connection() {
    let (mut s, mut xb, log) = setup();
    blkfront_talks(&mut s, "8", "5");
    xb.process(&mut s);
    fe_state(&mut s, "4");
    xb.process(&mut s);
    let before = disconnects(&log);

    fe_state(&mut s, "5");
    assert!(xb.process(&mut s));
    assert_eq!(be_state(&s), "5");
    assert_eq!(disconnects(&log), before, "the rings stay up while the frontend is Closing");
    fe_state(&mut s, "6");
    assert!(xb.process(&mut s));
    assert_eq!(be_state(&s), "6");
    assert_eq!(disconnects(&log), before + 1);
    assert_eq!(xb.backend_state("vbd", 51712), Some(XenbusState::Closed), "online = 1: the device stays");

    fe_state(&mut s, "1");
    assert!(xb.process(&mut s));
    assert_eq!(be_state(&s), "2", "prepare for reconnect");
    blkfront_talks(&mut s, "10", "7");
    assert!(xb.process(&mut s));
    assert_eq!(be_state(&s), "4");
    let log = log.lock().unwrap();
    assert_eq!(log.connects.len(), 2);
    assert_eq!(log.connects[1].get("ring-ref").map(String::as_str), Some("10"), "the new ring");
    assert_eq!(log.connects[1].get("event-channel").map(String::as_str), Some("7"), "the new port");
}

#[test]
fn pv_grub_hands_the_disk_over_to_linux() {
    let (mut s, mut xb, log) = setup();
    // grub_xendisk_init's fill(): keys and state 3 with plain writes, then it polls the
    // backend state until it is no longer 2.
    for (k, v) in [("ring-ref", "8"), ("event-channel", "3"), ("protocol", "x86_64-abi"), ("state", "3")] {
        guest_write(&mut s, &format!("{FE_REL}/{k}"), v.as_bytes()).unwrap();
    }
    xb.process(&mut s);
    assert_eq!(be_state(&s), "4");
    // grub_xendisk_fini(): 6, poll until the backend reads exactly "6", empty the keys, 1.
    fe_state(&mut s, "6");
    xb.process(&mut s);
    assert_eq!(guest(&mut s, XS_READ, 0, format!("{BE}/state\0").as_bytes()), (XS_READ, b"6".to_vec()));
    guest_write(&mut s, &format!("{FE_REL}/ring-ref"), b"").unwrap();
    guest_write(&mut s, &format!("{FE_REL}/event-channel"), b"").unwrap();
    fe_state(&mut s, "1");
    xb.process(&mut s);
    assert_eq!(be_state(&s), "2");
    // Linux's blkfront probes the device (state 1) and finds the backend in InitWait.
    blkfront_talks(&mut s, "12", "4");
    xb.process(&mut s);
    assert_eq!(be_state(&s), "4");
    assert_eq!(connects(&log), 2);
    assert_eq!(log.lock().unwrap().connects[1].get("ring-ref").map(String::as_str), Some("12"));
}

#[test]
fn coalesced_events_act_on_the_current_state() {
    // 3 then 4 before the backend looks: one connect.
    let (mut s, mut xb, log) = setup();
    blkfront_talks(&mut s, "8", "5");
    fe_state(&mut s, "4");
    assert!(xb.process(&mut s));
    assert_eq!((be_state(&s).as_str(), connects(&log)), ("4", 1));

    // A close and a restart seen only as the final 1: disconnect and wait again.
    fe_state(&mut s, "5");
    fe_state(&mut s, "6");
    fe_state(&mut s, "1");
    let before = disconnects(&log);
    assert!(xb.process(&mut s));
    assert_eq!(be_state(&s), "2");
    assert!(disconnects(&log) > before, "the old rings are gone");

    // 1 then 4 without 3.
    guest_write(&mut s, &format!("{FE_REL}/ring-ref"), b"11").unwrap();
    fe_state(&mut s, "4");
    assert!(xb.process(&mut s));
    assert_eq!((be_state(&s).as_str(), connects(&log)), ("4", 2));
}

#[test]
fn a_failed_connect_records_the_error_and_closes() {
    let (mut s, mut xb, log) = setup();
    log.lock().unwrap().fail = Some(Fatal::new(Errno::ENOMEM, "mapping ring-ref 8 port 5"));
    blkfront_talks(&mut s, "8", "5");
    let before = disconnects(&log);
    assert!(xb.process(&mut s));
    // xenbus_dev_fatal: error/<nodename>/error in dom0's home, then Closing.
    assert_eq!(read(&s, ERR).as_deref(), Some("12 mapping ring-ref 8 port 5"));
    assert_eq!(be_state(&s), "5");
    assert_eq!(disconnects(&log), before + 2, "before connect and after its failure");
    assert_eq!(read(&s, &format!("{BE}/sectors")), None, "nothing published");
    // The guest cannot read dom0's error nodes.
    assert_eq!(guest(&mut s, XS_READ, 0, format!("{ERR}\0").as_bytes()).0, XS_ERROR);

    // blkfront answers Closing with Closed; the device may be used again later.
    fe_state(&mut s, "6");
    xb.process(&mut s);
    assert_eq!(be_state(&s), "6");
    fe_state(&mut s, "1");
    xb.process(&mut s);
    blkfront_talks(&mut s, "8", "5");
    xb.process(&mut s);
    assert_eq!(be_state(&s), "4");

    // A frontend without ring keys: the backend's own error.
    let (mut s, mut xb, _log) = setup();
    fe_state(&mut s, "3");
    xb.process(&mut s);
    assert_eq!(read(&s, ERR).as_deref(), Some(&*format!("22 reading {FE}/ring-ref")));
    assert_eq!(be_state(&s), "5");
}

#[test]
fn garbage_in_the_frontend_state_never_panics() {
    let (mut s, mut xb, log) = setup();
    let huge = vec![b'7'; 2048];
    let cases: [(&[u8], &str, Option<&str>); 10] = [
        (b"9", "5", Some("22 saw state 9 at frontend")),
        (b"-1", "5", Some("22 saw state -1 at frontend")),
        (b"7", "5", Some("22 saw state 7 at frontend")),
        (b"2", "5", Some("22 saw state 2 at frontend")),
        (&huge, "5", Some(&*format!("22 saw state {} at frontend", i64::MAX))),
        (b"abc", "6", None),
        (b"", "6", None),
        (b"\xff\x00\x01", "6", None),
        (b" 5 trailing", "5", None),
        (b"6\x00", "6", None),
    ];
    for (value, backend, error) in cases {
        let _ = s.host_rm(ERR);
        // Start each case from a waiting backend.
        fe_state(&mut s, "1");
        xb.process(&mut s);
        assert_eq!(be_state(&s), "2");
        guest_write(&mut s, &format!("{FE_REL}/state"), value).unwrap();
        xb.process(&mut s);
        assert_eq!(be_state(&s), backend, "{value:?}");
        assert_eq!(read(&s, ERR).as_deref(), error, "{value:?}");
    }
    assert_eq!(connects(&log), 0);
    // Lenient like sscanf: "4xyz" is Connected.
    fe_state(&mut s, "1");
    xb.process(&mut s);
    guest_write(&mut s, &format!("{FE_REL}/ring-ref"), b"8").unwrap();
    fe_state(&mut s, "4xyz");
    xb.process(&mut s);
    assert_eq!(be_state(&s), "4");
}

#[test]
fn a_deleted_frontend_directory_counts_as_closed() {
    let (mut s, mut xb, log) = setup();
    blkfront_talks(&mut s, "8", "5");
    xb.process(&mut s);
    let before = disconnects(&log);
    assert_eq!(guest(&mut s, XS_RM, 0, format!("{FE_REL}\0").as_bytes()).0, XS_RM);
    assert!(xb.process(&mut s));
    assert_eq!(be_state(&s), "6");
    assert_eq!(disconnects(&log), before + 1);
    assert_eq!(xb.backend_state("vbd", 51712), Some(XenbusState::Closed), "online = 1: kept until shutdown");
    // Deleting only the state node is the same.
    let (mut s, mut xb, _log) = setup();
    assert_eq!(guest(&mut s, XS_RM, 0, format!("{FE_REL}/state\0").as_bytes()).0, XS_RM);
    xb.process(&mut s);
    assert_eq!(be_state(&s), "6");
}

#[test]
fn hot_unplug_waits_for_the_frontend_then_removes_both_directories() {
    let (mut s, mut xb, log) = setup();
    blkfront_talks(&mut s, "8", "5");
    xb.process(&mut s);
    xb.close(&mut s, "vbd", 51712).unwrap();
    assert_eq!((be_state(&s).as_str(), read(&s, &format!("{BE}/online")).as_deref()), ("5", Some("0")));
    // Not yet: the frontend is still Initialised (a repeated 3 does not reconnect either).
    fe_state(&mut s, "3");
    xb.process(&mut s);
    assert_eq!((be_state(&s).as_str(), connects(&log)), ("5", 1));
    // blkfront's answer to Closing is Closed.
    fe_state(&mut s, "6");
    assert!(xb.process(&mut s));
    assert_eq!(xb.backend_state("vbd", 51712), None);
    assert_eq!(s.host_read(FE), Err(Errno::ENOENT));
    assert_eq!(s.host_read(BE), Err(Errno::ENOENT));
    assert_eq!(s.host_read("/local/domain/1/device/vbd"), Err(Errno::ENOENT), "empty parents go too");
    assert_eq!(s.host_read("/local/domain/0/backend/vbd"), Err(Errno::ENOENT));
    assert!(s.host_read("/local/domain/1/device").is_ok(), "but not the device root");
    assert!(disconnects(&log) >= 1);
    assert_eq!(xb.close(&mut s, "vbd", 51712), Err(XenbusError::NoDevice { kind: "vbd", devid: 51712 }));
    // The device can come back.
    xb.add(&mut s, vbd(51712), Box::new(TestBackend(log.clone()))).unwrap();
    assert_eq!(be_state(&s), "2");
}

#[test]
fn shutdown_disconnects_and_removes_every_device() {
    let (mut s, mut xb, log) = setup();
    let log2 = Arc::new(Mutex::new(Log::default()));
    xb.add(&mut s, vbd(51728), Box::new(TestBackend(log2.clone()))).unwrap();
    blkfront_talks(&mut s, "8", "5");
    xb.process(&mut s);
    let watcher = s.open_client();
    s.call(watcher, XS_WATCH, format!("{BE}/state\0w\0").as_bytes()).unwrap();
    let _ = s.pop_output(watcher);

    xb.shutdown(&mut s);
    assert!(disconnects(&log) >= 1 && disconnects(&log2) >= 1);
    // The backend said Closed before its directory went.
    let first = s.pop_output(watcher).unwrap();
    assert_eq!(&first[16..], format!("{BE}/state\0w\0").as_bytes());
    for path in [FE, BE, "/local/domain/1/device/vbd/51728", "/local/domain/0/backend/vbd/1/51728"] {
        assert_eq!(s.host_read(path), Err(Errno::ENOENT), "{path}");
    }
    assert_eq!(xb.backend_state("vbd", 51712), None);
    assert!(!xb.process(&mut s));
    // Only the watcher's connection and the guest's are left, with the watcher's watch.
    let (conns, watches, _) = s.conns_for_test();
    assert_eq!((conns, watches), (3, 1), "dom0, the guest and the watcher");
    xb.shutdown(&mut s);
}

#[test]
fn a_flood_of_state_writes_is_bounded() {
    let (mut s, mut xb, log) = setup();
    guest_write(&mut s, &format!("{FE_REL}/ring-ref"), b"8").unwrap();
    // Without the backend looking: the store keeps a bounded queue, one step handles it.
    for i in 0..5000 {
        fe_state(&mut s, ["1", "3", "4", "6"][i % 4]);
    }
    assert!(s.queued(xb.conn()) <= Quota::default().outstanding * 4);
    fe_state(&mut s, "3");
    xb.process(&mut s);
    assert_eq!(s.queued(xb.conn()), 0);
    assert_eq!((be_state(&s).as_str(), connects(&log)), ("4", 1));
    // With the backend looking each time: each event costs one step.
    for i in 0..1000 {
        fe_state(&mut s, ["6", "1", "3"][i % 3]);
        xb.process(&mut s);
    }
    assert_eq!(be_state(&s), "6", "the last write was 6");
    assert_eq!(connects(&log), 1 + 333, "one connect per 3");
}

#[test]
fn a_flood_on_one_frontend_does_not_hide_another_frontends_change() {
    let (mut s, mut xb, log) = setup();
    let log2 = Arc::new(Mutex::new(Log::default()));
    xb.add(&mut s, vbd(51728), Box::new(TestBackend(log2.clone()))).unwrap();
    xb.process(&mut s);
    for i in 0..500 {
        fe_state(&mut s, ["1", "6"][i % 2]);
    }
    // xvdb's change arrives when the bus's queue is full: its event is dropped.
    guest_write(&mut s, "device/vbd/51728/ring-ref", b"8").unwrap();
    guest_write(&mut s, "device/vbd/51728/state", b"3").unwrap();
    assert!(xb.process(&mut s));
    assert_eq!(read(&s, "/local/domain/0/backend/vbd/1/51728/state").as_deref(), Some("4"));
    assert_eq!((connects(&log), connects(&log2)), (0, 1));
}

#[test]
fn switching_state_does_not_resurrect_a_removed_backend_node() {
    let (mut s, mut xb, _log) = setup();
    s.host_rm(&format!("{BE}/state")).unwrap();
    fe_state(&mut s, "6");
    xb.process(&mut s);
    assert_eq!(s.host_read(&format!("{BE}/state")), Err(Errno::ENOENT));
    assert_eq!(xb.backend_state("vbd", 51712), Some(XenbusState::Closed));
}

#[test]
fn add_rejects_duplicates_bad_kinds_and_keys_it_writes_itself() {
    let (mut s, mut xb, log) = setup();
    let b = || Box::new(TestBackend(Arc::new(Mutex::new(Log::default()))));
    assert_eq!(xb.add(&mut s, vbd(51712), b()), Err(XenbusError::Exists { kind: "vbd", devid: 51712 }));
    for kind in ["", "vbd/x", "v bd", "../vbd"] {
        let spec = DeviceSpec { kind, ..vbd(51728) };
        assert_eq!(xb.add(&mut s, spec, b()), Err(XenbusError::InvalidKind(kind)));
    }
    for (fe, key) in [
        (true, "state"),
        (true, "backend"),
        (false, "online"),
        (false, "frontend"),
        (true, "a//b"),
        (false, "/abs"),
    ] {
        let mut spec = vbd(51728);
        let keys = if fe { &mut spec.frontend_keys } else { &mut spec.backend_keys };
        keys.push((key.into(), "x".into()));
        assert_eq!(
            xb.add(&mut s, spec, b()),
            Err(XenbusError::InvalidKey { kind: "vbd", devid: 51728, key: key.into() }),
            "{key}"
        );
    }
    let mut spec = vbd(51728);
    spec.backend_keys.push(("params".into(), "x".repeat(MAX_VALUE_LEN + 1)));
    assert!(matches!(xb.add(&mut s, spec, b()), Err(XenbusError::InvalidKey { .. })));
    assert_eq!(s.host_read("/local/domain/1/device/vbd/51728"), Err(Errno::ENOENT), "nothing written");
    // The first device was not disturbed.
    xb.process(&mut s);
    assert_eq!((be_state(&s).as_str(), connects(&log)), ("2", 0));
}

#[test]
fn backend_keys_that_xenbus_owns_are_a_fatal_error() {
    struct Greedy;
    impl Backend for Greedy {
        fn probe_keys(&self) -> Vec<(String, String)> {
            Vec::new()
        }
        fn connect(&mut self, _: &dyn FrontendKeys) -> Result<Vec<(String, String)>, Fatal> {
            Ok(vec![("sectors".into(), "8".into()), ("state".into(), "4".into())])
        }
        fn disconnect(&mut self) {}
    }
    let (mut s, mut xb) = bare();
    xb.add(&mut s, vbd(51712), Box::new(Greedy)).unwrap();
    fe_state(&mut s, "3");
    xb.process(&mut s);
    assert_eq!(be_state(&s), "5");
    assert_eq!(read(&s, ERR).as_deref(), Some("22 backend key \"state\" is invalid"));
    assert_eq!(read(&s, &format!("{BE}/sectors")), None);
}

#[test]
fn the_frontend_reader_reads_only_below_the_frontend_directory() {
    let mut s = Store::new(Quota::default());
    s.host_write(&format!("{FE}/queue-0/ring-ref"), b" 77 ").unwrap();
    s.host_write(&format!("{FE}/event-channel"), b"x").unwrap();
    s.host_write("/local/domain/1/device/secret", b"1").unwrap();
    let r = StoreFrontend { store: &s, dir: FE, domid: D };
    assert_eq!(r.read_u32("queue-0/ring-ref"), Some(77));
    assert_eq!(r.read_u32("event-channel"), None);
    assert_eq!(r.read_unsigned("multi-queue-num-queues", 1), 1);
    assert_eq!(r.read_str("event-channel"), Some("x"));
    for bad in ["", "/local/domain/1/device/secret", "../secret", "a//b", "a/", "a b"] {
        assert_eq!(r.read(bad), None, "{bad:?}");
    }
    assert_eq!(r.read(&"a".repeat(MAX_KEY_LEN + 1)), None);
}

#[test]
fn xvd_devid_matches_libxl() {
    assert_eq!(xvd_devid(0), Some(51712));
    assert_eq!(xvd_devid(1), Some(51728));
    assert_eq!(xvd_devid(15), Some(51712 + 15 * 16));
    assert_eq!(xvd_devid(16), Some((1 << 28) | (16 << 8)));
    assert_eq!(xvd_devid(1 << 20), None);
}
