//! Helpers shared by carrel's integration tests.
//!
//! - [`TestRoot`]: a fresh data root in a `carrel-test-*` directory under the system temp dir,
//!   driven through the real `carrel` binary. Dropping it (also while a test panics) kills the
//!   processes it started, lazily unmounts everything mounted under it and removes it.
//! - [`tree`] / [`assert_trees_eq`]: snapshots of directory trees (types, modes, owners, sizes,
//!   content hashes, symlink targets, device numbers, xattrs) for before/after comparisons, and
//!   [`overlay_merge`] to fold overlay layer directories into the tree a container would see.
//! - [`TarBuilder`], [`Image`], [`archive`]: layer tars and image archives (docker legacy
//!   `manifest.json`, Docker ≥ 25 `blobs/sha256` and OCI layouts) written by the tests.
//! - Docker's human-readable sizes and durations, written independently of carrel's, as oracles.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{CString, OsStr};
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use carrel_core::{Digest, DigestWriter};

/// The binary under test.
pub const CARREL: &str = env!("CARGO_BIN_EXE_carrel");

/// How long any single carrel command may take before the test gives up on it.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);

/// What a finished command printed and how it ended.
#[derive(Clone)]
pub struct Output {
    /// The command line, for messages.
    pub cmdline: String,
    /// Exit status.
    pub status: ExitStatus,
    /// Standard output, raw.
    pub stdout_raw: Vec<u8>,
    /// Standard output as text (lossy).
    pub stdout: String,
    /// Standard error as text (lossy).
    pub stderr: String,
}

impl Output {
    /// Exit code (`None` when killed by a signal).
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Whether it exited with 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }
}

impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stdout = if self.stdout.len() > 4000 {
            format!("{}… ({} bytes)", &self.stdout[..4000], self.stdout.len())
        } else {
            self.stdout.clone()
        };
        write!(
            f,
            "`{}` → {}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.cmdline, self.status, stdout, self.stderr
        )
    }
}

/// A fresh data root driven through the real binary.
pub struct TestRoot {
    base: PathBuf,
    root: PathBuf,
    driver: Option<String>,
    pids: Mutex<Vec<u32>>,
}

impl TestRoot {
    /// A new, empty test directory `carrel-test-<name>-XXXXXX` in the system temp dir; the data
    /// root is `<dir>/root` (created by carrel on first use). The default storage driver is used.
    pub fn new(name: &str) -> TestRoot {
        Self::make(name, None)
    }

    /// Like [`TestRoot::new`], passing `--storage-driver <driver>` to every command.
    pub fn with_driver(name: &str, driver: &str) -> TestRoot {
        Self::make(name, Some(driver.to_string()))
    }

    fn make(name: &str, driver: Option<String>) -> TestRoot {
        let dir = tempfile::Builder::new()
            .prefix(&format!("carrel-test-{name}-"))
            .tempdir_in(std::env::temp_dir())
            .expect("creating the test directory");
        let base = dir.keep();
        TestRoot {
            root: base.join("root"),
            base,
            driver,
            pids: Mutex::new(Vec::new()),
        }
    }

    /// The data root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The storage driver passed on every command, if any.
    pub fn driver(&self) -> Option<&str> {
        self.driver.as_deref()
    }

    /// A path inside the data root.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// A scratch path beside the data root (inside the test directory, outside the root).
    pub fn scratch(&self, rel: &str) -> PathBuf {
        self.base.join(rel)
    }

