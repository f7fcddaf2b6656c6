//! The store daemon's request handling: one [`Store`] serves every domain's connection.
//! Messages in and out are whole `xsd_sockmsg` header + payload; [`super::wire`] frames them.

use std::collections::{BTreeMap, VecDeque};

use xen_abi::io::xs_wire::*;
use xen_abi::Errno;

use super::path::{canonicalize, domain_path, is_child, is_valid_nodename, parent};
use super::tree::{access, Access, Node, Perm, Tree};

/// Per-domain limits, with C xenstored's defaults (`tools/xenstored/core.c`); dom0 is exempt.
#[derive(Clone, Copy, Debug)]
pub struct Quota {
    /// Nodes a domain may own (`quota_nb_entry_per_domain`).
    pub nodes: usize,
    /// Bytes of value + child names per node (`quota_max_entry_size`).
    pub entry_size: usize,
    /// Watches per domain (`quota_nb_watch_per_domain`).
    pub watches: usize,
    /// Open transactions per domain (`quota_max_transaction`).
    pub transactions: usize,
    /// Nodes one transaction may touch (`quota_trans_nodes`).
    pub trans_nodes: usize,
    /// Permission entries per node (`quota_nb_perms_per_node`).
    pub perms: usize,
    /// Messages queued for a domain before watch events are dropped (the reply side of
    /// `quota_req_outstanding`).
    pub outstanding: usize,
}

impl Default for Quota {
    fn default() -> Quota {
        Quota {
            nodes: 1000,
            entry_size: 2048,
            watches: 128,
            transactions: 10,
            trans_nodes: 1024,
            perms: 5,
            outstanding: 20,
        }
    }
}

#[derive(Clone, Debug)]
struct Watch {
    path: String,
    token: Vec<u8>,
    relative: bool,
}

/// A change watches see: the node's path, whether watches below it fire too (removal), and
/// the permissions deciding who may see it.
#[derive(Clone, Debug)]
struct Change {
    path: String,
    recurse: bool,
    perms: Vec<Perm>,
}

struct Transaction {
    tree: Tree,
    /// Every node the transaction read or wrote, with its generation at the start (`None`:
    /// absent). The commit fails with `EAGAIN` if any of them changed since.
    accessed: BTreeMap<String, Option<u64>>,
    written: BTreeMap<String, ()>,
    changes: Vec<Change>,
}

/// A connection to the store: a domain's ring, or a client of the dom0 socket. Each has its
/// own watches, transactions and queued output. Socket clients act as dom0, as C xenstored
/// gives them the id of the domain it runs in (`accept_connection`, tools/xenstored/posix.c).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConnId {
    /// Domain `domid`'s ring; `Domain(0)` is also the VMM's own requests ([`Store::host`]).
    Domain(u16),
    /// A socket client, numbered by [`Store::open_client`].
    Socket(u64),
}

impl ConnId {
    /// The domain whose permissions the connection has.
    pub fn domid(self) -> u16 {
        match self {
            ConnId::Domain(d) => d,
            ConnId::Socket(_) => 0,
        }
    }
}

impl From<u16> for ConnId {
    fn from(domid: u16) -> ConnId {
        ConnId::Domain(domid)
    }
}

#[derive(Default)]
struct Conn {
    watches: Vec<Watch>,
    transactions: BTreeMap<u32, Transaction>,
    outbox: VecDeque<Vec<u8>>,
}

/// The store.
pub struct Store {
    tree: Tree,
    conns: BTreeMap<ConnId, Conn>,
    generation: u64,
    next_tx: u32,
    next_client: u64,
    quota: Quota,
}

/// A whole message: header then payload.
pub fn message(ty: u32, req_id: u32, tx_id: u32, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(16 + payload.len());
    for w in [ty, req_id, tx_id, payload.len() as u32] {
        m.extend_from_slice(&w.to_le_bytes());
    }
    m.extend_from_slice(payload);
    m
}

/// The payload's NUL-terminated strings (a trailing part without NUL is not a string).
fn strings(payload: &[u8]) -> Vec<&[u8]> {
    let mut v: Vec<&[u8]> = payload.split(|&b| b == 0).collect();
    v.pop();
    v
}

