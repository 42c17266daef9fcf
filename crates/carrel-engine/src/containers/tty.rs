//! Terminals: the console socket a runtime sends a pty master through (`--console-socket`,
//! `SCM_RIGHTS`), window sizes, raw mode for the caller's terminal, and the relay between the
//! caller's terminal and a pty master (`exec -it`), with `SIGWINCH` forwarding.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, poll};
use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
use rustix::termios::{self, Winsize};

use super::runtime::RunError;

/// Longest path a unix socket address can hold here (the kernel allows 108 with the NUL).
const SUN_PATH_MAX: usize = 107;

/// A path usable for a unix socket at `dir/name`: the path itself when short enough, else a
/// `/proc/<pid>/fd/<n>/name` path through an open handle on `dir` (which must then stay open,
/// hence returned). The `/proc/<pid>` form also works for other processes (the runtime).
pub fn socket_path(dir: &Path, name: &str) -> io::Result<(PathBuf, Option<OwnedFd>)> {
    let full = dir.join(name);
    if full.as_os_str().len() <= SUN_PATH_MAX {
        return Ok((full, None));
    }
    let fd = rustix::fs::open(
        dir,
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    let p = PathBuf::from(format!(
        "/proc/{}/fd/{}/{name}",
        std::process::id(),
        fd.as_raw_fd()
    ));
    Ok((p, Some(fd)))
}

/// Bind a listening unix socket at `dir/name` (replacing a stale one), however long the path.
pub fn bind_unix(dir: &Path, name: &str) -> io::Result<UnixListener> {
    let _ = std::fs::remove_file(dir.join(name));
    let (path, _hold) = socket_path(dir, name)?;
    UnixListener::bind(path)
}

/// Connect to the unix socket at `path`, however long the path.
pub fn connect_unix(path: &Path) -> io::Result<UnixStream> {
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => {
            let (p, _hold) = socket_path(dir, &name.to_string_lossy())?;
            UnixStream::connect(p)
        }
        _ => UnixStream::connect(path),
    }
}

/// A listening console socket for one runtime call.
#[derive(Debug)]
pub struct ConsoleSocket {
    listener: UnixListener,
    /// The path to give the runtime (`--console-socket`).
    pub path: PathBuf,
    file: PathBuf,
    _dir_handle: Option<OwnedFd>,
}

impl ConsoleSocket {
    /// Listen at `dir/name`.
    pub fn bind(dir: &Path, name: &str) -> Result<ConsoleSocket, RunError> {
        let file = dir.join(name);
        let _ = std::fs::remove_file(&file);
        let (path, hold) = socket_path(dir, name).map_err(|e| RunError::io("binding", &file, e))?;
        let listener = UnixListener::bind(&path).map_err(|e| RunError::io("binding", &file, e))?;
        Ok(ConsoleSocket {
            listener,
            path,
            file,
            _dir_handle: hold,
        })
    }

    /// Accept the runtime's connection and receive the pty master it sends. `alive` is asked
    /// between waits: when it says the runtime has ended, there is nothing to wait for.
    pub fn receive_master(
        &self,
        timeout: Duration,
        mut alive: impl FnMut() -> bool,
    ) -> Result<OwnedFd, RunError> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut fds = [PollFd::new(&self.listener, PollFlags::IN)];
            let ts = rustix::event::Timespec {
                tv_sec: 0,
                tv_nsec: 20_000_000,
            };
            match poll(&mut fds, Some(&ts)) {
                Ok(0) | Err(rustix::io::Errno::INTR) => {
                    if !alive() {
                        return Err(RunError::Internal(
                            "the OCI runtime ended without sending a terminal".into(),
                        ));
                    }
                    if Instant::now() > deadline {
                        return Err(RunError::Timeout(
                            "timed out waiting for the OCI runtime's terminal".into(),
                        ));
                    }
                }
                Ok(_) => break,
                Err(e) => return Err(RunError::io("polling", &self.file, e.into())),
            }
        }
        let (conn, _) = self
            .listener
            .accept()
            .map_err(|e| RunError::io("accepting on", &self.file, e))?;
        recv_fd(&conn).map_err(|e| RunError::io("receiving terminal from", &self.file, e))
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
    }
}

/// Receive one file descriptor sent with `SCM_RIGHTS` on `sock`.
pub fn recv_fd(sock: &UnixStream) -> io::Result<OwnedFd> {
    let mut buf = [0u8; 4096];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut iov = [io::IoSliceMut::new(&mut buf)];
    rustix::net::recvmsg(sock, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC)?;
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(mut fds) = msg
            && let Some(fd) = fds.next()
        {
            return Ok(fd);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        "no file descriptor received",
    ))
}

