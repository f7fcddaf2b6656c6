use xen_abi::io::xs_wire::*;

use super::{ConnId, Quota, Store};

fn req(s: &mut Store, dom: impl Into<ConnId> + Copy, ty: u32, tx: u32, payload: &[u8]) -> (u32, Vec<u8>) {
    s.request(dom, XsdSockmsg { r#type: ty, req_id: 7, tx_id: tx, len: payload.len() as u32 }, payload);
    // Skip watch events left from earlier requests.
    let m = std::iter::from_fn(|| s.pop_output(dom))
        .find(|m| m[..4] != XS_WATCH_EVENT.to_le_bytes())
        .expect("a reply");
    assert_eq!(&m[4..8], &7u32.to_le_bytes(), "req_id echoed");
    (u32::from_le_bytes(m[..4].try_into().unwrap()), m[16..].to_vec())
}

fn err(s: &mut Store, dom: impl Into<ConnId> + Copy, ty: u32, tx: u32, payload: &[u8]) -> String {
    let (t, p) = req(s, dom, ty, tx, payload);
    assert_eq!(t, XS_ERROR, "expected an error, got {:?}", String::from_utf8_lossy(&p));
    String::from_utf8(p[..p.len() - 1].to_vec()).unwrap()
}

fn ok(s: &mut Store, dom: impl Into<ConnId> + Copy, ty: u32, tx: u32, payload: &[u8]) -> Vec<u8> {
    let (t, p) = req(s, dom, ty, tx, payload);
    assert_eq!(t, ty, "expected success, got {:?}", String::from_utf8_lossy(&p));
    p
}

/// A store with dom1's home as the toolstack leaves it: owned by dom0, readable by dom1.
fn store() -> Store {
    let mut s = Store::new(Quota::default());
    s.host_write("/local/domain/1/name", b"guest").unwrap();
    s.host_set_perms("/local/domain/1", &["n0", "r1"]).unwrap();
    s.host_set_perms("/local/domain/1/name", &["n0", "r1"]).unwrap();
    s.host_write("/local/domain/1/data", b"").unwrap();
    s.host_set_perms("/local/domain/1/data", &["b1"]).unwrap();
    s.connect(1);
    s.connect(2);
    s
}

#[test]
fn read_write_mkdir_directory_rm_with_relative_paths() {
    let mut s = store();
    assert_eq!(ok(&mut s, 1, XS_READ, 0, b"name\0"), b"guest");
    assert_eq!(ok(&mut s, 1, XS_WRITE, 0, b"data/a/b\0hello"), b"OK\0");
    assert_eq!(ok(&mut s, 1, XS_READ, 0, b"/local/domain/1/data/a/b\0"), b"hello");
    assert_eq!(ok(&mut s, 1, XS_READ, 0, b"data/a\0"), b"", "missing parents created empty");
    ok(&mut s, 1, XS_MKDIR, 0, b"data/c\0");
    ok(&mut s, 1, XS_MKDIR, 0, b"data/c\0");
    assert_eq!(ok(&mut s, 1, XS_DIRECTORY, 0, b"data\0"), b"a\0c\0");
    assert_eq!(err(&mut s, 1, XS_READ, 0, b"data/zz\0"), "ENOENT");
    ok(&mut s, 1, XS_RM, 0, b"data/a\0");
    assert_eq!(err(&mut s, 1, XS_READ, 0, b"data/a/b\0"), "ENOENT");
    ok(&mut s, 1, XS_RM, 0, b"data/a\0"); // missing node, existing parent: fine
    assert_eq!(err(&mut s, 1, XS_RM, 0, b"data/a/b\0"), "ENOENT");
    assert_eq!(err(&mut s, 0, XS_RM, 0, b"/\0"), "EINVAL");
    assert_eq!(ok(&mut s, 1, XS_GET_DOMAIN_PATH, 0, b"3\0"), b"/local/domain/3\0");
    assert_eq!(err(&mut s, 1, XS_GET_DOMAIN_PATH, 0, b"x\0"), "EINVAL");
    let part = ok(&mut s, 1, XS_DIRECTORY_PART, 0, b"data\x000\0");
    assert!(part.ends_with(b"\0c\0\0"), "{part:?}");
}

#[test]
fn malformed_arguments_are_einval_and_unknown_types_enosys() {
    let mut s = store();
    assert_eq!(err(&mut s, 1, XS_READ, 0, b"name"), "EINVAL", "no NUL");
    assert_eq!(err(&mut s, 1, XS_READ, 0, b"name\0x\0"), "EINVAL", "two args");
    assert_eq!(err(&mut s, 1, XS_READ, 0, b""), "EINVAL");
    assert_eq!(err(&mut s, 1, XS_READ, 0, b"a//b\0"), "EINVAL");
    assert_eq!(err(&mut s, 1, XS_READ, 0, b"\xff\0"), "EINVAL");
    assert_eq!(err(&mut s, 1, XS_WRITE, 0, b"data/x"), "EINVAL");
    assert_eq!(err(&mut s, 1, XS_WATCH, 0, b"data\0"), "EINVAL");
    assert_eq!(err(&mut s, 1, XS_SET_PERMS, 0, b"data\0"), "EINVAL");
    assert_eq!(err(&mut s, 1, XS_SET_PERMS, 0, b"data\0x1\0"), "EINVAL");
    assert_eq!(err(&mut s, 1, XS_SET_PERMS, 0, b"data\0b99999\0"), "EINVAL");
    assert_eq!(err(&mut s, 1, XS_WATCH_EVENT, 0, b""), "ENOSYS");
    assert_eq!(err(&mut s, 1, 20, 0, b""), "ENOSYS");
    assert_eq!(err(&mut s, 1, 0xdead, 0, b""), "ENOSYS");
    for t in [XS_INTRODUCE, XS_RELEASE, XS_CONTROL, XS_RESUME, XS_SET_TARGET, XS_IS_DOMAIN_INTRODUCED] {
        assert_eq!(err(&mut s, 1, t, 0, b"1\0"), "EACCES");
    }
    assert_eq!(err(&mut s, 1, XS_READ, 99, b"name\0"), "ENOENT", "unknown transaction");
}

#[test]
fn permissions_owner_acl_default_and_dom0() {
    let mut s = store();
    assert_eq!(err(&mut s, 1, XS_WRITE, 0, b"name\0x"), "EACCES", "read-only for the guest");
    assert_eq!(err(&mut s, 1, XS_WRITE, 0, b"newkey\0x"), "EACCES", "home not writable");
    assert_eq!(err(&mut s, 2, XS_READ, 0, b"/local/domain/1/name\0"), "EACCES");
    assert_eq!(err(&mut s, 2, XS_READ, 0, b"/local/domain/1/nothing\0"), "EACCES", "no leak of absence");
    assert_eq!(err(&mut s, 1, XS_RM, 0, b"/local/domain/1\0"), "EACCES");
    assert_eq!(err(&mut s, 1, XS_SET_PERMS, 0, b"name\0b1\0"), "EACCES", "not the owner");
    ok(&mut s, 1, XS_WRITE, 0, b"data/k\0v");
    assert_eq!(
        ok(&mut s, 1, XS_GET_PERMS, 0, b"data/k\0"),
        b"b1\0",
        "new node: parent's perms, owner = creator"
    );
    ok(&mut s, 1, XS_SET_PERMS, 0, b"data/k\0n1\0r2\0");
    assert_eq!(ok(&mut s, 2, XS_READ, 0, b"/local/domain/1/data/k\0"), b"v", "ACL entry");
    assert_eq!(err(&mut s, 2, XS_WRITE, 0, b"/local/domain/1/data/k\0x"), "EACCES");
    assert_eq!(err(&mut s, 1, XS_SET_PERMS, 0, b"data/k\0n2\0"), "EPERM", "a guest cannot give nodes away");
    assert_eq!(s.host(XS_READ, b"/local/domain/1/data/k\0").unwrap(), b"v", "dom0 reads everything");
}

#[test]
fn quotas_bound_a_guest() {
    let mut s = Store::new(Quota { nodes: 5, watches: 2, transactions: 1, ..Quota::default() });
    s.host_write("/local/domain/1/data", b"").unwrap();
    s.host_set_perms("/local/domain/1/data", &["b1"]).unwrap();
    // `data` is owned by dom1 and counts: four more nodes fit.
    for i in 0..4 {
        ok(&mut s, 1, XS_MKDIR, 0, format!("data/n{i}\0").as_bytes());
    }
    assert_eq!(err(&mut s, 1, XS_MKDIR, 0, b"data/n9\0"), "ENOSPC");
    ok(&mut s, 1, XS_RM, 0, b"data/n0\0");
    ok(&mut s, 1, XS_MKDIR, 0, b"data/n9\0");
    let big = [b"data/n1\0".as_slice(), &[b'x'; 2049]].concat();
    assert_eq!(err(&mut s, 1, XS_WRITE, 0, &big), "ENOSPC");
    ok(&mut s, 1, XS_WRITE, 0, &big[..8 + 2048]);
    ok(&mut s, 1, XS_WATCH, 0, b"data\0a\0");
    ok(&mut s, 1, XS_WATCH, 0, b"data\0b\0");
    assert_eq!(err(&mut s, 1, XS_WATCH, 0, b"data\0c\0"), "E2BIG");
    ok(&mut s, 1, XS_TRANSACTION_START, 0, b"\0");
    assert_eq!(err(&mut s, 1, XS_TRANSACTION_START, 0, b"\0"), "ENOSPC");
    assert_eq!(err(&mut s, 1, XS_SET_PERMS, 0, b"data/n1\0b1\0r2\0r3\0r4\0r5\0r6\0"), "ENOSPC");
}

fn events(s: &mut Store, dom: impl Into<ConnId> + Copy) -> Vec<String> {
    let mut v = Vec::new();
    while let Some(m) = s.pop_output(dom) {
        assert_eq!(&m[..4], &XS_WATCH_EVENT.to_le_bytes());
        v.push(String::from_utf8_lossy(&m[16..]).replace('\0', "|"));
    }
    v
}

#[test]
fn watches_fire_immediately_then_on_changes_below_with_relative_paths() {
    let mut s = store();
    ok(&mut s, 1, XS_WATCH, 0, b"data\0tok\0");
    assert_eq!(events(&mut s, 1), ["data|tok|"], "the immediate event");
    assert_eq!(err(&mut s, 1, XS_WATCH, 0, b"data\0tok\0"), "EEXIST");
    ok(&mut s, 1, XS_WATCH, 0, b"/local/domain/1/data/x/y\0abs\0");
    events(&mut s, 1);
    ok(&mut s, 1, XS_WRITE, 0, b"data/x\0v");
    assert_eq!(events(&mut s, 1), ["data/x|tok|"]);
    s.host_write("/local/domain/1/data/x/y", b"1").unwrap();
    assert_eq!(events(&mut s, 1), ["data/x/y|tok|", "/local/domain/1/data/x/y|abs|"]);
    ok(&mut s, 1, XS_RM, 0, b"data/x\0");
    assert_eq!(
        events(&mut s, 1),
        ["data/x|tok|", "/local/domain/1/data/x/y|abs|"],
        "removal reaches watches below"
    );
    ok(&mut s, 1, XS_UNWATCH, 0, b"data\0tok\0");
    assert_eq!(err(&mut s, 1, XS_UNWATCH, 0, b"data\0tok\0"), "ENOENT");
    s.host_write("/local/domain/1/data/z", b"1").unwrap();
    assert!(events(&mut s, 1).is_empty());
    // Another domain does not see changes it may not read.
    ok(&mut s, 2, XS_WATCH, 0, b"/local/domain/1\0t\0");
    events(&mut s, 2);
    s.host_write("/local/domain/1/name", b"n").unwrap();
    assert!(events(&mut s, 2).is_empty());
    ok(&mut s, 2, XS_WATCH, 0, b"@releaseDomain\0r\0");
    events(&mut s, 2);
    s.fire_special("@releaseDomain");
    assert_eq!(events(&mut s, 2), ["@releaseDomain|r|"]);
    ok(&mut s, 2, XS_RESET_WATCHES, 0, b"");
    s.fire_special("@releaseDomain");
    assert!(events(&mut s, 2).is_empty());
}

fn tx_start(s: &mut Store, dom: impl Into<ConnId> + Copy) -> u32 {
    let p = ok(s, dom, XS_TRANSACTION_START, 0, b"\0");
    std::str::from_utf8(&p[..p.len() - 1]).unwrap().parse().unwrap()
}

#[test]
fn transactions_isolate_commit_atomically_and_conflict_with_eagain() {
    let mut s = store();
    ok(&mut s, 1, XS_WATCH, 0, b"data\0w\0");
    events(&mut s, 1);
    let t = tx_start(&mut s, 1);
    assert_eq!(err(&mut s, 1, XS_TRANSACTION_START, t, b"\0"), "EBUSY");
    ok(&mut s, 1, XS_WRITE, t, b"data/a\0in-tx");
    assert_eq!(ok(&mut s, 1, XS_READ, t, b"data/a\0"), b"in-tx");
    assert_eq!(err(&mut s, 1, XS_READ, 0, b"data/a\0"), "ENOENT", "invisible outside");
    assert!(events(&mut s, 1).is_empty(), "no events before commit");
    assert_eq!(err(&mut s, 1, XS_TRANSACTION_END, t, b"X\0"), "EINVAL");
    ok(&mut s, 1, XS_TRANSACTION_END, t, b"T\0");
    assert_eq!(events(&mut s, 1), ["data/a|w|"], "events at commit");
    assert_eq!(ok(&mut s, 1, XS_READ, 0, b"data/a\0"), b"in-tx");
    assert_eq!(err(&mut s, 1, XS_TRANSACTION_END, t, b"T\0"), "ENOENT");
    assert_eq!(err(&mut s, 1, XS_TRANSACTION_END, 0, b"T\0"), "ENOENT");

    // A node the transaction read changes underneath: the commit fails and changes nothing.
    let t = tx_start(&mut s, 1);
    ok(&mut s, 1, XS_READ, t, b"data/a\0");
    ok(&mut s, 1, XS_WRITE, t, b"data/b\0x");
    s.host_write("/local/domain/1/data/a", b"other").unwrap();
    events(&mut s, 1);
    assert_eq!(err(&mut s, 1, XS_TRANSACTION_END, t, b"T\0"), "EAGAIN");
    assert_eq!(err(&mut s, 1, XS_READ, 0, b"data/b\0"), "ENOENT");
    // An unrelated change does not conflict; abort discards.
    let t = tx_start(&mut s, 1);
    ok(&mut s, 1, XS_WRITE, t, b"data/c\0x");
    s.host_write("/local/domain/0/unrelated", b"1").unwrap();
    ok(&mut s, 1, XS_TRANSACTION_END, t, b"T\0");
    let t = tx_start(&mut s, 1);
    ok(&mut s, 1, XS_RM, t, b"data/c\0");
    ok(&mut s, 1, XS_TRANSACTION_END, t, b"F\0");
    assert_eq!(ok(&mut s, 1, XS_READ, 0, b"data/c\0"), b"x");
}

#[test]
fn socket_clients_are_dom0_connections_with_their_own_watches_and_transactions() {
    let mut s = store();
    let a = s.open_client();
    let b = s.open_client();
    assert_ne!(a, b);
    assert_eq!(a.domid(), 0);
    // dom0's rights: a guest's read-only node is writable, privileged types are not EACCES.
    ok(&mut s, a, XS_WRITE, 0, b"/local/domain/1/name\0renamed");
    assert_ne!(err(&mut s, a, XS_CONTROL, 0, b"x\0"), "EACCES");
    assert_eq!(ok(&mut s, a, XS_GET_PERMS, 0, b"/local/domain/1/name\0"), b"n0\0r1\0");
    // Relative paths are dom0's.
    ok(&mut s, a, XS_WRITE, 0, b"rel\0v");
    assert_eq!(s.host(XS_READ, b"/local/domain/0/rel\0").unwrap(), b"v");

    // The same watch path and token on two clients: each its own, each fired.
    ok(&mut s, a, XS_WATCH, 0, b"/local/domain/1/data\0t\0");
    ok(&mut s, b, XS_WATCH, 0, b"/local/domain/1/data\0t\0");
    assert_eq!(events(&mut s, a), ["/local/domain/1/data|t|"]);
    assert_eq!(events(&mut s, b), ["/local/domain/1/data|t|"]);
    ok(&mut s, 1, XS_WRITE, 0, b"data/x\0from the guest");
    assert_eq!(events(&mut s, a), ["/local/domain/1/data/x|t|"]);
    assert_eq!(events(&mut s, b), ["/local/domain/1/data/x|t|"]);

    // A transaction belongs to its connection.
    let t = tx_start(&mut s, a);
    ok(&mut s, a, XS_WRITE, t, b"/local/domain/1/data/y\0in-tx");
    assert_eq!(err(&mut s, b, XS_READ, t, b"/local/domain/1/data/y\0"), "ENOENT");
    assert_eq!(err(&mut s, 1, XS_READ, t, b"data/y\0"), "ENOENT");

    // Disconnecting aborts it and drops the watches and queued output; others go on.
    ok(&mut s, a, XS_READ, 0, b"rel\0");
    s.request(a, XsdSockmsg { r#type: XS_READ, req_id: 1, tx_id: 0, len: 5 }, b"rel\0");
    assert_eq!(s.queued(a), 1);
    s.disconnect(a);
    assert_eq!(s.queued(a), 0);
    assert_eq!(err(&mut s, b, XS_READ, 0, b"/local/domain/1/data/y\0"), "ENOENT");
    ok(&mut s, 1, XS_WRITE, 0, b"data/z\0v");
    assert_eq!(events(&mut s, b), ["/local/domain/1/data/z|t|"]);
    assert_eq!(s.queued(a), 0, "no events for a closed connection");
    // Reconnecting under the same id would be a new connection: no old transaction.
    assert_eq!(err(&mut s, a, XS_TRANSACTION_END, t, b"T\0"), "ENOENT");
    s.disconnect(a);
    s.disconnect(ConnId::Socket(999)); // unknown: ignored
}

#[test]
fn a_socket_client_not_reading_loses_events_not_memory() {
    let mut s = store();
    let a = s.open_client();
    ok(&mut s, a, XS_WATCH, 0, b"/local/domain/1/data\0t\0");
    for i in 0..1000 {
        s.host_write(&format!("/local/domain/1/data/k{i}"), b"").unwrap();
    }
    assert_eq!(s.queued(a), Quota::default().outstanding * 4);
}

#[test]
fn a_reply_larger_than_a_message_is_e2big() {
    let mut s = store();
    for i in 0..200 {
        s.host_write(&format!("/local/domain/0/big/a-rather-long-child-name-{i:04}"), b"").unwrap();
    }
    assert_eq!(err(&mut s, 0, XS_DIRECTORY, 0, b"/local/domain/0/big\0"), "E2BIG");
    // XS_DIRECTORY_PART, which libxenstore falls back to on E2BIG, pages through them.
    let part = ok(&mut s, 0, XS_DIRECTORY_PART, 0, b"/local/domain/0/big\x000\0");
    assert!(part.len() <= XENSTORE_PAYLOAD_MAX);
}

#[test]
fn call_returns_the_reply_and_leaves_the_watch_events_queued() {
    let mut s = store();
    let a = s.open_client();
    ok(&mut s, a, XS_WATCH, 0, b"/local/domain/1/data\0early\0");
    // The immediate event of the first watch is still queued when the second is set up.
    assert_eq!(s.call(a, XS_WATCH, b"/local/domain/1/data/x\0late\0"), Ok(b"OK\0".to_vec()));
    assert_eq!(s.call(a, XS_READ, b"/local/domain/1/nothing\0"), Err(xen_abi::Errno::ENOENT));
    assert_eq!(events(&mut s, a), ["/local/domain/1/data|early|", "/local/domain/1/data/x|late|"]);
    // host() still drops what it queued for dom0, and reads its own reply, not an event.
    ok(&mut s, 0, XS_WATCH, 0, b"/local/domain/1/data\0mine\0");
    assert_eq!(s.host(XS_WRITE, b"/local/domain/1/data/y\0v"), Ok(b"OK\0".to_vec()));
    assert_eq!(s.queued(0), 0);
}

#[test]
fn host_reads_lists_removes_and_makes_directories_as_dom0() {
    let mut s = store();
    s.host_write("/local/domain/1/data/a/b", b"v").unwrap();
    s.host_set_perms("/local/domain/1/data/a/b", &["n1"]).unwrap();
    assert_eq!(s.host_read("/local/domain/1/data/a/b"), Ok(&b"v"[..]));
    assert_eq!(s.host_read("/local/domain/1/data/none"), Err(xen_abi::Errno::ENOENT));
    assert_eq!(s.host_read("relative/path"), Err(xen_abi::Errno::EINVAL));
    assert_eq!(s.host_read("/bad//path"), Err(xen_abi::Errno::EINVAL));
    assert_eq!(s.host_directory("/local/domain/1/data/a"), Ok(&["b".to_owned()][..]));
    s.host_mkdir("/local/domain/1/data/a/c").unwrap();
    assert_eq!(s.host_directory("/local/domain/1/data/a").unwrap().len(), 2);
    s.host_rm("/local/domain/1/data/a").unwrap();
    assert_eq!(s.host_directory("/local/domain/1/data/a"), Err(xen_abi::Errno::ENOENT));
    s.host_rm("/local/domain/1/data/a").unwrap(); // already gone: no error
}