/// `onearg`: the payload is exactly one NUL-terminated string.
fn onearg(payload: &[u8]) -> Result<&str, Errno> {
    match payload.split_last() {
        Some((0, s)) if !s.contains(&0) => std::str::from_utf8(s).map_err(|_| Errno::EINVAL),
        _ => Err(Errno::EINVAL),
    }
}

fn utf8(s: &[u8]) -> Result<&str, Errno> {
    std::str::from_utf8(s).map_err(|_| Errno::EINVAL)
}

/// A transaction's accessed and written sets.
type TxLog<'a> = (&'a mut BTreeMap<String, Option<u64>>, &'a mut BTreeMap<String, ()>);

/// Where an operation reads and writes: the store, or a transaction's copy of it.
struct Ctx<'a> {
    tree: &'a mut Tree,
    tx: Option<TxLog<'a>>,
    changes: &'a mut Vec<Change>,
    generation: u64,
    quota: Quota,
    domid: u16,
}

impl Ctx<'_> {
    fn note(&mut self, path: &str, write: bool) -> Result<(), Errno> {
        if let Some((accessed, written)) = &mut self.tx {
            if !accessed.contains_key(path) {
                if accessed.len() >= self.quota.trans_nodes && self.domid != 0 {
                    return Err(Errno::ENOSPC);
                }
                accessed.insert(path.to_owned(), self.tree.get(path).map(|n| n.generation));
            }
            if write {
                written.insert(path.to_owned(), ());
            }
        }
        Ok(())
    }

    /// The node at `path` if `domid` has `need` on it; a missing node is `ENOENT`, or
    /// `EACCES` when its nearest ancestor does not grant `need` (C `errno_from_parents`).
    fn node(&mut self, path: &str, need: fn(Access) -> bool) -> Result<&Node, Errno> {
        self.note(path, false)?;
        match self.tree.get(path) {
            Some(n) if need(access(self.domid, &n.perms)) => Ok(self.tree.get(path).ok_or(Errno::ENOENT)?),
            Some(_) => Err(Errno::EACCES),
            None if need(access(self.domid, &self.tree.nearest(path).perms)) => Err(Errno::ENOENT),
            None => Err(Errno::EACCES),
        }
    }

    /// Creates `path` and missing ancestors (`construct_node`): each copies its parent's
    /// permissions, owned by the creator when unprivileged.
    fn create(&mut self, path: &str) -> Result<(), Errno> {
        let mut missing = vec![path.to_owned()];
        let mut p = path;
        while let Some(par) = parent(p) {
            if self.tree.get(par).is_some() {
                break;
            }
            missing.push(par.to_owned());
            p = par;
        }
        let top = parent(p).ok_or(Errno::EINVAL)?;
        self.note(top, true)?;
        let base = self.tree.get(top).ok_or(Errno::ENOENT)?;
        if !access(self.domid, &base.perms).write {
            return Err(Errno::EACCES);
        }
        let mut perms = base.perms.clone();
        if self.domid != 0 {
            perms[0].domid = self.domid;
            if self.tree.owned(self.domid) + missing.len() > self.quota.nodes {
                return Err(Errno::ENOSPC);
            }
            if base.size() + p.len() + 1 > self.quota.entry_size {
                return Err(Errno::ENOSPC);
            }
        }
        for m in missing.iter().rev() {
            self.note(m, true)?;
            self.tree.create(m, perms.clone(), self.generation);
            self.changes.push(Change { path: m.clone(), recurse: false, perms: perms.clone() });
        }
        Ok(())
    }

    fn write(&mut self, path: &str, value: &[u8]) -> Result<(), Errno> {
        if self.domid != 0 && value.len() > self.quota.entry_size {
            return Err(Errno::ENOSPC);
        }
        let created = match self.node(path, |a| a.write) {
            Ok(_) => false,
            Err(Errno::ENOENT) => {
                self.create(path)?;
                true
            }
            Err(e) => return Err(e),
        };
        self.note(path, true)?;
        let generation = self.generation;
        let n = self.tree.get_mut(path).ok_or(Errno::ENOENT)?;
        if self.domid != 0 && n.size() - n.value.len() + value.len() > self.quota.entry_size {
            return Err(Errno::ENOSPC);
        }
        n.value = value.to_vec();
        n.generation = generation;
        let perms = n.perms.clone();
        if !created {
            self.changes.push(Change { path: path.to_owned(), recurse: false, perms });
        }
        Ok(())
    }

    fn mkdir(&mut self, path: &str) -> Result<(), Errno> {
        match self.node(path, |a| a.write) {
            Ok(_) => Ok(()),
            Err(Errno::ENOENT) => self.create(path),
            Err(e) => Err(e),
        }
    }

    fn rm(&mut self, path: &str) -> Result<(), Errno> {
        if path == "/" {
            return Err(Errno::EINVAL);
        }
        match self.node(path, |a| a.write) {
            Ok(_) => {}
            Err(Errno::ENOENT) => {
                let par = parent(path).unwrap_or("/");
                return match self.tree.get(par) {
                    Some(_) => Ok(()),
                    None => Err(Errno::ENOENT),
                };
            }
            Err(e) => return Err(e),
        }
        let perms = self.tree.get(path).map(|n| n.perms.clone()).unwrap_or_default();
        if let Some(par) = parent(path) {
            self.note(par, true)?;
        }
        if self.tx.is_some() {
            let below: Vec<String> = subtree(self.tree, path);
            for p in below {
                self.note(&p, true)?;
            }
        }
        self.tree.remove(path, self.generation);
        self.changes.push(Change { path: path.to_owned(), recurse: true, perms });
        Ok(())
    }

    fn set_perms(&mut self, path: &str, perms: Vec<Perm>) -> Result<(), Errno> {
        self.node(path, |a| a.write && a.owner)?;
        if self.domid != 0 && perms[0].domid != self.domid {
            return Err(Errno::EPERM);
        }
        self.note(path, true)?;
        let generation = self.generation;
        let mut n = self.tree.get(path).cloned().ok_or(Errno::ENOENT)?;
        n.perms = perms.clone();
        n.generation = generation;
        self.tree.put(path, Some(n));
        self.changes.push(Change { path: path.to_owned(), recurse: false, perms });
        Ok(())
    }
}

