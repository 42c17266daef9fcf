//! `carrel serve`: the Docker Engine API on a unix socket (the server is `carrel_api`).
//!
//! The socket is root-owned with mode 0660. A lock file beside it (`<socket>.lock`) makes one
//! server per socket: a second one refuses to start, as it does when something else answers on
//! the socket; a socket file nobody answers on is stale and replaced. SIGTERM and SIGINT stop
//! the server cleanly (the socket is removed); running containers go on under their monitors.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};

use carrel_engine::Engine;

use crate::cli::ServeArgs;

/// The socket path of `unix:///path.sock` (or a plain absolute path).
fn socket_path(host: &str) -> Result<PathBuf> {
    let path = match host.strip_prefix("unix://") {
        Some(p) => p,
        None if host.starts_with('/') => host,
        None => bail!(
            "unsupported address {host:?}: carrel serve listens on unix sockets only (unix:///path.sock)"
        ),
    };
    if !path.starts_with('/') {
        bail!("the socket path must be absolute: {host:?}");
    }
    Ok(PathBuf::from(path))
}

fn lock_path(socket: &Path) -> PathBuf {
    let mut p = socket.as_os_str().to_owned();
    p.push(".lock");
    PathBuf::from(p)
}

/// `carrel serve [-H unix:///path.sock]`.
pub fn run(engine: Engine, a: &ServeArgs) -> Result<u8> {
    let socket = socket_path(&a.host)?;
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the socket's directory {}", dir.display()))?;
    }
    let lock_file = lock_path(&socket);
    let Some(lock) = carrel_core::fs::FileLock::try_lock(&lock_file)
        .with_context(|| format!("locking {}", lock_file.display()))?
    else {
        bail!(
            "another carrel serve is already listening on {} (it holds {})",
            socket.display(),
            lock_file.display()
        );
    };
    match std::os::unix::net::UnixStream::connect(&socket) {
        Ok(_) => bail!(
            "something is already listening on {}: stop it or choose another socket with -H",
            socket.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(_) => {
            // Nobody answers: a stale socket of a server that died.
            tracing::info!(socket = %socket.display(), "removing a stale socket");
            match std::fs::remove_file(&socket) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("removing {}", socket.display()));
                }
            }
        }
    }
    // Writes to a client that went away must fail, not kill the server.
    // SAFETY: setting a signal disposition; children reset it (std does for spawned programs).
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    let program = std::env::current_exe()
        .context("cannot find the carrel binary to run container monitors")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("carrel-serve")
        .max_blocking_threads(1024)
        .build()
        .context("starting the server's runtime")?;
    // The engine handle is shared by every request for the server's lifetime.
    let engine = Arc::new(engine);
    // What the host can do (the OCI runtimes, which are probed by creating a container with
    // each, and the kernel's features) is found out now, beside the first requests, rather
    // than by the first request that needs it: on a fresh data root that is ~100 ms, and the
    // first `docker info` or `docker run` would wait for it. (Joined before the server exits:
    // a runtime's probe container exists between its create and its delete.)
    let warm = Arc::clone(&engine);
    let host_probe = std::thread::Builder::new()
        .name("host-probe".into())
        .spawn(move || {
            if let Err(e) = warm.info() {
                tracing::debug!(error = %e, "probing the host at start-up");
            }
        });
    let result: Result<()> = rt.block_on(async {
        let listener = {
            // Created with no access for others, then opened to the group.
            // SAFETY: umask only changes this process's file creation mask.
            let old = unsafe { libc::umask(0o177) };
            let l = tokio::net::UnixListener::bind(&socket);
            // SAFETY: as above, restoring it.
            unsafe { libc::umask(old) };
            l.with_context(|| format!("listening on {}", socket.display()))?
        };
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o660))
            .with_context(|| format!("setting the mode of {}", socket.display()))?;
        std::os::unix::fs::chown(&socket, Some(0), Some(0))
            .with_context(|| format!("setting the owner of {}", socket.display()))?;
        eprintln!("carrel serve: API listening on unix://{}", socket.display());
        let shutdown = async {
            use tokio::signal::unix::{SignalKind, signal};
            let mut term = signal(SignalKind::terminate()).ok();
            let mut int = signal(SignalKind::interrupt()).ok();
            tokio::select! {
                _ = async { if let Some(t) = term.as_mut() { t.recv().await; } else { std::future::pending::<()>().await } } => {}
                _ = async { if let Some(i) = int.as_mut() { i.recv().await; } else { std::future::pending::<()>().await } } => {}
            }
        };
        carrel_api::serve(
            engine,
            listener,
            carrel_api::ServeOptions {
                carrel_program: program,
            },
            shutdown,
        )
        .await?;
        Ok(())
    });
    let _ = std::fs::remove_file(&socket);
    if let Ok(probe) = host_probe {
        let _ = probe.join();
    }
    drop(lock);
    // Requests still running engine work are not waited for long: what a lease covers is rolled
    // back by the next carrel command.
    rt.shutdown_timeout(std::time::Duration::from_secs(5));
    result?;
    Ok(0)
}
