//! Debian's xenstore client tools (xenstore-utils 4.17, libxenstore4) against the socket
//! server: `scripts/fetch-xenstore-utils` downloads and extracts them under the cache (never
//! installed); libxenstore's `xs_open` connects to `XENSTORED_PATH` when it names a socket,
//! so no Xen is needed on the machine. Fails (never skips) when the tools cannot be fetched.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use devices::xenstore::socket::Server;
use devices::xenstore::{Quota, Store};
use xen_abi::io::xs_wire::{XsdSockmsg, XS_GET_PERMS, XS_READ, XS_WRITE};

fn tools() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new("bash")
        .arg(root.join("scripts/fetch-xenstore-utils"))
        .stderr(Stdio::inherit())
        .output()
        .expect("cannot run scripts/fetch-xenstore-utils");
    assert!(
        out.status.success(),
        "scripts/fetch-xenstore-utils failed ({}): Debian's xenstore-utils, libxenstore4 and \
         libxentoolcore1 must be downloadable with apt-get for this test",
        out.status
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

struct Tools {
    dir: PathBuf,
    socket: PathBuf,
}

impl Tools {
    fn cmd(&self, tool: &str) -> Command {
        let mut c = Command::new(self.dir.join("usr/bin").join(tool));
        c.env("XENSTORED_PATH", &self.socket)
            .env("LD_LIBRARY_PATH", self.dir.join("usr/lib/x86_64-linux-gnu"))
            .stdin(Stdio::null());
        c
    }

    fn run(&self, tool: &str, args: &[&str]) -> Output {
        self.cmd(tool).args(args).output().unwrap_or_else(|e| panic!("cannot run {tool}: {e}"))
    }

    fn ok(&self, tool: &str, args: &[&str]) -> String {
        let o = self.run(tool, args);
        assert!(
            o.status.success(),
            "{tool} {args:?}: {}\nstdout: {}\nstderr: {}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }
}

#[test]
fn debian_xenstore_utils_read_write_list_and_watch_through_the_socket() {
    let dir = tools();
    let tmp = std::env::temp_dir().join(format!("xenvmm-xs-utils-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let socket = tmp.join("socket");

    // The store as the VMM leaves it for a guest (dom1), and the guest's own connection.
    let mut s = Store::new(Quota::default());
    s.host_write("/local/domain/1/name", b"guest").unwrap();
    s.host_set_perms("/local/domain/1", &["n0", "r1"]).unwrap();
    s.host_write("/local/domain/1/data", b"").unwrap();
    s.host_set_perms("/local/domain/1/data", &["b1"]).unwrap();
    s.connect(1);
    let store = Arc::new(Mutex::new(s));
    let server = Server::start(&socket, store.clone(), || {}).unwrap();
    let t = Tools { dir, socket: socket.clone() };

    // xenstore-write runs in a transaction (start, write, end "T").
    t.ok("xenstore-write", &["/local/domain/1/data/greeting", "hello", "/local/domain/1/data/n", "42"]);
    assert_eq!(t.ok("xenstore-read", &["/local/domain/1/data/greeting"]), "hello\n");
    assert_eq!(t.ok("xenstore-read", &["/local/domain/1/name", "/local/domain/1/data/n"]), "guest\n42\n");
    assert_eq!(store.lock().unwrap().host(XS_READ, b"/local/domain/1/data/n\0").unwrap(), b"42");
    assert_eq!(t.ok("xenstore-list", &["/local/domain/1"]), "name\ndata\n");
    assert_eq!(t.ok("xenstore-exists", &["/local/domain/1/data/n"]), "");
    assert!(!t.run("xenstore-exists", &["/local/domain/1/nothing"]).status.success());
    let missing = t.run("xenstore-read", &["/local/domain/1/nothing"]);
    assert!(!missing.status.success());

    // xenstore-ls walks with XS_DIRECTORY and XS_READ; -p adds XS_GET_PERMS.
    let ls = t.ok("xenstore-ls", &["/local/domain/1"]);
    eprintln!("xenstore-ls:\n{ls}");
    assert_eq!(ls, "name = \"guest\"\ndata = \"\"\n greeting = \"hello\"\n n = \"42\"\n");
    let lsp = t.ok("xenstore-ls", &["-p", "/local/domain/1/data"]);
    eprintln!("xenstore-ls -p:\n{lsp}");
    let perms: Vec<&str> = lsp.lines().map(|l| l.rsplit(' ').next().unwrap()).collect();
    assert!(lsp.starts_with("greeting = \"hello\" . ."), "{lsp}");
    assert_eq!(perms, ["(b1)", "(b1)"], "{lsp}");
    let full = t.ok("xenstore-ls", &["-f"]);
    assert!(full.contains("/local/domain/1/data/greeting = \"hello\""), "{full}");

    t.ok("xenstore-chmod", &["/local/domain/1/data/n", "n1", "r0"]);
    assert_eq!(store.lock().unwrap().host(XS_GET_PERMS, b"/local/domain/1/data/n\0").unwrap(), b"n1\0r0\0");
    t.ok("xenstore-rm", &["/local/domain/1/data/n"]);
    assert_eq!(t.ok("xenstore-list", &["/local/domain/1/data"]), "greeting\n");

    // A directory too big for one XS_DIRECTORY reply: libxenstore falls back to
    // XS_DIRECTORY_PART on E2BIG.
    {
        let mut s = store.lock().unwrap();
        for i in 0..300 {
            s.host_write(&format!("/local/domain/0/many/child-with-a-long-name-{i:04}"), b"").unwrap();
        }
    }
    let many = t.ok("xenstore-list", &["/local/domain/0/many"]);
    assert_eq!(many.lines().count(), 300);
    assert_eq!(many.lines().last(), Some("child-with-a-long-name-0299"));

    // xenstore-watch: the immediate event, then one the guest's write fires (the VMM's wake).
    let mut w = t
        .cmd("xenstore-watch")
        .args(["-n", "2", "/local/domain/1/data"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(w.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "/local/domain/1/data");
    let payload = b"data/from-guest\0x";
    let hdr = XsdSockmsg { r#type: XS_WRITE, req_id: 1, tx_id: 0, len: payload.len() as u32 };
    store.lock().unwrap().request(1, hdr, payload);
    while store.lock().unwrap().pop_output(1).is_some() {}
    server.waker().wake();
    assert_eq!(lines.next().unwrap().unwrap(), "/local/domain/1/data/from-guest");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(st) = w.try_wait().unwrap() {
            assert!(st.success(), "xenstore-watch: {st}");
            break;
        }
        assert!(Instant::now() < deadline, "xenstore-watch did not exit after two events");
        std::thread::sleep(Duration::from_millis(20));
    }

    server.stop();
    assert!(!socket.exists());
    let _ = std::fs::remove_dir_all(&tmp);
}