    /// The test directory holding the root and the scratch files.
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// `carrel --root ROOT [--storage-driver D] ARGS…`, with a clean environment for carrel's
    /// own variables.
    pub fn command<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let mut c = Command::new(CARREL);
        c.env_remove("CARREL_ROOT")
            .env_remove("CARREL_STORAGE_DRIVER")
            .env_remove("CARREL_LOG")
            .arg("--root")
            .arg(&self.root);
        if let Some(d) = &self.driver {
            c.arg("--storage-driver").arg(d);
        }
        c.args(args);
        c
    }

    /// Run `carrel ARGS` with no input.
    pub fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        self.run_cmd(self.command(args), Input::None)
    }

    /// Run `carrel ARGS` with `input` on stdin.
    pub fn run_stdin<S: AsRef<OsStr>>(&self, args: &[S], input: &[u8]) -> Output {
        self.run_cmd(self.command(args), Input::Bytes(input.to_vec()))
    }

    /// Run `carrel ARGS` with the file `path` as stdin.
    pub fn run_stdin_file<S: AsRef<OsStr>>(&self, args: &[S], path: &Path) -> Output {
        let f = File::open(path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
        self.run_cmd(self.command(args), Input::File(f))
    }

    /// Run `carrel ARGS`, assert it succeeded, return stdout.
    pub fn ok<S: AsRef<OsStr>>(&self, args: &[S]) -> String {
        let out = self.run(args);
        assert!(out.success(), "command failed: {out:?}");
        out.stdout
    }

    /// Run `carrel ARGS` with `input` on stdin, assert success, return stdout.
    pub fn ok_stdin<S: AsRef<OsStr>>(&self, args: &[S], input: &[u8]) -> String {
        let out = self.run_stdin(args, input);
        assert!(out.success(), "command failed: {out:?}");
        out.stdout
    }

    /// Run `carrel ARGS`, assert it failed (non-zero exit, no signal), return stderr.
    pub fn fail<S: AsRef<OsStr>>(&self, args: &[S]) -> String {
        let out = self.run(args);
        assert!(
            !out.success() && out.code().is_some(),
            "command should have failed: {out:?}"
        );
        out.stderr
    }

    /// Run any command (built by [`TestRoot::command`] or otherwise) with a timeout; processes it
    /// starts are killed when the root is dropped.
    pub fn run_cmd(&self, mut cmd: Command, input: Input) -> Output {
        let cmdline = describe(&cmd);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut feed = None;
        match input {
            Input::None => {
                cmd.stdin(Stdio::null());
            }
            Input::File(f) => {
                cmd.stdin(Stdio::from(f));
            }
            Input::Bytes(b) => {
                cmd.stdin(Stdio::piped());
                feed = Some(b);
            }
        }
        let mut child = self.spawn_cmd(cmd);
        let writer = feed.map(|bytes| {
            let mut stdin = child.stdin.take().expect("stdin pipe");
            std::thread::spawn(move || {
                // The command may legitimately stop reading (an error): ignore EPIPE.
                let _ = stdin.write_all(&bytes);
            })
        });
        let out = self.wait(child, &cmdline);
        if let Some(w) = writer {
            let _ = w.join();
        }
        out
    }

    /// Start a command, remembering its pid so that [`Drop`] can kill it.
    pub fn spawn_cmd(&self, mut cmd: Command) -> Child {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", describe(&cmd)));
        self.pids.lock().unwrap().push(child.id());
        child
    }

    /// Start `carrel ARGS` with the given stdin, stdout and stderr.
    pub fn spawn<S: AsRef<OsStr>>(
        &self,
        args: &[S],
        stdin: Stdio,
        stdout: Stdio,
        stderr: Stdio,
    ) -> Child {
        let mut c = self.command(args);
        c.stdin(stdin).stdout(stdout).stderr(stderr);
        self.spawn_cmd(c)
    }

    /// Wait (with [`COMMAND_TIMEOUT`]) for a child whose stdout/stderr are pipes (or not
    /// captured) and collect its output.
    pub fn wait(&self, mut child: Child, cmdline: &str) -> Output {
        let pid = child.id();
        let out_reader = child.stdout.take().map(|mut s| {
            std::thread::spawn(move || {
                let mut v = Vec::new();
                let _ = s.read_to_end(&mut v);
                v
            })
        });
        let err_reader = child.stderr.take().map(|mut s| {
            std::thread::spawn(move || {
                let mut v = Vec::new();
                let _ = s.read_to_end(&mut v);
                v
            })
        });
        let start = Instant::now();
        let status = loop {
            if let Some(st) = child.try_wait().expect("waiting for a child") {
                break st;
            }
            if start.elapsed() > COMMAND_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                panic!("`{cmdline}` did not finish within {COMMAND_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        self.pids.lock().unwrap().retain(|p| *p != pid);
        let stdout_raw = out_reader.map(|t| t.join().unwrap()).unwrap_or_default();
        let stderr = err_reader.map(|t| t.join().unwrap()).unwrap_or_default();
        Output {
            cmdline: cmdline.to_string(),
            status,
            stdout: String::from_utf8_lossy(&stdout_raw).into_owned(),
            stdout_raw,
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        }
    }

    /// Forget a child that the test reaped itself.
    pub fn forget_pid(&self, pid: u32) {
        self.pids.lock().unwrap().retain(|p| *p != pid);
    }

    /// Mount a tmpfs of `size` (e.g. `"16m"`) on `target` (created if missing); it is unmounted
    /// when the root is dropped.
    pub fn mount_tmpfs(&self, target: &Path, size: &str) {
        assert!(
            target.starts_with(&self.base),
            "mount targets must be inside the test directory"
        );
        std::fs::create_dir_all(target).unwrap();
        let src = CString::new("carrel-test-tmpfs").unwrap();
        let tgt = CString::new(target.as_os_str().as_bytes()).unwrap();
        let fstype = CString::new("tmpfs").unwrap();
        let data = CString::new(format!("size={size},mode=0710")).unwrap();
        // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call.
        let rc = unsafe {
            libc::mount(
                src.as_ptr(),
                tgt.as_ptr(),
                fstype.as_ptr(),
                0,
                data.as_ptr().cast(),
            )
        };
        assert_eq!(
            rc,
            0,
            "mounting tmpfs on {}: {}",
            target.display(),
            io::Error::last_os_error()
        );
    }

    /// Mount points at or below the test directory, deepest first.
    pub fn mounts(&self) -> Vec<PathBuf> {
        mounts_under(&self.base)
    }

    // ---- what users look at -------------------------------------------------------------

    /// Full ids of all images, sorted (`images -q --no-trunc` prints one per tag).
    pub fn image_ids(&self) -> Vec<String> {
        self.ok(&["images", "-q", "--no-trunc"])
            .lines()
            .map(str::to_string)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    /// `image inspect NAME` as JSON (the single object).
    pub fn inspect(&self, name: &str) -> serde_json::Value {
        let out = self.ok(&["image", "inspect", name]);
        let mut v: serde_json::Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("inspect output is not JSON ({e}): {out}"));
        let arr = v.as_array_mut().expect("inspect prints an array");
        assert_eq!(arr.len(), 1, "one object expected: {out}");
        arr.remove(0)
    }

    /// Names in `overlay2/` other than `l` (layer and snapshot directories), sorted.
    pub fn overlay_dirs(&self) -> Vec<String> {
        list_dir(&self.path("overlay2"))
            .into_iter()
            .filter(|n| n != "l")
            .collect()
    }

    /// Names of the storage driver's snapshot directories (`overlay2/*` except `l`, `copy/*`).
    pub fn driver_dirs(&self) -> Vec<String> {
        let mut v = self.overlay_dirs();
        v.extend(list_dir(&self.path("copy")));
        v
    }

    /// Files left in `content/ingest`.
    pub fn ingest_files(&self) -> Vec<String> {
        list_dir(&self.path("content/ingest"))
    }

    /// Committed blob names (`content/blobs/sha256/*`).
    pub fn blob_files(&self) -> Vec<String> {
        list_dir(&self.path("content/blobs/sha256"))
    }

    /// Assert `system check` is clean (`No problems found.`, exit 0).
    pub fn assert_check_clean(&self) {
        let out = self.run(&["system", "check"]);
        assert!(
            out.success() && out.stdout == "No problems found.\n",
            "system check is not clean: {out:?}"
        );
    }

    /// The tree of every layer of an image, bottom first, from its `GraphDriver` data
    /// (overlay2: `LowerDir` lists the nearest parent first; copy: the full tree only).
    pub fn layer_dirs_of(&self, image: &str) -> Vec<PathBuf> {
        let v = self.inspect(image);
        let data = &v["GraphDriver"]["Data"];
        let mut dirs: Vec<PathBuf> = data["LowerDir"]
            .as_str()
            .map(|s| s.split(':').map(PathBuf::from).collect())
            .unwrap_or_default();
        dirs.reverse();
        dirs.push(PathBuf::from(
            data["UpperDir"].as_str().expect("UpperDir in GraphDriver"),
        ));
        dirs
    }

    /// The root filesystem a container of `image` would see, as a tree.
    pub fn rootfs_tree(&self, image: &str) -> Tree {
        let v = self.inspect(image);
        let dirs = self.layer_dirs_of(image);
        match v["GraphDriver"]["Name"].as_str() {
            Some("overlay2") => {
                let trees: Vec<Tree> = dirs.iter().map(|d| tree(d)).collect();
                overlay_merge(&trees)
            }
            _ => tree(dirs.last().unwrap()),
        }
    }
}

/// What a command reads on stdin.
pub enum Input {
    /// Nothing (`/dev/null`).
    None,
    /// These bytes.
    Bytes(Vec<u8>),
    /// This file.
    File(File),
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Sorted names in a directory (empty when it does not exist).
pub fn list_dir(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("listing {}: {e}", dir.display()),
    };
    v.sort();
    v
}

/// Decode mountinfo's octal escapes (`\040` for a space).
fn unescape_mountinfo(s: &str) -> PathBuf {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    PathBuf::from(OsStr::from_bytes(&out))
}

/// Mount points at or below `dir` (from `/proc/self/mountinfo`), deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut v: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mountinfo)
        .filter(|p| p.starts_with(dir))
        .collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    v
}

fn cmdline_of(pid: u32) -> Option<Vec<u8>> {
    std::fs::read(format!("/proc/{pid}/cmdline")).ok()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// Whether a command line (NUL-separated) names `dir` or something inside it.
fn names_dir(cmdline: &[u8], dir: &[u8]) -> bool {
    let mut inside = dir.to_vec();
    inside.push(b'/');
    let mut exact = dir.to_vec();
    exact.push(0);
    contains(cmdline, &inside) || contains(cmdline, &exact)
}

impl Drop for TestRoot {
    fn drop(&mut self) {
        let me = std::process::id();
        let needle = self.base.as_os_str().as_bytes().to_vec();
        // 0. Containers of this root that still run (their processes do not name it).
        kill_containers_of(&self.root, &self.base);
        // 1. Processes: those we started and still run, and any process whose command line names
        //    this test directory (started through setpriv, a shell, …).
        let mut victims: BTreeSet<u32> = BTreeSet::new();
        for pid in self.pids.lock().map(|p| p.clone()).unwrap_or_default() {
            if cmdline_of(pid).is_some_and(|c| names_dir(&c, &needle)) {
                victims.insert(pid);
            }
        }
        if let Ok(rd) = std::fs::read_dir("/proc") {
            for e in rd.flatten() {
                if let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok())
                    && pid != me
                    && cmdline_of(pid).is_some_and(|c| names_dir(&c, &needle))
                {
                    victims.insert(pid);
                }
            }
        }
        for pid in &victims {
            // SAFETY: plain syscalls on a pid whose command line names our test directory.
            unsafe {
                libc::kill(*pid as libc::pid_t, libc::SIGKILL);
            }
        }
        for pid in &victims {
            // Reap our own children (harmless ECHILD for others); wait at most ~5 s.
            for _ in 0..500 {
                // SAFETY: waitpid with WNOHANG on a pid; no memory is shared.
                let r = unsafe {
                    libc::waitpid(*pid as libc::pid_t, std::ptr::null_mut(), libc::WNOHANG)
                };
                if r != 0 || !Path::new(&format!("/proc/{pid}")).exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        // 2. Mounts, deepest first, lazily (a busy mount must not keep the test hanging).
        for _ in 0..5 {
            let mounts = mounts_under(&self.base);
            if mounts.is_empty() {
                break;
            }
            for m in mounts {
                let c = CString::new(m.as_os_str().as_bytes()).unwrap();
                // SAFETY: a valid NUL-terminated path.
                let rc = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
                if rc != 0 {
                    eprintln!(
                        "carrel-test cleanup: umount {}: {}",
                        m.display(),
                        io::Error::last_os_error()
                    );
                }
            }
        }
        // 3. The directory.
        if let Err(e) = std::fs::remove_dir_all(&self.base)
            && e.kind() != io::ErrorKind::NotFound
        {
            eprintln!("carrel-test cleanup: removing {}: {e}", self.base.display());
        }
    }
}

/// Import the demo busybox image (`busybox:latest`) into `root` and return its id.
pub fn busybox(root: &TestRoot) -> String {
    let out = root.ok(&["image", "import-busybox"]);
    let id = out.trim().to_string();
    assert!(
        id.starts_with("sha256:") && id.len() == 71,
        "import-busybox prints the image id: {out:?}"
    );
    id
}

/// Assert `stderr` is exactly one line `Error: …` of printable text, and return that line.
pub fn one_line_error(stderr: &str) -> &str {
    let line = stderr.strip_suffix('\n').unwrap_or(stderr);
    assert!(
        !line.is_empty() && !line.contains('\n'),
        "expected one error line on stderr, got {stderr:?}"
    );
    assert!(
        line.starts_with("Error: "),
        "error line should start with `Error: `: {line:?}"
    );
    assert!(
        line.chars()
            .all(|c| !c.is_control() && c != char::REPLACEMENT_CHARACTER),
        "error line has unprintable characters: {line:?}"
    );
    line
}

// ---- trees ----------------------------------------------------------------------------------

/// The type of a tree entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
    /// Character device.
    Char,
    /// Block device.
    Block,
    /// Named pipe.
    Fifo,
    /// Socket.
    Socket,
}

/// One entry of a [`Tree`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Its type.
    pub kind: Kind,
    /// Permission bits including setuid, setgid and sticky (`mode & 0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes (regular files only, else 0).
    pub size: u64,
    /// sha256 of the content (regular files only).
    pub sha256: Option<String>,
    /// Symlink target.
    pub target: Option<PathBuf>,
    /// Device numbers (major, minor) of device nodes.
    pub rdev: Option<(u32, u32)>,
    /// Extended attributes.
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

impl Node {
    /// Whether this is an overlay whiteout (a 0/0 character device).
    pub fn is_whiteout(&self) -> bool {
        self.kind == Kind::Char && self.rdev == Some((0, 0))
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} {:04o} {}:{}",
            self.kind, self.mode, self.uid, self.gid
        )?;
        if self.kind == Kind::File {
            write!(
                f,
                " size={} sha256={}",
                self.size,
                self.sha256.as_deref().map(|s| &s[..12]).unwrap_or("-")
            )?;
        }
        if let Some(t) = &self.target {
            write!(f, " -> {}", t.display())?;
        }
        if let Some((ma, mi)) = self.rdev {
            write!(f, " dev={ma},{mi}")?;
        }
        for (k, v) in &self.xattrs {
            write!(f, " {k}={}", String::from_utf8_lossy(v))?;
        }
        Ok(())
    }
}

