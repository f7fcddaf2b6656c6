//! The store served to dom0 tools over a Unix socket, as C xenstored serves
//! `/run/xenstored/socket`: Debian's `xenstore-utils` (libxenstore, with `XENSTORED_PATH`
//! naming the socket) and python's pyxs talk to the guest's store through it.
//!
//! Wire: each client is a byte stream of `xsd_sockmsg` header + payload in both directions,
//! the same framing as the ring. The client sends nothing before its first request
//! (libxenstore's `xs_open` only connects), replies come in request order, and watch events
//! (`XS_WATCH_EVENT`, including the immediate one after `XS_WATCH`) are interleaved whenever
//! they fire. A socket client has dom0's rights (C xenstored gives socket connections the id
//! of its own domain, `accept_connection` in tools/xenstored/posix.c) but its own watches,
//! transactions and output queue ([`ConnId::Socket`]).
//!
//! Design: one thread, non-blocking sockets, level-triggered epoll over the listener, every
//! client, the [`Waker`] eventfd and a stop eventfd. The thread never blocks on a client: it
//! reads at most the message in progress ([`Parser::wanted`]), writes what the socket takes
//! and keeps the rest. The store lock is held only to run one request or pop one message,
//! never across socket I/O, so a slow or hostile client cannot stall the guest's ring
//! service on the VMM's event thread. (A thread per client would need the same bounded
//! queues plus a way to wake each thread for watch events; one epoll loop gets both from the
//! store's per-connection outbox.)
//!
//! Limits: at most [`Limits::max_clients`] clients (a further one is accepted and closed at
//! once); a client stops being read while it has `Quota::outstanding` messages it has not
//! taken, as the guest's ring does, and its watch events beyond the store's bound are
//! dropped; so its memory is bounded by one input message, one output message in progress
//! and the store's outbox bound. A header announcing more than `XENSTORE_PAYLOAD_MAX` bytes,
//! end of stream or a socket error closes that client only ([`Store::disconnect`]: its
//! watches go and its transactions are aborted).

use std::collections::HashMap;
use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use xen_abi::io::xs_wire::{XsdSockmsg, XENSTORE_PAYLOAD_MAX};

use super::wire::Parser;
use super::{ConnId, Store};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("xenstore socket {0}: the path exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    #[error("xenstore socket {0}: another server is listening on it")]
    InUse(PathBuf),
    #[error("xenstore socket {path}: {op}: {source}")]
    Io { path: PathBuf, op: &'static str, source: io::Error },
}

/// The server's bounds.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Clients connected at once.
    pub max_clients: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { max_clients: 64 }
    }
}

/// Wakes the server so it sends what the store queued for its clients since: the VMM calls
/// [`Waker::wake`] after serving the guest's ring, whose requests may have fired socket
/// clients' watches. Cheap (one eventfd write) and never blocks.
#[derive(Clone, Debug)]
pub struct Waker(Arc<EventFd>);

impl Waker {
    /// Asks the server to flush every client's queued output.
    pub fn wake(&self) {
        // EAGAIN means the counter is already non-zero: the server is being woken anyway.
        let _ = self.0.write(1);
    }
}

/// A running socket server. [`Server::stop`] (or dropping it) stops the thread, closes every
/// client and removes the socket file.
pub struct Server {
    path: PathBuf,
    /// The socket file's identity, so stopping never removes a file someone put there since.
    ident: (u64, u64),
    waker: Waker,
    stop: Arc<EventFd>,
    thread: Option<JoinHandle<()>>,
}

const LISTENER: u64 = 0;
const WAKER: u64 = 1;
const STOP: u64 = 2;
const FIRST_CLIENT: u64 = 3;

/// Messages read from one client per readiness event before the others get a turn.
const READ_BUDGET: usize = 64;
/// Messages written to one client per pass.
const WRITE_BUDGET: usize = 64;

fn io_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> SocketError + 'a {
    move |source| SocketError::Io { path: path.to_owned(), op, source }
}

/// Removes a stale socket at `path` (one nobody listens on); refuses anything else.
fn clear_stale(path: &Path) -> Result<(), SocketError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(path, "stat")(e)),
    };
    if !meta.file_type().is_socket() {
        return Err(SocketError::NotASocket(path.to_owned()));
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(SocketError::InUse(path.to_owned())),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
            std::fs::remove_file(path).map_err(io_err(path, "remove the stale socket"))
        }
        Err(e) => Err(io_err(path, "probe the existing socket")(e)),
    }
}

