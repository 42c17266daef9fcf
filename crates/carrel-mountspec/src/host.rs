//! The one host fact the planner needs: whether a `--mount type=bind` source exists. Injectable,
//! so tests run against a fixture instead of the real filesystem.

use std::collections::BTreeSet;
use std::io;

/// Answers whether host paths exist, like Go's `os.Stat` (symlinks followed).
pub trait HostPaths {
    /// `Ok(true)` if `path` exists, `Ok(false)` if it does not; any other failure (permission
    /// denied, not a directory, …) is returned as is and reported by the daemon.
    fn exists(&self, path: &str) -> io::Result<bool>;
}

/// The real filesystem of this host.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealHost;

impl HostPaths for RealHost {
    fn exists(&self, path: &str) -> io::Result<bool> {
        match std::fs::metadata(path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// A fixed set of existing host paths: each listed path and all its ancestors exist, nothing
/// else does. Paths are compared after cleaning.
#[derive(Debug, Clone, Default)]
pub struct FixedHost {
    paths: BTreeSet<String>,
}

impl FixedHost {
    /// A host on which exactly `paths` (and their parents) exist.
    pub fn new<I, S>(paths: I) -> FixedHost
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut set = BTreeSet::new();
        set.insert("/".to_string());
        for p in paths {
            let mut p = crate::gostr::clean(p.as_ref());
            while p != "/" && p != "." && !p.is_empty() {
                set.insert(p.clone());
                p = match p.rfind('/') {
                    Some(0) => "/".to_string(),
                    Some(i) => p[..i].to_string(),
                    None => break,
                };
            }
        }
        FixedHost { paths: set }
    }
}

impl HostPaths for FixedHost {
    fn exists(&self, path: &str) -> io::Result<bool> {
        Ok(self.paths.contains(&crate::gostr::clean(path)))
    }
}

/// Go's text for a failed `os.Stat`: `stat <path>: <lower-case strerror>`.
pub(crate) fn stat_error_text(path: &str, err: &io::Error) -> String {
    let text = err.to_string();
    let text = match text.find(" (os error") {
        Some(i) => &text[..i],
        None => &text,
    };
    let mut chars = text.chars();
    let text = match chars.next() {
        Some(first) => first.to_lowercase().collect::<String>() + chars.as_str(),
        None => String::new(),
    };
    format!("stat {path}: {text}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_host_has_ancestors() {
        let h = FixedHost::new(["/srv/data", "/home/user/proj/content"]);
        for p in [
            "/",
            "/srv",
            "/srv/data",
            "/srv/data/",
            "//srv//data",
            "/home/user/proj",
        ] {
            assert!(h.exists(p).unwrap(), "{p}");
        }
        for p in ["/does/not/exist", "/srv/dat", "srv/data", "/srv/data/x"] {
            assert!(!h.exists(p).unwrap(), "{p}");
        }
    }

    #[test]
    fn stat_errors_read_like_go() {
        let e = io::Error::from_raw_os_error(13);
        assert_eq!(stat_error_text("/x", &e), "stat /x: permission denied");
        let e = io::Error::from_raw_os_error(20);
        assert_eq!(stat_error_text("/x/y", &e), "stat /x/y: not a directory");
    }

    #[test]
    fn real_host() {
        assert!(RealHost.exists("/").unwrap());
        assert!(!RealHost.exists("/does/not/exist/carrel-mountspec").unwrap());
    }
}