/// A directory tree: relative path → entry (the top directory itself is not included).
pub type Tree = BTreeMap<PathBuf, Node>;

/// sha256 (hex) of a file's content.
pub fn file_sha256(path: &Path) -> String {
    let mut f = File::open(path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    let mut w = DigestWriter::new(io::sink());
    io::copy(&mut f, &mut w).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let (d, _, _) = w.finish();
    d.hex().to_string()
}

/// sha256 (hex) of bytes.
pub fn sha256_hex(data: &[u8]) -> String {
    Digest::of_bytes(data).hex().to_string()
}

/// Extended attributes of a path (not following symlinks).
pub fn xattrs(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut out = BTreeMap::new();
    let mut names = vec![0u8; 64 * 1024];
    // SAFETY: buffer pointer and length describe a valid, writable buffer.
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if n <= 0 {
        return out;
    }
    names.truncate(n as usize);
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let cname = CString::new(name).unwrap();
        let mut val = vec![0u8; 64 * 1024];
        // SAFETY: valid NUL-terminated strings and a valid, writable buffer.
        let m = unsafe {
            libc::lgetxattr(
                c.as_ptr(),
                cname.as_ptr(),
                val.as_mut_ptr().cast(),
                val.len(),
            )
        };
        if m >= 0 {
            val.truncate(m as usize);
            out.insert(String::from_utf8_lossy(name).into_owned(), val);
        }
    }
    out
}

