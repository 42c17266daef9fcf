//! Looking inside containers and taking things out: diff, commit, export, cp.

use std::io::{self, IsTerminal, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::{Result, bail};

use carrel_core::units::human_size_precision;
use carrel_engine::Engine;
use carrel_engine::containers::fs::{CommitOptions, CopyFromOptions, CopySummary, HostCopyOptions};

use crate::cli::{CommitArgs, CpArgs, DiffArgs, ExportArgs, GlobalOptions};

/// `carrel diff`: `C /etc`, `A /newfile`, `D /etc/group`, one line per change, by path.
pub fn diff(engine: &Engine, a: &DiffArgs) -> Result<u8> {
    let changes = engine.container_changes(&a.container)?;
    let mut out = io::BufWriter::new(io::stdout().lock());
    for c in &changes {
        out.write_all(&[c.kind.letter() as u8, b' '])?;
        out.write_all(c.path.as_os_str().as_bytes())?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(0)
}

/// `carrel commit`: prints the new image's id.
pub fn commit(engine: &Engine, a: &CommitArgs) -> Result<u8> {
    let opts = CommitOptions {
        reference: a.reference.clone(),
        comment: a.message.clone().unwrap_or_default(),
        author: a.author.clone().unwrap_or_default(),
        changes: a.change.clone(),
        pause: a.pause,
    };
    let id = engine.container_commit(&a.container, &opts)?;
    println!("{id}");
    Ok(0)
}

/// `carrel export`: the container's filesystem as a tar, to `-o FILE` or a non-terminal stdout.
pub fn export(g: &GlobalOptions, a: &ExportArgs) -> Result<u8> {
    let Some(path) = &a.output else {
        if io::stdout().is_terminal() {
            bail!("cowardly refusing to save to a terminal. Use the -o flag or redirect");
        }
        let engine = super::open(g)?;
        let mut out = io::BufWriter::with_capacity(1 << 20, io::stdout().lock());
        engine.container_export(&a.container, &mut out)?;
        out.flush()?;
        return Ok(0);
    };
    let engine = super::open(g)?;
    // Like the docker CLI: a temporary file beside the destination, renamed when complete.
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        bail!(
            "failed to export container: invalid output path: directory {:?} does not exist",
            dir.display().to_string()
        );
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".carrel_temp_{name}.{}",
        &carrel_core::id::random_id()[..12]
    ));
    let result = (|| -> Result<()> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| anyhow::anyhow!("failed to create {}: {e}", tmp.display()))?;
        let mut out = io::BufWriter::with_capacity(1 << 20, file);
        engine.container_export(&a.container, &mut out)?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
            .map_err(|e| anyhow::anyhow!("failed to write {}: {e}", path.display()))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    Ok(0)
}

/// Split `CONTAINER:PATH` as the docker CLI does: an absolute path, a path without `:` and a
/// path whose part before `:` starts with `.` are local.
fn split_cp_arg(arg: &str) -> (Option<&str>, &str) {
    if arg.starts_with('/') {
        return (None, arg);
    }
    match arg.split_once(':') {
        Some((c, p)) if !c.starts_with('.') => (Some(c), p),
        _ => (None, arg),
    }
}

/// The owner of files copied out of a container: the user who ran `sudo carrel`, as the docker
/// CLI extracts as the user running it.
fn invoking_user() -> Option<(u32, u32)> {
    let uid = std::env::var("SUDO_UID").ok()?.parse().ok()?;
    let gid = std::env::var("SUDO_GID").ok()?.parse().ok()?;
    Some((uid, gid))
}

fn summary(s: &CopySummary) {
    let size = |n: u64| human_size_precision(n as f64, 3);
    if s.content_size != s.transferred {
        eprintln!(
            "Successfully copied {} (transferred {}) to {}",
            size(s.content_size),
            size(s.transferred),
            s.dest
        );
    } else {
        eprintln!("Successfully copied {} to {}", size(s.content_size), s.dest);
    }
}

/// `carrel cp`: between a container and the local filesystem, or a tar stream (`-`).
pub fn cp(engine: &Engine, a: &CpArgs) -> Result<u8> {
    if a.src.is_empty() {
        bail!("source can not be empty");
    }
    if a.dest.is_empty() {
        bail!("destination can not be empty");
    }
    // Docker: progress and the summary only when stdout is a terminal, unless -q.
    let quiet = a.quiet || !io::stdout().is_terminal();
    let opts = HostCopyOptions {
        follow_link: a.follow_link,
        copy_uid_gid: a.archive,
        host_owner: invoking_user(),
    };
    match (split_cp_arg(&a.src), split_cp_arg(&a.dest)) {
        ((Some(ctr), src), (None, "-")) => {
            let (_, mut stream) = engine.container_copy_from(
                ctr,
                src,
                &CopyFromOptions {
                    follow_link: a.follow_link,
                    rename: None,
                },
            )?;
            let mut out = io::BufWriter::with_capacity(1 << 20, io::stdout().lock());
            io::copy(&mut stream, &mut out)?;
            out.flush()?;
            stream.finish()?;
        }
        ((Some(ctr), src), (None, dest)) => {
            let s = engine.copy_container_to_host(ctr, src, dest, &opts)?;
            if !quiet {
                summary(&s);
            }
        }
        ((None, "-"), (Some(ctr), dest)) => {
            engine.copy_archive_to_container(Box::new(io::stdin()), ctr, dest, &opts)?;
        }
        ((None, src), (Some(ctr), dest)) => {
            let s = engine.copy_host_to_container(src, ctr, dest, &opts)?;
            if !quiet {
                summary(&s);
            }
        }
        ((Some(_), _), (Some(_), _)) => bail!("copying between containers is not supported"),
        ((None, _), (None, _)) => bail!("must specify at least one container source"),
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cp_arguments_split_like_docker() {
        assert_eq!(split_cp_arg("c1:/etc"), (Some("c1"), "/etc"));
        assert_eq!(split_cp_arg("/a:b"), (None, "/a:b"));
        assert_eq!(split_cp_arg("./a:b"), (None, "./a:b"));
        assert_eq!(split_cp_arg("file"), (None, "file"));
        assert_eq!(split_cp_arg("-"), (None, "-"));
        assert_eq!(split_cp_arg("c1:"), (Some("c1"), ""));
    }
}
