//! `diff`: the changes of a container's filesystem against its image, with Docker's answer.
//!
//! Docker's overlay2 driver answers `GET /containers/{id}/changes` with a comparison of two
//! whole trees (the container's and the image's, `archive.ChangesDirs`): a path only in the
//! container is `A` (with everything below it), a path only in the image is `D` (alone, not
//! what was below it), a path in both is `C` when its mode, owner, device number, or — for
//! non-directories — size or modification time differ (`statDifferent`, times equal to the
//! second when one side has no nanoseconds) or its `security.capability` differs; a directory
//! that contains changes is `C` too.
//!
//! carrel gets the same answer from the overlay upper directory alone: a path that is not in the
//! upper directory is the image's own and unchanged, so only the upper directory is walked and
//! each entry is looked up in the image's layers (top first, stopping at a whiteout, at a
//! non-directory, or below an opaque directory). A whiteout is `D` when the image has the path;
//! an opaque directory hides everything the image had below it, so the image's names there that
//! the container does not have again are `D`. Cost: one walk of the upper directory and, per
//! entry, one `lstat` per image layer that has its parent directory — proportional to the
//! changes, independent of the image's size.
//!
//! The `copy` driver keeps full trees, so its diff walks the container's whole tree against the
//! image's (Docker's `vfs` does the same).
//!
//! The paths of Docker's init layer (`/etc/hosts`, `/etc/resolv.conf`, `/etc/hostname`, `/proc`,
//! `/sys`, `/dev/…`, [`INIT_PATHS`]), which the runtime creates as mount points when the image
//! lacks them, are counted as part of the image, as Docker counts its init layer: never `A`, `C`
//! only when something else changed below them.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use carrel_core::fs::proc_fd_path;
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Stat};

use super::{Change, ChangeKind};

/// Paths Docker keeps in a container's init layer (and their parent directories).
pub const INIT_PATHS: &[&str] = &[
    "/.dockerenv",
    "/dev",
    "/dev/console",
    "/dev/pts",
    "/dev/shm",
    "/etc",
    "/etc/hostname",
    "/etc/hosts",
    "/etc/mtab",
    "/etc/resolv.conf",
    "/proc",
    "/sys",
];

const OPAQUE: &str = "trusted.overlay.opaque";
const CAPABILITY: &str = "security.capability";

fn ft(st: &Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode)
}

fn is_whiteout(st: &Stat) -> bool {
    ft(st) == FileType::CharacterDevice && st.st_rdev == 0
}

