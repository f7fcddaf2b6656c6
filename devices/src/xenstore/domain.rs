//! The nodes a toolstack writes for a new domain before it runs (libxl's
//! `libxl__domain_make` and `libxl__build_post`; xen-pv-contract.md §7.6).

use xen_abi::Errno;

use super::path::domain_path;
use super::Store;

/// What the store says about a domain at its start.
#[derive(Clone, Debug)]
pub struct DomainEntries {
    pub domid: u16,
    pub name: String,
    /// Boot memory in KiB: both `memory/static-max` and `memory/target`, so the balloon
    /// driver has nothing to do.
    pub mem_kib: u64,
    pub vcpus: u32,
}

/// Nodes under the domain's home that the guest may write (libxl's `rwperm`: owned by the
/// domain, nobody else has access).
const GUEST_WRITABLE: [&str; 11] = [
    "control/shutdown",
    "control/sysrq",
    "control/feature-poweroff",
    "control/feature-reboot",
    "control/feature-suspend",
    "data",
    "drivers",
    "feature",
    "attr",
    "error",
    "device/suspend/event-channel",
];

/// Writes the domain's initial tree, connects it, and fires `@introduceDomain`.
///
/// The home directory, `device`, `control`, `memory`, `cpu` and the values below them are
/// owned by dom0 and readable by the domain; the nodes of [`GUEST_WRITABLE`] are owned by the
/// domain. Values the guest only reads (`name`, `domid`, memory sizes, vCPU availability) are
/// dom0's.
pub fn introduce(store: &mut Store, d: &DomainEntries) -> Result<(), Errno> {
    let home = domain_path(d.domid);
    let owner0_guest_reads = ["n0".to_owned(), format!("r{}", d.domid)];
    let ro: Vec<&str> = owner0_guest_reads.iter().map(String::as_str).collect();
    let rw_owner = format!("n{}", d.domid);

    store.host_write(&home, b"")?;
    store.host_set_perms(&home, &ro)?;
    let kib = d.mem_kib.to_string();
    let domid = d.domid.to_string();
    let mut values: Vec<(String, &[u8])> = vec![
        ("name".into(), d.name.as_bytes()),
        ("domid".into(), domid.as_bytes()),
        ("memory/static-max".into(), kib.as_bytes()),
        ("memory/target".into(), kib.as_bytes()),
        ("device".into(), b""),
        ("control".into(), b""),
    ];
    for cpu in 0..d.vcpus {
        values.push((format!("cpu/{cpu}/availability"), b"online"));
    }
    for (rel, value) in &values {
        store.host_write(&format!("{home}/{rel}"), value)?;
    }
    // Intermediate directories written above inherited the home's permissions already.
    for rel in GUEST_WRITABLE {
        let p = format!("{home}/{rel}");
        store.host_write(&p, b"")?;
        store.host_set_perms(&p, &[&rw_owner])?;
    }
    store.connect(d.domid);
    store.fire_special("@introduceDomain");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xenstore::Quota;
    use xen_abi::io::xs_wire::*;

    fn entries() -> DomainEntries {
        DomainEntries { domid: 1, name: "guest".into(), mem_kib: 524288, vcpus: 2 }
    }

    /// Sends one request as `domid` and returns the reply's type and payload.
    fn ask(store: &mut Store, domid: u16, ty: u32, payload: &[u8]) -> (u32, Vec<u8>) {
        let hdr = XsdSockmsg { r#type: ty, req_id: 7, tx_id: 0, len: payload.len() as u32 };
        store.request(domid, hdr, payload);
        let m = store.pop_output(domid).expect("a reply");
        let ty = u32::from_le_bytes(m[..4].try_into().unwrap());
        (ty, m[16..].to_vec())
    }

    #[test]
    fn the_guest_reads_its_tree_with_relative_paths() {
        let mut s = Store::new(Quota::default());
        introduce(&mut s, &entries()).unwrap();
        assert_eq!(ask(&mut s, 1, XS_READ, b"name\0"), (XS_READ, b"guest".to_vec()));
        assert_eq!(ask(&mut s, 1, XS_READ, b"domid\0"), (XS_READ, b"1".to_vec()));
        assert_eq!(ask(&mut s, 1, XS_READ, b"memory/target\0"), (XS_READ, b"524288".to_vec()));
        assert_eq!(ask(&mut s, 1, XS_READ, b"memory/static-max\0"), (XS_READ, b"524288".to_vec()));
        assert_eq!(ask(&mut s, 1, XS_READ, b"cpu/1/availability\0"), (XS_READ, b"online".to_vec()));
        assert_eq!(ask(&mut s, 1, XS_DIRECTORY, b"device\0"), (XS_DIRECTORY, b"suspend\0".to_vec()));
        assert_eq!(ask(&mut s, 1, XS_READ, b"control/shutdown\0"), (XS_READ, Vec::new()));
    }

    #[test]
    fn the_guest_writes_only_where_libxl_lets_it() {
        let mut s = Store::new(Quota::default());
        introduce(&mut s, &entries()).unwrap();
        for ok in ["control/feature-poweroff\x001", "data/x\0y", "error/e\0msg", "control/shutdown\0"] {
            assert_eq!(ask(&mut s, 1, XS_WRITE, ok.as_bytes()).0, XS_WRITE, "{ok}");
        }
        for refused in ["name\0evil", "memory/target\x001", "device/vbd\0", "cpu/0/availability\0offline"] {
            let (ty, body) = ask(&mut s, 1, XS_WRITE, refused.as_bytes());
            assert_eq!((ty, body), (XS_ERROR, b"EACCES\0".to_vec()), "{refused}");
        }
        // Another domain sees nothing of it.
        assert_eq!(ask(&mut s, 2, XS_READ, b"/local/domain/1/name\0"), (XS_ERROR, b"EACCES\0".to_vec()));
    }

    #[test]
    fn the_first_watch_event_arrives_for_the_control_node() {
        let mut s = Store::new(Quota::default());
        introduce(&mut s, &entries()).unwrap();
        assert_eq!(ask(&mut s, 1, XS_WATCH, b"control/shutdown\0tok\0").0, XS_WATCH);
        let ev = s.pop_output(1).expect("the immediate event");
        assert_eq!(&ev[16..], b"control/shutdown\0tok\0");
        s.host_write("/local/domain/1/control/shutdown", b"poweroff").unwrap();
        let ev = s.pop_output(1).expect("the shutdown event");
        assert_eq!(&ev[16..], b"control/shutdown\0tok\0");
    }
}