fn lock(store: &Mutex<Store>) -> MutexGuard<'_, Store> {
    // A panic elsewhere while holding the store leaves it consistent per request.
    store.lock().unwrap_or_else(|e| e.into_inner())
}

impl Server {
    /// Listens at `path` with the default [`Limits`]. `notify_guest` runs on the server's
    /// thread, without the store lock held, after a round in which clients' requests ran:
    /// the VMM then services the guest's ring, since a write may have fired its watches.
    pub fn start(
        path: impl AsRef<Path>,
        store: Arc<Mutex<Store>>,
        notify_guest: impl FnMut() + Send + 'static,
    ) -> Result<Server, SocketError> {
        Server::with_limits(path, store, Limits::default(), notify_guest)
    }

    /// [`Server::start`] with explicit limits.
    pub fn with_limits(
        path: impl AsRef<Path>,
        store: Arc<Mutex<Store>>,
        limits: Limits,
        notify_guest: impl FnMut() + Send + 'static,
    ) -> Result<Server, SocketError> {
        let path = path.as_ref().to_owned();
        clear_stale(&path)?;
        let listener = UnixListener::bind(&path).map_err(io_err(&path, "bind"))?;
        let meta = std::fs::symlink_metadata(&path).map_err(io_err(&path, "stat"))?;
        let ident = (meta.dev(), meta.ino());
        let cleanup = |e: SocketError| {
            let _ = std::fs::remove_file(&path);
            e
        };
        // Only this user may connect (connect(2) needs write permission on the file), as
        // xenstored's socket is root's.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(io_err(&path, "chmod"))
            .map_err(cleanup)?;
        listener.set_nonblocking(true).map_err(io_err(&path, "set non-blocking")).map_err(cleanup)?;
        let waker = EventFd::new(EFD_NONBLOCK).map_err(io_err(&path, "eventfd")).map_err(cleanup)?;
        let stop = Arc::new(EventFd::new(EFD_NONBLOCK).map_err(io_err(&path, "eventfd")).map_err(cleanup)?);
        let waker = Waker(Arc::new(waker));
        let epoll = Epoll::new().map_err(io_err(&path, "epoll")).map_err(cleanup)?;
        for (fd, token) in
            [(listener.as_raw_fd(), LISTENER), (waker.0.as_raw_fd(), WAKER), (stop.as_raw_fd(), STOP)]
        {
            epoll
                .ctl(ControlOperation::Add, fd, EpollEvent::new(EventSet::IN, token))
                .map_err(io_err(&path, "epoll_ctl"))
                .map_err(cleanup)?;
        }
        let mut lp = Loop {
            epoll,
            listener,
            waker: waker.0.clone(),
            store,
            limits,
            notify_guest: Box::new(notify_guest),
            clients: HashMap::new(),
            next_token: FIRST_CLIENT,
        };
        let thread = std::thread::Builder::new()
            .name("xenstore-socket".into())
            .spawn(move || lp.run())
            .map_err(io_err(&path, "spawn the server thread"))
            .map_err(cleanup)?;
        Ok(Server { path, ident, waker, stop, thread: Some(thread) })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A handle that wakes the server to send queued watch events (see [`Waker`]).
    pub fn waker(&self) -> Waker {
        self.waker.clone()
    }

    /// Stops the server: closes every client (their watches and transactions go), joins the
    /// thread and removes the socket file.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let Some(thread) = self.thread.take() else { return };
        let _ = self.stop.write(1);
        let _ = thread.join();
        if let Ok(m) = std::fs::symlink_metadata(&self.path) {
            if (m.dev(), m.ino()) == self.ident {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct Client {
    stream: UnixStream,
    conn: ConnId,
    parser: Parser,
    out: Vec<u8>,
    out_done: usize,
    interest: EventSet,
}

/// What reading a client did.
enum ReadOutcome {
    /// Requests ran (the guest may need servicing).
    Ran(bool),
    /// The client is to be closed.
    Close,
}

struct Loop {
    epoll: Epoll,
    listener: UnixListener,
    waker: Arc<EventFd>,
    store: Arc<Mutex<Store>>,
    limits: Limits,
    notify_guest: Box<dyn FnMut() + Send>,
    clients: HashMap<u64, Client>,
    next_token: u64,
}

impl Loop {
    fn run(&mut self) {
        let mut events = vec![EpollEvent::default(); 32];
        loop {
            let n = match self.epoll.wait(-1, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            let mut ran = false;
            let mut close = Vec::new();
            for ev in &events[..n] {
                match ev.data() {
                    STOP => {
                        self.close_all();
                        return;
                    }
                    LISTENER => self.accept(),
                    WAKER => {
                        let _ = self.waker.read();
                    }
                    token => {
                        let set = ev.event_set();
                        if set.contains(EventSet::IN) {
                            match self.read_client(token) {
                                ReadOutcome::Ran(r) => ran |= r,
                                ReadOutcome::Close => close.push(token),
                            }
                        }
                        if set.intersects(EventSet::ERROR | EventSet::HANG_UP) {
                            close.push(token);
                        }
                    }
                }
            }
            for t in close {
                self.close(t);
            }
            if ran {
                (self.notify_guest)();
            }
            // Replies, and events for any client, whoever's request or the guest's fired them.
            self.flush_all();
        }
    }

    fn accept(&mut self) {
        // Bounded per readiness event; over-limit clients are closed at once.
        for _ in 0..64 {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return, // WouldBlock, or a transient accept error: retried on next readiness
            };
            if self.clients.len() >= self.limits.max_clients || stream.set_nonblocking(true).is_err() {
                continue; // dropped: closed
            }
            let token = self.next_token;
            self.next_token += 1;
            if self
                .epoll
                .ctl(ControlOperation::Add, stream.as_raw_fd(), EpollEvent::new(EventSet::IN, token))
                .is_err()
            {
                continue;
            }
            let conn = lock(&self.store).open_client();
            self.clients.insert(
                token,
                Client {
                    stream,
                    conn,
                    parser: Parser::default(),
                    out: Vec::new(),
                    out_done: 0,
                    interest: EventSet::IN,
                },
            );
        }
    }

    fn read_client(&mut self, token: u64) -> ReadOutcome {
        let Some(c) = self.clients.get_mut(&token) else { return ReadOutcome::Ran(false) };
        let outstanding = lock(&self.store).quota().outstanding;
        let mut buf = [0u8; 16 + XENSTORE_PAYLOAD_MAX];
        let mut ran = false;
        for _ in 0..READ_BUDGET * 2 {
            if lock(&self.store).queued(c.conn) >= outstanding {
                break; // the client is not reading its replies: stop taking requests
            }
            let want = c.parser.wanted().min(buf.len());
            let n = match c.stream.read(&mut buf[..want]) {
                Ok(0) => return ReadOutcome::Close,
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => return ReadOutcome::Close,
            };
            match c.parser.push(&buf[..n]) {
                Err(_) => return ReadOutcome::Close, // oversize: a protocol error
                Ok((_, None)) => {}
                Ok((_, Some((hdr, payload)))) => {
                    request(&self.store, c.conn, hdr, &payload);
                    ran = true;
                }
            }
        }
        ReadOutcome::Ran(ran)
    }

    /// Writes queued output to every client and updates what epoll waits for.
    fn flush_all(&mut self) {
        let outstanding = lock(&self.store).quota().outstanding;
        let mut close = Vec::new();
        for (&token, c) in &mut self.clients {
            if flush(&self.store, c).is_err() {
                close.push(token);
                continue;
            }
            let mut want = EventSet::empty();
            if lock(&self.store).queued(c.conn) < outstanding {
                want |= EventSet::IN;
            }
            if c.out_done < c.out.len() || lock(&self.store).queued(c.conn) > 0 {
                want |= EventSet::OUT;
            }
            if want != c.interest {
                let ev = EpollEvent::new(want, token);
                if self.epoll.ctl(ControlOperation::Modify, c.stream.as_raw_fd(), ev).is_err() {
                    close.push(token);
                    continue;
                }
                c.interest = want;
            }
        }
        for t in close {
            self.close(t);
        }
    }

    fn close(&mut self, token: u64) {
        if let Some(c) = self.clients.remove(&token) {
            let _ = self.epoll.ctl(ControlOperation::Delete, c.stream.as_raw_fd(), EpollEvent::default());
            lock(&self.store).disconnect(c.conn);
        }
    }

    fn close_all(&mut self) {
        let tokens: Vec<u64> = self.clients.keys().copied().collect();
        for t in tokens {
            self.close(t);
        }
    }
}

fn request(store: &Mutex<Store>, conn: ConnId, hdr: XsdSockmsg, payload: &[u8]) {
    lock(store).request(conn, hdr, payload);
}

/// Writes what the socket takes of the client's queued output. Errors mean the peer is gone.
/// (A write to a closed peer is `EPIPE`, not a fatal `SIGPIPE`: Rust's runtime ignores
/// SIGPIPE in every Rust program, xenvmm and the test harness included; the crate forbids
/// the unsafe `send(MSG_NOSIGNAL)`.)
fn flush(store: &Mutex<Store>, c: &mut Client) -> io::Result<()> {
    for _ in 0..WRITE_BUDGET {
        if c.out_done == c.out.len() {
            match lock(store).pop_output(c.conn) {
                Some(m) => {
                    c.out = m;
                    c.out_done = 0;
                }
                None => return Ok(()),
            }
        }
        match c.stream.write(&c.out[c.out_done..]) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => c.out_done += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xenstore::store::message;
    use crate::xenstore::Quota;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;
    use xen_abi::io::xs_wire::*;

    fn tmp_path(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xenvmm-xs-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("socket")
    }

    /// A store with dom1's home as the toolstack leaves it, and a server on it.
    fn setup(name: &str, limits: Limits) -> (Arc<Mutex<Store>>, Server, Arc<AtomicUsize>) {
        let mut s = Store::new(Quota::default());
        s.host_write("/local/domain/1/data", b"").unwrap();
        s.host_set_perms("/local/domain/1/data", &["b1"]).unwrap();
        s.connect(1);
        let store = Arc::new(Mutex::new(s));
        let notified = Arc::new(AtomicUsize::new(0));
        let n = notified.clone();
        let server = Server::with_limits(tmp_path(name), store.clone(), limits, move || {
            n.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
        (store, server, notified)
    }

    struct Client(UnixStream);

    impl Client {
        fn new(server: &Server) -> Client {
            let s = UnixStream::connect(server.path()).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            Client(s)
        }

        fn send(&mut self, ty: u32, req_id: u32, tx: u32, payload: &[u8]) {
            self.0.write_all(&message(ty, req_id, tx, payload)).unwrap();
        }

        /// The next message: (type, req_id, payload).
        fn recv(&mut self) -> (u32, u32, Vec<u8>) {
            let mut h = [0u8; 16];
            self.0.read_exact(&mut h).unwrap();
            let w = |i: usize| u32::from_le_bytes(h[i..i + 4].try_into().unwrap());
            let mut p = vec![0; w(12) as usize];
            self.0.read_exact(&mut p).unwrap();
            (w(0), w(4), p)
        }

        fn call(&mut self, ty: u32, tx: u32, payload: &[u8]) -> Result<Vec<u8>, String> {
            self.send(ty, 42, tx, payload);
            let (t, id, p) = self.recv();
            assert_eq!(id, 42);
            if t == XS_ERROR {
                return Err(String::from_utf8_lossy(&p).trim_end_matches('\0').to_owned());
            }
            assert_eq!(t, ty);
            Ok(p)
        }

        fn closed(&mut self) -> bool {
            let mut b = [0u8; 1];
            matches!(self.0.read(&mut b), Ok(0) | Err(_))
        }
    }

    fn wait_for(mut f: impl FnMut() -> bool) {
        for _ in 0..1000 {
            if f() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("timed out");
    }

    #[test]
    fn read_write_directory_and_permissions_as_dom0() {
        let (store, server, notified) = setup("basic", Limits::default());
        let mut c = Client::new(&server);
        assert_eq!(c.call(XS_WRITE, 0, b"/local/domain/1/data/k\0v1").unwrap(), b"OK\0");
        assert_eq!(c.call(XS_READ, 0, b"/local/domain/1/data/k\0").unwrap(), b"v1");
        assert_eq!(c.call(XS_MKDIR, 0, b"/local/domain/1/data/d\0").unwrap(), b"OK\0");
        assert_eq!(c.call(XS_DIRECTORY, 0, b"/local/domain/1/data\0").unwrap(), b"k\0d\0");
        assert_eq!(c.call(XS_GET_PERMS, 0, b"/local/domain/1/data/k\0").unwrap(), b"b1\0", "the parent's");
        assert_eq!(c.call(XS_READ, 0, b"/nope\0").unwrap_err(), "ENOENT");
        assert_eq!(c.call(XS_GET_DOMAIN_PATH, 0, b"1\0").unwrap(), b"/local/domain/1\0");
        assert_eq!(store.lock().unwrap().host(XS_READ, b"/local/domain/1/data/k\0").unwrap(), b"v1");
        assert!(notified.load(Ordering::SeqCst) > 0, "the guest is notified after requests");
        // Two requests in one write, the second split across two: both answered, in order.
        let m =
            [message(XS_READ, 1, 0, b"/local/domain/1/data/k\0"), message(XS_READ, 2, 0, b"/x\0")].concat();
        c.0.write_all(&m[..30]).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        c.0.write_all(&m[30..]).unwrap();
        assert_eq!(c.recv(), (XS_READ, 1, b"v1".to_vec()));
        assert_eq!(c.recv(), (XS_ERROR, 2, b"ENOENT\0".to_vec()));
        server.stop();
    }

    #[test]
    fn a_watch_fires_when_the_guest_writes_and_the_vmm_wakes_the_server() {
        let (store, server, _) = setup("watch", Limits::default());
        let mut c = Client::new(&server);
        assert_eq!(c.call(XS_WATCH, 0, b"/local/domain/1/data\0tok\0").unwrap(), b"OK\0");
        assert_eq!(c.recv(), (XS_WATCH_EVENT, 0, b"/local/domain/1/data\0tok\0".to_vec()), "immediate event");
        // The guest's ring request, as the VMM's event thread runs it, then the wake.
        let payload = b"data/x\0hello";
        let hdr = XsdSockmsg { r#type: XS_WRITE, req_id: 9, tx_id: 0, len: payload.len() as u32 };
        store.lock().unwrap().request(1, hdr, payload);
        server.waker().wake();
        assert_eq!(c.recv(), (XS_WATCH_EVENT, 0, b"/local/domain/1/data/x\0tok\0".to_vec()));
        // Another socket client's write reaches it without any wake.
        let mut d = Client::new(&server);
        d.call(XS_WRITE, 0, b"/local/domain/1/data/y\0").unwrap();
        assert_eq!(c.recv(), (XS_WATCH_EVENT, 0, b"/local/domain/1/data/y\0tok\0".to_vec()));
        assert_eq!(c.call(XS_UNWATCH, 0, b"/local/domain/1/data\0tok\0").unwrap(), b"OK\0");
    }

    #[test]
    fn a_transaction_commits_atomically_and_conflicts_with_eagain() {
        let (store, server, _) = setup("tx", Limits::default());
        let mut c = Client::new(&server);
        let id = c.call(XS_TRANSACTION_START, 0, b"\0").unwrap();
        let t: u32 = std::str::from_utf8(&id[..id.len() - 1]).unwrap().parse().unwrap();
        c.call(XS_WRITE, t, b"/local/domain/1/data/a\0in-tx").unwrap();
        assert_eq!(c.call(XS_READ, t, b"/local/domain/1/data/a\0").unwrap(), b"in-tx");
        assert_eq!(c.call(XS_READ, 0, b"/local/domain/1/data/a\0").unwrap_err(), "ENOENT");
        c.call(XS_TRANSACTION_END, t, b"T\0").unwrap();
        assert_eq!(c.call(XS_READ, 0, b"/local/domain/1/data/a\0").unwrap(), b"in-tx");

        let id = c.call(XS_TRANSACTION_START, 0, b"\0").unwrap();
        let t: u32 = std::str::from_utf8(&id[..id.len() - 1]).unwrap().parse().unwrap();
        c.call(XS_READ, t, b"/local/domain/1/data/a\0").unwrap();
        c.call(XS_WRITE, t, b"/local/domain/1/data/b\0x").unwrap();
        store.lock().unwrap().host_write("/local/domain/1/data/a", b"other").unwrap();
        assert_eq!(c.call(XS_TRANSACTION_END, t, b"T\0").unwrap_err(), "EAGAIN");
        assert_eq!(c.call(XS_READ, 0, b"/local/domain/1/data/b\0").unwrap_err(), "ENOENT");
    }

    #[test]
    fn a_malformed_client_is_dropped_and_another_keeps_working() {
        let (_store, server, _) = setup("malformed", Limits::default());
        let mut good = Client::new(&server);
        let mut bad = Client::new(&server);
        good.call(XS_WRITE, 0, b"/local/domain/1/data/k\0v").unwrap();
        let mut hdr = message(XS_READ, 1, 0, b"");
        hdr[12..16].copy_from_slice(&(XENSTORE_PAYLOAD_MAX as u32 + 1).to_le_bytes());
        bad.0.write_all(&hdr).unwrap();
        assert!(bad.closed(), "oversize header: the client is closed");
        // Unknown types and bad arguments are answered, not fatal.
        assert_eq!(good.call(0xdead, 0, b"").unwrap_err(), "ENOSYS");
        assert_eq!(good.call(XS_READ, 0, b"no-nul").unwrap_err(), "EINVAL");
        assert_eq!(good.call(XS_READ, 0, b"/local/domain/1/data/k\0").unwrap(), b"v");
    }

    #[test]
    fn a_closed_client_loses_its_watches_and_transactions() {
        let (store, server, _) = setup("disconnect", Limits::default());
        let mut c = Client::new(&server);
        c.call(XS_WATCH, 0, b"/local/domain/1/data\0tok\0").unwrap();
        assert_eq!(c.recv().0, XS_WATCH_EVENT);
        c.call(XS_TRANSACTION_START, 0, b"\0").unwrap();
        let count = || store.lock().unwrap().conns_for_test();
        assert_eq!(count(), (3, 1, 1), "dom0 (host) + dom1 + the client; one watch; one transaction");
        drop(c);
        wait_for(|| count() == (2, 0, 0));
    }

    #[test]
    fn a_client_that_never_reads_stalls_nobody() {
        let (_store, server, _) = setup("stall", Limits::default());
        let mut hog = Client::new(&server);
        hog.0.set_nonblocking(true).unwrap();
        // Big replies the hog never reads: the server stops reading it once its queue is full.
        let big = [b"/local/domain/1/data/big\0".as_slice(), &[b'x'; 4000]].concat();
        Client::new(&server).call(XS_WRITE, 0, &big).unwrap();
        let req = message(XS_READ, 1, 0, b"/local/domain/1/data/big\0");
        let mut sent = 0;
        for _ in 0..10_000 {
            match hog.0.write(&req) {
                Ok(n) => sent += n,
                Err(_) => break,
            }
        }
        assert!(sent > 0);
        let mut c = Client::new(&server);
        for _ in 0..50 {
            assert_eq!(c.call(XS_READ, 0, b"/local/domain/1/data/big\0").unwrap().len(), 4000);
        }
    }

    #[test]
    fn clients_over_the_limit_are_closed() {
        let (_store, server, _) = setup("limit", Limits { max_clients: 2 });
        let mut a = Client::new(&server);
        let mut b = Client::new(&server);
        a.call(XS_READ, 0, b"/local\0").unwrap();
        b.call(XS_READ, 0, b"/local\0").unwrap();
        let mut c = Client::new(&server);
        assert!(c.closed());
        drop(a);
        wait_for(|| {
            let mut d = Client::new(&server);
            d.send(XS_READ, 1, 0, b"/local\0");
            !d.closed()
        });
    }

    #[test]
    fn start_refuses_other_files_and_live_sockets_and_replaces_stale_ones() {
        let path = tmp_path("refuse");
        std::fs::write(&path, b"not a socket").unwrap();
        let store = Arc::new(Mutex::new(Store::new(Quota::default())));
        let e = Server::start(&path, store.clone(), || {}).err().unwrap();
        assert!(matches!(e, SocketError::NotASocket(_)));
        assert!(e.to_string().contains(path.to_str().unwrap()), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), b"not a socket", "left alone");
        std::fs::remove_file(&path).unwrap();

        // A stale socket (nobody listening) is replaced.
        drop(UnixListener::bind(&path).unwrap());
        let server = Server::start(&path, store.clone(), || {}).unwrap();
        let e = Server::start(&path, store.clone(), || {}).err().unwrap();
        assert!(matches!(e, SocketError::InUse(_)), "{e}");
        assert!(path.exists());
        server.stop();
        assert!(!path.exists(), "stop removes the socket");
    }
}