fn subtree(tree: &Tree, path: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![path.to_owned()];
    while let Some(p) = stack.pop() {
        if let Some(n) = tree.get(&p) {
            for c in &n.children {
                stack.push(format!("{p}/{c}"));
            }
            out.push(p);
        }
    }
    out
}

/// The reply to a request, before framing.
type Reply = Result<Vec<u8>, Errno>;

impl Store {
    /// An empty store (`/`, `/local`, `/local/domain`).
    pub fn new(quota: Quota) -> Store {
        Store { tree: Tree::new(), conns: BTreeMap::new(), generation: 1, next_tx: 1, next_client: 1, quota }
    }

    /// Opens a connection (idempotent): `connect(domid)` for a domain's ring.
    pub fn connect(&mut self, conn: impl Into<ConnId>) {
        self.conns.entry(conn.into()).or_default();
    }

    /// Opens a new socket client's connection (dom0's permissions).
    pub fn open_client(&mut self) -> ConnId {
        let id = ConnId::Socket(self.next_client);
        self.next_client += 1;
        self.connect(id);
        id
    }

    /// Closes a connection: its watches go, its open transactions are aborted and its queued
    /// output is dropped (C xenstored freeing a connection). Unknown connections are ignored.
    pub fn disconnect(&mut self, conn: impl Into<ConnId>) {
        self.conns.remove(&conn.into());
    }

    /// The next message queued for a connection (replies and watch events, in order).
    pub fn pop_output(&mut self, conn: impl Into<ConnId>) -> Option<Vec<u8>> {
        self.conns.get_mut(&conn.into())?.outbox.pop_front()
    }

    /// Puts a message that did not fit back at the head of a connection's queue.
    pub fn unpop_output(&mut self, conn: impl Into<ConnId>, m: Vec<u8>) {
        if let Some(d) = self.conns.get_mut(&conn.into()) {
            d.outbox.push_front(m);
        }
    }

