//! The host side of `docker cp`: what the docker CLI does around the archive endpoints
//! (`cli/command/container/cp.go` and go-archive's `CopyInfoSourcePath`,
//! `CopyInfoDestinationPath`, `PrepareArchiveCopy`, `CopyTo`), so that `carrel cp` behaves like
//! `docker cp` and keeps no storage logic in the command line.
//!
//! The rules, with `SRC` and `DEST` as given:
//! - `SRC` a file: copied as a file; `SRC` a directory: copied recursively; `SRC/.`: the
//!   directory's contents.
//! - `DEST` an existing directory: `SRC` is copied into it under its own name (`SRC/.`: the
//!   contents go right into `DEST`).
//! - `DEST` an existing file: a file `SRC` replaces it; a directory `SRC` is refused
//!   (`cannot copy directory`).
//! - `DEST` missing: its parent must exist (it is created as `SRC`'s copy, renamed); a `DEST`
//!   ending in `/` must be a directory, so a file `SRC` is refused (`no such directory`).
//! - A symlink `DEST` is followed (inside the container for container paths); a symlink `SRC`
//!   is copied as a link unless `-L`.
//!
//! Where the docker CLI renames entries of the archive stream afterwards
//! (`RebaseArchiveEntries`), carrel asks for the right name up front
//! ([`super::CopyFromOptions::rename`]), and it extracts on the host with the same hardened
//! extractor, confined to the destination directory, without device nodes, and with ownership
//! given by the caller (the docker CLI extracts as the user who runs it).

use std::ffi::OsString;
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use carrel_archive::{CopyOptions, Ownership, TarSource, WriteOptions};
use carrel_core::fs::{Root, clean_absolute};

use super::{
    CopyFromOptions, CopyToOptions, asserts_directory, block_sigpipe, specifies_current_dir,
};
use crate::{Engine, EngineError, Result};

/// Options of a `cp` between the host and a container.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostCopyOptions {
    /// `-L`: follow a symlink source.
    pub follow_link: bool,
    /// `-a`: into a container, give files the container user's ids.
    pub copy_uid_gid: bool,
    /// Out of a container: the owner of the files created on the host (the docker CLI creates
    /// them as the user running it). `None`: the caller (root).
    pub host_owner: Option<(u32, u32)>,
}

/// What a copy did, for Docker's `Successfully copied 1.54kB to …` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopySummary {
    /// Bytes of content copied (a file's size, or the archive's size for a directory coming out
    /// of a container, or the sum of the regular files' sizes going in).
    pub content_size: u64,
    /// Bytes of archive transferred.
    pub transferred: u64,
    /// The destination as Docker shows it (`/abs/path` or `ctr:/path`).
    pub dest: String,
}

/// Docker's `CopyInfo` of a destination.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DestInfo {
    path: String,
    exists: bool,
    is_dir: bool,
}

/// An error of the client side, with the docker CLI's text.
fn cli_err(msg: impl Into<String>) -> EngineError {
    EngineError::InvalidArgument(msg.into())
}

/// A Go-style OS error text: `lstat /x: no such file or directory`.
fn go_err(op: &str, path: &Path, e: &io::Error) -> EngineError {
    let text = match e.raw_os_error() {
        Some(n) => {
            let s = io::Error::from_raw_os_error(n).to_string();
            let s = s.split(" (os error").next().unwrap_or(&s).to_string();
            let mut c = s.chars();
            match c.next() {
                Some(f) => f.to_lowercase().chain(c).collect(),
                None => s,
            }
        }
        None => e.to_string(),
    };
    let msg = format!("{op} {}: {text}", path.display());
    match e.kind() {
        io::ErrorKind::NotFound => EngineError::NotFound(msg),
        _ => EngineError::InvalidArgument(msg),
    }
}

/// An absolute path that keeps a trailing `/` or `/.` of the original (Docker's
/// `PreserveTrailingDotOrSeparator`).
fn preserve_trailing(abs: &Path, original: &str) -> String {
    let mut s = abs.to_string_lossy().into_owned();
    if specifies_current_dir(original) {
        if !s.ends_with('/') {
            s.push('/');
        }
        s.push('.');
    } else if original.ends_with('/') && !s.ends_with('/') {
        s.push('/');
    }
    s
}