/// Snapshot the tree under `dir` (never following symlinks).
pub fn tree(dir: &Path) -> Tree {
    let mut out = Tree::new();
    walk(dir, Path::new(""), &mut out);
    out
}

fn walk(dir: &Path, rel: &Path, out: &mut Tree) {
    let rd = std::fs::read_dir(dir.join(rel))
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.join(rel).display()));
    for e in rd {
        let e = e.unwrap();
        let r = rel.join(e.file_name());
        let p = dir.join(&r);
        let m = std::fs::symlink_metadata(&p)
            .unwrap_or_else(|err| panic!("stat {}: {err}", p.display()));
        let ft = m.file_type();
        let kind = if ft.is_file() {
            Kind::File
        } else if ft.is_dir() {
            Kind::Dir
        } else if ft.is_symlink() {
            Kind::Symlink
        } else if ft.is_char_device() {
            Kind::Char
        } else if ft.is_block_device() {
            Kind::Block
        } else if ft.is_fifo() {
            Kind::Fifo
        } else {
            Kind::Socket
        };
        let node = Node {
            kind,
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
            size: if kind == Kind::File { m.size() } else { 0 },
            sha256: (kind == Kind::File).then(|| file_sha256(&p)),
            target: (kind == Kind::Symlink).then(|| std::fs::read_link(&p).unwrap()),
            rdev: matches!(kind, Kind::Char | Kind::Block)
                .then(|| (libc::major(m.rdev()), libc::minor(m.rdev()))),
            xattrs: xattrs(&p),
        };
        out.insert(r.clone(), node);
        if kind == Kind::Dir {
            walk(dir, &r, out);
        }
    }
}

/// Only the regular files of a tree: path → sha256.
pub fn files_of(t: &Tree) -> BTreeMap<PathBuf, String> {
    t.iter()
        .filter(|(_, n)| n.kind == Kind::File)
        .map(|(p, n)| (p.clone(), n.sha256.clone().unwrap()))
        .collect()
}