/// Set the window size of the terminal `fd`.
pub fn set_size(fd: BorrowedFd<'_>, rows: u16, cols: u16) -> io::Result<()> {
    termios::tcsetwinsize(
        fd,
        Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        },
    )?;
    Ok(())
}

/// The window size `(rows, cols)` of the terminal `fd`.
pub fn get_size(fd: BorrowedFd<'_>) -> io::Result<(u16, u16)> {
    let ws = termios::tcgetwinsize(fd)?;
    Ok((ws.ws_row, ws.ws_col))
}

/// Whether `fd` is a terminal.
pub fn is_terminal(fd: BorrowedFd<'_>) -> bool {
    termios::isatty(fd)
}

/// The caller's terminal in raw mode for as long as this lives (restored on drop).
#[derive(Debug)]
pub struct RawMode {
    fd: RawFd,
    saved: termios::Termios,
}

impl RawMode {
    /// Put the terminal `fd` into raw mode.
    pub fn enable(fd: BorrowedFd<'_>) -> io::Result<RawMode> {
        let saved = termios::tcgetattr(fd)?;
        let mut raw = saved.clone();
        raw.make_raw();
        termios::tcsetattr(fd, termios::OptionalActions::Now, &raw)?;
        Ok(RawMode {
            fd: fd.as_raw_fd(),
            saved,
        })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: the descriptor was valid when raw mode was enabled and the caller keeps its
        // terminal open while this guard lives.
        let fd = unsafe { BorrowedFd::borrow_raw(self.fd) };
        let _ = termios::tcsetattr(fd, termios::OptionalActions::Now, &self.saved);
    }
}

static WINCH_PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_winch(_: libc::c_int) {
    let fd = WINCH_PIPE.load(Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: write(2) is async-signal-safe; the byte only wakes the relay's poll.
        unsafe {
            libc::write(fd, b"w".as_ptr().cast(), 1);
        }
    }
}

/// A `SIGWINCH` notifier: a pipe that becomes readable when the terminal is resized.
#[derive(Debug)]
pub struct WinchWatch {
    read: OwnedFd,
    _write: OwnedFd,
    old: libc::sigaction,
}

impl WinchWatch {
    /// Install the `SIGWINCH` handler (one watcher per process at a time).
    pub fn install() -> io::Result<WinchWatch> {
        let (read, write) = rustix::pipe::pipe_with(
            rustix::pipe::PipeFlags::CLOEXEC | rustix::pipe::PipeFlags::NONBLOCK,
        )?;
        WINCH_PIPE.store(write.as_raw_fd(), Ordering::Relaxed);
        // SAFETY: installing a handler that only calls write(2) on a pipe.
        let old = unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_winch as *const () as usize;
            sa.sa_flags = libc::SA_RESTART;
            let mut old: libc::sigaction = std::mem::zeroed();
            libc::sigaction(libc::SIGWINCH, &sa, &mut old);
            old
        };
        Ok(WinchWatch {
            read,
            _write: write,
            old,
        })
    }

    /// The descriptor to poll for readability.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }

    /// Consume pending notifications.
    pub fn drain(&self) {
        let mut b = [0u8; 64];
        while matches!(rustix::io::read(&self.read, &mut b), Ok(n) if n > 0) {}
    }
}

impl Drop for WinchWatch {
    fn drop(&mut self) {
        WINCH_PIPE.store(-1, Ordering::Relaxed);
        // SAFETY: restoring the previous disposition.
        unsafe {
            libc::sigaction(libc::SIGWINCH, &self.old, std::ptr::null_mut());
        }
    }
}

fn set_nonblocking(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    let flags = rustix::fs::fcntl_getfl(fd)?;
    let flags = if on {
        flags | rustix::fs::OFlags::NONBLOCK
    } else {
        flags - rustix::fs::OFlags::NONBLOCK
    };
    rustix::fs::fcntl_setfl(fd, flags)?;
    Ok(())
}