/// A local path made absolute (against the working directory) and cleaned, its trailing `/` or
/// `/.` kept.
fn resolve_local_path(p: &str) -> Result<String> {
    let cwd = std::env::current_dir().map_err(|e| EngineError::io("resolving", p, e))?;
    Ok(preserve_trailing(&clean_absolute(&cwd.join(p)), p))
}

/// A container path made absolute, its trailing `/` or `/.` kept.
fn container_abs(p: &str) -> String {
    preserve_trailing(&clean_absolute(&Path::new("/").join(p)), p)
}

/// Docker's `SplitPathDirEntry` for an absolute path: its directory and base name (`.` for
/// `DIR/.`).
fn split_dir_entry(path: &str) -> (String, OsString) {
    let clean = clean_absolute(Path::new(path));
    if specifies_current_dir(path) {
        return (clean.to_string_lossy().into_owned(), ".".into());
    }
    match (clean.parent(), clean.file_name()) {
        (Some(dir), Some(base)) => (dir.to_string_lossy().into_owned(), base.to_os_string()),
        _ => ("/".into(), "/".into()),
    }
}

/// Docker's `PrepareArchiveCopy`: where to extract, and the name the archive's top entry must
/// have (`None`: its own).
fn prepare_archive_copy(src_is_dir: bool, dst: &DestInfo) -> Result<(String, Option<OsString>)> {
    let (dir, base) = split_dir_entry(&dst.path);
    if dst.exists && dst.is_dir {
        Ok((dst.path.clone(), None))
    } else if dst.exists && src_is_dir {
        Err(cli_err("cannot copy directory"))
    } else if dst.exists || src_is_dir {
        Ok((dir, Some(base)))
    } else if asserts_directory(&dst.path) {
        Err(cli_err("no such directory"))
    } else {
        Ok((dir, Some(base)))
    }
}

/// Docker's `ValidateOutputPath` for a local destination.
fn validate_output_path(path: &str) -> Result<()> {
    let clean = clean_absolute(Path::new(path));
    if let Some(dir) = clean.parent()
        && let Err(e) = std::fs::metadata(dir)
        && e.kind() == io::ErrorKind::NotFound
    {
        return Err(cli_err(format!(
            "invalid output path: directory {:?} does not exist",
            dir.display().to_string()
        )));
    }
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() || m.is_file() => Ok(()),
        Ok(m) => {
            let what = if m.file_type().is_block_device() || m.file_type().is_char_device() {
                "got a device"
            } else {
                "got an irregular file"
            };
            Err(cli_err(format!(
                "invalid output path: {path:?} must be a directory or a regular file: {what}"
            )))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(go_err("stat", Path::new(path), &e)),
    }
}

/// Docker's `CopyInfoDestinationPath` for a local destination: symlinks are followed (even a
/// dangling last one: the copy creates its target); a missing destination needs an existing
/// parent directory.
fn local_destination(path: &str) -> Result<DestInfo> {
    let original = path.to_string();
    let mut path = path.to_string();
    let mut meta = std::fs::symlink_metadata(&path);
    let mut n = 0;
    while let Ok(m) = &meta {
        if !m.file_type().is_symlink() {
            break;
        }
        n += 1;
        if n > 10 {
            return Err(cli_err(format!("too many symlinks in {original}")));
        }
        let target =
            std::fs::read_link(&path).map_err(|e| go_err("readlink", Path::new(&path), &e))?;
        let target = if target.is_absolute() {
            target
        } else {
            Path::new(&split_dir_entry(&path).0).join(target)
        };
        path = clean_absolute(&target).to_string_lossy().into_owned();
        meta = std::fs::symlink_metadata(&path);
    }
    match meta {
        Ok(m) => Ok(DestInfo {
            path,
            exists: true,
            is_dir: m.is_dir(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let (parent, _) = split_dir_entry(&path);
            let pm =
                std::fs::metadata(&parent).map_err(|e| go_err("stat", Path::new(&parent), &e))?;
            if !pm.is_dir() {
                return Err(cli_err("not a directory"));
            }
            Ok(DestInfo {
                path,
                exists: false,
                is_dir: false,
            })
        }
        Err(e) => Err(go_err("lstat", Path::new(&path), &e)),
    }
}

/// A local source resolved as Docker's `CopyInfoSourcePath` does: with `follow`, every symlink;
/// otherwise only the directory part (a symlink source is copied as a link).
struct LocalSource {
    path: PathBuf,
    is_dir: bool,
    rebase: Option<OsString>,
}

fn local_source(path: &str, follow: bool) -> Result<LocalSource> {
    let (dir, base) = split_dir_entry(path);
    let (resolved, rebase) = if follow {
        let r = std::fs::canonicalize(path).map_err(|e| go_err("lstat", Path::new(path), &e))?;
        let rebase = (r.file_name() != Some(base.as_os_str()) && base != ".").then(|| base.clone());
        (r, rebase)
    } else {
        let d = std::fs::canonicalize(&dir).map_err(|e| go_err("lstat", Path::new(path), &e))?;
        (if base == "." { d } else { d.join(&base) }, None)
    };
    let m = std::fs::symlink_metadata(&resolved).map_err(|e| go_err("lstat", &resolved, &e))?;
    Ok(LocalSource {
        path: resolved,
        is_dir: m.is_dir(),
        rebase,
    })
}

/// Sum of the sizes of the regular files at `path` (the docker CLI's `localContentSize`).
fn local_content_size(path: &Path) -> u64 {
    let Ok(m) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if !m.is_dir() {
        return if m.is_file() { m.size() } else { 0 };
    }
    let mut total = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => total += e.metadata().map(|m| m.size()).unwrap_or(0),
                _ => {}
            }
        }
    }
    total
}

