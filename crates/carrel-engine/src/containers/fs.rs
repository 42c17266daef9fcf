//! Looking inside containers and taking things out: `diff`, `commit`, `export` and `cp` in both
//! directions (Docker's `GET /containers/{id}/changes`, `POST /commit`,
//! `GET /containers/{id}/export` and `HEAD|GET|PUT /containers/{id}/archive`).
//!
//! **Paths are never joined as strings.** Every path a user or an image gives is resolved by the
//! kernel inside the container's root (`openat2(RESOLVE_IN_ROOT)` through
//! [`carrel_core::fs::Root`], [`carrel_archive::write_paths`] and
//! [`carrel_archive::apply_tar_at`]), so a symlink in the container that points at `/etc` means
//! the container's `/etc`, even while a running container swaps links.
//!
//! **Views.** A running container's root is read through its monitor's mount (`merged`). A
//! container that is not running is mounted for the duration of the operation at a temporary
//! mountpoint under its directory — read-only for reads (the writable layer as the top lower
//! layer of a read-only overlay), read-write for copies into it — and the mount is lazily
//! detached as soon as it has been opened: only the open handle keeps it alive, so nothing is left
//! mounted even if carrel is killed (see [`view`]). While such a view exists the container's
//! monitor lock is held, so the container cannot start on the same writable layer meanwhile.
//! With the `copy` driver the container's tree is its root: no mount is needed.
//!
//! **diff** walks only the writable layer (the overlay upper directory) and looks each entry up
//! in the image's layers, so its cost is proportional to the changes, not to the image
//! ([`changes`]). The `copy` driver has no layer of changes: its diff compares the container's
//! tree with the image's (a full walk, like Docker's `vfs`).

mod changes;
mod commit;
mod host;
mod stat;
mod view;

use std::ffi::OsString;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use serde::{Deserialize, Serialize};

use carrel_archive::{ArchiveError, CopyOptions, Ownership, TarSource, WriteOptions, WriteStats};
use carrel_core::fs::clean_absolute;

use crate::{DriverKind, Engine, EngineError, Result};

pub use changes::INIT_PATHS;
pub use commit::CommitOptions;
pub use host::{CopySummary, HostCopyOptions};
pub use stat::{PathStat, go_file_mode};
use view::Access;

/// What happened to a path, in Docker's numbering (`Kind` of `GET /containers/{id}/changes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChangeKind {
    /// `C`: it exists in the image and was changed, or something below it changed (0).
    Modified = 0,
    /// `A`: it is new (1).
    Added = 1,
    /// `D`: it was deleted (2).
    Deleted = 2,
}

impl ChangeKind {
    /// The letter `docker diff` prints: `C`, `A` or `D`.
    pub fn letter(self) -> char {
        match self {
            ChangeKind::Modified => 'C',
            ChangeKind::Added => 'A',
            ChangeKind::Deleted => 'D',
        }
    }
}

impl Serialize for ChangeKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_u8(*self as u8)
    }
}

impl<'de> Deserialize<'de> for ChangeKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        match u8::deserialize(d)? {
            0 => Ok(ChangeKind::Modified),
            1 => Ok(ChangeKind::Added),
            2 => Ok(ChangeKind::Deleted),
            n => Err(serde::de::Error::custom(format!("unknown change kind {n}"))),
        }
    }
}

/// One entry of `diff`: an absolute path in the container and what happened to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Change {
    /// Absolute path in the container (raw bytes on Linux; shown lossily in JSON).
    #[serde(with = "path_string")]
    pub path: PathBuf,
    /// What happened to it.
    pub kind: ChangeKind,
}

mod path_string {
    use std::path::{Path, PathBuf};

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&p.to_string_lossy())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
        Ok(PathBuf::from(String::deserialize(d)?))
    }
}

/// Options of `container_copy_from` (`docker cp CONTAINER:SRC …`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyFromOptions {
    /// When the source is a symlink, archive what it points to (`-L`), under the link's name.
    pub follow_link: bool,
    /// The name of the archive's top entry instead of Docker's (the source's base name, or no top
    /// entry for `DIR/.` and `/`). The docker CLI renames entries after the fact
    /// (`RebaseArchiveEntries`); carrel names them right away.
    pub rename: Option<OsString>,
}

