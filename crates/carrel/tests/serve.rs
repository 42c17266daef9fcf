//! `carrel serve` driven by Docker's own tools: the real `docker` CLI 28.2.2
//! (`/usr/local/bin/docker`, API 1.50), Debian's `docker` 20.10 client (`/usr/bin/docker`, API
//! 1.41) and docker-py, plus raw HTTP for the protocol's edges, a CLI-vs-server consistency check
//! and a load test. Every test starts its own server on its own socket and data root; the
//! [`Server`] guard stops it (and [`TestRoot`] everything else) also when a test fails.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Input, Output, TestRoot};

/// The docker CLI 28.2.2 (client API 1.50).
const DOCKER: &str = "/usr/local/bin/docker";
/// Debian's docker.io 20.10 client (API 1.41).
const DOCKER20: &str = "/usr/bin/docker";

/// A running `carrel serve` on a socket in the test directory.
struct Server {
    root: TestRoot,
    socket: PathBuf,
    child: Option<Child>,
}

impl Server {
    /// A fresh data root with the busybox image and a server on it.
    fn start(name: &str) -> Server {
        let root = TestRoot::new(name);
        common::busybox(&root);
        let socket = root.scratch("docker.sock");
        let mut s = Server {
            root,
            socket,
            child: None,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.root.scratch("serve.log")).unwrap();
        let mut cmd = self.root.command(&[
            "serve".to_string(),
            "-H".into(),
            format!("unix://{}", self.socket.display()),
        ]);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        self.child = Some(self.root.spawn_cmd(cmd));
        let start = Instant::now();
        while UnixStream::connect(&self.socket).is_err() {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("carrel serve exited with {st}: {}", self.log());
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "carrel serve did not listen in time: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.root.scratch("serve.log")).unwrap_or_default()
    }

    /// Stop the server with SIGTERM and wait for it; returns its exit status.
    fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("server running");
        // SAFETY: a signal to our own child.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let start = Instant::now();
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                self.root.forget_pid(child.id());
                return st;
            }
            if start.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                panic!("carrel serve did not stop on SIGTERM: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// A docker client command against this server, with a config directory of its own.
    fn client(&self, bin: &str, args: &[&str]) -> Command {
        let mut c = Command::new(bin);
        c.env("DOCKER_HOST", self.host())
            .env("DOCKER_CONFIG", self.root.scratch("docker-config"))
            .env_remove("DOCKER_API_VERSION")
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_TLS_VERIFY")
            .current_dir(self.root.base())
            .args(args);
        c
    }

    fn docker(&self, args: &[&str]) -> Output {
        self.root.run_cmd(self.client(DOCKER, args), Input::None)
    }

    fn docker_in(&self, args: &[&str], input: &[u8]) -> Output {
        self.root
            .run_cmd(self.client(DOCKER, args), Input::Bytes(input.to_vec()))
    }

    fn docker20(&self, args: &[&str]) -> Output {
        self.root.run_cmd(self.client(DOCKER20, args), Input::None)
    }

    /// Run the docker CLI 28, assert success, return stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.success(),
            "docker failed: {out:?}\nserver log:\n{}",
            self.tail_log()
        );
        out.stdout
    }

    fn ok20(&self, args: &[&str]) -> String {
        let out = self.docker20(args);
        assert!(
            out.success(),
            "docker 20.10 failed: {out:?}\nserver log:\n{}",
            self.tail_log()
        );
        out.stdout
    }

    fn fail(&self, args: &[&str]) -> Output {
        let out = self.docker(args);
        assert!(!out.success(), "docker should have failed: {out:?}");
        out
    }

    fn tail_log(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// One raw HTTP request (`Connection: close`): status, headers (lowercase names), body.
    fn http(&self, method: &str, path: &str, body: Option<&[u8]>) -> Http {
        http_on(&self.socket, method, path, body)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A raw HTTP answer.
#[derive(Debug)]
struct Http {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Http {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    fn message(&self) -> String {
        self.json()["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

fn http_on(socket: &Path, method: &str, path: &str, body: Option<&[u8]>) -> Http {
    let mut s = UnixStream::connect(socket).expect("connecting to the server");
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let body = body.unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("reading the answer");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end: {}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    Http {
        status,
        headers,
        body,
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let n = usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + n]);
        b = &b[eol + 2 + n + 2..];
    }
}

fn lines(s: &str) -> Vec<&str> {
    s.lines().collect()
}

#[test]
fn docker_cli_volumes() {
    let s = Server::start("serve-vol");
    assert_eq!(s.ok(&["volume", "create", "mydata"]), "mydata\n");
    // Creating it again is not an error (Docker answers with the same volume).
    assert_eq!(s.ok(&["volume", "create", "mydata"]), "mydata\n");
    s.ok(&["volume", "create", "--label", "team=a", "appdata"]);
    let anon = s.ok(&["volume", "create"]);
    assert_eq!(anon.trim().len(), 64);
    // The CLI sorts the rows itself (natural order of the names).
    let ls = s.ok(&["volume", "ls"]);
    let mut rows = lines(&ls);
    assert_eq!(rows.remove(0), "DRIVER    VOLUME NAME");
    rows.sort();
    let anon_row = format!("local     {}", anon.trim());
    let mut want = vec!["local     appdata", "local     mydata", anon_row.as_str()];
    want.sort();
    assert_eq!(rows, want);
    assert_eq!(
        s.ok(&["volume", "ls", "-q", "-f", "label=team=a"]),
        "appdata\n"
    );
    assert_eq!(s.ok(&["volume", "ls", "-q", "-f", "name=my"]), "mydata\n");
    assert_eq!(
        s.ok(&["volume", "inspect", "mydata", "--format", "{{.Driver}}"]),
        "local\n"
    );
    let inspect: serde_json::Value =
        serde_json::from_str(&s.ok(&["volume", "inspect", "mydata"])).unwrap();
    assert_eq!(inspect[0]["Name"], "mydata");
    assert_eq!(
        inspect[0]["Mountpoint"],
        s.root.path("volumes/mydata/_data").display().to_string()
    );
    // Errors as Docker gives them.
    let out = s.fail(&["volume", "inspect", "nosuch"]);
    assert!(out.stderr.contains("get nosuch: no such volume"), "{out:?}");
    let out = s.fail(&["volume", "create", "x"]);
    assert!(out.stderr.contains("volume name is too short"), "{out:?}");
    let out = s.fail(&["volume", "ls", "-f", "bogus=1"]);
    assert!(out.stderr.contains("Invalid filter 'bogus'"), "{out:?}");
    // In use: refused, also with -f.
    s.ok(&[
        "create",
        "--name",
        "user",
        "-v",
        "mydata:/data",
        "busybox",
        "true",
    ]);
    let out = s.fail(&["volume", "rm", "mydata"]);
    assert!(
        out.stderr.contains("remove mydata: volume is in use - ["),
        "{out:?}"
    );
    let mut dangling = s
        .ok(&["volume", "ls", "-q", "-f", "dangling=true"])
        .lines()
        .map(String::from)
        .collect::<Vec<_>>();
    dangling.sort();
    let mut want = vec![anon.trim().to_string(), "appdata".to_string()];
    want.sort();
    assert_eq!(dangling, want);
    s.ok(&["rm", "user"]);
    // Prune at API 1.50: anonymous volumes only, then everything with -a.
    let out = s.ok(&["volume", "prune", "-f"]);
    assert_eq!(
        out,
        format!(
            "Deleted Volumes:\n{}\n\nTotal reclaimed space: 0B\n",
            anon.trim()
        )
    );
    let out = s.ok(&["volume", "prune", "-af", "--filter", "label=team=a"]);
    assert_eq!(
        out,
        "Deleted Volumes:\nappdata\n\nTotal reclaimed space: 0B\n"
    );
    assert_eq!(s.ok(&["volume", "rm", "mydata"]), "mydata\n");
    s.ok(&["volume", "rm", "-f", "nosuch"]);
    assert_eq!(s.ok(&["volume", "ls", "-q"]), "");
    // The 20.10 client speaks 1.41: prune removes every unused volume, named ones too.
    s.ok20(&["volume", "create", "old1"]);
    s.ok20(&["volume", "create", "old2"]);
    let out = s.ok20(&["volume", "prune", "-f"]);
    assert!(out.contains("old1\nold2\n"), "{out}");
    assert_eq!(s.ok(&["volume", "ls", "-q"]), "");
    let out = s.docker20(&["volume", "rm", "nosuch"]);
    assert!(
        !out.success() && out.stderr.contains("No such volume: nosuch"),
        "{out:?}"
    );
    s.root.assert_check_clean();
}

#[test]
fn docker_cli_run_mounts() {
    let s = Server::start("serve-run");
    let host = s.root.scratch("hostdir");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("in.txt"), "from host\n").unwrap();
    let hostv = format!("{}:/host:ro", host.display());
    // Named volume, bind, anonymous volume, --mount of each kind, --tmpfs, read-only root, user.
    s.ok(&["volume", "create", "mydata"]);
    let out = s.ok(&[
        "run", "--rm", "-v", "mydata:/data", "-v", &hostv, "-v", "/anon",
        "--mount", "type=volume,source=m2,target=/m2",
        "--mount", &format!("type=bind,source={},target=/b,readonly", host.display()),
        "--mount", "type=tmpfs,target=/cache,tmpfs-size=1m",
        "--tmpfs", "/run/secrets:mode=0700,size=64k",
        "--read-only", "-u", "0:0", "-w", "/data", "busybox", "sh", "-c",
        "echo persisted > /data/f; cat /host/in.txt /b/in.txt; pwd; \
         touch /rootfile 2>/dev/null || echo rootfs-ro; touch /host/x 2>/dev/null || echo bind-ro; \
         grep -E ' /cache | /run/secrets ' /proc/mounts | cut -d' ' -f2,3 | sort; touch /anon/a /m2/b /cache/c && echo writable",
    ]);
    assert_eq!(
        out,
        "from host\nfrom host\n/data\nrootfs-ro\nbind-ro\n/cache tmpfs\n/run/secrets tmpfs\nwritable\n"
    );
    // The named volume kept the data; --rm removed the anonymous volume, not the named ones.
    assert_eq!(
        std::fs::read_to_string(s.root.path("volumes/mydata/_data/f")).unwrap(),
        "persisted\n"
    );
    assert_eq!(s.ok(&["volume", "ls", "-q"]), "m2\nmydata\n");
    // Exit codes come from wait.
    let out = s.docker(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(out.code(), Some(3), "{out:?}");
    assert_eq!(out.stdout, "out\n");
    assert_eq!(out.stderr, "err\n");
    // --volumes-from shares the mounts of another container.
    s.ok(&[
        "run",
        "--name",
        "db",
        "-v",
        "/var/lib/db",
        "-v",
        "mydata:/data",
        "busybox",
        "sh",
        "-c",
        "echo db > /var/lib/db/x",
    ]);
    let out = s.ok(&[
        "run",
        "--rm",
        "--volumes-from",
        "db:ro",
        "busybox",
        "sh",
        "-c",
        "cat /var/lib/db/x /data/f; touch /data/y 2>/dev/null || echo ro",
    ]);
    assert_eq!(out, "db\npersisted\nro\n");
    // Backup and restore through a bind mount (the seed document's recipe).
    let backup = s.root.scratch("backup");
    std::fs::create_dir_all(&backup).unwrap();
    let bk = format!("{}:/backup", backup.display());
    s.ok(&[
        "run",
        "--rm",
        "-v",
        "mydata:/source:ro",
        "-v",
        &bk,
        "busybox",
        "tar",
        "czf",
        "/backup/backup.tar.gz",
        "-C",
        "/source",
        ".",
    ]);
    s.ok(&["volume", "create", "restored"]);
    s.ok(&[
        "run",
        "--rm",
        "-v",
        "restored:/target",
        "-v",
        &bk,
        "busybox",
        "tar",
        "xzf",
        "/backup/backup.tar.gz",
        "-C",
        "/target",
    ]);
    assert_eq!(
        s.ok(&["run", "--rm", "-v", "restored:/r", "busybox", "cat", "/r/f"]),
        "persisted\n"
    );
    // rm -v removes a container's anonymous volumes, never named ones.
    let anon_before = s.ok(&["volume", "ls", "-q"]);
    assert_eq!(lines(&anon_before).len(), 4, "{anon_before}");
    s.ok(&["rm", "-v", "db"]);
    assert_eq!(s.ok(&["volume", "ls", "-q"]), "m2\nmydata\nrestored\n");
    // Inspect shows the mounts as Docker does.
    s.ok(&[
        "create",
        "--name",
        "c1",
        "-v",
        "mydata:/data",
        "-v",
        &hostv,
        "--tmpfs",
        "/t",
        "busybox",
        "true",
    ]);
    let v: serde_json::Value = serde_json::from_str(&s.ok(&["inspect", "c1"])).unwrap();
    let mounts = v[0]["Mounts"].as_array().unwrap();
    let data = mounts.iter().find(|m| m["Destination"] == "/data").unwrap();
    assert_eq!(data["Type"], "volume");
    assert_eq!(data["Name"], "mydata");
    let hostm = mounts.iter().find(|m| m["Destination"] == "/host").unwrap();
    assert_eq!(hostm["Type"], "bind");
    assert_eq!(hostm["RW"], false);
    assert_eq!(v[0]["HostConfig"]["Tmpfs"]["/t"], "");
    assert_eq!(v[0]["Name"], "/c1");
    // Detached runs, logs, stop, ps.
    let id = s.ok(&[
        "run",
        "-d",
        "--name",
        "d1",
        "busybox",
        "sh",
        "-c",
        "echo started; sleep 60",
    ]);
    assert_eq!(id.trim().len(), 64);
    let start = Instant::now();
    while s.ok(&["logs", "d1"]) != "started\n" {
        assert!(start.elapsed() < Duration::from_secs(20), "no log line");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(s.ok(&["ps"]).contains("d1"));
    assert_eq!(s.ok(&["stop", "-t", "1", "d1"]), "d1\n");
    assert_eq!(s.ok(&["wait", "d1"]), "137\n");
    assert!(
        s.ok(&["ps", "-a", "--format", "{{.Names}} {{.Status}}"])
            .contains("d1 Exited (137)")
    );
    // The 20.10 client runs containers the same way.
    let out = s.ok20(&[
        "run",
        "--rm",
        "-v",
        "mydata:/data",
        "busybox",
        "cat",
        "/data/f",
    ]);
    assert_eq!(out, "persisted\n");
    let out = s.docker20(&["run", "--rm", "busybox", "sh", "-c", "exit 7"]);
    assert_eq!(out.code(), Some(7), "{out:?}");
    // An image that is not here: Docker's offline answer, nothing left behind.
    let out = s.fail(&["run", "--rm", "nosuchimage"]);
    assert!(
        out.stderr
            .contains("Unable to find image 'nosuchimage:latest' locally"),
        "{out:?}"
    );
    assert!(
        out.stderr.contains("pull access denied for nosuchimage"),
        "{out:?}"
    );
    assert_eq!(out.code(), Some(125));
    s.ok(&["rm", "-f", "c1", "d1"]);
    assert_eq!(s.ok(&["ps", "-aq"]), "");
    s.root.assert_check_clean();
}

#[test]
fn docker_cli_cp_diff_commit_export_exec() {
    let s = Server::start("serve-fs");
    s.ok(&["run", "-d", "--name", "c1", "busybox", "sleep", "120"]);
    let f = s.root.scratch("f.txt");
    std::fs::write(&f, "hello cp\n").unwrap();
    let fp = f.display().to_string();
    // docker cp both ways (HEAD + PUT, GET), a new name, and from stdin.
    s.ok(&["cp", &fp, "c1:/tmp/"]);
    s.ok(&["cp", &fp, "c1:/tmp/renamed.txt"]);
    let back = s.root.scratch("back.txt");
    s.ok(&["cp", "c1:/tmp/renamed.txt", &back.display().to_string()]);
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "hello cp\n");
    let out = s.fail(&["cp", "c1:/nonexist", &back.display().to_string()]);
    assert!(
        out.stderr
            .contains("Could not find the file /nonexist in container c1"),
        "{out:?}"
    );
    let out = s.ok20(&["cp", "c1:/tmp/f.txt", "-"]);
    assert!(out.contains("hello cp"), "{out}");
    // exec: output, exit codes, stdin, user, workdir, env.
    assert_eq!(s.ok(&["exec", "c1", "cat", "/tmp/f.txt"]), "hello cp\n");
    let out = s.docker(&["exec", "c1", "sh", "-c", "echo o; echo e >&2; exit 4"]);
    assert_eq!(
        (out.code(), out.stdout.as_str(), out.stderr.as_str()),
        (Some(4), "o\n", "e\n")
    );
    let out = s.docker_in(
        &[
            "exec",
            "-i",
            "c1",
            "sh",
            "-c",
            "cat > /tmp/in; wc -c < /tmp/in",
        ],
        b"12345",
    );
    assert_eq!(out.stdout.trim(), "5", "{out:?}");
    assert_eq!(
        s.ok(&[
            "exec",
            "-u",
            "65534",
            "-w",
            "/tmp",
            "-e",
            "X=1",
            "c1",
            "sh",
            "-c",
            "id -u; pwd; echo $X"
        ]),
        "65534\n/tmp\n1\n"
    );
    let out = s.docker(&["exec", "c1", "nosuchcmd"]);
    assert_eq!(out.code(), Some(127), "{out:?}");
    // exec -t through a terminal.
    let out = s.root.run_cmd(
        {
            let mut c = s.client("/usr/bin/script", &[]);
            c.args(["-qec", &format!("{DOCKER} exec -t c1 tty"), "/dev/null"]);
            c
        },
        Input::None,
    );
    assert!(out.stdout.contains("/dev/pts/"), "{out:?}");
    // diff and commit.
    let diff = s.ok(&["diff", "c1"]);
    assert_eq!(
        diff,
        "C /tmp\nA /tmp/f.txt\nA /tmp/in\nA /tmp/renamed.txt\n"
    );
    let id = s.ok(&[
        "commit",
        "-m",
        "msg",
        "-a",
        "me",
        "-c",
        "CMD [\"sh\"]",
        "c1",
        "myimg:v1",
    ]);
    assert!(id.starts_with("sha256:"), "{id}");
    let v: serde_json::Value =
        serde_json::from_str(&s.ok(&["image", "inspect", "myimg:v1"])).unwrap();
    assert_eq!(v[0]["Comment"], "msg");
    assert_eq!(v[0]["Author"], "me");
    assert_eq!(v[0]["Config"]["Cmd"], serde_json::json!(["sh"]));
    // API 1.50: the fields Docker dropped are gone; the 20.10 client (1.41) still gets them.
    assert!(v[0].get("VirtualSize").is_none() && v[0].get("ContainerConfig").is_none());
    let v: serde_json::Value =
        serde_json::from_str(&s.ok20(&["image", "inspect", "myimg:v1"])).unwrap();
    assert!(v[0].get("VirtualSize").is_some() && v[0]["ContainerConfig"].is_object());
    assert_eq!(
        s.ok(&["run", "--rm", "myimg:v1", "cat", "/tmp/renamed.txt"]),
        "hello cp\n"
    );
    // export: the container's whole filesystem.
    let tarp = s.root.scratch("c1.tar");
    s.ok(&["export", "-o", &tarp.display().to_string(), "c1"]);
    let listing = Command::new("tar").arg("tf").arg(&tarp).output().unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(
        listing.contains("tmp/renamed.txt") && listing.contains("bin/busybox"),
        "{listing}"
    );
    s.ok(&["rm", "-f", "c1"]);
    s.root.assert_check_clean();
}

#[test]
fn docker_cli_images_and_system() {
    let s = Server::start("serve-img");
    let out = s.ok(&["images"]);
    assert!(
        out.starts_with("REPOSITORY   TAG       IMAGE ID       CREATED"),
        "{out}"
    );
    assert!(out.contains("busybox      latest"), "{out}");
    s.ok(&["tag", "busybox", "me/box:v1"]);
    let saved = s.root.scratch("saved.tar");
    s.ok(&["save", "-o", &saved.display().to_string(), "me/box:v1"]);
    assert_eq!(s.ok(&["rmi", "me/box:v1"]), "Untagged: me/box:v1\n");
    let out = s.ok(&["load", "-i", &saved.display().to_string()]);
    assert_eq!(out, "Loaded image: me/box:v1\n");
    let out = s.fail(&["rmi", "nosuch"]);
    assert!(
        out.stderr.contains("No such image: nosuch:latest"),
        "{out:?}"
    );
    // A bad archive: an error in the stream, nothing left behind.
    let bad = s.root.scratch("bad.tar");
    std::fs::write(&bad, b"this is not a tar archive at all").unwrap();
    let out = s.fail(&["load", "-i", &bad.display().to_string()]);
    assert!(!out.stderr.is_empty(), "{out:?}");
    // import from a file and from stdin, with a change.
    let rootfs = s.root.scratch("rootfs.tar");
    let cid = s.ok(&["create", "--name", "src", "busybox", "true"]);
    s.ok(&["export", "-o", &rootfs.display().to_string(), cid.trim()]);
    let id = s.ok(&["import", &rootfs.display().to_string(), "imported:v1"]);
    assert!(id.starts_with("sha256:"), "{id}");
    let data = std::fs::read(&rootfs).unwrap();
    let out = s.docker_in(
        &[
            "import",
            "-c",
            "CMD [\"echo\", \"imported\"]",
            "-",
            "imported:v2",
        ],
        &data,
    );
    assert!(out.success(), "{out:?}");
    assert_eq!(s.ok(&["run", "--rm", "imported:v2"]), "imported\n");
    let hist = s.ok(&["history", "imported:v1"]);
    assert!(hist.contains("Imported from -"), "{hist}");
    // info, system df, prune.
    let info = s.ok(&["info"]);
    assert!(
        info.contains("Storage Driver: overlay2") || info.contains("Storage Driver: copy"),
        "{info}"
    );
    assert!(
        info.contains(&format!("Docker Root Dir: {}", s.root.root().display())),
        "{info}"
    );
    s.ok(&["volume", "create", "dfvol"]);
    let df = s.ok(&["system", "df"]);
    assert!(
        df.starts_with(
            "TYPE            TOTAL     ACTIVE    SIZE      RECLAIMABLE\nImages          "
        ),
        "{df}"
    );
    assert!(df.contains("Local Volumes   1         0"), "{df}");
    let dfv = s.ok(&["system", "df", "-v"]);
    assert!(dfv.contains("dfvol"), "{dfv}");
    let out = s.ok(&["system", "prune", "--volumes", "-f"]);
    assert!(out.contains("Deleted Containers:"), "{out}");
    assert_eq!(s.ok(&["ps", "-aq"]), "");
    // Named volumes survive `system prune --volumes` at API 1.50, as with Docker.
    assert_eq!(s.ok(&["volume", "ls", "-q"]), "dfvol\n");
    s.ok(&["rmi", "imported:v1", "imported:v2", "me/box:v1"]);
    s.root.assert_check_clean();
}

#[test]
fn events_and_cli_consistency() {
    let s = Server::start("serve-events");
    let mut events = s
        .client(
            DOCKER,
            &["events", "--format", "{{.Type}} {{.Action}} {{.Actor.ID}}"],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // A volume made by the CLI is seen by the server at once, and the other way round.
    s.root.ok(&["volume", "create", "fromcli"]);
    assert_eq!(s.ok(&["volume", "ls", "-q"]), "fromcli\n");
    s.ok(&["volume", "create", "fromapi"]);
    assert_eq!(s.root.ok(&["volume", "ls", "-q"]), "fromapi\nfromcli\n");
    // A container run by the CLI shows in events and ps.
    s.root.ok(&["run", "--name", "clirun", "busybox", "true"]);
    assert!(
        s.ok(&["ps", "-a", "--format", "{{.Names}}"])
            .contains("clirun")
    );
    s.ok(&["rm", "clirun"]);
    s.root.ok(&["volume", "rm", "fromapi", "fromcli"]);
    s.root.ok(&["tag", "busybox", "evt:v1"]);
    s.root.ok(&["rmi", "evt:v1"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut stdout = events.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx.send(buf[..n].to_vec()).is_err() {
                        return;
                    }
                }
            }
        }
    });
    let mut seen = String::new();
    let want = [
        "volume create fromcli",
        "volume create fromapi",
        "container create",
        "container start",
        "container die",
        "container destroy",
        "volume destroy fromapi",
        "volume destroy fromcli",
        "image tag",
        "image untag",
    ];
    while !want.iter().all(|w| seen.contains(w)) && Instant::now() < deadline {
        if let Ok(b) = rx.recv_timeout(Duration::from_millis(200)) {
            seen.push_str(&String::from_utf8_lossy(&b));
        }
    }
    let _ = events.kill();
    let _ = events.wait();
    for w in want {
        assert!(seen.contains(w), "missing event {w:?} in:\n{seen}");
    }
    // Past events with since/until and filters.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 1;
    let now = now.to_string();
    let past = s.ok(&[
        "events",
        "--since",
        "0",
        "--until",
        &now,
        "--filter",
        "type=volume",
        "--format",
        "{{.Action}} {{.Actor.ID}}",
    ]);
    assert_eq!(
        past,
        "create fromcli\ncreate fromapi\ndestroy fromapi\ndestroy fromcli\n"
    );
}

#[test]
fn docker_py_smoke() {
    let s = Server::start("serve-py");
    let python = dockerpy_python();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/serve/dockerpy_smoke.py");
    let scratch = s.root.scratch("py");
    std::fs::create_dir_all(&scratch).unwrap();
    let mut cmd = Command::new(&python);
    cmd.arg(&script).arg(s.host()).arg(&scratch);
    let out = s.root.run_cmd(cmd, Input::None);
    assert!(
        out.success() && out.stdout.contains("docker-py smoke: all passed"),
        "docker-py smoke failed: {out:?}\nserver log:\n{}",
        s.tail_log()
    );
    s.root.assert_check_clean();
}

/// A Python with docker-py: a venv under `target/` made once (CI has PyPI). Fails loudly.
fn dockerpy_python() -> PathBuf {
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/docker-py-venv");
    let python = target.join("bin/python");
    let lock = std::fs::File::create(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/.docker-py.lock"),
    );
    // One test process installs at a time.
    let _guard = lock.ok().inspect(|f| {
        // SAFETY: flock on an open file.
        unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(f), libc::LOCK_EX) };
    });
    let has = |p: &Path| {
        Command::new(p)
            .args(["-c", "import docker"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !has(&python) {
        let st = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&target)
            .status()
            .unwrap();
        assert!(
            st.success(),
            "python3 -m venv failed (install python3-venv)"
        );
        let out = Command::new(target.join("bin/pip"))
            .args(["install", "--quiet", "docker==7.2.0"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pip install docker failed (docker-py is needed for this test): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(
        has(&python),
        "docker-py is not importable from {}",
        python.display()
    );
    python
}

#[test]
fn protocol_and_bad_input() {
    let s = Server::start("serve-proto");
    // Ping: headers on every answer, versioned and not.
    let r = s.http("HEAD", "/_ping", None);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("api-version"), Some("1.50"));
    assert_eq!(r.header("ostype"), Some("linux"));
    let r = s.http("GET", "/v1.41/_ping", None);
    assert_eq!((r.status, r.body.as_slice()), (200, b"OK".as_slice()));
    let r = s.http("GET", "/v1.24/version", None);
    assert_eq!(r.json()["MinAPIVersion"], "1.24");
    // Versions outside the range.
    let r = s.http("GET", "/v1.51/info", None);
    assert_eq!(r.status, 400);
    assert_eq!(
        r.message(),
        "client version 1.51 is too new. Maximum supported API version is 1.50"
    );
    assert_eq!(r.header("api-version"), Some("1.50"));
    let r = s.http("GET", "/v1.12/info", None);
    assert_eq!(r.status, 400);
    assert!(
        r.message()
            .contains("is too old. Minimum supported API version is 1.24")
    );
    // Unknown routes and methods.
    let r = s.http("GET", "/v1.50/nosuch", None);
    assert_eq!((r.status, r.message().as_str()), (404, "page not found"));
    let r = s.http("PATCH", "/volumes", None);
    assert_eq!((r.status, r.message().as_str()), (404, "page not found"));
    // Malformed JSON, wrong types, bad filters: 400, and nothing made.
    for (path, body) in [
        ("/volumes/create", &b"{not json"[..]),
        ("/volumes/create", b"{\"Name\": 5}"),
        ("/volumes/create", b"[1,2]"),
        ("/containers/create", b"{\"Image\": \"busybox\", \"Cmd\": 5}"),
        ("/containers/create", b"{\"Image\": \"busybox\", \"HostConfig\": {\"Binds\": \"x\"}}"),
        ("/containers/create", b"{\"Image\": \"busybox\", \"HostConfig\": {\"Mounts\": [{\"Type\": \"bogus\", \"Target\": \"/x\"}]}}"),
        ("/containers/create", b"{\"Image\": \"busybox\", \"HostConfig\": {\"Binds\": [\"/etc:relative\"]}}"),
        ("/containers/create", b"{\"Image\": \"busybox\", \"Cmd\": [\"true\"], \"HostConfig\": {\"NetworkMode\": \"bridge\"}}"),
        ("/containers/create?name=bad%20name", b"{\"Image\": \"busybox\", \"Cmd\": [\"true\"]}"),
    ] {
        let r = s.http("POST", path, Some(body));
        assert_eq!(r.status, 400, "{path} {}: {r:?}", String::from_utf8_lossy(body));
        assert!(!r.message().is_empty());
    }
    let r = s.http("GET", "/volumes?filters=%7Bbad", None);
    assert_eq!(r.status, 400);
    // Not found and conflicts.
    let r = s.http(
        "POST",
        "/containers/create",
        Some(b"{\"Image\": \"nosuch\", \"Cmd\": [\"true\"]}"),
    );
    assert_eq!(
        (r.status, r.message().as_str()),
        (404, "No such image: nosuch:latest")
    );
    let r = s.http(
        "POST",
        "/images/create?fromImage=docker.io%2Flibrary%2Fnosuch&tag=latest",
        None,
    );
    assert_eq!(r.status, 404);
    let r = s.http("GET", "/containers/nosuch/json", None);
    assert_eq!(
        (r.status, r.message().as_str()),
        (404, "No such container: nosuch")
    );
    let r = s.http(
        "POST",
        "/containers/create?name=dup",
        Some(b"{\"Image\": \"busybox\", \"Cmd\": [\"true\"]}"),
    );
    assert_eq!(r.status, 201);
    let r = s.http(
        "POST",
        "/containers/create?name=dup",
        Some(b"{\"Image\": \"busybox\", \"Cmd\": [\"true\"]}"),
    );
    assert_eq!(r.status, 409);
    assert!(r.message().contains("is already in use by container"));
    let r = s.http("POST", "/containers/dup/stop", None);
    assert_eq!(r.status, 304);
    let r = s.http("POST", "/containers/dup/kill", None);
    assert_eq!(r.status, 409);
    // Unsupported features: clear errors.
    let r = s.http("POST", "/swarm/init", Some(b"{}"));
    assert_eq!(r.status, 503);
    let r = s.http("POST", "/plugins/pull?remote=x", Some(b"[]"));
    assert_eq!(r.status, 501);
    let r = s.http(
        "POST",
        "/volumes/create",
        Some(b"{\"Name\": \"pv\", \"Driver\": \"nosuchdriver\"}"),
    );
    assert!(r.status == 400 || r.status == 404, "{r:?}");
    // The wait answer's headers come at once, before the condition is met.
    let mut w = UnixStream::connect(&s.socket).unwrap();
    w.write_all(b"POST /v1.50/containers/dup/wait?condition=next-exit HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").unwrap();
    w.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 512];
    let n = w.read(&mut buf).expect("wait headers within 5 s");
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    let r = s.http("POST", "/containers/dup/start", None);
    assert_eq!(r.status, 204);
    let n = w.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("\"StatusCode\":0"));
    // Stub networks for compose.
    let r = s.http("POST", "/networks/create", Some(b"{\"Name\": \"p_default\", \"CheckDuplicate\": true, \"Labels\": {\"com.docker.compose.project\": \"p\"}, \"Attachable\": true}"));
    assert_eq!(r.status, 201);
    let r = s.http("GET", "/networks/p_default", None);
    assert_eq!(r.json()["Labels"]["com.docker.compose.project"], "p");
    let r = s.http(
        "POST",
        "/networks/p_default/connect",
        Some(b"{\"Container\": \"dup\"}"),
    );
    assert_eq!(r.status, 200);
    // A container on the project network (compose's NetworkMode) runs without networking.
    let r = s.http(
        "POST",
        "/containers/create?name=onnet",
        Some(
            br#"{"Image": "busybox", "Cmd": ["true"], "HostConfig": {"NetworkMode": "p_default"}}"#,
        ),
    );
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(s.http("DELETE", "/containers/onnet", None).status, 204);
    let r = s.http("DELETE", "/networks/p_default", None);
    assert_eq!(r.status, 204);
    let r = s.http("GET", "/networks/p_default", None);
    assert_eq!(r.status, 404);
    let r = s.http("DELETE", "/containers/dup", None);
    assert_eq!(r.status, 204);
    // Nothing half-made stayed, and the server still answers.
    assert_eq!(s.ok(&["ps", "-aq"]), "");
    assert_eq!(s.ok(&["volume", "ls", "-q"]), "");
    s.root.assert_check_clean();
}

/// Send a request head (and `body`), read the answer's head, and return the connection.
fn raw_request(socket: &Path, head: &str, body: &[u8]) -> (UnixStream, String) {
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut got = Vec::new();
    let mut b = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") && s.read(&mut b).unwrap_or(0) == 1 {
        got.push(b[0]);
    }
    (s, String::from_utf8_lossy(&got).to_ascii_lowercase())
}

#[test]
fn streams_and_disconnects() {
    let s = Server::start("serve-streams");
    let images_before = s.ok(&["images", "-q"]);
    // Hijacked attach: 101, raw-stream before 1.42, multiplexed-stream from 1.42 (no terminal).
    s.ok(&["create", "--name", "ct", "busybox", "echo", "hi"]);
    for (v, ct) in [
        ("1.41", "application/vnd.docker.raw-stream"),
        ("1.50", "application/vnd.docker.multiplexed-stream"),
    ] {
        let (_c, head) = raw_request(
            &s.socket,
            &format!(
                "POST /v{v}/containers/ct/attach?stream=0&stdout=1&logs=1 HTTP/1.1\r\nHost: \r\nConnection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: 0\r\n\r\n"
            ),
            b"",
        );
        assert!(head.starts_with("http/1.1 101"), "{head}");
        assert!(head.contains(&format!("content-type: {ct}")), "{v}: {head}");
    }
    // The framed output of a non-terminal container: 8-byte headers, stream 1 and 2.
    s.ok(&["rm", "ct"]);
    let id = s.ok(&["create", "busybox", "sh", "-c", "echo out; echo err >&2"]);
    let id = id.trim();
    let (mut att, head) = raw_request(
        &s.socket,
        &format!(
            "POST /v1.50/containers/{id}/attach?stream=1&stdout=1&stderr=1 HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: 0\r\n\r\n"
        ),
        b"",
    );
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert_eq!(
        s.http("POST", &format!("/containers/{id}/start"), None)
            .status,
        204
    );
    let mut framed = Vec::new();
    att.read_to_end(&mut framed).unwrap();
    let mut frames = Vec::new();
    let mut rest = framed.as_slice();
    while rest.len() >= 8 {
        let n = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize;
        frames.push((
            rest[0],
            String::from_utf8_lossy(&rest[8..8 + n]).into_owned(),
        ));
        rest = &rest[8 + n..];
    }
    frames.sort();
    assert_eq!(
        frames,
        vec![(1, "out\n".to_string()), (2, "err\n".to_string())]
    );
    s.ok(&["rm", id]);
    // An upload that stops half way: nothing of it stays, the server goes on.
    let saved = s.root.scratch("img.tar");
    s.ok(&["save", "-o", &saved.display().to_string(), "busybox"]);
    s.ok(&["rmi", "busybox"]);
    let data = std::fs::read(&saved).unwrap();
    {
        let mut c = UnixStream::connect(&s.socket).unwrap();
        c.write_all(format!("POST /v1.50/images/load?quiet=1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-tar\r\nContent-Length: {}\r\n\r\n", data.len()).as_bytes()).unwrap();
        c.write_all(&data[..data.len() / 2]).unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(s.ok(&["images", "-q"]), "");
    // The whole upload, chunked (as the CLI sends it).
    assert_eq!(
        s.ok(&["load", "-i", &saved.display().to_string()]),
        "Loaded image: busybox:latest\n"
    );
    assert_eq!(s.ok(&["images", "-q"]), images_before);
    // A download abandoned after its first bytes, and a log follower that goes away.
    for _ in 0..3 {
        let (mut c, head) = raw_request(
            &s.socket,
            "GET /v1.50/images/get?names=busybox HTTP/1.1\r\nHost: x\r\n\r\n",
            b"",
        );
        assert!(head.starts_with("http/1.1 200"), "{head}");
        let mut first = [0u8; 1024];
        c.read_exact(&mut first).unwrap();
    }
    s.ok(&[
        "run",
        "-d",
        "--name",
        "talker",
        "busybox",
        "sh",
        "-c",
        "while true; do echo x; sleep 0.1; done",
    ]);
    for _ in 0..3 {
        let (mut c, head) = raw_request(
            &s.socket,
            "GET /v1.50/containers/talker/logs?follow=1&stdout=1 HTTP/1.1\r\nHost: x\r\n\r\n",
            b"",
        );
        assert!(head.starts_with("http/1.1 200"), "{head}");
        let mut first = [0u8; 9];
        c.read_exact(&mut first).unwrap();
    }
    // An exec whose client goes away: the process ends on its own, the session is recorded.
    let r = s.http(
        "POST",
        "/containers/talker/exec",
        Some(br#"{"Cmd": ["sleep", "1"], "AttachStdout": true}"#),
    );
    let exec = r.json()["Id"].as_str().unwrap().to_string();
    let (c, head) = raw_request(
        &s.socket,
        &format!(
            "POST /v1.50/exec/{exec}/start HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n"
        ),
        b"{}",
    );
    assert!(head.starts_with("http/1.1 101"), "{head}");
    drop(c);
    let start = Instant::now();
    loop {
        let v = s.http("GET", &format!("/exec/{exec}/json"), None).json();
        if v["Running"] == false {
            assert_eq!(v["ExitCode"], 0, "{v}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "exec still running: {v}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The server still answers, and holds nothing of the abandoned streams.
    assert_eq!(s.http("GET", "/_ping", None).status, 200);
    s.ok(&["rm", "-f", "talker"]);
    s.ok(&["container", "prune", "-f"]);
    std::thread::sleep(Duration::from_millis(300));
    let fds = std::fs::read_dir(format!("/proc/{}/fd", s.child.as_ref().unwrap().id()))
        .unwrap()
        .count();
    assert!(fds < 40, "the server holds {fds} descriptors");
    s.root.assert_check_clean();
}

#[test]
fn server_lifecycle() {
    let mut s = Server::start("serve-life");
    let meta = std::fs::metadata(&s.socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!((meta.uid(), meta.gid()), (0, 0));
    // A second server on the same socket refuses to start.
    let out = s.root.run(&["serve".to_string(), "-H".into(), s.host()]);
    assert!(
        !out.success() && out.stderr.contains("already listening"),
        "{out:?}"
    );
    // A container started through the server survives the server's stop.
    s.ok(&["run", "-d", "--name", "long", "busybox", "sleep", "120"]);
    let st = s.stop();
    assert!(st.success(), "serve exit: {st}: {}", s.log());
    assert!(!s.socket.exists(), "the socket is removed on stop");
    let ps = s.root.ok(&["ps", "--format", "{{.Names}} {{.State}}"]);
    assert_eq!(ps, "long running\n");
    // A stale socket file (nobody answers) is replaced.
    let stale = std::os::unix::net::UnixListener::bind(&s.socket).unwrap();
    drop(stale);
    s.spawn();
    assert_eq!(s.ok(&["ps", "--format", "{{.Names}}"]), "long\n");
    s.ok(&["rm", "-f", "long"]);
}

/// The server probes the host's runtimes at start-up (a container created and deleted with
/// each); stopped at once, it finishes the probe first, leaving no probe container behind.
#[test]
fn a_server_stopped_at_once_finishes_its_runtime_probe() {
    let mut s = Server::start("serve-quick-stop");
    let st = s.stop();
    assert!(st.success(), "serve exit: {st}: {}", s.log());
    let runtime_dir = s.root.path("runtime");
    assert!(
        runtime_dir.join("probe.json").exists(),
        "the probe finished and was cached: {}",
        s.log()
    );
    let left: Vec<String> = std::fs::read_dir(&runtime_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("probe-"))
        .collect();
    assert!(left.is_empty(), "probe containers left: {left:?}");
}

#[test]
fn load_200_clients() {
    let s = Server::start("serve-load");
    const CLIENTS: usize = 200;
    const DURATION: Duration = Duration::from_secs(20);
    let socket = Arc::new(s.socket.clone());
    let ops = Arc::new(AtomicU64::new(0));
    let runs = Arc::new(AtomicU64::new(0));
    let conflicts = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let start = Instant::now();
    let mut threads = Vec::new();
    for i in 0..CLIENTS {
        let (socket, ops, runs, conflicts, errors) = (
            socket.clone(),
            ops.clone(),
            runs.clone(),
            conflicts.clone(),
            errors.clone(),
        );
        threads.push(std::thread::spawn(move || {
            let mut n = 0u64;
            let fail = |what: String| errors.lock().unwrap().push(what);
            while start.elapsed() < DURATION {
                n += 1;
                // Everyone also touches one shared volume: creates are idempotent, removals of
                // it conflict while another client's container uses it.
                let name = if n.is_multiple_of(4) { "shared".to_string() } else { format!("v{i}-{n}") };
                let body = format!("{{\"Name\": \"{name}\", \"Labels\": {{\"load\": \"1\"}}}}");
                let r = http_on(&socket, "POST", "/v1.50/volumes/create", Some(body.as_bytes()));
                if r.status != 201 {
                    fail(format!("create {name}: {} {}", r.status, String::from_utf8_lossy(&r.body)));
                    continue;
                }
                let r = http_on(&socket, "GET", "/v1.50/volumes?filters=%7B%22label%22%3A%7B%22load%3D1%22%3Atrue%7D%7D", None);
                if r.status != 200 {
                    fail(format!("list: {}", r.status));
                }
                if n.is_multiple_of(5) {
                    // A short container using the volume.
                    let body = format!("{{\"Image\": \"busybox\", \"Cmd\": [\"sh\", \"-c\", \"echo x > /d/f\"], \"HostConfig\": {{\"Binds\": [\"{name}:/d\"], \"AutoRemove\": true}}}}");
                    let r = http_on(&socket, "POST", "/v1.50/containers/create", Some(body.as_bytes()));
                    if r.status != 201 {
                        fail(format!("container create: {} {}", r.status, String::from_utf8_lossy(&r.body)));
                    } else {
                        let id = r.json()["Id"].as_str().unwrap().to_string();
                        let mut w = UnixStream::connect(&*socket).unwrap();
                        w.write_all(format!("POST /v1.50/containers/{id}/wait?condition=removed HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").as_bytes()).unwrap();
                        // As the docker CLI: start only once the wait's headers are here.
                        w.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                        let mut head = Vec::new();
                        let mut byte = [0u8; 1];
                        while !head.ends_with(b"\r\n\r\n") && w.read(&mut byte).unwrap_or(0) == 1 {
                            head.push(byte[0]);
                        }
                        let r = http_on(&socket, "POST", &format!("/v1.50/containers/{id}/start"), None);
                        if r.status != 204 {
                            fail(format!("start: {} {}", r.status, String::from_utf8_lossy(&r.body)));
                        }
                        let mut out = Vec::new();
                        w.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
                        let _ = w.read_to_end(&mut out);
                        let out = String::from_utf8_lossy(&out);
                        if !out.contains("\"StatusCode\":0") {
                            fail(format!("wait: {out}"));
                        }
                        runs.fetch_add(1, Ordering::Relaxed);
                    }
                }
                let r = http_on(&socket, "DELETE", &format!("/v1.50/volumes/{name}"), None);
                match r.status {
                    204 => {}
                    // Another client's container uses the shared volume, or removed it first.
                    409 | 404 if name == "shared" => {
                        conflicts.fetch_add(1, Ordering::Relaxed);
                    }
                    other => fail(format!("remove {name}: {other} {}", String::from_utf8_lossy(&r.body))),
                }
                ops.fetch_add(4, Ordering::Relaxed);
            }
        }));
    }
    for t in threads {
        t.join().unwrap();
    }
    let elapsed = start.elapsed();
    let errors = errors.lock().unwrap().clone();
    eprintln!(
        "load: {CLIENTS} clients, {:.1} s, {} requests ({:.0}/s), {} containers run, {} expected conflicts, {} errors",
        elapsed.as_secs_f64(),
        ops.load(Ordering::Relaxed),
        ops.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64(),
        runs.load(Ordering::Relaxed),
        conflicts.load(Ordering::Relaxed),
        errors.len()
    );
    assert!(
        errors.is_empty(),
        "{} errors, first: {:?}\nps -a:\n{}",
        errors.len(),
        &errors[..errors.len().min(10)],
        s.root.run(&["ps", "-a"]).stdout
    );
    assert!(runs.load(Ordering::Relaxed) > 0);
    // No leak: no container, only (maybe) the shared volume, a clean store, a live server.
    s.http("DELETE", "/volumes/shared?force=1", None);
    assert_eq!(s.ok(&["ps", "-aq"]), "");
    assert_eq!(s.ok(&["volume", "ls", "-q"]), "");
    let fds = std::fs::read_dir(format!("/proc/{}/fd", s.child.as_ref().unwrap().id()))
        .unwrap()
        .count();
    assert!(
        fds < 100,
        "the server holds {fds} descriptors after the load"
    );
    let check = s.root.run(&["system", "check"]);
    if !check.success() {
        for l in check.stdout.lines().filter(|l| l.contains("/containers/")) {
            let ls = Command::new("ls").args(["-la", l.trim()]).output().unwrap();
            eprintln!("{l}:\n{}", String::from_utf8_lossy(&ls.stdout));
            let id = l.trim().rsplit('/').next().unwrap_or_default();
            let events = s.ok(&[
                "events",
                "--since",
                "0",
                "--until",
                "1",
                "--filter",
                &format!("container={id}"),
            ]);
            eprintln!("events of {id}:\n{events}");
        }
    }
    s.root.assert_check_clean();
}