/// Fold overlay layer trees (bottom first) into the merged view: a whiteout (0/0 character
/// device) hides the path below, an opaque directory (`trusted.overlay.opaque=y`) hides the
/// lower directory's content. The overlay xattrs are dropped from the result.
pub fn overlay_merge(layers: &[Tree]) -> Tree {
    const OPAQUE: &str = "trusted.overlay.opaque";
    let mut merged = Tree::new();
    for layer in layers {
        for (path, node) in layer {
            let hide_below = node.is_whiteout()
                || node.kind != Kind::Dir
                || node.xattrs.get(OPAQUE).map(|v| v.as_slice()) == Some(b"y");
            if hide_below && merged.get(path).is_some_and(|n| n.kind == Kind::Dir) {
                // Paths order component-wise, so a directory's descendants follow it.
                let below: Vec<PathBuf> = merged
                    .range(path.clone()..)
                    .skip(1)
                    .take_while(|(p, _)| p.starts_with(path))
                    .map(|(p, _)| p.clone())
                    .collect();
                for p in below {
                    merged.remove(&p);
                }
            }
            if node.is_whiteout() {
                merged.remove(path);
                continue;
            }
            if node.kind != Kind::Dir {
                merged.remove(path);
            }
            let mut n = node.clone();
            n.xattrs.retain(|k, _| !k.starts_with("trusted.overlay."));
            merged.insert(path.clone(), n);
        }
    }
    merged
}

/// Assert two trees are equal, listing the differences (not the whole trees) when not.
pub fn assert_trees_eq(left: &Tree, right: &Tree, what: &str) {
    if left == right {
        return;
    }
    let mut diff = Vec::new();
    let keys: BTreeSet<&PathBuf> = left.keys().chain(right.keys()).collect();
    for k in keys {
        match (left.get(k), right.get(k)) {
            (Some(a), Some(b)) if a != b => diff.push(format!(
                "  {}:\n    left:  {a}\n    right: {b}",
                k.display()
            )),
            (Some(a), None) => diff.push(format!("  {} only left: {a}", k.display())),
            (None, Some(b)) => diff.push(format!("  {} only right: {b}", k.display())),
            _ => {}
        }
    }
    let n = diff.len();
    diff.truncate(40);
    panic!(
        "{what}: trees differ in {n} entries:\n{}{}",
        diff.join("\n"),
        if n > 40 { "\n  …" } else { "" }
    );
}

// ---- archives -------------------------------------------------------------------------------

/// Fixed mtime of generated entries, so generated archives are reproducible.
pub const MTIME: u64 = 1_700_000_000;

/// Writes a layer tar.
pub struct TarBuilder {
    b: tar::Builder<Vec<u8>>,
}

impl Default for TarBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl TarBuilder {
    /// An empty tar.
    pub fn new() -> TarBuilder {
        let mut b = tar::Builder::new(Vec::new());
        b.mode(tar::HeaderMode::Complete);
        TarBuilder { b }
    }

    fn header(kind: tar::EntryType, mode: u32, uid: u64, gid: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_mtime(MTIME);
        h.set_size(0);
        h
    }

    /// A directory (`path` without a trailing slash).
    pub fn dir(&mut self, path: &str, mode: u32) -> &mut Self {
        self.dir_owned(path, mode, 0, 0)
    }

    /// A directory with an owner.
    pub fn dir_owned(&mut self, path: &str, mode: u32, uid: u64, gid: u64) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Directory, mode, uid, gid);
        self.b
            .append_data(&mut h, format!("{path}/"), io::empty())
            .unwrap();
        self
    }

    /// A regular file.
    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> &mut Self {
        self.file_owned(path, mode, 0, 0, data)
    }

    /// A regular file with an owner.
    pub fn file_owned(
        &mut self,
        path: &str,
        mode: u32,
        uid: u64,
        gid: u64,
        data: &[u8],
    ) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Regular, mode, uid, gid);
        h.set_size(data.len() as u64);
        self.b.append_data(&mut h, path, data).unwrap();
        self
    }

    /// A symbolic link.
    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Symlink, 0o777, 0, 0);
        self.b.append_link(&mut h, path, target).unwrap();
        self
    }

    /// A hard link to an earlier entry of the same layer.
    pub fn hardlink(&mut self, path: &str, target: &str) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Link, 0o644, 0, 0);
        self.b.append_link(&mut h, path, target).unwrap();
        self
    }

    /// An AUFS-style whiteout deleting `path` of the layers below.
    pub fn whiteout(&mut self, path: &str) -> &mut Self {
        let (dir, name) = match path.rsplit_once('/') {
            Some((d, n)) => (format!("{d}/"), n),
            None => (String::new(), path),
        };
        self.file(&format!("{dir}.wh.{name}"), 0o644, b"")
    }

    /// An opaque-directory marker: `dir`'s content in lower layers is hidden.
    pub fn opaque(&mut self, dir: &str) -> &mut Self {
        self.file(&format!("{dir}/.wh..wh..opq"), 0o644, b"")
    }

    /// The finished tar.
    pub fn into_bytes(self) -> Vec<u8> {
        self.b.into_inner().unwrap()
    }
}

/// A layer with files `(path, mode, content)` (parent directories added as 0755).
pub fn layer_with_files(files: &[(&str, u32, &[u8])]) -> Vec<u8> {
    let mut t = TarBuilder::new();
    let mut dirs = BTreeSet::new();
    for (path, mode, data) in files {
        let mut parent = Path::new(path).parent();
        let mut chain = Vec::new();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            chain.push(p.to_string_lossy().into_owned());
            parent = p.parent();
        }
        for d in chain.into_iter().rev() {
            if dirs.insert(d.clone()) {
                t.dir(&d, 0o755);
            }
        }
        t.file(path, *mode, data);
    }
    t.into_bytes()
}

/// The architecture name Docker uses for this host.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// An image to put in an archive: uncompressed layer tars (bottom first) and tags.
#[derive(Clone)]
pub struct Image {
    /// Layer tars, uncompressed, bottom first.
    pub layers: Vec<Vec<u8>>,
    /// Tags (`name:tag`).
    pub tags: Vec<String>,
    /// `created` of the config.
    pub created: String,
    /// A label making the config (and so the id) unique.
    pub label: String,
    /// Diff ids to write in the config instead of the real ones (to make a broken image).
    pub diff_ids_override: Option<Vec<String>>,
}