/// Options of `container_copy_to` (`docker cp … CONTAINER:DEST`, `PUT …/archive`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyToOptions {
    /// Refuse to replace a directory by a non-directory and vice versa (the docker CLI always
    /// asks for this).
    pub no_overwrite_dir_non_dir: bool,
    /// `-a`: give everything the container's user (its `Config.User`, resolved in the
    /// container's `/etc/passwd` and `/etc/group`) instead of the archive's owners.
    pub copy_uid_gid: bool,
}

/// A tar stream of a path in a container (the body of `GET …/archive`).
///
/// It is produced by a thread that holds the container's view; reading to the end returns the
/// producer's error if it failed (instead of a silently truncated archive), and dropping the
/// stream early stops the producer and releases the view.
pub struct CopyStream {
    reader: Option<io::PipeReader>,
    producer: Option<JoinHandle<Result<WriteStats>>>,
    /// The producer's outcome once it has been joined.
    outcome: Option<Result<WriteStats>>,
}

impl std::fmt::Debug for CopyStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CopyStream").finish_non_exhaustive()
    }
}

impl CopyStream {
    /// Wait for the producer and return what it wrote (or its error). Call it after reading the
    /// stream to its end; called earlier, it stops the producer (which then fails).
    pub fn finish(mut self) -> Result<WriteStats> {
        self.reader = None;
        self.join();
        self.outcome.take().unwrap_or_else(|| {
            Err(EngineError::Precondition(
                "the archive was already finished".into(),
            ))
        })
    }

    fn join(&mut self) {
        if let Some(h) = self.producer.take() {
            self.outcome = Some(h.join().unwrap_or_else(|_| {
                Err(EngineError::Precondition(
                    "the archive producer panicked".into(),
                ))
            }));
        }
    }
}

impl Read for CopyStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(r) = self.reader.as_mut() else {
            return Ok(0);
        };
        let n = r.read(buf)?;
        if n == 0 && !buf.is_empty() {
            // End of the stream: the producer is done; a failure must not look like a complete
            // (truncated) archive.
            self.reader = None;
            self.join();
            if let Some(Err(e)) = &self.outcome {
                return Err(io::Error::other(e.to_string()));
            }
        }
        Ok(n)
    }
}

impl Drop for CopyStream {
    fn drop(&mut self) {
        // Closing the pipe makes the producer's next write fail; then it releases the view.
        self.reader = None;
        self.join();
        if let Some(Err(e)) = &self.outcome {
            tracing::debug!(error = %e, "archive producer ended early");
        }
    }
}

/// Docker's "not found" for a path in a container.
fn file_not_found(path: &str, container: &str) -> EngineError {
    EngineError::NotFound(format!(
        "Could not find the file {path} in container {container}"
    ))
}

/// Whether a path as given ends with `/.` (Docker's `specifiesCurrentDir`: copy the contents).
pub fn specifies_current_dir(path: &str) -> bool {
    path == "." || path.ends_with("/.")
}

/// Whether a path as given ends with `/` or `/.` (Docker: the last component must be a
/// directory and a symlink there is followed).
pub fn asserts_directory(path: &str) -> bool {
    path.ends_with('/') || specifies_current_dir(path)
}

/// The base name Docker gives a path (`filepath.Base` of the cleaned path, `.` for `DIR/.`).
pub fn docker_base(path: &str) -> String {
    if specifies_current_dir(path) {
        return ".".into();
    }
    let abs = clean_absolute(&Path::new("/").join(path));
    match abs.file_name() {
        Some(n) => n.to_string_lossy().into_owned(),
        None => "/".into(),
    }
}

impl Engine {
    /// `docker diff`: the changes of a container's filesystem against its image, sorted by
    /// path (bytewise, as Docker sorts changes when it exports them; dockerd's own answer comes in
    /// walk order). Parent directories of changed paths are `C`, as in Docker's answer; the
    /// files and mount points the runtime adds (Docker's init layer: `/etc/hosts`, `/proc`, …)
    /// are not reported.
    pub fn container_changes(&self, name: &str) -> Result<Vec<Change>> {
        let c = self.resolve_container(name)?;
        let started = std::time::Instant::now();
        let upper = self.snapshotter().upper_dir(&c.snapshot)?;
        let out = match self.driver() {
            DriverKind::Overlay => {
                let lowers = self.snapshotter().paths(&c.snapshot)?.lower;
                changes::overlay_changes(&upper, &lowers)
            }
            DriverKind::Copy => {
                let parent = self.snapshotter().stat(&c.snapshot)?.parent;
                let base = match parent {
                    Some(p) => Some(self.snapshotter().upper_dir(&p)?),
                    None => None,
                };
                changes::tree_changes(&upper, base.as_deref())
            }
        }
        .map_err(|e| EngineError::io("computing the changes of", &upper, e))?;
        tracing::debug!(container = %c.short_id(), changes = out.len(), elapsed = ?started.elapsed(), "diff");
        Ok(out)
    }

