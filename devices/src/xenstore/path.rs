//! Path canonicalisation and validation as C xenstored does it (`canonicalize`,
//! `is_valid_nodename` in `tools/xenstored/core.c`).

use xen_abi::io::xs_wire::{XENSTORE_ABS_PATH_MAX, XENSTORE_REL_PATH_MAX};
use xen_abi::Errno;

/// The home directory of `domid`: relative paths are relative to it.
pub fn domain_path(domid: u16) -> String {
    format!("/local/domain/{domid}")
}

/// A path a request names, made absolute: relative paths get `/local/domain/<domid>/`.
/// Returns the absolute path and whether the request named it relatively.
pub fn canonicalize(domid: u16, path: &str) -> Result<(String, bool), Errno> {
    let (abs, relative) = if path.starts_with('/') {
        (path.to_owned(), false)
    } else {
        if path.len() > XENSTORE_REL_PATH_MAX {
            return Err(Errno::EINVAL);
        }
        (format!("{}/{path}", domain_path(domid)), true)
    };
    if !is_valid_nodename(&abs) {
        return Err(Errno::EINVAL);
    }
    Ok((abs, relative))
}

/// An absolute node name: `/`, or `/`-separated non-empty components of `[A-Za-z0-9_@-]`,
/// no trailing `/`, at most `XENSTORE_ABS_PATH_MAX` bytes.
pub fn is_valid_nodename(p: &str) -> bool {
    if !p.starts_with('/') || p.len() > XENSTORE_ABS_PATH_MAX {
        return false;
    }
    if p == "/" {
        return true;
    }
    if p.ends_with('/') || p.contains("//") {
        return false;
    }
    p.bytes().all(|c| c.is_ascii_alphanumeric() || b"/_@-".contains(&c))
}

/// The parent of absolute path `p` (`None` for `/`).
pub fn parent(p: &str) -> Option<&str> {
    if p == "/" {
        return None;
    }
    match p.rfind('/') {
        Some(0) => Some("/"),
        Some(i) => Some(&p[..i]),
        None => None,
    }
}

/// The last component of absolute path `p`.
pub fn basename(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or("")
}

/// `is_child(child, parent)`: `child` is `parent` or lies below it.
pub fn is_child(child: &str, parent: &str) -> bool {
    if parent == "/" {
        return child.starts_with('/');
    }
    child == parent || (child.starts_with(parent) && child.as_bytes().get(parent.len()) == Some(&b'/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_are_under_the_domain_home_and_bad_names_are_einval() {
        assert_eq!(canonicalize(1, "device").unwrap(), ("/local/domain/1/device".into(), true));
        assert_eq!(canonicalize(1, "/a/b").unwrap(), ("/a/b".into(), false));
        for bad in ["/a//b", "/a/", "/a b", "/a/\u{e9}", "a/", "/a.b", ""] {
            assert_eq!(canonicalize(1, bad), Err(Errno::EINVAL), "{bad:?}");
        }
        assert!(canonicalize(1, &"a".repeat(XENSTORE_REL_PATH_MAX + 1)).is_err());
        assert!(canonicalize(1, &format!("/{}", "a".repeat(XENSTORE_ABS_PATH_MAX))).is_err());
        assert!(is_valid_nodename("/"));
    }

    #[test]
    fn parent_basename_and_is_child() {
        assert_eq!(parent("/a/b"), Some("/a"));
        assert_eq!(parent("/a"), Some("/"));
        assert_eq!(parent("/"), None);
        assert_eq!(basename("/a/bc"), "bc");
        assert!(is_child("/a/b", "/a") && is_child("/a", "/a") && is_child("/a", "/"));
        assert!(!is_child("/ab", "/a") && !is_child("/a", "/a/b"));
    }
}
