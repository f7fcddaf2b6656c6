//! The node tree and permissions (`struct xs_permissions` semantics of C xenstored).

use std::collections::BTreeMap;

use xen_abi::Errno;

use super::path::{basename, parent};

/// One permission entry: the first of a node's list names the owner and everyone's default
/// access; further entries grant access to one domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Perm {
    /// The domain.
    pub domid: u16,
    /// 'r' or 'b'.
    pub read: bool,
    /// 'w' or 'b'.
    pub write: bool,
}

impl Perm {
    /// The wire form: a letter (`n`, `r`, `w`, `b`) and the decimal domid.
    pub fn to_wire(self) -> String {
        let c = match (self.read, self.write) {
            (false, false) => 'n',
            (true, false) => 'r',
            (false, true) => 'w',
            (true, true) => 'b',
        };
        format!("{c}{}", self.domid)
    }

    /// Parses the wire form; anything else is `EINVAL`.
    pub fn parse(s: &[u8]) -> Result<Perm, Errno> {
        let (&c, num) = s.split_first().ok_or(Errno::EINVAL)?;
        let (read, write) = match c {
            b'n' => (false, false),
            b'r' => (true, false),
            b'w' => (false, true),
            b'b' => (true, true),
            _ => return Err(Errno::EINVAL),
        };
        if num.is_empty() || num.len() > 5 || !num.iter().all(u8::is_ascii_digit) {
            return Err(Errno::EINVAL);
        }
        let domid: u32 =
            std::str::from_utf8(num).map_err(|_| Errno::EINVAL)?.parse().map_err(|_| Errno::EINVAL)?;
        let domid = u16::try_from(domid).map_err(|_| Errno::EINVAL)?;
        Ok(Perm { domid, read, write })
    }
}

/// What a domain may do with a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    /// May read it.
    pub read: bool,
    /// May write it.
    pub write: bool,
    /// Owns it (or is privileged): may change its permissions.
    pub owner: bool,
}

/// `perm_for_conn`: dom0 and the owner have full access; otherwise the domain's own entry,
/// else the default in the first entry.
pub fn access(domid: u16, perms: &[Perm]) -> Access {
    let Some(first) = perms.first() else {
        return Access { read: domid == 0, write: domid == 0, owner: domid == 0 };
    };
    if domid == 0 || first.domid == domid {
        return Access { read: true, write: true, owner: true };
    }
    let p = perms[1..].iter().find(|p| p.domid == domid).unwrap_or(first);
    Access { read: p.read, write: p.write, owner: false }
}

/// A node.
#[derive(Clone, Debug)]
pub struct Node {
    /// Its value.
    pub value: Vec<u8>,
    /// Child names in creation order.
    pub children: Vec<String>,
    /// Owner + default first, then per-domain entries.
    pub perms: Vec<Perm>,
    /// Changes whenever the node (value, children or perms) changes.
    pub generation: u64,
}

impl Node {
    /// The size the entry-size quota counts: value plus NUL-terminated child names.
    pub fn size(&self) -> usize {
        self.value.len() + self.children.iter().map(|c| c.len() + 1).sum::<usize>()
    }
}

/// All nodes by absolute path, and how many each domain owns.
#[derive(Clone, Debug)]
pub struct Tree {
    nodes: BTreeMap<String, Node>,
    owned: BTreeMap<u16, usize>,
}

impl Tree {
    /// A tree with `/`, `/local`, `/local/domain` owned by dom0, readable by nobody else
    /// except `/local/domain` (`r0` is what C xenstored's `setup_structure` leaves).
    pub fn new() -> Tree {
        let mut t = Tree { nodes: BTreeMap::new(), owned: BTreeMap::new() };
        let p = vec![Perm { domid: 0, read: false, write: false }];
        t.insert(
            "/".into(),
            Node { value: Vec::new(), children: Vec::new(), perms: p.clone(), generation: 0 },
        );
        t.create("/local", p.clone(), 0);
        t.create("/local/domain", p, 0);
        t
    }

    /// The node at `path`.
    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path)
    }

    /// How many nodes `domid` owns.
    pub fn owned(&self, domid: u16) -> usize {
        self.owned.get(&domid).copied().unwrap_or(0)
    }

    /// The nearest existing ancestor of `path` (or `path` itself).
    pub fn nearest(&self, mut path: &str) -> &Node {
        loop {
            if let Some(n) = self.nodes.get(path) {
                return n;
            }
            path = parent(path).unwrap_or("/");
        }
    }

    fn insert(&mut self, path: String, node: Node) {
        *self.owned.entry(node.perms[0].domid).or_default() += 1;
        if let Some(old) = self.nodes.insert(path, node) {
            self.disown(old.perms[0].domid);
        }
    }

    fn disown(&mut self, domid: u16) {
        if let Some(c) = self.owned.get_mut(&domid) {
            *c = c.saturating_sub(1);
        }
    }

    /// Replaces (or with `None` removes) the node at `path` without touching its relatives:
    /// the transaction commit copies nodes with this.
    pub fn put(&mut self, path: &str, node: Option<Node>) {
        match node {
            Some(n) => self.insert(path.to_owned(), n),
            None => {
                if let Some(old) = self.nodes.remove(path) {
                    self.disown(old.perms[0].domid);
                }
            }
        }
    }

    /// Mutable access to an existing node.
    pub fn get_mut(&mut self, path: &str) -> Option<&mut Node> {
        self.nodes.get_mut(path)
    }

    /// Creates `path` (its parent must exist) with an empty value; returns the paths whose
    /// nodes changed (the new node and its parent).
    pub fn create(&mut self, path: &str, perms: Vec<Perm>, generation: u64) {
        if let Some(par) = parent(path) {
            if let Some(p) = self.nodes.get_mut(par) {
                p.children.push(basename(path).to_owned());
                p.generation = generation;
            }
        }
        self.insert(path.to_owned(), Node { value: Vec::new(), children: Vec::new(), perms, generation });
    }

    /// Removes `path` and everything below it; returns the removed paths.
    pub fn remove(&mut self, path: &str, generation: u64) -> Vec<String> {
        if let Some(par) = parent(path) {
            let name = basename(path);
            if let Some(p) = self.nodes.get_mut(par) {
                p.children.retain(|c| c != name);
                p.generation = generation;
            }
        }
        let mut removed = Vec::new();
        let mut stack = vec![path.to_owned()];
        while let Some(p) = stack.pop() {
            if let Some(n) = self.nodes.remove(&p) {
                self.disown(n.perms[0].domid);
                for c in &n.children {
                    stack.push(if p == "/" { format!("/{c}") } else { format!("{p}/{c}") });
                }
                removed.push(p);
            }
        }
        removed
    }
}

impl Default for Tree {
    fn default() -> Tree {
        Tree::new()
    }
}
