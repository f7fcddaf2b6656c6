//! The backend half of xenbus, shared by every split driver (vbd now, vif next): the
//! toolstack's device directories (libxl's `libxl__device_generic_add`), the backend's
//! `state` handshake with the guest's frontend (Linux blkback's and netback's
//! `frontend_changed`), and device removal.
//!
//! # Theory
//!
//! Each end of a split device publishes its [`XenbusState`] in a `state` node and watches
//! the other's. The frontend directory `/local/domain/<D>/device/<kind>/<devid>` belongs to
//! the guest, the backend directory `/local/domain/0/backend/<kind>/<D>/<devid>` to dom0.
//! The backend's side, as this module runs it (numbers are state values):
//!
//! ```text
//!   add(): frontend dir (state 1), backend dir (state 1), probe keys
//!      │
//!      ▼
//!   be 2 InitWait ◄───────────── fe 1, from be 4, 5 or 6 (disconnect first)
//!      │ fe 3 or 4: disconnect, connect(frontend keys)
//!      ├────────── Ok: keys ──────► be 4 Connected
//!      │                                │ fe 5
//!      └── Err: disconnect, ──────► be 5 Closing (the rings stay up)
//!          error node                   │ fe 6, or no fe state (0); also from be 2 or 4
//!                                       ▼
//!                                  be 6 Closed, disconnected ── online = 0 ──► device removed
//! ```
//!
//! | frontend state, read now | backend                                                          |
//! |--------------------------|------------------------------------------------------------------|
//! | 1 Initialising           | InitWait; from Connected, Closing or Closed: disconnect first    |
//! | 3 Initialised, 4 Connected | nothing if Connected; else disconnect, connect, keys + 4 (or 5) |
//! | 5 Closing                | Closing                                                          |
//! | 6 Closed, 0 Unknown      | disconnect, Closed; `online` = 0: the device is removed          |
//! | 2, 7, 8, other numbers   | error node "22 saw state N at frontend", Closing                 |
//!
//! Facts taken from the references, not their code:
//!
//! * **Act on the current value.** Watch events coalesce (Linux's xenbus may show 1 then 4
//!   without 3; our store drops events for a connection that does not drain its queue), so
//!   each event only says "look again": the frontend's `state` is read from the store when
//!   the device is processed, as `xenbus_otherend_changed` reads `xenbus_read_driver_state`.
//!   Several events for one device in one [`Xenbus::process`] pass make one step, and every
//!   step reaches a fixed point: the same frontend state again changes nothing.
//! * **Initialising** while the backend is Closed is blkback's "prepare for reconnect": how a
//!   PV bootloader (PV-GRUB writes 6, waits for the backend's 6, then writes 1) hands the
//!   disk to Linux. Initialising while the backend is still Connected or Closing means the
//!   close was missed; blkback would ignore it and hang the handover, so this module does
//!   what netback's `set_backend_state` does: disconnect and go to InitWait (netback walks
//!   through 5 and 6 first; under the store lock the guest could never see those).
//! * **Initialised or Connected**: blkback connects on both; netfront writes 4 without 3.
//!   A backend already Connected does nothing, so the guest's own 3 → 4 does not reconnect.
//!   Otherwise disconnect (idempotent) then connect, whatever the backend state, as blkback
//!   does ("Ensure we connect even when two watches fire in close succession").
//! * **Closing** only moves the backend to Closing, as blkback does: the rings stay up so
//!   that requests in flight still get their responses while the frontend finishes (netback
//!   disconnects here; for a network device that only drops packets). Disconnect comes with
//!   Closed, or with Unknown (the frontend's directory or `state` was removed).
//! * **Closed** with `online` = 0 (hot-unplug, [`Xenbus::close`], as libxl's
//!   `libxl__initiate_device_generic_remove` writes it) removes the device: the backend
//!   driver unregisters and the toolstack removes both directories (`libxl__device_destroy`).
//!   A missing or unparsable `online` counts as 0 (`xenbus_dev_is_online`).
//! * **A fatal error** is `xenbus_dev_fatal` (drivers/xen/xenbus/xenbus_client.c): write
//!   `"<errno> <message>"` to `error/<nodename>/error` relative to the backend domain's home,
//!   where a backend device's nodename is `backend/<kind>/<D>/<devid>` — so
//!   `/local/domain/0/error/backend/<kind>/<D>/<devid>/error` — then switch to Closing.
//! * **Switching state** writes nothing when the state is already the cached one, and
//!   nothing when the backend's `state` node is gone, so a directory being torn down is not
//!   resurrected (`__xenbus_switch_state`).
//!
//! # Hostile frontends
//!
//! The guest owns its frontend directory: it may write any bytes into `state` or any key,
//! delete nodes, or write many times. Its writes reach this module only as watch events on
//! its `state` node, which the store bounds per connection; one pass takes at most the events
//! queued when it starts and steps each device once. Values are parsed leniently and bounded
//! by the store's entry-size quota; nothing here panics on them, and nothing the frontend
//! writes makes the backend write more than a handful of nodes per pass.
//!
//! # Driving it from the event thread
//!
//! The [`Xenbus`] lives with the guest's store ring on the event thread and is called with
//! the store locked. A pass over the store ring both delivers queued output and takes the
//! guest's requests, which may change a frontend `state`; the bus's writes in turn queue
//! watch events for the guest. So after each doorbell on the store port and after each kick
//! (another thread changed the store), alternate until the bus has nothing more to say:
//!
//! ```text
//!   for _ in 0..ROUNDS {                         // a small bound, e.g. 8
//!       ring.service(mem, &mut store)?;          // replies, watch events; new requests
//!       if !xenbus.process(&mut store) { break } // false: it wrote nothing
//!   }                                            // bound hit: kick the event thread
//! ```
//!
//! Hot-plug ([`Xenbus::add`], [`Xenbus::close`]) from another thread takes the same locks
//! in the same order (the ring's, then the store's) and then kicks the event thread.

