//! `volume export` / `volume import`: a volume's content as a tar, for backup and restore (Docker
//! has no command for this; Podman's `volume export`/`import` are the model).
//!
//! Export writes a `./` entry with the owner, mode and time of `_data` itself, then every entry
//! below it ([`carrel_archive::write_tree`]): owners, modes, times, extended attributes (`user.*`
//! included), hardlinks as hardlink entries, symlinks as symlinks (never followed: each entry is
//! opened relative to its parent's descriptor with `O_NOFOLLOW`, so a container that swaps a
//! file for a symlink to a host file while the export runs can never make host content appear in
//! it — ST-35), and sparse files as PAX sparse entries holding only their data. Running
//! containers that use the volume are frozen (the runtime's `pause`, the cgroup freezer) for the
//! duration so the copy is consistent, and thawed afterwards whatever happens; with
//! `pause: false` the export runs beside them and may catch files mid-write.
//!
//! Import extracts a tar (plain, gzip or zstd) into an existing volume with the hardened
//! extractor ([`carrel_archive::apply_tar_at`]: entries resolved inside the volume, no writing
//! through symlinks, hardlinks kept inside, sparse entries written with holes). Entries are
//! merged into what the volume holds (like `tar -x`). A leading `./` entry gives `_data` its
//! owner and mode. The volume must exist (create it first, as with Podman); a volume that a
//! running container uses is refused unless forced.

use std::io::{BufReader, Read, Write};
use std::os::fd::AsFd;
use std::path::Path;

use carrel_archive::{CopyOptions, WriteOptions};
use carrel_core::fs::Root;
use carrel_meta::volumes as rows;
use rustix::fs::{self as rfs, AtFlags, Mode, Timestamps};

use crate::containers::runtime::Runtime;
use crate::{Engine, EngineError, Result};

/// How to export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportOptions {
    /// Freeze the running containers that use the volume while it is read (default true).
    pub pause: bool,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions { pause: true }
    }
}

/// How to import.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportOptions {
    /// Import even while running containers use the volume.
    pub force: bool,
}

/// What an import did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportStats {
    /// Entries in the archive.
    pub entries: u64,
    /// Bytes of file content written.
    pub bytes_written: u64,
    /// The volume's disk usage afterwards.
    pub size: u64,
}

/// Containers frozen for an export; thawed on [`Paused::resume`] or, failing that, on drop.
struct Paused {
    frozen: Vec<(String, Runtime)>,
}

impl Paused {
    fn resume(mut self) -> Result<()> {
        let mut first = None;
        for (id, rt) in self.frozen.drain(..) {
            if let Err(e) = rt.resume(&id) {
                tracing::warn!(container = %id, %e, "could not resume the container");
                first.get_or_insert(e);
            }
        }
        match first {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        for (id, rt) in self.frozen.drain(..) {
            if let Err(e) = rt.resume(&id) {
                tracing::warn!(container = %id, %e, "could not resume the container");
            }
        }
    }
}

fn root_entry(path: &Path) -> Result<[u8; 512]> {
    let st = rfs::stat(path).map_err(|e| EngineError::io("reading", path, e.into()))?;
    let mut h = tar::Header::new_ustar();
    h.set_path("./")
        .map_err(|e| EngineError::io("archiving", path, e))?;
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(st.st_mode & 0o7777);
    h.set_uid(u64::from(st.st_uid));
    h.set_gid(u64::from(st.st_gid));
    h.set_mtime(st.st_mtime.max(0) as u64);
    h.set_size(0);
    h.set_cksum();
    let mut out = [0u8; 512];
    out.copy_from_slice(h.as_bytes());
    Ok(out)
}

/// The owner, mode and mtime of a leading `./` directory entry, if the block is one.
fn parse_root_entry(block: &[u8]) -> Option<(u32, u32, u32, i64)> {
    if block.len() != 512 || block.iter().all(|&b| b == 0) {
        return None;
    }
    let h = tar::Header::from_byte_slice(block);
    if h.entry_type() != tar::EntryType::Directory || h.cksum().ok()? != checksum(block) {
        return None;
    }
    let path = h.path_bytes();
    if !matches!(&path[..], b"./" | b"." | b"/" | b"") {
        return None;
    }
    Some((
        h.mode().ok()? & 0o7777,
        h.uid().ok()? as u32,
        h.gid().ok()? as u32,
        h.mtime().ok()? as i64,
    ))
}

fn checksum(block: &[u8]) -> u32 {
    block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(b)
            }
        })
        .sum()
}

impl Engine {
    /// `volume export`: write a tar of the volume's content to `out` (see the module docs).
    /// Returns the bytes written.
    pub fn volume_export(
        &self,
        name: &str,
        out: &mut dyn Write,
        opts: &ExportOptions,
    ) -> Result<u64> {
        self.volume_get(name)?;
        let lease = self.lease("volume export")?;
        let result = self.with_volume_leased(name, &lease, |path| {
            let paused = if opts.pause {
                self.pause_users(name)?
            } else {
                Paused { frozen: Vec::new() }
            };
            let written = (|| -> Result<u64> {
                let head = root_entry(path)?;
                out.write_all(&head)
                    .map_err(carrel_archive::ArchiveError::Write)?;
                let stats = carrel_archive::write_tree(
                    path,
                    &mut *out,
                    &WriteOptions {
                        xattrs: true,
                        sparse: true,
                    },
                )?;
                Ok(stats.size + 512)
            })();
            let resumed = paused.resume();
            let written = written?;
            resumed?;
            Ok(written)
        });
        self.end_lease(lease, false);
        result
    }