/// Counts the bytes read through it.
struct Counting<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

impl Engine {
    /// What a container destination is, as the docker CLI finds out before a copy into it: a
    /// symlink is followed inside the container; devices are refused; other errors mean "does
    /// not exist" (the copy then finds out), except an unknown container.
    fn container_destination(&self, name: &str, dest: &str) -> Result<DestInfo> {
        let mut info = DestInfo {
            path: container_abs(dest),
            exists: false,
            is_dir: false,
        };
        let st = match self.container_stat_path(name, dest) {
            Ok(st) if st.is_symlink() => {
                info.path = st.link_target.clone();
                self.container_stat_path(name, &st.link_target).ok()
            }
            Ok(st) => Some(st),
            Err(e) => {
                // An unknown container is reported now, not as a confusing copy error later.
                self.resolve_container(name)?;
                tracing::debug!(error = %e, "destination not found; the copy will tell");
                None
            }
        };
        if let Some(st) = st {
            if st.is_device() {
                return Err(cli_err(format!(
                    "destination \"{name}:{dest}\" must be a directory or a regular file: got a device"
                )));
            }
            info.exists = true;
            info.is_dir = st.is_dir();
        }
        Ok(info)
    }

    /// `docker cp - CONTAINER:DEST`: extract a tar stream (plain, gzip or zstd) into the
    /// directory `dest` (a symlink to a directory is followed).
    pub fn copy_archive_to_container(
        &self,
        input: Box<dyn Read + Send>,
        name: &str,
        dest: &str,
        opts: &HostCopyOptions,
    ) -> Result<()> {
        let info = self.container_destination(name, dest)?;
        if !info.is_dir {
            return Err(cli_err(format!(
                "destination \"{name}:{dest}\" must be a directory"
            )));
        }
        self.container_copy_to(
            name,
            &info.path,
            input,
            &CopyToOptions {
                no_overwrite_dir_non_dir: true,
                copy_uid_gid: opts.copy_uid_gid,
            },
        )
    }

    /// `docker cp SRC CONTAINER:DEST` with a local `SRC`.
    pub fn copy_host_to_container(
        &self,
        src: &str,
        name: &str,
        dest: &str,
        opts: &HostCopyOptions,
    ) -> Result<CopySummary> {
        let src_abs = resolve_local_path(src)?;
        let info = self.container_destination(name, dest)?;
        let source = local_source(&src_abs, opts.follow_link)?;
        let content_size = local_content_size(&source.path);
        let (dir, rename) = prepare_archive_copy(source.is_dir, &info)?;
        let top = match rename {
            Some(n) => n,
            None if specifies_current_dir(&src_abs) => OsString::new(),
            None => source
                .rebase
                .clone()
                .or_else(|| source.path.file_name().map(|n| n.to_os_string()))
                .unwrap_or_default(),
        };
        let tar_source = TarSource {
            path: source.path.clone(),
            name: PathBuf::from(top),
            follow_symlink: false,
        };
        let (reader, mut writer) =
            io::pipe().map_err(|e| EngineError::io("creating", "a pipe", e))?;
        let producer = std::thread::Builder::new()
            .name("carrel-cp-in".into())
            .spawn(move || {
                block_sigpipe();
                let r = carrel_archive::write_paths(
                    Path::new("/"),
                    std::slice::from_ref(&tar_source),
                    &mut writer,
                    &WriteOptions::default(),
                );
                drop(writer);
                r
            })
            .map_err(|e| EngineError::io("starting", "the archive producer", e))?;
        let copied = self.container_copy_to(
            name,
            &dir,
            Box::new(reader),
            &CopyToOptions {
                no_overwrite_dir_non_dir: true,
                copy_uid_gid: opts.copy_uid_gid,
            },
        );
        let produced = producer
            .join()
            .map_err(|_| EngineError::Precondition("the archive producer panicked".into()))?;
        copied?;
        let stats = produced?;
        Ok(CopySummary {
            content_size,
            transferred: stats.size,
            dest: format!("{name}:{}", info.path),
        })
    }