mod state;
#[cfg(test)]
mod tests;

pub use state::{scan_int, scan_u32, XenbusState};

use std::collections::{BTreeMap, BTreeSet};

use xen_abi::io::xs_wire::{xsd_error_name, XS_UNWATCH, XS_WATCH, XS_WATCH_EVENT};
use xen_abi::Errno;

use crate::xenstore::path::{domain_path, is_valid_nodename, parent};
use crate::xenstore::{ConnId, Store};

/// The domain that runs the backends (and the toolstack): the VMM's dom0.
pub const BACKEND_DOMID: u16 = 0;

/// Longest key name a backend or the toolstack may write below a device directory.
pub const MAX_KEY_LEN: usize = 256;
/// Longest value a backend or the toolstack may write: the store's per-node quota for guests,
/// so that a frontend can always hold a copy.
pub const MAX_VALUE_LEN: usize = 2048;
/// Longest message of a fatal error node (Linux's buffer is 4096 bytes with the path).
pub const MAX_ERROR_LEN: usize = 1024;
/// Most watch events one [`Xenbus::process`] call takes; the store already bounds the queue
/// of a connection to a few dozen, this only makes the bound local.
pub const MAX_EVENTS_PER_PASS: usize = 1024;

/// Keys the toolstack part of [`Xenbus::add`] writes itself in a frontend directory.
const FRONTEND_RESERVED: [&str; 3] = ["backend", "backend-id", "state"];
/// Keys the toolstack and the state machine write themselves in a backend directory.
const BACKEND_RESERVED: [&str; 4] = ["frontend", "frontend-id", "online", "state"];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum XenbusError {
    #[error("device class {0:?} is not a xenstore node name")]
    InvalidKind(&'static str),
    /// Not a relative node name, a key xenbus writes itself, or a value over [`MAX_VALUE_LEN`].
    #[error("device {kind}/{devid} cannot take key {key:?} (reserved, malformed or its value too long)")]
    InvalidKey { kind: &'static str, devid: u32, key: String },
    #[error("device {kind}/{devid} already exists")]
    Exists { kind: &'static str, devid: u32 },
    #[error("no device {kind}/{devid}")]
    NoDevice { kind: &'static str, devid: u32 },
    #[error("the store refused to {op} {path}: {}", xsd_error_name(*.errno))]
    Store { op: &'static str, path: String, errno: Errno },
}

/// A fatal device error, as a backend reports it to `xenbus_dev_fatal`: the errno goes
/// first in the error node (Linux errno values; Xen's numbering is the same for the ones a
/// backend uses), the message after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fatal {
    pub errno: Errno,
    pub message: String,
}

impl Fatal {
    pub fn new(errno: Errno, message: impl Into<String>) -> Fatal {
        Fatal { errno, message: message.into() }
    }
}

/// Read access to a frontend's directory, as dom0, for [`Backend::connect`]. Everything read
/// here was written by the guest: copy it once, validate the copy.
pub trait FrontendKeys {
    /// The frontend's domain (the grants and ports it names are its own).
    fn domid(&self) -> u16;
    /// The frontend directory, absolute (for messages).
    fn dir(&self) -> &str;
    /// The value of `<dir>/<key>` (`key` may name a subdirectory, e.g.
    /// `queue-0/ring-ref`); `None` when it is missing or `key` is no valid relative name.
    fn read(&self, key: &str) -> Option<&[u8]>;

    /// The value as UTF-8 text; `None` when missing or not UTF-8.
    fn read_str(&self, key: &str) -> Option<&str> {
        self.read(key).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The value scanned as `xenbus_scanf(..., "%u")` does ([`scan_u32`]); `None` when
    /// missing or without a number.
    fn read_u32(&self, key: &str) -> Option<u32> {
        self.read(key).and_then(scan_u32)
    }

    /// `xenbus_read_unsigned`: the value as [`FrontendKeys::read_u32`], else `default`.
    fn read_unsigned(&self, key: &str, default: u32) -> u32 {
        self.read_u32(key).unwrap_or(default)
    }
}

/// What a split driver's backend does at each step of the handshake. Its methods run on the
/// event thread with the store locked: they must not block for long (map rings and start
/// workers, do not wait for I/O).
pub trait Backend: Send {
    /// Keys to write in the backend directory before it switches to InitWait, as blkback's
    /// `xen_blkbk_probe` writes `feature-max-indirect-segments`, `multi-queue-max-queues` and
    /// `max-ring-page-order`. Called once, by [`Xenbus::add`].
    fn probe_keys(&self) -> Vec<(String, String)>;

    /// The frontend is Initialised (or Connected): read its keys (`ring-ref*`,
    /// `event-channel`, `protocol`, `queue-N/...`), set up the rings, and return the keys to
    /// publish in the backend directory (`sectors`, `info`, `sector-size`, `feature-*`...).
    /// They are written together, then `state` = Connected. `Err` is a fatal device error:
    /// [`Backend::disconnect`] is called to undo what was set up, the error is recorded and
    /// the backend goes to Closing. Always preceded by a `disconnect`.
    fn connect(&mut self, fe: &dyn FrontendKeys) -> Result<Vec<(String, String)>, Fatal>;

    /// Tears the rings down (unbind the port, stop using the ring and data grants). Must be
    /// idempotent: it is called whenever the handshake needs a clean slate, connected or not.
    fn disconnect(&mut self);
}

/// A device to add: its class, number and the toolstack's keys.
#[derive(Clone, Debug)]
pub struct DeviceSpec {
    /// The device class: `"vbd"` or `"vif"` (a xenstore node name).
    pub kind: &'static str,
    /// The device number: the directory name in both trees. For vbd it is the Linux device
    /// number libxl's `libxl__device_disk_dev_number` computes (see [`xvd_devid`]): xvda is
    /// 51712 = 202 << 8, xvdb 51728; disks past the 16th use the extended form
    /// `(1 << 28) | (index << 8)`, written as `virtual-device` like any other (blkfront
    /// decodes it). For vif it is the interface index.
    pub devid: u32,
    /// Keys for the frontend directory besides `backend`, `backend-id` and `state`
    /// (vbd: `virtual-device`, `device-type`, `protocol`; vif: `mac`, `handle`).
    pub frontend_keys: Vec<(String, String)>,
    /// Keys for the backend directory besides `frontend`, `frontend-id`, `online` and `state`
    /// (vbd: `mode`, `type`, `params`, `dev`, `device-type`, `removable`, `bootable`).
    pub backend_keys: Vec<(String, String)>,
}

/// The device number libxl gives `xvd<letter>` number `index` (0 = xvda) without a
/// partition: `(202 << 8) | (index << 4)` for the first 16 disks, `(1 << 28) | (index << 8)`
/// after (`libxl__device_disk_dev_number`, tools/libs/light/libxl_device.c). `None` past
/// libxl's limit of 2^20 disks.
pub fn xvd_devid(index: u32) -> Option<u32> {
    match index {
        0..=15 => Some((202 << 8) | (index << 4)),
        16..=0xf_ffff => Some((1 << 28) | (index << 8)),
        _ => None,
    }
}

struct Device<'a> {
    fe_dir: String,
    be_dir: String,
    /// `xenbus_dev_fatal`'s directory for this device.
    error_dir: String,
    /// The token of the watch on the frontend's `state`.
    token: String,
    /// The backend's state as last switched (Linux's `dev->state`).
    state: XenbusState,
    /// [`Xenbus::close`] was asked: do not (re)connect, wait for the frontend to close.
    unplug: bool,
    backend: Box<dyn Backend + 'a>,
}

/// One domain's split devices: their store directories, watches and backends.
pub struct Xenbus<'a> {
    domid: u16,
    /// The connection the watches are on: dom0's rights, events drained by `process` only.
    conn: ConnId,
    devices: BTreeMap<(&'static str, u32), Device<'a>>,
}

impl<'a> Xenbus<'a> {
    /// A bus for domain `domid`, with its own store connection for its watches.
    pub fn new(store: &mut Store, domid: u16) -> Xenbus<'a> {
        Xenbus { domid, conn: store.open_client(), devices: BTreeMap::new() }
    }

    /// The store connection the bus watches on.
    pub fn conn(&self) -> ConnId {
        self.conn
    }

    /// Adds a device: writes its frontend and backend directories as libxl does, then runs
    /// the backend's probe (its keys, then InitWait) and watches the frontend's `state`. All
    /// of it happens under one hold of the store, so the guest sees the device complete.
    ///
    /// Permissions are libxl's (`libxl__device_generic_add`): the frontend directory is owned
    /// by the guest with read access for the backend domain (`n<D>`, `r0`), the backend
    /// directory is owned by the backend domain with read access for the guest (`n0`,
    /// `r<D>`); the keys below each inherit them. Stale directories of the same device are
    /// removed first.
    pub fn add(
        &mut self,
        store: &mut Store,
        spec: DeviceSpec,
        backend: Box<dyn Backend + 'a>,
    ) -> Result<(), XenbusError> {
        let DeviceSpec { kind, devid, frontend_keys, backend_keys } = spec;
        if !valid_key(kind) || kind.contains('/') {
            return Err(XenbusError::InvalidKind(kind));
        }
        if self.devices.contains_key(&(kind, devid)) {
            return Err(XenbusError::Exists { kind, devid });
        }
        let probe_keys = backend.probe_keys();
        let invalid = |key: &str| XenbusError::InvalidKey { kind, devid, key: key.to_owned() };
        for (k, v) in &frontend_keys {
            if !valid_key(k) || FRONTEND_RESERVED.contains(&k.as_str()) || v.len() > MAX_VALUE_LEN {
                return Err(invalid(k));
            }
        }
        for (k, v) in backend_keys.iter().chain(&probe_keys) {
            if !valid_key(k) || BACKEND_RESERVED.contains(&k.as_str()) || v.len() > MAX_VALUE_LEN {
                return Err(invalid(k));
            }
        }

        let d = self.domid;
        let dev = Device {
            fe_dir: format!("{}/device/{kind}/{devid}", domain_path(d)),
            be_dir: format!("{}/backend/{kind}/{d}/{devid}", domain_path(BACKEND_DOMID)),
            error_dir: format!("{}/error/backend/{kind}/{d}/{devid}", domain_path(BACKEND_DOMID)),
            token: format!("{kind}/{devid}"),
            state: XenbusState::InitWait,
            unplug: false,
            backend,
        };
        let written =
            write_directories(store, d, &dev, &frontend_keys, &backend_keys, &probe_keys).and_then(|()| {
                let watch = format!("{}/state\0{}\0", dev.fe_dir, dev.token);
                let path = format!("{}/state", dev.fe_dir);
                store.call(self.conn, XS_WATCH, watch.as_bytes()).map(drop).map_err(store_err("watch", &path))
            });
        if let Err(e) = written {
            remove_directories(store, d, &dev);
            return Err(e);
        }
        self.devices.insert((kind, devid), dev);
        Ok(())
    }

    /// Takes the watch events queued for the bus and runs the state machine of each device
    /// that had one, on the frontend's current state. Returns true when it wrote to the store
    /// (the caller serves the guest's ring again to deliver the guest's watch events).
    pub fn process(&mut self, store: &mut Store) -> bool {
        let mut due = BTreeSet::new();
        // Only what is queued now: the writes below queue nothing for this connection (its
        // watches are on frontend nodes, which the backend never writes while it watches).
        let queued = store.queued(self.conn).min(MAX_EVENTS_PER_PASS);
        for _ in 0..queued {
            let Some(m) = store.pop_output(self.conn) else { break };
            if let Some(key) = self.device_of_event(&m) {
                due.insert(key);
            }
        }
        // The store drops events for a connection whose queue is full (four times this
        // long): a guest flooding one frontend could have hidden another's event. Steps are
        // idempotent, so then every device takes one.
        if queued >= store.quota().outstanding {
            due.extend(self.devices.keys().copied());
        }
        let mut wrote = false;
        for key in due {
            wrote |= self.step(store, key);
        }
        wrote
    }

    /// Asks a device to go away (hot-unplug), as libxl does: `online` = 0 and the backend to
    /// Closing (unless Closed already, when it goes at once). The frontend answers by closing;
    /// when it reaches Closed the device is removed. A guest that never answers keeps the
    /// device until [`Xenbus::remove`] or [`Xenbus::shutdown`] (libxl forces the removal
    /// after a timeout).
    pub fn close(&mut self, store: &mut Store, kind: &'static str, devid: u32) -> Result<(), XenbusError> {
        let dev = self.devices.get_mut(&(kind, devid)).ok_or(XenbusError::NoDevice { kind, devid })?;
        dev.unplug = true;
        let online = format!("{}/online", dev.be_dir);
        store.host_write(&online, b"0").map_err(store_err("write", &online))?;
        if dev.state == XenbusState::Closed {
            self.remove_device(store, (kind, devid));
        } else {
            switch_state(store, dev, XenbusState::Closing);
        }
        Ok(())
    }

    /// Removes a device now, whatever the frontend does: disconnect, backend Closed, then its
    /// watch and directories go.
    pub fn remove(&mut self, store: &mut Store, kind: &'static str, devid: u32) -> Result<(), XenbusError> {
        if self.remove_device(store, (kind, devid)) {
            Ok(())
        } else {
            Err(XenbusError::NoDevice { kind, devid })
        }
    }

    /// The domain ended: removes every device (disconnect, backend Closed, directories gone)
    /// and closes the bus's store connection. Idempotent.
    pub fn shutdown(&mut self, store: &mut Store) {
        let keys: Vec<_> = self.devices.keys().copied().collect();
        for key in keys {
            self.remove_device(store, key);
        }
        store.disconnect(self.conn);
    }

    /// The backend state of a device, `None` if there is no such device (never added, or
    /// removed).
    pub fn backend_state(&self, kind: &'static str, devid: u32) -> Option<XenbusState> {
        self.devices.get(&(kind, devid)).map(|d| d.state)
    }

    /// The device a watch event is for; anything else queued (nothing is) is ignored.
    fn device_of_event(&self, m: &[u8]) -> Option<(&'static str, u32)> {
        let ty = u32::from_le_bytes(m.get(..4)?.try_into().ok()?);
        if ty != XS_WATCH_EVENT {
            return None;
        }
        let mut parts = m.get(16..)?.split(|&b| b == 0);
        let (_path, token) = (parts.next()?, parts.next()?);
        self.devices.iter().find(|(_, d)| d.token.as_bytes() == token).map(|(k, _)| *k)
    }

    /// One step of a device's state machine on the frontend's current state (module docs).
    /// Returns true when it wrote to the store.
    fn step(&mut self, store: &mut Store, key: (&'static str, u32)) -> bool {
        let domid = self.domid;
        let Some(dev) = self.devices.get_mut(&key) else { return false };
        let fe = XenbusState::parse(store.host_read(&format!("{}/state", dev.fe_dir)).ok());
        match fe {
            Ok(XenbusState::Closing) => switch_state(store, dev, XenbusState::Closing),
            Ok(XenbusState::Closed | XenbusState::Unknown) => {
                dev.backend.disconnect();
                let wrote = switch_state(store, dev, XenbusState::Closed);
                let online = store.host_read(&format!("{}/online", dev.be_dir)).ok().and_then(scan_int);
                if online.unwrap_or(0) == 0 {
                    self.remove_device(store, key);
                    return true;
                }
                wrote
            }
            // Unplugging: no new connection, the frontend is expected to close.
            Ok(_) if dev.unplug => switch_state(store, dev, XenbusState::Closing),
            Ok(XenbusState::Initialising) => match dev.state {
                XenbusState::Initialising | XenbusState::InitWait => false,
                _ => {
                    dev.backend.disconnect();
                    switch_state(store, dev, XenbusState::InitWait)
                }
            },
            Ok(XenbusState::Initialised | XenbusState::Connected) => {
                if dev.state == XenbusState::Connected {
                    return false;
                }
                dev.backend.disconnect();
                let reader = StoreFrontend { store, dir: &dev.fe_dir, domid };
                match dev.backend.connect(&reader) {
                    Ok(keys) => publish(store, dev, &keys),
                    Err(f) => {
                        dev.backend.disconnect();
                        fatal(store, dev, f.errno, &f.message)
                    }
                }
            }
            // Frontends never wait for their backend; blkback and netback have no case for these.
            Ok(s @ (XenbusState::InitWait | XenbusState::Reconfiguring | XenbusState::Reconfigured)) => {
                fatal(store, dev, Errno::EINVAL, &format!("saw state {} at frontend", s as u8))
            }
            Err(n) => fatal(store, dev, Errno::EINVAL, &format!("saw state {n} at frontend")),
        }
    }

    /// Disconnects, switches to Closed, drops the watch and removes the device's directories
    /// (`libxl__device_destroy`). False when there is no such device.
    fn remove_device(&mut self, store: &mut Store, key: (&'static str, u32)) -> bool {
        let Some(mut dev) = self.devices.remove(&key) else { return false };
        dev.backend.disconnect();
        switch_state(store, &mut dev, XenbusState::Closed);
        // Unwatch first, so that removing the frontend directory queues nothing for the bus.
        let watch = format!("{}/state\0{}\0", dev.fe_dir, dev.token);
        let _ = store.call(self.conn, XS_UNWATCH, watch.as_bytes());
        remove_directories(store, self.domid, &dev);
        true
    }
}

/// Writes a new device's frontend and backend directories, then the probe keys and
/// InitWait.
fn write_directories(
    store: &mut Store,
    domid: u16,
    dev: &Device<'_>,
    frontend_keys: &[(String, String)],
    backend_keys: &[(String, String)],
    probe_keys: &[(String, String)],
) -> Result<(), XenbusError> {
    let write = |store: &mut Store, path: String, value: &str| {
        store.host_write(&path, value.as_bytes()).map_err(store_err("write", &path))
    };
    let (fe, be) = (&dev.fe_dir, &dev.be_dir);
    remove_directories(store, domid, dev);

    // The frontend directory, the guest's (libxl `frontend_perms`).
    store.host_mkdir(fe).map_err(store_err("create", fe))?;
    let guest_owns = [format!("n{domid}"), format!("r{BACKEND_DOMID}")];
    store
        .host_set_perms(fe, &[&guest_owns[0], &guest_owns[1]])
        .map_err(store_err("set permissions of", fe))?;
    write(store, format!("{fe}/backend"), be)?;
    write(store, format!("{fe}/backend-id"), &BACKEND_DOMID.to_string())?;
    write(store, format!("{fe}/state"), XenbusState::Initialising.as_value())?;
    for (k, v) in frontend_keys {
        write(store, format!("{fe}/{k}"), v)?;
    }

    // The backend directory, dom0's (libxl `backend_perms`).
    store.host_mkdir(be).map_err(store_err("create", be))?;
    let dom0_owns = [format!("n{BACKEND_DOMID}"), format!("r{domid}")];
    store.host_set_perms(be, &[&dom0_owns[0], &dom0_owns[1]]).map_err(store_err("set permissions of", be))?;
    write(store, format!("{be}/frontend"), fe)?;
    write(store, format!("{be}/frontend-id"), &domid.to_string())?;
    write(store, format!("{be}/online"), "1")?;
    write(store, format!("{be}/state"), XenbusState::Initialising.as_value())?;
    for (k, v) in backend_keys {
        write(store, format!("{be}/{k}"), v)?;
    }

    // The backend driver's probe: its keys, then InitWait.
    for (k, v) in probe_keys {
        write(store, format!("{be}/{k}"), v)?;
    }
    write(store, format!("{be}/state"), XenbusState::InitWait.as_value())
}

/// Turns a store errno into the error of `op` on `path`.
fn store_err(op: &'static str, path: &str) -> impl FnOnce(Errno) -> XenbusError {
    let path = path.to_owned();
    move |errno| XenbusError::Store { op, path, errno }
}

/// Removes a device's directories and the parents they leave empty, up to the device-class
/// roots (`libxl__xs_path_cleanup`, bounded: it stops at `device`, `backend` and `error`).
fn remove_directories(store: &mut Store, domid: u16, dev: &Device<'_>) {
    let home = domain_path(domid);
    let dom0 = domain_path(BACKEND_DOMID);
    for (dir, stop) in [
        (&dev.fe_dir, format!("{home}/device")),
        (&dev.be_dir, format!("{dom0}/backend")),
        (&dev.error_dir, format!("{dom0}/error")),
    ] {
        let _ = store.host_rm(dir);
        let mut p = parent(dir);
        // At most the two levels between a device directory and its root.
        for _ in 0..3 {
            let Some(dir) = p.filter(|d| d.len() > stop.len() && d.starts_with(stop.as_str())) else { break };
            if store.host_directory(dir).map_or(true, |c| !c.is_empty()) {
                break;
            }
            let _ = store.host_rm(dir);
            p = parent(dir);
        }
    }
}

/// `xenbus_switch_state`: writes `state` unless it is the cached state already or the
/// backend's `state` node is gone. Returns true when it wrote.
fn switch_state(store: &mut Store, dev: &mut Device<'_>, state: XenbusState) -> bool {
    if dev.state == state {
        return false;
    }
    dev.state = state;
    let path = format!("{}/state", dev.be_dir);
    if store.host_read(&path).is_err() {
        return false;
    }
    store.host_write(&path, state.as_value().as_bytes()).is_ok()
}

/// `xenbus_dev_fatal`: records `"<errno> <message>"` in the device's error node, then
/// switches to Closing. Returns true (it wrote the error node).
fn fatal(store: &mut Store, dev: &mut Device<'_>, errno: Errno, message: &str) -> bool {
    let mut text = format!("{} {message}", errno.0);
    if text.len() > MAX_ERROR_LEN {
        let mut end = MAX_ERROR_LEN;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    let _ = store.host_write(&format!("{}/error", dev.error_dir), text.as_bytes());
    switch_state(store, dev, XenbusState::Closing);
    true
}

/// Writes the keys a backend returned from `connect`, then Connected. A key the backend
/// should not have returned is a fatal error (nothing is written).
fn publish(store: &mut Store, dev: &mut Device<'_>, keys: &[(String, String)]) -> bool {
    if let Some((k, _)) = keys
        .iter()
        .find(|(k, v)| !valid_key(k) || BACKEND_RESERVED.contains(&k.as_str()) || v.len() > MAX_VALUE_LEN)
    {
        dev.backend.disconnect();
        return fatal(store, dev, Errno::EINVAL, &format!("backend key {:?} is invalid", truncated(k)));
    }
    for (k, v) in keys {
        let _ = store.host_write(&format!("{}/{k}", dev.be_dir), v.as_bytes());
    }
    switch_state(store, dev, XenbusState::Connected);
    true
}

/// At most the first 64 bytes of `s`, for messages.
fn truncated(s: &str) -> &str {
    let mut end = s.len().min(64);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A key below a device directory: a relative node name of at most [`MAX_KEY_LEN`] bytes.
fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_KEY_LEN
        && !key.starts_with('/')
        && is_valid_nodename(&format!("/{key}"))
}

/// [`FrontendKeys`] over the store, as dom0.
struct StoreFrontend<'a> {
    store: &'a Store,
    dir: &'a str,
    domid: u16,
}

impl FrontendKeys for StoreFrontend<'_> {
    fn domid(&self) -> u16 {
        self.domid
    }

    fn dir(&self) -> &str {
        self.dir
    }

    fn read(&self, key: &str) -> Option<&[u8]> {
        if !valid_key(key) {
            return None;
        }
        self.store.host_read(&format!("{}/{key}", self.dir)).ok()
    }
}