impl Image {
    /// An image of `layers`, tagged `tags`.
    pub fn new(layers: Vec<Vec<u8>>, tags: &[&str]) -> Image {
        Image {
            layers,
            tags: tags.iter().map(|s| s.to_string()).collect(),
            created: "2024-01-02T03:04:05Z".into(),
            label: tags.first().map(|s| s.to_string()).unwrap_or_default(),
            diff_ids_override: None,
        }
    }

    /// The real diff ids (digests of the uncompressed layers).
    pub fn diff_ids(&self) -> Vec<Digest> {
        self.layers.iter().map(|l| Digest::of_bytes(l)).collect()
    }

    /// Chain ids (the layers' keys in the store).
    pub fn chain_ids(&self) -> Vec<Digest> {
        carrel_core::id::chain_ids(&self.diff_ids())
    }

    /// The config JSON.
    pub fn config(&self) -> Vec<u8> {
        let diff_ids: Vec<String> = match &self.diff_ids_override {
            Some(d) => d.clone(),
            None => self.diff_ids().iter().map(|d| d.to_string()).collect(),
        };
        let history: Vec<serde_json::Value> = (0..self.layers.len())
            .map(|i| {
                serde_json::json!({
                    "created": self.created,
                    "created_by": format!("/bin/sh -c #(nop) layer {}", i + 1),
                })
            })
            .collect();
        serde_json::to_vec(&serde_json::json!({
            "architecture": host_arch(),
            "os": "linux",
            "created": self.created,
            "config": {
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "Cmd": ["sh"],
                "Labels": {"carrel.test": self.label},
            },
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": history,
        }))
        .unwrap()
    }

    /// The image id (`sha256:` of the config).
    pub fn id(&self) -> String {
        Digest::of_bytes(&self.config()).to_string()
    }
}

/// Layer compression in OCI archives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

/// The archive layouts carrel loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `docker save` before Docker 25: `<id>/layer.tar`, `<config hex>.json`, `manifest.json`,
    /// `repositories`.
    DockerLegacy,
    /// Docker 25 and later: `manifest.json` naming `blobs/sha256/<hex>` members (plus the OCI
    /// files `oci-layout` and `index.json`).
    DockerBlobs,
    /// An OCI image layout only (`oci-layout`, `index.json`, `blobs/sha256/…`).
    Oci(Compression),
}

/// The members of an archive, in order, before they are written as a tar.
#[derive(Clone, Default)]
pub struct Archive {
    /// `(name, content)`.
    pub entries: Vec<(String, Vec<u8>)>,
}

impl Archive {
    fn add(&mut self, name: &str, data: Vec<u8>) {
        if !self.entries.iter().any(|(n, _)| n == name) {
            self.entries.push((name.to_string(), data));
        }
    }

    /// Remove a member; panics when it is not there.
    pub fn remove(&mut self, name: &str) {
        let before = self.entries.len();
        self.entries.retain(|(n, _)| n != name);
        assert_ne!(before, self.entries.len(), "no member {name}");
    }

    /// A member's content, mutable; panics when it is not there.
    pub fn get_mut(&mut self, name: &str) -> &mut Vec<u8> {
        &mut self
            .entries
            .iter_mut()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no member {name}"))
            .1
    }

    /// Member names.
    pub fn names(&self) -> Vec<String> {
        self.entries.iter().map(|(n, _)| n.clone()).collect()
    }

    /// The archive as a tar.
    pub fn to_tar(&self) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut dirs = BTreeSet::new();
        for (name, data) in &self.entries {
            if let Some((d, _)) = name.rsplit_once('/') {
                let mut acc = String::new();
                for part in d.split('/') {
                    if !acc.is_empty() {
                        acc.push('/');
                    }
                    acc.push_str(part);
                    if dirs.insert(acc.clone()) {
                        let mut h = TarBuilder::header(tar::EntryType::Directory, 0o755, 0, 0);
                        b.append_data(&mut h, format!("{acc}/"), io::empty())
                            .unwrap();
                    }
                }
            }
            let mut h = TarBuilder::header(tar::EntryType::Regular, 0o644, 0, 0);
            h.set_size(data.len() as u64);
            b.append_data(&mut h, name, data.as_slice()).unwrap();
        }
        b.into_inner().unwrap()
    }

    /// Write the archive to `path` and return the path.
    pub fn write(&self, path: &Path) -> PathBuf {
        std::fs::write(path, self.to_tar()).unwrap();
        path.to_path_buf()
    }
}

/// Compress with the given method (in-process).
pub fn compress(data: &[u8], c: Compression) -> Vec<u8> {
    match c {
        Compression::None => data.to_vec(),
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        Compression::Zstd => zstd::encode_all(data, 3).unwrap(),
    }
}

/// Compress a file with the `gzip` or `zstd` tool when installed (as users do), else in
/// process; returns the new file's path (`<path>.gz` / `<path>.zst`).
pub fn compress_file(path: &Path, c: Compression) -> PathBuf {
    let (tool, ext) = match c {
        Compression::Gzip => ("gzip", "gz"),
        Compression::Zstd => ("zstd", "zst"),
        Compression::None => return path.to_path_buf(),
    };
    let out = PathBuf::from(format!("{}.{ext}", path.display()));
    let status = Command::new(tool)
        .arg("-c")
        .arg(path)
        .stdout(File::create(&out).unwrap())
        .stderr(Stdio::null())
        .status();
    match status {
        Ok(s) if s.success() => {}
        _ => std::fs::write(&out, compress(&std::fs::read(path).unwrap(), c)).unwrap(),
    }
    out
}

fn oci_name(tag: &str) -> String {
    let first = tag.split('/').next().unwrap_or("");
    if !tag.contains('/') {
        format!("docker.io/library/{tag}")
    } else if first.contains('.') || first.contains(':') || first == "localhost" {
        tag.to_string()
    } else {
        format!("docker.io/{tag}")
    }
}