    /// `docker cp CONTAINER:SRC DEST` with a local `DEST`.
    pub fn copy_container_to_host(
        &self,
        name: &str,
        src: &str,
        dest: &str,
        opts: &HostCopyOptions,
    ) -> Result<CopySummary> {
        let dest_abs = resolve_local_path(dest)?;
        validate_output_path(&dest_abs)?;
        let mut st = self.container_stat_path(name, src)?;
        if opts.follow_link && st.is_symlink() {
            st = self.container_stat_path(name, &st.link_target)?;
        }
        let info = local_destination(&dest_abs)?;
        let (dir, rename) = prepare_archive_copy(st.is_dir(), &info)?;
        let (_, stream) = self.container_copy_from(
            name,
            src,
            &CopyFromOptions {
                follow_link: opts.follow_link,
                rename,
            },
        )?;
        let root = Root::open(Path::new(&dir)).map_err(|e| go_err("open", Path::new(&dir), &e))?;
        let copy = CopyOptions {
            no_overwrite_dir_non_dir: true,
            ownership: match opts.host_owner {
                Some((uid, gid)) => Ownership::Fixed { uid, gid },
                None => Ownership::Caller,
            },
            create_devices: false,
            ..CopyOptions::default()
        };
        let mut counting = Counting {
            inner: stream,
            count: 0,
        };
        carrel_archive::apply_tar_at(&root, Path::new(""), &mut counting, &copy)?;
        let transferred = counting.count;
        counting.inner.finish()?;
        Ok(CopySummary {
            content_size: if st.is_dir() {
                transferred
            } else {
                st.size.max(0) as u64
            },
            transferred,
            dest: dest_abs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(path: &str, exists: bool, is_dir: bool) -> DestInfo {
        DestInfo {
            path: path.into(),
            exists,
            is_dir,
        }
    }

    #[test]
    fn archive_copy_follows_dockers_table() {
        // Existing directory: into it, under the source's own name.
        assert_eq!(
            prepare_archive_copy(false, &dest("/tmp", true, true)).unwrap(),
            ("/tmp".into(), None)
        );
        // Existing file: a file replaces it, a directory is refused.
        assert_eq!(
            prepare_archive_copy(false, &dest("/tmp/f", true, false)).unwrap(),
            ("/tmp".into(), Some("f".into()))
        );
        assert_eq!(
            prepare_archive_copy(true, &dest("/tmp/f", true, false))
                .unwrap_err()
                .to_string(),
            "cannot copy directory"
        );
        // Missing: renamed into the parent; a trailing slash asks for a directory.
        assert_eq!(
            prepare_archive_copy(true, &dest("/tmp/new/", false, false)).unwrap(),
            ("/tmp".into(), Some("new".into()))
        );
        assert_eq!(
            prepare_archive_copy(false, &dest("/tmp/new/", false, false))
                .unwrap_err()
                .to_string(),
            "no such directory"
        );
        assert_eq!(
            prepare_archive_copy(false, &dest("/tmp/new", false, false)).unwrap(),
            ("/tmp".into(), Some("new".into()))
        );
        assert_eq!(split_dir_entry("/a/b/."), ("/a/b".into(), ".".into()));
        assert_eq!(split_dir_entry("/"), ("/".into(), "/".into()));
        assert_eq!(container_abs("etc/."), "/etc/.");
        assert_eq!(container_abs("/etc/"), "/etc/");
        assert_eq!(container_abs(""), "/");
    }
}