    /// `docker export`: a tar of the container's whole filesystem (entries relative to its root,
    /// the root itself not an entry) written to `out`.
    pub fn container_export(&self, name: &str, out: &mut dyn Write) -> Result<WriteStats> {
        let c = self.resolve_container(name)?;
        let view = self.container_view(&c, Access::ReadOnly)?;
        Ok(carrel_archive::write_tree(
            &view.path(),
            out,
            &WriteOptions::default(),
        )?)
    }

    /// `HEAD /containers/{id}/archive`: what `path` is in the container (the last component is
    /// not followed unless the path ends with `/` or `/.`).
    pub fn container_stat_path(&self, name: &str, path: &str) -> Result<PathStat> {
        let c = self.resolve_container(name)?;
        let view = self.container_view_with_mounts(&c, Access::ReadOnly)?;
        stat::stat_path(view.root(), path).map_err(|e| stat_error(e, path, name))
    }

    /// `GET /containers/{id}/archive` (`docker cp CONTAINER:SRC …`): the stat of `path` and a
    /// tar stream of it. Docker's naming: a file or directory `…/name` is archived as `name`
    /// (a directory recursively), `DIR/.` as the directory's contents, `/` as the whole root;
    /// a symlink is archived as a symlink unless the path ends with `/` or `follow_link` is set.
    pub fn container_copy_from(
        &self,
        name: &str,
        path: &str,
        opts: &CopyFromOptions,
    ) -> Result<(PathStat, CopyStream)> {
        let c = self.resolve_container(name)?;
        let view = self.container_view_with_mounts(&c, Access::ReadOnly)?;
        let mut st = stat::stat_path(view.root(), path).map_err(|e| stat_error(e, path, name))?;
        let abs = clean_absolute(&Path::new("/").join(path));
        let mut follow = asserts_directory(path);
        if opts.follow_link && st.is_symlink() {
            // Docker's CLI stats the link's target and archives it under the link's name.
            let target = st.link_target.clone();
            let mut t =
                stat::stat_path(view.root(), &target).map_err(|e| stat_error(e, path, name))?;
            t.name = st.name.clone();
            st = t;
            follow = true;
        }
        let source = if specifies_current_dir(path) || abs == Path::new("/") {
            if !st.is_dir() {
                return Err(EngineError::InvalidArgument(format!(
                    "{path}: not a directory"
                )));
            }
            TarSource {
                path: abs,
                name: opts.rename.clone().map(PathBuf::from).unwrap_or_default(),
                follow_symlink: true,
            }
        } else {
            let base = abs
                .file_name()
                .map(|n| n.to_os_string())
                .unwrap_or_default();
            TarSource {
                name: PathBuf::from(opts.rename.clone().unwrap_or(base)),
                path: abs,
                follow_symlink: follow,
            }
        };
        let (reader, mut writer) =
            io::pipe().map_err(|e| EngineError::io("creating", "a pipe", e))?;
        let short = c.short_id().to_string();
        let producer = std::thread::Builder::new()
            .name("carrel-cp-out".into())
            .spawn(move || {
                block_sigpipe();
                let r = carrel_archive::write_paths(
                    &view.path(),
                    std::slice::from_ref(&source),
                    &mut writer,
                    &WriteOptions::default(),
                );
                drop(writer);
                drop(view);
                tracing::debug!(container = %short, ok = r.is_ok(), "copy-out archive produced");
                Ok(r?)
            })
            .map_err(|e| EngineError::io("starting", "the archive producer", e))?;
        Ok((
            st,
            CopyStream {
                reader: Some(reader),
                producer: Some(producer),
                outcome: None,
            },
        ))
    }