/// Build an archive of `images` in `layout`. Layers shared by several images are stored once.
pub fn archive(images: &[Image], layout: Layout) -> Archive {
    let mut a = Archive::default();
    match layout {
        Layout::DockerLegacy => {
            let mut manifest = Vec::new();
            let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
            for img in images {
                let chains = img.chain_ids();
                let mut layer_paths = Vec::new();
                for (i, l) in img.layers.iter().enumerate() {
                    let dir = chains[i].hex().to_string();
                    a.add(&format!("{dir}/VERSION"), b"1.0".to_vec());
                    a.add(
                        &format!("{dir}/json"),
                        serde_json::to_vec(&serde_json::json!({"id": dir})).unwrap(),
                    );
                    a.add(&format!("{dir}/layer.tar"), l.clone());
                    layer_paths.push(format!("{dir}/layer.tar"));
                }
                let config = img.config();
                let config_name = format!("{}.json", Digest::of_bytes(&config).hex());
                a.add(&config_name, config);
                for t in &img.tags {
                    let (repo, tag) = t.rsplit_once(':').unwrap();
                    repositories
                        .entry(repo.to_string())
                        .or_default()
                        .insert(tag.to_string(), chains.last().unwrap().hex().to_string());
                }
                manifest.push(serde_json::json!({
                    "Config": config_name,
                    "RepoTags": img.tags,
                    "Layers": layer_paths,
                }));
            }
            a.add("manifest.json", serde_json::to_vec(&manifest).unwrap());
            a.add("repositories", serde_json::to_vec(&repositories).unwrap());
        }
        Layout::DockerBlobs | Layout::Oci(_) => {
            let compression = match layout {
                Layout::Oci(c) => c,
                _ => Compression::None,
            };
            let layer_media = match compression {
                Compression::None => "application/vnd.oci.image.layer.v1.tar",
                Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
                Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
            };
            a.add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec());
            let mut manifest_json = Vec::new();
            let mut index = Vec::new();
            for img in images {
                let mut descs = Vec::new();
                let mut layer_paths = Vec::new();
                for l in &img.layers {
                    let blob = compress(l, compression);
                    let d = Digest::of_bytes(&blob);
                    let name = format!("blobs/sha256/{}", d.hex());
                    descs.push(serde_json::json!({
                        "mediaType": layer_media,
                        "digest": d.to_string(),
                        "size": blob.len(),
                    }));
                    a.add(&name, blob);
                    layer_paths.push(name);
                }
                let config = img.config();
                let cd = Digest::of_bytes(&config);
                let config_name = format!("blobs/sha256/{}", cd.hex());
                let config_len = config.len();
                a.add(&config_name, config);
                let manifest = serde_json::to_vec(&serde_json::json!({
                    "schemaVersion": 2,
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {
                        "mediaType": "application/vnd.oci.image.config.v1+json",
                        "digest": cd.to_string(),
                        "size": config_len,
                    },
                    "layers": descs,
                }))
                .unwrap();
                let md = Digest::of_bytes(&manifest);
                let manifest_len = manifest.len();
                a.add(&format!("blobs/sha256/{}", md.hex()), manifest);
                let desc = |annotations: Option<serde_json::Value>| {
                    let mut d = serde_json::json!({
                        "mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "digest": md.to_string(),
                        "size": manifest_len,
                    });
                    if let Some(an) = annotations {
                        d["annotations"] = an;
                    }
                    d
                };
                if img.tags.is_empty() {
                    index.push(desc(None));
                }
                for t in &img.tags {
                    let tag = t.rsplit_once(':').map(|(_, t)| t).unwrap_or("latest");
                    index.push(desc(Some(serde_json::json!({
                        "io.containerd.image.name": oci_name(t),
                        "org.opencontainers.image.ref.name": tag,
                    }))));
                }
                manifest_json.push(serde_json::json!({
                    "Config": config_name,
                    "RepoTags": img.tags,
                    "Layers": layer_paths,
                }));
            }
            a.add(
                "index.json",
                serde_json::to_vec(&serde_json::json!({
                    "schemaVersion": 2,
                    "mediaType": "application/vnd.oci.image.index.v1+json",
                    "manifests": index,
                }))
                .unwrap(),
            );
            if layout == Layout::DockerBlobs {
                a.add("manifest.json", serde_json::to_vec(&manifest_json).unwrap());
            }
        }
    }
    a
}

// ---- deterministic pseudo-random data ---------------------------------------------------------

/// A small deterministic PRNG (xorshift64*), for reproducible generated content.
pub struct Rng(u64);

impl Rng {
    /// Seeded generator (a zero seed is replaced).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// Seeded from the clock; the seed is returned for messages.
    pub fn from_time() -> (Rng, u64) {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        (Rng::new(seed), seed)
    }

    /// Next value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// A float in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// `n` incompressible bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        v.truncate(n);
        v
    }
}

// ---- Docker's human-readable units (oracles written from docker/go-units) --------------------