    /// `volume import`: extract a tar (plain, gzip or zstd) into an existing volume (see the
    /// module docs).
    pub fn volume_import(
        &self,
        name: &str,
        input: Box<dyn Read + Send>,
        opts: &ImportOptions,
    ) -> Result<ImportStats> {
        self.volume_get(name)?;
        if !opts.force {
            let running = self.running_users(name)?;
            if !running.is_empty() {
                return Err(EngineError::Conflict(format!(
                    "volume {name} is in use by running container(s) [{}]: stop them first, or import with --force",
                    running.join(", ")
                )));
            }
        }
        let lease = self.lease("volume import")?;
        let result = self.with_volume_leased(name, &lease, |path| {
            let (_, mut stream) = carrel_archive::decompress(BufReader::with_capacity(
                carrel_archive::BUFFER_SIZE,
                input,
            ))?;
            let mut first = Vec::with_capacity(512);
            (&mut stream)
                .take(512)
                .read_to_end(&mut first)
                .map_err(|source| carrel_archive::ArchiveError::Read { offset: 0, source })?;
            let root_meta = parse_root_entry(&first);
            let root = Root::open(path).map_err(|e| EngineError::io("opening", path, e))?;
            let stats = carrel_archive::apply_tar_at(
                &root,
                Path::new("/"),
                std::io::Cursor::new(first).chain(stream),
                &CopyOptions::default(),
            )?;
            if let Some((mode, uid, gid, mtime)) = root_meta {
                let fd = rfs::open(
                    path,
                    rfs::OFlags::RDONLY
                        | rfs::OFlags::DIRECTORY
                        | rfs::OFlags::NOFOLLOW
                        | rfs::OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| EngineError::io("opening", path, e.into()))?;
                rfs::fchown(
                    fd.as_fd(),
                    Some(rfs::Uid::from_raw(uid)),
                    Some(rfs::Gid::from_raw(gid)),
                )
                .map_err(|e| EngineError::io("setting the owner of", path, e.into()))?;
                rfs::fchmod(fd.as_fd(), Mode::from_raw_mode(mode))
                    .map_err(|e| EngineError::io("setting the mode of", path, e.into()))?;
                let t = rfs::Timespec {
                    tv_sec: mtime,
                    tv_nsec: 0,
                };
                let _ = rfs::utimensat(
                    fd.as_fd(),
                    "",
                    &Timestamps {
                        last_access: t,
                        last_modification: t,
                    },
                    AtFlags::EMPTY_PATH,
                );
            }
            Ok((stats.entries, stats.bytes_written))
        });
        self.end_lease(lease, false);
        let (entries, bytes_written) = result?;
        let size = self.volume_measure(name)?;
        Ok(ImportStats {
            entries,
            bytes_written,
            size,
        })
    }

    /// Run `f` on the volume's content path with the volume listed under `lease` (so no
    /// removal takes it meanwhile) and mounted for user `lease:<id>` when driver-backed.
    fn with_volume_leased<T>(
        &self,
        name: &str,
        lease: &carrel_meta::Lease,
        f: impl FnOnce(&Path) -> Result<T>,
    ) -> Result<T> {
        let listed = self.meta().write(|tx| {
            if rows::get(tx, name)?.is_none() {
                return Ok(false);
            }
            lease.add(tx, "volume", name)?;
            Ok(true)
        })?;
        if !listed {
            return Err(EngineError::NotFound(format!("get {name}: no such volume")));
        }
        let user = format!("lease:{}", lease.id());
        let path = self.volume_mount(name, &user)?;
        let result = f(&path);
        if let Err(e) = self.volume_unmount(name, &user) {
            tracing::warn!(volume = name, %e, "could not release the volume");
        }
        result
    }

    /// Running containers that reference the volume.
    fn running_users(&self, name: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for id in self.volume_users(name)? {
            if let Ok(c) = self.resolve_container(&id)
                && c.is_running()
            {
                out.push(c.id);
            }
        }
        Ok(out)
    }

    /// Freeze the running containers that use the volume. On failure, those already frozen
    /// are thawed.
    fn pause_users(&self, name: &str) -> Result<Paused> {
        let mut paused = Paused { frozen: Vec::new() };
        for id in self.running_users(name)? {
            let rt = self.container_runtime(&id)?;
            match rt.state(&id)? {
                Some(s) if s.status == "running" => {}
                _ => continue,
            }
            rt.pause(&id)?;
            tracing::debug!(container = %id, volume = name, "paused for export");
            paused.frozen.push((id, rt));
        }
        Ok(paused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_entry_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let block = root_entry(dir.path()).unwrap();
        let (mode, uid, _, _) = parse_root_entry(&block).unwrap();
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(dir.path()).unwrap();
        assert_eq!(mode, m.mode() & 0o7777);
        assert_eq!(uid, m.uid());
        assert!(parse_root_entry(&[0u8; 512]).is_none());
        let mut h = tar::Header::new_ustar();
        h.set_path("a/").unwrap();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_cksum();
        assert!(parse_root_entry(h.as_bytes()).is_none());
    }
}