    /// Messages queued for a connection: its reader stops taking requests while this is at
    /// `Quota::outstanding`.
    pub fn queued(&self, conn: impl Into<ConnId>) -> usize {
        self.conns.get(&conn.into()).map_or(0, |d| d.outbox.len())
    }

    /// Connections, watches and open transactions, all connections together.
    #[cfg(test)]
    pub(crate) fn conns_for_test(&self) -> (usize, usize, usize) {
        let w = self.conns.values().map(|c| c.watches.len()).sum();
        let t = self.conns.values().map(|c| c.transactions.len()).sum();
        (self.conns.len(), w, t)
    }

    /// The quota in force.
    pub fn quota(&self) -> Quota {
        self.quota
    }

    /// Handles one request from a connection (opening it if needed) and queues the reply
    /// (and any watch events).
    pub fn request(&mut self, conn: impl Into<ConnId>, hdr: XsdSockmsg, payload: &[u8]) {
        let conn = conn.into();
        self.connect(conn);
        self.generation += 1;
        let mut changes = Vec::new();
        let mut first_event = None;
        let reply = self.dispatch(conn, hdr, payload, &mut changes, &mut first_event);
        // A reply that does not fit a message is E2BIG (C xenstored's `send_reply`).
        let reply =
            reply.and_then(|p| if p.len() > XENSTORE_PAYLOAD_MAX { Err(Errno::E2BIG) } else { Ok(p) });
        let msg = match reply {
            Ok(p) => message(hdr.r#type, hdr.req_id, hdr.tx_id, &p),
            Err(e) => {
                let mut p = xsd_error_name(e).as_bytes().to_vec();
                p.push(0);
                message(XS_ERROR, hdr.req_id, hdr.tx_id, &p)
            }
        };
        if let Some(d) = self.conns.get_mut(&conn) {
            d.outbox.push_back(msg);
        }
        if let Some((path, token)) = first_event {
            self.queue_event(conn, &path, &token);
        }
        self.fire(&changes);
    }

    fn queue_event(&mut self, conn: ConnId, path: &str, token: &[u8]) {
        let limit = self.quota.outstanding;
        if let Some(d) = self.conns.get_mut(&conn) {
            if conn != ConnId::Domain(0) && d.outbox.len() >= limit * 4 {
                // A connection not draining its output (a guest's ring, a socket client)
                // loses events, not host memory.
                return;
            }
            let mut p = path.as_bytes().to_vec();
            p.push(0);
            p.extend_from_slice(token);
            p.push(0);
            d.outbox.push_back(message(XS_WATCH_EVENT, 0, 0, &p));
        }
    }

    /// Delivers `changes` to the matching watches (`fire_watches`).
    fn fire(&mut self, changes: &[Change]) {
        let mut events = Vec::new();
        for (&conn, d) in &self.conns {
            let domid = conn.domid();
            for w in &d.watches {
                for c in changes {
                    let path = if is_child(&c.path, &w.path) {
                        &c.path
                    } else if c.recurse && is_child(&w.path, &c.path) {
                        &w.path
                    } else {
                        continue;
                    };
                    if !c.path.starts_with('@') && !access(domid, &c.perms).read {
                        continue;
                    }
                    let home = format!("{}/", domain_path(domid));
                    let shown = match path.strip_prefix(&home) {
                        Some(rel) if w.relative => rel,
                        _ => path,
                    };
                    events.push((conn, shown.to_owned(), w.token.clone()));
                }
            }
        }
        for (conn, path, token) in events {
            self.queue_event(conn, &path, &token);
        }
    }

    /// Fires a special watch (`@introduceDomain`, `@releaseDomain`).
    pub fn fire_special(&mut self, path: &str) {
        self.fire(&[Change { path: path.to_owned(), recurse: false, perms: Vec::new() }]);
    }

    fn dispatch(
        &mut self,
        conn: ConnId,
        hdr: XsdSockmsg,
        payload: &[u8],
        changes: &mut Vec<Change>,
        first_event: &mut Option<(String, Vec<u8>)>,
    ) -> Reply {
        let domid = conn.domid();
        let privileged = domid == 0;
        match hdr.r#type {
            XS_CONTROL | XS_INTRODUCE | XS_RELEASE | XS_IS_DOMAIN_INTRODUCED | XS_RESUME | XS_SET_TARGET
                if !privileged =>
            {
                return Err(Errno::EACCES)
            }
            XS_DIRECTORY | XS_READ | XS_GET_PERMS | XS_WATCH | XS_UNWATCH | XS_TRANSACTION_START
            | XS_TRANSACTION_END | XS_GET_DOMAIN_PATH | XS_WRITE | XS_MKDIR | XS_RM | XS_SET_PERMS
            | XS_RESET_WATCHES | XS_DIRECTORY_PART => {}
            _ => return Err(Errno::ENOSYS),
        }
        // Requests without a transaction id (XS_FLAG_NOTID) ignore it; others look it up.
        let notid = matches!(hdr.r#type, XS_WATCH | XS_UNWATCH | XS_GET_DOMAIN_PATH | XS_RESET_WATCHES);
        let tx_id = if notid { 0 } else { hdr.tx_id };
        let quota = self.quota;
        let generation = self.generation;
        let d = self.conns.entry(conn).or_default();
        if tx_id != 0 && !d.transactions.contains_key(&tx_id) {
            return Err(Errno::ENOENT);
        }
        match hdr.r#type {
            XS_WATCH => {
                let [path, token] = strings(payload)[..] else { return Err(Errno::EINVAL) };
                let (abs, relative) = watch_path(domid, path)?;
                if d.watches.iter().any(|w| w.path == abs && w.token == token) {
                    return Err(Errno::EEXIST);
                }
                if !privileged && d.watches.len() >= quota.watches {
                    return Err(Errno::E2BIG);
                }
                d.watches.push(Watch { path: abs, token: token.to_vec(), relative });
                *first_event = Some((utf8(path)?.to_owned(), token.to_vec()));
                return Ok(b"OK\0".to_vec());
            }
            XS_UNWATCH => {
                let [path, token] = strings(payload)[..] else { return Err(Errno::EINVAL) };
                let (abs, _) = watch_path(domid, path)?;
                let before = d.watches.len();
                d.watches.retain(|w| !(w.path == abs && w.token == token));
                return if d.watches.len() < before { Ok(b"OK\0".to_vec()) } else { Err(Errno::ENOENT) };
            }
            XS_RESET_WATCHES => {
                d.watches.clear();
                d.transactions.clear();
                return Ok(b"OK\0".to_vec());
            }
            XS_GET_DOMAIN_PATH => {
                let s = onearg(payload)?;
                if s.is_empty() || s.len() > 5 || !s.bytes().all(|c| c.is_ascii_digit()) {
                    return Err(Errno::EINVAL);
                }
                let id: u16 = s.parse().map_err(|_| Errno::EINVAL)?;
                let mut p = domain_path(id).into_bytes();
                p.push(0);
                return Ok(p);
            }
            XS_TRANSACTION_START => {
                if tx_id != 0 {
                    return Err(Errno::EBUSY);
                }
                if !privileged && d.transactions.len() >= quota.transactions {
                    return Err(Errno::ENOSPC);
                }
                let id = self.next_tx;
                self.next_tx = self.next_tx.wrapping_add(1).max(1);
                let tx = Transaction {
                    tree: self.tree.clone(),
                    accessed: BTreeMap::new(),
                    written: BTreeMap::new(),
                    changes: Vec::new(),
                };
                self.conns.entry(conn).or_default().transactions.insert(id, tx);
                return Ok(format!("{id}\0").into_bytes());
            }
            XS_TRANSACTION_END => {
                let commit = match onearg(payload)? {
                    "T" => true,
                    "F" => false,
                    _ => return Err(Errno::EINVAL),
                };
                let tx = d.transactions.remove(&tx_id).ok_or(Errno::ENOENT)?;
                if commit {
                    self.commit(tx, changes)?;
                }
                return Ok(b"OK\0".to_vec());
            }
            _ => {}
        }
        let d = self.conns.entry(conn).or_default();
        let mut ctx = match d.transactions.get_mut(&tx_id) {
            Some(t) => Ctx {
                tree: &mut t.tree,
                tx: Some((&mut t.accessed, &mut t.written)),
                changes: &mut t.changes,
                generation,
                quota,
                domid,
            },
            None => Ctx { tree: &mut self.tree, tx: None, changes, generation, quota, domid },
        };
        op(&mut ctx, hdr.r#type, payload)
    }

    fn commit(&mut self, tx: Transaction, changes: &mut Vec<Change>) -> Result<(), Errno> {
        for (path, g) in &tx.accessed {
            if self.tree.get(path).map(|n| n.generation) != *g {
                return Err(Errno::EAGAIN);
            }
        }
        for path in tx.written.keys() {
            let node = tx.tree.get(path).cloned().map(|mut n| {
                n.generation = self.generation;
                n
            });
            self.tree.put(path, node);
        }
        changes.extend(tx.changes);
        Ok(())
    }

    /// Runs one request on connection `conn` (opening it if needed) and returns its reply
    /// payload or error. Watch events the request fired for `conn` stay queued for
    /// [`Store::pop_output`]: a host-side client such as the xenbus backend registers its
    /// watches with this and drains its events separately.
    pub fn call(&mut self, conn: impl Into<ConnId>, ty: u32, payload: &[u8]) -> Result<Vec<u8>, Errno> {
        let conn = conn.into();
        self.connect(conn);
        // The reply goes right behind what was queued before; watch events come after it.
        let at = self.queued(conn);
        self.request(
            conn,
            XsdSockmsg { r#type: ty, req_id: 0, tx_id: 0, len: payload.len() as u32 },
            payload,
        );
        let m = self.conns.get_mut(&conn).and_then(|d| d.outbox.remove(at)).unwrap_or_default();
        let body = m.get(16..).unwrap_or_default().to_vec();
        if m.get(..4) == Some(&XS_ERROR.to_le_bytes()[..]) {
            let name = body.split(|&b| b == 0).next().unwrap_or_default();
            return Err(XSD_ERRORS
                .iter()
                .find(|(_, n)| n.as_bytes() == name)
                .map_or(Errno::EINVAL, |(e, _)| *e));
        }
        Ok(body)
    }

    /// Runs a request as dom0 (the VMM's own writes): returns the reply payload or error.
    /// Whatever else it queued for dom0 is dropped.
    pub fn host(&mut self, ty: u32, payload: &[u8]) -> Result<Vec<u8>, Errno> {
        let r = self.call(0, ty, payload);
        if let Some(d) = self.conns.get_mut(&ConnId::Domain(0)) {
            d.outbox.clear();
        }
        r
    }

    /// dom0 reads the value at absolute `path`, without a request: `EINVAL` for a path that is
    /// no valid node name, `ENOENT` for a missing node. Borrowing the store keeps a backend's
    /// reads of a frontend's keys cheap and free of side effects.
    pub fn host_read(&self, path: &str) -> Result<&[u8], Errno> {
        if !is_valid_nodename(path) {
            return Err(Errno::EINVAL);
        }
        self.tree.get(path).map(|n| &n.value[..]).ok_or(Errno::ENOENT)
    }

    /// dom0 lists the children of absolute `path` (`XS_DIRECTORY` without a request).
    pub fn host_directory(&self, path: &str) -> Result<&[String], Errno> {
        if !is_valid_nodename(path) {
            return Err(Errno::EINVAL);
        }
        self.tree.get(path).map(|n| &n.children[..]).ok_or(Errno::ENOENT)
    }

    /// dom0 removes absolute `path` and everything below it. A missing node is no error, but
    /// a missing parent is `ENOENT` (`XS_RM`'s rule).
    pub fn host_rm(&mut self, path: &str) -> Result<(), Errno> {
        self.host(XS_RM, format!("{path}\0").as_bytes()).map(drop)
    }

    /// dom0 creates absolute `path` (and missing parents) with an empty value if it is missing.
    pub fn host_mkdir(&mut self, path: &str) -> Result<(), Errno> {
        self.host(XS_MKDIR, format!("{path}\0").as_bytes()).map(drop)
    }

    /// dom0 writes `value` at absolute `path`.
    pub fn host_write(&mut self, path: &str, value: &[u8]) -> Result<(), Errno> {
        let mut p = path.as_bytes().to_vec();
        p.push(0);
        p.extend_from_slice(value);
        self.host(XS_WRITE, &p).map(drop)
    }

    /// dom0 sets the permissions of absolute `path` (`perms` in wire form, e.g. `["n0", "r1"]`).
    pub fn host_set_perms(&mut self, path: &str, perms: &[&str]) -> Result<(), Errno> {
        let mut p = format!("{path}\0").into_bytes();
        for s in perms {
            p.extend_from_slice(s.as_bytes());
            p.push(0);
        }
        self.host(XS_SET_PERMS, &p).map(drop)
    }
}

/// A watch's path: `@` names are special and kept as given; others are canonicalised.
fn watch_path(domid: u16, path: &[u8]) -> Result<(String, bool), Errno> {
    let path = utf8(path)?;
    if path.starts_with('@') {
        if path.len() > XENSTORE_REL_PATH_MAX {
            return Err(Errno::EINVAL);
        }
        return Ok((path.to_owned(), false));
    }
    canonicalize(domid, path)
}

fn op(ctx: &mut Ctx<'_>, ty: u32, payload: &[u8]) -> Reply {
    let ok = || Ok(b"OK\0".to_vec());
    match ty {
        XS_READ => {
            let (p, _) = canonicalize(ctx.domid, onearg(payload)?)?;
            Ok(ctx.node(&p, |a| a.read)?.value.clone())
        }
        XS_DIRECTORY => {
            let (p, _) = canonicalize(ctx.domid, onearg(payload)?)?;
            let n = ctx.node(&p, |a| a.read)?;
            Ok(n.children.iter().flat_map(|c| c.bytes().chain([0])).collect())
        }
        XS_DIRECTORY_PART => {
            let [path, off] = strings(payload)[..] else { return Err(Errno::EINVAL) };
            let (p, _) = canonicalize(ctx.domid, utf8(path)?)?;
            let off: usize = utf8(off)?.parse().map_err(|_| Errno::EINVAL)?;
            let n = ctx.node(&p, |a| a.read)?;
            let all: Vec<u8> = n.children.iter().flat_map(|c| c.bytes().chain([0])).collect();
            let mut out = format!("{}\0", n.generation).into_bytes();
            let rest = all.get(off..).ok_or(Errno::EINVAL)?;
            if out.len() + rest.len() < XENSTORE_PAYLOAD_MAX {
                out.extend_from_slice(rest);
                out.push(0);
            } else {
                for c in rest.split_inclusive(|&b| b == 0) {
                    if out.len() + c.len() > XENSTORE_PAYLOAD_MAX {
                        break;
                    }
                    out.extend_from_slice(c);
                }
            }
            Ok(out)
        }
        XS_GET_PERMS => {
            let (p, _) = canonicalize(ctx.domid, onearg(payload)?)?;
            let n = ctx.node(&p, |a| a.read)?;
            Ok(n.perms.iter().flat_map(|p| p.to_wire().into_bytes().into_iter().chain([0])).collect())
        }
        XS_WRITE => {
            let i = payload.iter().position(|&b| b == 0).ok_or(Errno::EINVAL)?;
            let (p, _) = canonicalize(ctx.domid, utf8(&payload[..i])?)?;
            ctx.write(&p, &payload[i + 1..])?;
            ok()
        }
        XS_MKDIR => {
            let (p, _) = canonicalize(ctx.domid, onearg(payload)?)?;
            ctx.mkdir(&p)?;
            ok()
        }
        XS_RM => {
            let (p, _) = canonicalize(ctx.domid, onearg(payload)?)?;
            ctx.rm(&p)?;
            ok()
        }
        XS_SET_PERMS => {
            let v = strings(payload);
            let (path, perms) = v.split_first().ok_or(Errno::EINVAL)?;
            let (p, _) = canonicalize(ctx.domid, utf8(path)?)?;
            if perms.is_empty() {
                return Err(Errno::EINVAL);
            }
            if ctx.domid != 0 && perms.len() > ctx.quota.perms {
                return Err(Errno::ENOSPC);
            }
            let perms = perms.iter().map(|s| Perm::parse(s)).collect::<Result<Vec<_>, _>>()?;
            ctx.set_perms(&p, perms)?;
            ok()
        }
        _ => Err(Errno::ENOSYS),
    }
}
