//! Starting the monitor process with `posix_spawn`: in a new session, stdio on `/dev/null`, and
//! one end of the sync socket as its descriptor 3.
//!
//! `std::process::Command` needs a `pre_exec` hook for the descriptor and the session, and a
//! hook makes it `fork` the caller, copying its page tables (the carrel binary and the
//! database's memory map: 1.5–2 ms measured per `run`); `posix_spawn` (a `vfork`-like clone in
//! glibc) sets both up in the child without copying. Nothing else differs: the program, its
//! arguments, environment changes and working directory come from the `Command`.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::process::Command;

use rustix::process::Pid;

/// The descriptor the monitor finds its sync socket on.
pub const SYNC_FD: i32 = 3;

/// Spawn `cmd` detached (new session) with `sync` as its descriptor [`SYNC_FD`] and stdio on
/// `/dev/null`; returns the child's pid (the caller reaps it).
pub fn spawn_detached(cmd: &Command, sync: BorrowedFd<'_>) -> io::Result<Pid> {
    if cmd.get_current_dir().is_some() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the monitor is spawned in the caller's directory",
        ));
    }
    // A duplicate above the standard descriptors and SYNC_FD, so that moving it to SYNC_FD is
    // a real dup2 (which clears close-on-exec) whatever number the socket had.
    let high = rustix::io::fcntl_dupfd_cloexec(sync, 10)?;
    let program = cstring(cmd.get_program())?;
    let mut argv = vec![program.clone()];
    for a in cmd.get_args() {
        argv.push(cstring(a)?);
    }
    let envp = environment(cmd)?;
    let mut argv_ptrs: Vec<*mut libc::c_char> =
        argv.iter().map(|a| a.as_ptr().cast_mut()).collect();
    argv_ptrs.push(std::ptr::null_mut());
    let mut envp_ptrs: Vec<*mut libc::c_char> =
        envp.iter().map(|e| e.as_ptr().cast_mut()).collect();
    envp_ptrs.push(std::ptr::null_mut());
    let dev_null = c"/dev/null";

    // SAFETY: the attribute and file-action objects are initialised before use and destroyed
    // on every path; every pointer passed lives until posix_spawn returns.
    unsafe {
        let mut actions: libc::posix_spawn_file_actions_t = std::mem::zeroed();
        check(libc::posix_spawn_file_actions_init(&mut actions))?;
        let mut attr: libc::posix_spawnattr_t = std::mem::zeroed();
        if let Err(e) = check(libc::posix_spawnattr_init(&mut attr)) {
            libc::posix_spawn_file_actions_destroy(&mut actions);
            return Err(e);
        }
        let result = (|| {
            check(libc::posix_spawn_file_actions_addopen(
                &mut actions,
                0,
                dev_null.as_ptr(),
                libc::O_RDONLY,
                0,
            ))?;
            check(libc::posix_spawn_file_actions_addopen(
                &mut actions,
                1,
                dev_null.as_ptr(),
                libc::O_WRONLY,
                0,
            ))?;
            check(libc::posix_spawn_file_actions_adddup2(&mut actions, 1, 2))?;
            check(libc::posix_spawn_file_actions_adddup2(
                &mut actions,
                high.as_raw_fd(),
                SYNC_FD,
            ))?;
            // Signals: none blocked, SIGPIPE back to its default (Rust ignores it).
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            check(libc::posix_spawnattr_setsigmask(&mut attr, &empty))?;
            let mut defaults: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut defaults);
            libc::sigaddset(&mut defaults, libc::SIGPIPE);
            check(libc::posix_spawnattr_setsigdefault(&mut attr, &defaults))?;
            let flags = libc::POSIX_SPAWN_SETSID
                | libc::POSIX_SPAWN_SETSIGMASK as libc::c_short
                | libc::POSIX_SPAWN_SETSIGDEF as libc::c_short;
            check(libc::posix_spawnattr_setflags(&mut attr, flags))?;
            let mut pid: libc::pid_t = 0;
            let spawn = if program.as_bytes().contains(&b'/') {
                libc::posix_spawn
            } else {
                libc::posix_spawnp
            };
            check(spawn(
                &mut pid,
                program.as_ptr(),
                &actions,
                &attr,
                argv_ptrs.as_ptr(),
                envp_ptrs.as_ptr(),
            ))?;
            Pid::from_raw(pid).ok_or_else(|| io::Error::other("posix_spawn returned no pid"))
        })();
        libc::posix_spawnattr_destroy(&mut attr);
        libc::posix_spawn_file_actions_destroy(&mut actions);
        result
    }
}

/// The caller's environment with `cmd`'s changes.
fn environment(cmd: &Command) -> io::Result<Vec<CString>> {
    let mut vars: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    for (key, value) in cmd.get_envs() {
        vars.retain(|(k, _)| k != key);
        if let Some(v) = value {
            vars.push((key.to_os_string(), v.to_os_string()));
        }
    }
    vars.into_iter()
        .map(|(k, v)| {
            let mut kv = k.into_vec();
            kv.push(b'=');
            kv.extend(v.into_vec());
            CString::new(kv).map_err(|_| nul_error())
        })
        .collect()
}

fn cstring(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| nul_error())
}

fn nul_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "a NUL byte in the monitor's command line or environment",
    )
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::process::WaitOptions;
    use std::io::Read;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    /// The child runs in its own session, sees the socket on descriptor 3 (and nothing else
    /// of ours), the environment change, and /dev/null as stdin.
    #[test]
    fn the_child_gets_its_session_socket_environment_and_stdio() {
        let (mut ours, theirs) = UnixStream::pair().unwrap();
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(
                "{ cut -d' ' -f6 /proc/$$/stat; echo $$; echo \"$CARREL_SPAWN_TEST\"; \
                 readlink /proc/$$/fd/3 | cut -c1-7; \
                 for n in 4 5 6 7 8 9; do [ -e /proc/$$/fd/$n ] && echo leaked $n; done; \
                 readlink /proc/$$/fd/0; } >&3",
            )
            .env("CARREL_SPAWN_TEST", "passed");
        let pid = spawn_detached(&cmd, theirs.as_fd()).unwrap();
        drop(theirs);
        let mut out = String::new();
        ours.read_to_string(&mut out).unwrap();
        let (reaped, _) = rustix::process::waitpid(Some(pid), WaitOptions::empty())
            .unwrap()
            .unwrap();
        assert_eq!(reaped, pid);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 5, "{out}");
        assert_eq!(lines[0], lines[1], "session leader: {out}");
        assert_eq!(lines[2], "passed");
        assert_eq!(lines[3], "socket:", "descriptor 3: {out}");
        assert_eq!(lines[4], "/dev/null");
    }

    /// An environment that cannot be passed to the kernel, or a working directory, is refused
    /// before anything is spawned. (A NUL in an argument never gets here: `Command` replaces
    /// such an argument when it is added, and the monitor's arguments come from the command
    /// line and the environment, which cannot hold one.)
    #[test]
    fn bad_commands_are_refused_before_spawning() {
        let (_ours, theirs) = UnixStream::pair().unwrap();
        let mut nul = Command::new("/bin/true");
        nul.env("CARREL_SPAWN_TEST", "a\0b");
        let e = spawn_detached(&nul, theirs.as_fd()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("NUL"), "{e}");
        let mut cwd = Command::new("/bin/true");
        cwd.current_dir("/");
        let e = spawn_detached(&cwd, theirs.as_fd()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("directory"), "{e}");
    }
}