/// An xattr of `name` in the directory `dir`, without following `name`.
fn xattr_at(dir: BorrowedFd<'_>, name: &OsStr, key: &str) -> io::Result<Option<Vec<u8>>> {
    let path = proc_fd_path(dir).join(name);
    let mut buf = vec![0u8; 256];
    loop {
        match rfs::lgetxattr(&path, key, &mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(Some(buf));
            }
            Err(rustix::io::Errno::RANGE) if buf.len() < 1 << 16 => buf.resize(buf.len() * 4, 0),
            Err(rustix::io::Errno::NODATA) | Err(rustix::io::Errno::NOTSUP) => return Ok(None),
            Err(rustix::io::Errno::NOENT) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
}

fn is_opaque(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<bool> {
    Ok(xattr_at(dir, name, OPAQUE)?.as_deref() == Some(b"y"))
}

/// Names in a directory (without `.` and `..`), sorted bytewise.
fn names(dir: BorrowedFd<'_>) -> io::Result<Vec<OsString>> {
    let fd = rfs::openat(
        dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut out = Vec::new();
    for entry in rfs::Dir::new(fd)? {
        let entry = entry?;
        let n = entry.file_name().to_bytes();
        if n != b"." && n != b".." {
            out.push(OsString::from(OsStr::from_bytes(n)));
        }
    }
    out.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(out)
}

fn open_dir(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<OwnedFd> {
    Ok(rfs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

fn lstat_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Option<Stat>> {
    match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(rustix::io::Errno::NOENT) | Err(rustix::io::Errno::NOTDIR) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The image's side of one directory: the directories (one per layer, top first) that make it
/// up. With `overlay` false it is one full tree (the `copy` driver) and whiteouts and opaque
/// markers have no meaning.
struct BaseDir {
    dirs: Vec<OwnedFd>,
}

impl BaseDir {
    fn empty() -> BaseDir {
        BaseDir { dirs: Vec::new() }
    }

    /// The image's roots: every layer down to the first opaque root.
    fn roots(layers: &[PathBuf], overlay: bool) -> io::Result<BaseDir> {
        let mut dirs = Vec::new();
        for l in layers {
            let fd = rfs::open(
                l,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            let opaque =
                overlay && xattr_at(fd.as_fd(), OsStr::new("."), OPAQUE)?.as_deref() == Some(b"y");
            dirs.push(fd);
            if opaque {
                break;
            }
        }
        Ok(BaseDir { dirs })
    }

    /// What the image has at `name` in this directory, and (for a directory) its own layers.
    fn lookup(&self, name: &OsStr, overlay: bool) -> io::Result<Option<(Stat, BaseDir)>> {
        let mut found: Option<Stat> = None;
        let mut next = Vec::new();
        for d in &self.dirs {
            let Some(st) = lstat_at(d.as_fd(), name)? else {
                continue;
            };
            if overlay && is_whiteout(&st) {
                break;
            }
            let first = found.is_none();
            if first {
                found = Some(st);
            }
            if ft(&st) != FileType::Directory {
                // A non-directory ends the merge (and hides lower layers when it is the top).
                break;
            }
            if !first && found.as_ref().is_some_and(|f| ft(f) != FileType::Directory) {
                break;
            }
            next.push(open_dir(d.as_fd(), name)?);
            if overlay && is_opaque(d.as_fd(), name)? {
                break;
            }
        }
        Ok(found.map(|st| (st, BaseDir { dirs: next })))
    }

    /// The names the image shows in this directory.
    fn visible_names(&self, overlay: bool) -> io::Result<Vec<OsString>> {
        let mut seen: HashSet<OsString> = HashSet::new();
        let mut out = Vec::new();
        for d in &self.dirs {
            for n in names(d.as_fd())? {
                if !seen.insert(n.clone()) {
                    continue;
                }
                if overlay && lstat_at(d.as_fd(), &n)?.is_some_and(|st| is_whiteout(&st)) {
                    continue;
                }
                out.push(n);
            }
        }
        Ok(out)
    }
}

/// Docker's `sameFsTime`: equal, or equal to the second when one side has no nanoseconds (tar
/// keeps whole seconds).
fn same_time(a: &Stat, b: &Stat) -> bool {
    (a.st_mtime, a.st_mtime_nsec) == (b.st_mtime, b.st_mtime_nsec)
        || (a.st_mtime == b.st_mtime && (a.st_mtime_nsec == 0 || b.st_mtime_nsec == 0))
}

/// Docker's `statDifferent`.
fn stat_different(old: &Stat, new: &Stat) -> bool {
    old.st_mode != new.st_mode
        || old.st_uid != new.st_uid
        || old.st_gid != new.st_gid
        || old.st_rdev != new.st_rdev
        || (ft(old) != FileType::Directory && (!same_time(old, new) || old.st_size != new.st_size))
}

struct Walk {
    /// Overlay semantics (whiteouts, opaque directories) rather than two full trees.
    overlay: bool,
    /// The changes found so far.
    out: Vec<Change>,
}

impl Walk {
    fn push(&mut self, path: PathBuf, kind: ChangeKind) {
        self.out.push(Change { path, kind });
    }

    /// Walk the container's directory `new` at `path` against the image's `base`. `complete`:
    /// `new` lists everything the container has here (a full tree, or an opaque upper
    /// directory), so the image's names missing from it were deleted. Returns whether anything
    /// changed at or below `path`.
    fn dir(
        &mut self,
        new: BorrowedFd<'_>,
        path: &Path,
        base: &BaseDir,
        complete: bool,
    ) -> io::Result<bool> {
        let mut changed = false;
        let mut present: HashSet<OsString> = HashSet::new();
        for name in names(new)? {
            let Some(st) = lstat_at(new, &name)? else {
                continue; // vanished (a running container)
            };
            let child = path.join(&name);
            if self.overlay && is_whiteout(&st) {
                if !complete && base.lookup(&name, self.overlay)?.is_some() {
                    self.push(child, ChangeKind::Deleted);
                    changed = true;
                }
                continue;
            }
            present.insert(name.clone());
            let is_dir = ft(&st) == FileType::Directory;
            let init = INIT_PATHS.iter().any(|p| Path::new(p) == child);
            match base.lookup(&name, self.overlay)? {
                None if !init => {
                    self.push(child.clone(), ChangeKind::Added);
                    if is_dir {
                        let fd = open_dir(new, &name)?;
                        self.added(fd.as_fd(), &child)?;
                    }
                    changed = true;
                }
                None => {
                    // A mount point the runtime made: part of the image, as Docker's init
                    // layer is.
                    if is_dir {
                        let fd = open_dir(new, &name)?;
                        if self.dir(fd.as_fd(), &child, &BaseDir::empty(), false)? {
                            self.push(child, ChangeKind::Modified);
                            changed = true;
                        }
                    }
                }
                Some((bst, bdir)) => {
                    let own = stat_different(&bst, &st)
                        || (ft(&st) == FileType::RegularFile
                            && self.capability_differs(new, &name, base)?);
                    if own {
                        self.push(child.clone(), ChangeKind::Modified);
                    }
                    let mut below = false;
                    if is_dir {
                        let fd = open_dir(new, &name)?;
                        let base_is_dir = ft(&bst) == FileType::Directory;
                        let bdir = if base_is_dir { bdir } else { BaseDir::empty() };
                        let child_complete =
                            !self.overlay || (base_is_dir && is_opaque(new, &name)?);
                        below = self.dir(fd.as_fd(), &child, &bdir, child_complete)?;
                        if below && !own {
                            self.push(child, ChangeKind::Modified);
                        }
                    }
                    changed |= own || below;
                }
            }
        }
        if complete {
            for n in base.visible_names(self.overlay)? {
                if !present.contains(&n) {
                    self.push(path.join(&n), ChangeKind::Deleted);
                    changed = true;
                }
            }
        }
        Ok(changed)
    }

    /// Everything below a new directory is new.
    fn added(&mut self, dir: BorrowedFd<'_>, path: &Path) -> io::Result<()> {
        let mut stack: Vec<(OwnedFd, PathBuf)> =
            vec![(open_dir(dir, OsStr::new("."))?, path.to_path_buf())];
        while let Some((fd, p)) = stack.pop() {
            for name in names(fd.as_fd())? {
                let Some(st) = lstat_at(fd.as_fd(), &name)? else {
                    continue;
                };
                if self.overlay && is_whiteout(&st) {
                    continue;
                }
                let child = p.join(&name);
                self.push(child.clone(), ChangeKind::Added);
                if ft(&st) == FileType::Directory {
                    stack.push((open_dir(fd.as_fd(), &name)?, child));
                }
            }
        }
        Ok(())
    }

    /// Whether a regular file's `security.capability` differs from the image's.
    fn capability_differs(
        &self,
        new: BorrowedFd<'_>,
        name: &OsStr,
        base: &BaseDir,
    ) -> io::Result<bool> {
        let mine = xattr_at(new, name, CAPABILITY)?;
        // The image's copy is in the first layer that has the name.
        for d in &base.dirs {
            if lstat_at(d.as_fd(), name)?.is_some() {
                return Ok(xattr_at(d.as_fd(), name, CAPABILITY)? != mine);
            }
        }
        Ok(mine.is_some())
    }
}

fn finish(mut out: Vec<Change>) -> Vec<Change> {
    out.sort_by(|a, b| {
        a.path
            .as_os_str()
            .as_bytes()
            .cmp(b.path.as_os_str().as_bytes())
    });
    out.dedup_by(|a, b| a.path == b.path);
    out
}

/// The changes recorded in an overlay upper directory against its lower layers (top first).
pub(super) fn overlay_changes(upper: &Path, lowers: &[PathBuf]) -> io::Result<Vec<Change>> {
    let base = BaseDir::roots(lowers, true)?;
    let top = rfs::open(
        upper,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let complete = xattr_at(top.as_fd(), OsStr::new("."), OPAQUE)?.as_deref() == Some(b"y");
    let mut w = Walk {
        overlay: true,
        out: Vec::new(),
    };
    w.dir(top.as_fd(), Path::new("/"), &base, complete)?;
    Ok(finish(w.out))
}

/// The changes of a full tree against another (or against nothing: everything is added).
pub(super) fn tree_changes(new: &Path, old: Option<&Path>) -> io::Result<Vec<Change>> {
    let base = match old {
        Some(o) => BaseDir::roots(&[o.to_path_buf()], false)?,
        None => BaseDir::empty(),
    };
    let top = rfs::open(
        new,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut w = Walk {
        overlay: false,
        out: Vec::new(),
    };
    w.dir(top.as_fd(), Path::new("/"), &base, true)?;
    Ok(finish(w.out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    fn show(v: &[Change]) -> Vec<String> {
        v.iter()
            .map(|c| format!("{} {}", c.kind.letter(), c.path.display()))
            .collect()
    }

    fn whiteout(p: &Path) {
        rfs::mknodat(rfs::CWD, p, FileType::CharacterDevice, Mode::empty(), 0).unwrap();
    }

    fn opaque(p: &Path) {
        rfs::setxattr(p, OPAQUE, b"y", rfs::XattrFlags::empty()).unwrap();
    }

    #[test]
    fn overlay_upper_against_layers() {
        if !rustix::process::geteuid().is_root() {
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let (l0, l1, up) = (
            t.path().join("l0"),
            t.path().join("l1"),
            t.path().join("up"),
        );
        for d in [&l0, &l1, &up] {
            fs::create_dir(d).unwrap();
        }
        // Image: /etc/{passwd,group}, /var/lib/x (l0); /var/lib/y, /gone (l1), /old/{a,b}.
        fs::create_dir_all(l0.join("etc")).unwrap();
        fs::write(l0.join("etc/passwd"), b"root\n").unwrap();
        fs::write(l0.join("etc/group"), b"root\n").unwrap();
        fs::create_dir_all(l0.join("var/lib")).unwrap();
        fs::write(l0.join("var/lib/x"), b"x").unwrap();
        fs::create_dir_all(l1.join("var/lib")).unwrap();
        fs::write(l1.join("var/lib/y"), b"y").unwrap();
        fs::create_dir_all(l1.join("old")).unwrap();
        fs::write(l1.join("old/a"), b"a").unwrap();
        fs::write(l1.join("old/b"), b"b").unwrap();
        fs::write(l1.join("gone"), b"g").unwrap();
        // l1 deletes /etc/group.
        fs::create_dir(l1.join("etc")).unwrap();
        whiteout(&l1.join("etc/group"));
        // Container: adds /new/dir/f, changes /etc/passwd, deletes /gone and /var/lib/x,
        // recreates /old (opaque) with b, and re-creates /etc/group (deleted in the image).
        fs::create_dir_all(up.join("new/dir")).unwrap();
        fs::write(up.join("new/dir/f"), b"f").unwrap();
        fs::create_dir(up.join("etc")).unwrap();
        fs::write(up.join("etc/passwd"), b"root\nme\n").unwrap();
        fs::write(up.join("etc/group"), b"g\n").unwrap();
        whiteout(&up.join("gone"));
        fs::create_dir_all(up.join("var/lib")).unwrap();
        whiteout(&up.join("var/lib/x"));
        whiteout(&up.join("nothere"));
        fs::create_dir(up.join("old")).unwrap();
        opaque(&up.join("old"));
        fs::write(up.join("old/b"), b"b2").unwrap();
        // A stub the runtime made.
        fs::write(up.join("etc/hosts"), b"").unwrap();
        fs::create_dir(up.join("proc")).unwrap();
        let got = overlay_changes(&up, &[l1.clone(), l0.clone()]).unwrap();
        assert_eq!(
            show(&got),
            vec![
                "C /etc",
                "A /etc/group",
                "C /etc/passwd",
                "D /gone",
                "A /new",
                "A /new/dir",
                "A /new/dir/f",
                "C /old",
                "D /old/a",
                "C /old/b",
                "C /var",
                "C /var/lib",
                "D /var/lib/x",
            ]
        );
        // Same trees as full copies: the same answer from the tree diff.
        let (img, ctr) = (t.path().join("img"), t.path().join("ctr"));
        for d in [&img, &ctr] {
            fs::create_dir_all(d.join("etc")).unwrap();
            fs::write(d.join("etc/passwd"), b"root\n").unwrap();
            fs::create_dir_all(d.join("var/lib")).unwrap();
            fs::write(d.join("var/lib/y"), b"y").unwrap();
            fs::create_dir_all(d.join("old")).unwrap();
            fs::write(d.join("old/b"), b"b").unwrap();
        }
        // Unchanged files keep their times in a copy.
        for f in ["etc/passwd", "var/lib/y", "old/b"] {
            let t = rfs::Timestamps {
                last_access: rfs::Timespec {
                    tv_sec: 1000,
                    tv_nsec: 5,
                },
                last_modification: rfs::Timespec {
                    tv_sec: 1000,
                    tv_nsec: 5,
                },
            };
            for d in [&img, &ctr] {
                rfs::utimensat(rfs::CWD, d.join(f), &t, AtFlags::empty()).unwrap();
            }
        }
        fs::write(img.join("var/lib/x"), b"x").unwrap();
        fs::write(img.join("old/a"), b"a").unwrap();
        fs::write(img.join("gone"), b"g").unwrap();
        fs::write(ctr.join("etc/passwd"), b"root\nme\n").unwrap();
        fs::write(ctr.join("etc/group"), b"g\n").unwrap();
        fs::write(ctr.join("old/b"), b"b2").unwrap();
        fs::create_dir_all(ctr.join("new/dir")).unwrap();
        fs::write(ctr.join("new/dir/f"), b"f").unwrap();
        fs::write(ctr.join("etc/hosts"), b"").unwrap();
        // Directory mtimes differ but do not count; modes do.
        fs::set_permissions(ctr.join("var"), fs::Permissions::from_mode(0o700)).unwrap();
        let got = tree_changes(&ctr, Some(&img)).unwrap();
        assert_eq!(
            show(&got),
            vec![
                "C /etc",
                "A /etc/group",
                "C /etc/passwd",
                "D /gone",
                "A /new",
                "A /new/dir",
                "A /new/dir/f",
                "C /old",
                "D /old/a",
                "C /old/b",
                "C /var",
                "C /var/lib",
                "D /var/lib/x",
            ]
        );
        // Against nothing, everything is new (the init-layer paths excepted: /etc is only C).
        let all = tree_changes(&ctr, None).unwrap();
        assert!(
            all.iter()
                .all(|c| c.kind == ChangeKind::Added || c.path == Path::new("/etc"))
        );
        assert!(all.iter().any(|c| c.path == Path::new("/new/dir/f")));
    }
}