    /// `PUT /containers/{id}/archive` (`docker cp … CONTAINER:DEST`, `docker cp - CONTAINER:DEST`):
    /// extract a tar (plain, gzip or zstd; decompressed in this process, never by a program of
    /// the container) into the existing directory `dest` of the container. `dest` and every
    /// entry are resolved inside the container's root; a missing `dest` is Docker's
    /// `Could not find the file … in container …`, a non-directory `extraction point is not a
    /// directory`, a read-only root `container rootfs is marked read-only`.
    pub fn container_copy_to(
        &self,
        name: &str,
        dest: &str,
        input: Box<dyn Read + Send>,
        opts: &CopyToOptions,
    ) -> Result<()> {
        let c = self.resolve_container(name)?;
        let view = self.container_view_with_mounts(&c, Access::ReadWrite)?;
        let abs = clean_absolute(&Path::new("/").join(dest));
        // Docker's order: the destination must exist and be a directory, then the rootfs must
        // be writable.
        match carrel_archive::resolve_dir_in_root(view.root(), &abs) {
            Ok(_) => {}
            Err(e) => return Err(dest_error(e, dest, name)),
        }
        // A copy into a writable volume or bind is fine on a read-only root; into a read-only
        // one it is refused (Docker's `checkIfPathIsInAVolume`).
        let to_volume = self.path_in_mount(&c, &abs)?;
        if !to_volume && c.spec.host_config.readonly_rootfs {
            return Err(EngineError::Permission(
                "container rootfs is marked read-only".into(),
            ));
        }
        let ownership = if opts.copy_uid_gid && !c.spec.config.user.is_empty() {
            let u = super::spec::resolve_user(view.root(), &c.spec.config.user, &[])?;
            Ownership::Fixed {
                uid: u.uid,
                gid: u.gid,
            }
        } else {
            Ownership::Archive
        };
        let (_, tar) = carrel_archive::decompress(BufReader::with_capacity(1 << 20, input))?;
        let copy = CopyOptions {
            no_overwrite_dir_non_dir: opts.no_overwrite_dir_non_dir,
            ownership,
            create_devices: true,
            ..CopyOptions::default()
        };
        match carrel_archive::apply_tar_at(view.root(), &abs, tar, &copy) {
            Ok(stats) => {
                tracing::debug!(container = %c.short_id(), entries = stats.entries, bytes = stats.bytes_written, "copied into the container");
                Ok(())
            }
            Err(ArchiveError::Open { source, .. }) => Err(dest_error(source, dest, name)),
            Err(e) => Err(e.into()),
        }
    }

    /// `docker commit`: a new image from the container's changes (see [`CommitOptions`]).
    /// Returns the new image id (`sha256:…`).
    pub fn container_commit(
        &self,
        name: &str,
        opts: &CommitOptions,
    ) -> Result<carrel_core::Digest> {
        self.commit_container(name, opts)
    }
}

/// Map an error resolving a path to stat or archive.
fn stat_error(e: io::Error, path: &str, container: &str) -> EngineError {
    match e.raw_os_error() {
        Some(libc::ENOENT) => file_not_found(path, container),
        Some(libc::ENOTDIR) => EngineError::InvalidArgument(format!("{path}: not a directory")),
        Some(libc::ELOOP) => {
            EngineError::InvalidArgument(format!("{path}: too many levels of symbolic links"))
        }
        _ => EngineError::io("resolving", PathBuf::from(path), e),
    }
}

/// Map an error resolving the destination of a copy into a container.
fn dest_error(e: io::Error, dest: &str, container: &str) -> EngineError {
    match e.raw_os_error() {
        Some(libc::ENOENT) => file_not_found(dest, container),
        Some(libc::ENOTDIR) => {
            EngineError::InvalidArgument("extraction point is not a directory".into())
        }
        Some(libc::EAGAIN) => EngineError::Conflict(format!(
            "{dest} changed in container {container} while it was resolved; try again"
        )),
        Some(libc::ELOOP) => {
            EngineError::InvalidArgument(format!("{dest}: too many levels of symbolic links"))
        }
        _ => EngineError::io("resolving", PathBuf::from(dest), e),
    }
}

/// Block `SIGPIPE` in the calling thread: a write to a pipe whose reader is gone then fails with
/// `EPIPE` (and the thread cleans up) instead of killing the process.
pub fn block_sigpipe() {
    // SAFETY: sigset manipulation on a local set, then changing this thread's mask only.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}