/// Go's `%.{precision}g`.
pub fn go_g(v: f64, precision: usize) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let e = format!("{:.*e}", precision - 1, v);
    let exp: i32 = e.split('e').nth(1).unwrap().parse().unwrap();
    if exp < -4 || exp >= precision as i32 {
        let (mant, _) = e.split_once('e').unwrap();
        let mant = if mant.contains('.') {
            mant.trim_end_matches('0').trim_end_matches('.')
        } else {
            mant
        };
        return format!("{mant}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    }
    let decimals = (precision as i32 - 1 - exp).max(0) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// go-units `HumanSizeWithPrecision` (decimal units).
pub fn docker_size(size: u64, precision: usize) -> String {
    const UNITS: [&str; 9] = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];
    let mut v = size as f64;
    let mut i = 0;
    while v >= 1000.0 && i < UNITS.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    format!("{}{}", go_g(v, precision), UNITS[i])
}

/// go-units `HumanDuration`.
pub fn docker_duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    let seconds = secs as i64;
    let minutes = (secs / 60.0) as i64;
    let hours = (secs / 3600.0 + 0.5) as i64;
    if seconds < 1 {
        "Less than a second".into()
    } else if seconds == 1 {
        "1 second".into()
    } else if seconds < 60 {
        format!("{seconds} seconds")
    } else if minutes == 1 {
        "About a minute".into()
    } else if minutes < 60 {
        format!("{minutes} minutes")
    } else if hours == 1 {
        "About an hour".into()
    } else if hours < 48 {
        format!("{hours} hours")
    } else if hours < 24 * 7 * 2 {
        format!("{} days", hours / 24)
    } else if hours < 24 * 30 * 2 {
        format!("{} weeks", hours / 24 / 7)
    } else if hours < 24 * 365 * 2 {
        format!("{} months", hours / 24 / 30)
    } else {
        format!("{} years", (secs / 3600.0 / 24.0 / 365.0) as i64)
    }
}

/// Docker's `CREATED` column for a time (seconds since the epoch).
pub fn docker_since(unix_secs: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    format!(
        "{} ago",
        docker_duration(Duration::from_secs((now - unix_secs).max(0) as u64))
    )
}

// ---- containers -----------------------------------------------------------------------------

/// Poll `f` every 20 ms until it returns true or `timeout` passes; returns whether it did.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
                .collect()
        })
        .unwrap_or_default()
}

/// A process's command line with spaces for the NULs (for messages).
pub fn cmdline_text(pid: u32) -> String {
    let c = cmdline_of(pid).unwrap_or_default();
    String::from_utf8_lossy(&c)
        .trim_end_matches('\0')
        .replace('\0', " ")
}

/// Processes other than this one whose command line names `dir` or a path inside it (container
/// monitors, carrel clients), as `(pid, command line)`.
pub fn processes_naming(dir: &Path) -> Vec<(u32, String)> {
    let me = std::process::id();
    let needle = dir.as_os_str().as_bytes();
    all_pids()
        .into_iter()
        .filter(|p| *p != me && cmdline_of(*p).is_some_and(|c| names_dir(&c, needle)))
        .map(|p| (p, cmdline_text(p)))
        .collect()
}

/// Processes of containers whose root filesystem lives under `dir`: processes in another mount
/// namespace than this one whose `/` is a mount naming `dir` (an overlay whose layers are there,
/// or a bind of a directory there), as `(pid, command line)`.
pub fn processes_rooted_in(dir: &Path) -> Vec<(u32, String)> {
    let ns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok();
    let mine = ns("self");
    let needle = format!("{}/", dir.display());
    all_pids()
        .into_iter()
        .filter(|p| {
            let other = ns(&p.to_string());
            other.is_some() && other != mine
        })
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/mountinfo")).is_ok_and(|info| {
                info.lines()
                    .any(|l| l.split(' ').nth(4) == Some("/") && l.contains(&needle))
            })
        })
        .map(|p| (p, cmdline_text(p)))
        .collect()
}

/// Kill and delete every container the OCI runtimes keep state for under `data_root`
/// (`runtime/<name>/<id>`: `<name> --root … delete --force <id>`), and SIGKILL any process still
/// rooted in `base` (see [`processes_rooted_in`]). For clean-up of tests that run containers.
pub fn kill_containers_of(data_root: &Path, base: &Path) {
    for rt in list_dir(&data_root.join("runtime")) {
        let state = data_root.join("runtime").join(&rt);
        if !state.is_dir() {
            continue;
        }
        for id in list_dir(&state) {
            if !carrel_core::digest::is_hex64(&id) {
                continue;
            }
            let _ = Command::new(&rt)
                .arg("--root")
                .arg(&state)
                .args(["delete", "--force", &id])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
    for (pid, _) in processes_rooted_in(base) {
        // SAFETY: a plain syscall on a process running on a root under our test directory.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGKILL);
        }
    }
}

/// A new pseudo-terminal: `(master, slave)`.
pub fn openpty() -> (std::os::fd::OwnedFd, std::os::fd::OwnedFd) {
    use std::os::fd::FromRawFd;
    let mut master: libc::c_int = -1;
    let mut slave: libc::c_int = -1;
    // SAFETY: valid pointers to two ints; name, termios and winsize may be null.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", io::Error::last_os_error());
    // SAFETY: openpty returned two new descriptors that nothing else owns.
    unsafe {
        (
            std::os::fd::OwnedFd::from_raw_fd(master),
            std::os::fd::OwnedFd::from_raw_fd(slave),
        )
    }
}

impl TestRoot {
    /// Container state directories the OCI runtimes keep for this root (`runtime/<name>/<id>`).
    pub fn runtime_states(&self) -> Vec<String> {
        let mut out = Vec::new();
        for rt in list_dir(&self.path("runtime")) {
            let dir = self.path("runtime").join(&rt);
            if dir.is_dir() {
                out.extend(list_dir(&dir).into_iter().map(|id| format!("{rt}/{id}")));
            }
        }
        out
    }

    /// What running containers would leave behind if they were not cleaned up: mounts under the
    /// test directory, processes naming it (monitors, clients), processes rooted in it
    /// (containers), and runtime state. Empty when there is nothing.
    pub fn leftovers(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .mounts()
            .iter()
            .map(|m| format!("mount {}", m.display()))
            .collect();
        out.extend(
            processes_naming(&self.base)
                .into_iter()
                .map(|(p, c)| format!("process {p} {c}")),
        );
        out.extend(
            processes_rooted_in(&self.base)
                .into_iter()
                .map(|(p, c)| format!("container process {p} {c}")),
        );
        out.extend(
            self.runtime_states()
                .into_iter()
                .map(|s| format!("runtime state {s}")),
        );
        out
    }
}