fn write_all_fd(fd: BorrowedFd<'_>, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        match rustix::io::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(rustix::io::Errno::AGAIN) => {
                let mut p = [PollFd::new(&fd, PollFlags::OUT)];
                let _ = poll(&mut p, None);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Relay between the caller's terminal (`input`, `output`) and a pty `master` until the master
/// reports the other side closed (EIO/EOF) or `done` says the process ended. When `input` is a
/// terminal its size is copied to the master at start and on every `SIGWINCH`. The caller puts
/// its terminal in raw mode ([`RawMode`]) when it wants keystrokes passed through unchanged.
pub fn relay(
    master: BorrowedFd<'_>,
    input: Option<BorrowedFd<'_>>,
    output: BorrowedFd<'_>,
    mut done: impl FnMut() -> bool,
) -> io::Result<()> {
    let winch = match input {
        Some(i) if is_terminal(i) => {
            if let Ok((r, c)) = get_size(i) {
                let _ = set_size(master, r, c);
            }
            Some(WinchWatch::install()?)
        }
        _ => None,
    };
    set_nonblocking(master, true)?;
    let mut input_open = input.is_some();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let mut fds = vec![PollFd::new(&master, PollFlags::IN)];
        let in_idx = match (input_open, input) {
            (true, Some(i)) => {
                fds.push(PollFd::from_borrowed_fd(i, PollFlags::IN));
                Some(fds.len() - 1)
            }
            _ => None,
        };
        let w_idx = winch.as_ref().map(|w| {
            fds.push(PollFd::from_borrowed_fd(w.fd(), PollFlags::IN));
            fds.len() - 1
        });
        let ts = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 100_000_000,
        };
        match poll(&mut fds, Some(&ts)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
        let master_ev = fds[0].revents();
        let in_ev = in_idx.map(|i| fds[i].revents());
        let w_ev = w_idx.map(|i| fds[i].revents());
        if !master_ev.is_empty() {
            match rustix::io::read(master, &mut buf) {
                Ok(0) | Err(rustix::io::Errno::IO) => return Ok(()),
                Ok(n) => write_all_fd(output, &buf[..n])?,
                Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if let (Some(ev), Some(i)) = (in_ev, input)
            && !ev.is_empty()
        {
            match rustix::io::read(i, &mut buf) {
                Ok(0) => {
                    // End of input: send EOF (^D) to the terminal, once.
                    let _ = write_all_fd(master, &[4]);
                    input_open = false;
                }
                Ok(n) => write_all_fd(master, &buf[..n])?,
                Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::INTR) => {}
                Err(_) => input_open = false,
            }
        }
        if let (Some(ev), Some(w)) = (w_ev, &winch)
            && !ev.is_empty()
        {
            w.drain();
            if let Some(i) = input
                && let Ok((r, c)) = get_size(i)
            {
                let _ = set_size(master, r, c);
            }
        }
        if master_ev.is_empty() && done() {
            return Ok(());
        }
    }
}

/// Duplicate a raw descriptor the caller owns elsewhere (e.g. stdin) into an owned one.
pub fn dup_fd(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    Ok(rustix::io::fcntl_dupfd_cloexec(fd, 3)?)
}

/// Open a new pty pair `(master, slave)` (for tests and for callers that need a terminal).
pub fn open_pty() -> io::Result<(OwnedFd, OwnedFd)> {
    use rustix::pty::{OpenptFlags, grantpt, ioctl_tiocgptpeer, openpt, unlockpt};
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
    grantpt(&master)?;
    unlockpt(&master)?;
    let slave = ioctl_tiocgptpeer(
        &master,
        OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC,
    )?;
    Ok((master, slave))
}

/// Wrap a raw descriptor number the caller guarantees open and owned (e.g. inherited at exec).
///
/// # Safety
/// `fd` must be open and not owned by anything else.
pub unsafe fn owned_from_raw(fd: RawFd) -> OwnedFd {
    // SAFETY: guaranteed by the caller.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_socket_paths_work() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a".repeat(60)).join("b".repeat(60));
        std::fs::create_dir_all(&deep).unwrap();
        let l = bind_unix(&deep, "attach.sock").unwrap();
        let c = connect_unix(&deep.join("attach.sock")).unwrap();
        let (_s, _) = l.accept().unwrap();
        drop(c);
        assert!(deep.join("attach.sock").exists());
    }

    #[test]
    fn fd_passing_and_window_size() {
        let (a, b) = UnixStream::pair().unwrap();
        let (master, _slave) = open_pty().unwrap();
        set_size(master.as_fd(), 33, 99).unwrap();
        let fds = [master.as_fd()];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = rustix::net::SendAncillaryBuffer::new(&mut space);
        assert!(control.push(rustix::net::SendAncillaryMessage::ScmRights(&fds)));
        rustix::net::sendmsg(
            &a,
            &[io::IoSlice::new(b"/dev/ptmx")],
            &mut control,
            rustix::net::SendFlags::empty(),
        )
        .unwrap();
        let got = recv_fd(&b).unwrap();
        assert_eq!(get_size(got.as_fd()).unwrap(), (33, 99));
    }
}
