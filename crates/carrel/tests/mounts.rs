//! Volumes, bind mounts and tmpfs with real containers, through the `carrel` binary: the seed's
//! recipes (`-v mydata:/data`, `-v /host:/ctr:ro`, anonymous `-v /data`, `--tmpfs`, `--mount`,
//! volume initialization, `rm -v`, `run --rm`, the `--volumes-from` backup and restore,
//! `--read-only` with a writable volume, secrets on tmpfs) and the adversarial cases of mounts
//! (ADVERSARIAL ST-38, 41, 42, 44, 45, 47, 48, 60): destinations through image symlinks, `/proc`,
//! subpaths, temporary mounts, population rules, recursive read-only, tmpfs defaults, a bind
//! source swapped while mounting, volumes removed while containers are created on them. Core
//! cases run with both runtimes (crun, runc).
//!
//! Every test has its own data root; containers are force-removed when a test ends, also when
//! it fails, before the root's own clean-up (processes, mounts, directory).

mod common;

use std::ops::Deref;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;

const RUNTIMES: [&str; 2] = ["crun", "runc"];

/// A data root with the busybox image. Dropping it removes every container (force) before the
/// root cleans up.
struct Env {
    t: TestRoot,
}

impl Deref for Env {
    type Target = TestRoot;
    fn deref(&self) -> &TestRoot {
        &self.t
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let out = self.t.run(&["ps", "-aq", "--no-trunc"]);
        for id in out.stdout.lines().filter(|l| !l.is_empty()) {
            let _ = self.t.run(&["rm", "-f", id]);
        }
    }
}

impl Env {
    fn new(name: &str) -> Env {
        let t = TestRoot::new(name);
        busybox(&t);
        Env { t }
    }

    fn with_driver(name: &str, driver: &str) -> Env {
        let t = TestRoot::with_driver(name, driver);
        busybox(&t);
        Env { t }
    }

    /// `carrel ARGS`: must succeed; stdout.
    fn out(&self, args: &[&str]) -> String {
        let o = self.t.run(args);
        assert!(o.success(), "command failed: {o:?}");
        o.stdout
    }

    /// `carrel ARGS`: must fail with `code`; stderr.
    fn err(&self, args: &[&str], code: i32) -> String {
        let o = self.t.run(args);
        assert_eq!(o.code(), Some(code), "unexpected outcome: {o:?}");
        o.stderr
    }

    /// `carrel run --rm --runtime RT ARGS…`: must succeed; stdout.
    fn run_rt(&self, rt: &str, args: &[&str]) -> String {
        let mut a = vec!["run", "--rm", "--runtime", rt];
        a.extend_from_slice(args);
        self.out(&a)
    }

    /// A local volume's content directory.
    fn vol(&self, name: &str) -> PathBuf {
        self.path("volumes").join(name).join("_data")
    }

    /// Names of the volumes on disk.
    fn volumes(&self) -> Vec<String> {
        list_dir(&self.path("volumes"))
            .into_iter()
            .filter(|n| self.path("volumes").join(n).join("_data").is_dir())
            .collect()
    }

    fn inspect_json(&self, name: &str) -> serde_json::Value {
        let v: serde_json::Value =
            serde_json::from_str(&self.out(&["inspect", name])).expect("inspect prints JSON");
        v[0].clone()
    }

    /// Build image `tag` from busybox's root plus what `edit` puts in the tree (owners kept),
    /// with Dockerfile-like `changes` (`VOLUME /data`).
    fn image(&self, tag: &str, changes: &[&str], edit: impl FnOnce(&Path)) {
        let dir = self.scratch(&format!("img-{}", tag.replace([':', '/'], "-")));
        std::fs::create_dir_all(&dir).unwrap();
        let id = self.out(&["create", "busybox", "true"]).trim().to_string();
        let tar = dir.with_extension("tar");
        let exported = self
            .command(&["export", "-o", tar.to_str().unwrap(), &id])
            .status()
            .unwrap();
        assert!(exported.success());
        self.out(&["rm", &id]);
        sh(&format!("tar -C {} -xpf {}", dir.display(), tar.display()));
        edit(&dir);
        sh(&format!(
            "tar -C {} --numeric-owner -cf {} .",
            dir.display(),
            tar.display()
        ));
        let mut args = vec!["import".to_string()];
        for c in changes {
            args.push("--change".into());
            args.push(c.to_string());
        }
        args.push(tar.display().to_string());
        args.push(tag.into());
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        self.out(&a);
    }
}

/// Run a shell command on the host; it must succeed.
fn sh(cmd: &str) {
    let st = Command::new("sh").arg("-c").arg(cmd).status().unwrap();
    assert!(st.success(), "`{cmd}` failed");
}

fn write(p: &Path, data: &str) {
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(p, data).unwrap();
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

/// The mountinfo line of `target` in a container's own `/proc/self/mountinfo` output.
fn mountinfo_line<'a>(info: &'a str, target: &str) -> &'a str {
    info.lines()
        .find(|l| l.split(' ').nth(4) == Some(target))
        .unwrap_or_else(|| panic!("no mount at {target} in:\n{info}"))
}

/// Whether any file under `dir` contains `needle` (the data root must never hold tmpfs data).
fn tree_contains(dir: &Path, needle: &[u8]) -> bool {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return false;
    };
    for e in rd.flatten() {
        let p = e.path();
        let Ok(md) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if md.is_dir() {
            if tree_contains(&p, needle) {
                return true;
            }
        } else if md.is_file()
            && std::fs::read(&p).is_ok_and(|d| d.windows(needle.len()).any(|w| w == needle))
        {
            return true;
        }
    }
    false
}

// ---- volumes --------------------------------------------------------------------------------

#[test]
fn volume_data_survives_rm_and_the_writable_layer_does_not() {
    let e = Env::new("mnt-named");
    for rt in RUNTIMES {
        let vol = format!("mydata-{rt}");
        let spec = format!("{vol}:/data");
        e.out(&[
            "run",
            "--name",
            "writer",
            "--runtime",
            rt,
            "-v",
            &spec,
            "busybox",
            "sh",
            "-c",
            "echo kept > /data/f; echo lost > /tmp/g",
        ]);
        assert_eq!(
            std::fs::read_to_string(e.vol(&vol).join("f")).unwrap(),
            "kept\n"
        );
        let m = &e.inspect_json("writer")["Mounts"][0];
        assert_eq!(m["Type"], "volume");
        assert_eq!(m["Name"], vol.as_str());
        assert_eq!(m["Source"], e.vol(&vol).to_str().unwrap());
        assert_eq!(m["Destination"], "/data");
        assert_eq!(m["Driver"], "local");
        assert_eq!(m["Mode"], "z");
        assert_eq!(m["RW"], true);
        assert_eq!(m["Propagation"], "");
        e.out(&["rm", "writer"]);
        // A named volume survives `rm` (and `rm -v`); the writable layer does not.
        assert!(e.volumes().contains(&vol));
        assert_eq!(
            e.run_rt(
                rt,
                &[
                    "-v",
                    &spec,
                    "busybox",
                    "sh",
                    "-c",
                    "cat /data/f; cat /tmp/g 2>&1 || true"
                ]
            ),
            "kept\ncat: can't open '/tmp/g': No such file or directory\n"
        );
        e.out(&["run", "--name", "again", "-v", &spec, "busybox", "true"]);
        e.out(&["rm", "-v", "again"]);
        assert!(e.volumes().contains(&vol), "rm -v keeps named volumes");
    }
    // `--mount type=volume` is the same volume.
    assert_eq!(
        e.run_rt(
            "crun",
            &[
                "--mount",
                "type=volume,source=mydata-crun,target=/d",
                "busybox",
                "cat",
                "/d/f"
            ]
        ),
        "kept\n"
    );
    e.assert_check_clean();
}

#[test]
fn anonymous_volumes_go_with_rm_v_and_rm_but_not_plain_rm() {
    let e = Env::new("mnt-anon");
    e.out(&[
        "run",
        "--name",
        "first",
        "-v",
        "/data",
        "busybox",
        "sh",
        "-c",
        "echo x > /data/x",
    ]);
    let name = e.inspect_json("first")["Mounts"][0]["Name"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()),
        "{name}"
    );
    assert_eq!(e.inspect_json("first")["Mounts"][0]["Mode"], "");
    assert_eq!(
        e.inspect_json("first")["Config"]["Volumes"],
        serde_json::json!({"/data": {}})
    );
    let labels = e.out(&["volume", "inspect", "-f", "{{json .Labels}}", &name]);
    assert_eq!(labels.trim(), r#"{"com.docker.volume.anonymous":""}"#);
    // Plain rm: the volume stays, dangling.
    e.out(&["rm", "first"]);
    assert!(e.volumes().contains(&name));
    assert_eq!(
        std::fs::read_to_string(e.vol(&name).join("x")).unwrap(),
        "x\n"
    );
    // rm -v: it goes.
    e.out(&[
        "run",
        "--name",
        "second",
        "-v",
        "/data",
        "-v",
        "named:/named",
        "busybox",
        "true",
    ]);
    let b = e.inspect_json("second")["Mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["Destination"] == "/data")
        .unwrap()["Name"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(e.volumes().contains(&b));
    e.out(&["rm", "-v", "second"]);
    assert!(!e.volumes().contains(&b));
    assert!(e.volumes().contains(&"named".to_string()));
    // run --rm: its anonymous volumes go when it exits, for both runtimes.
    for rt in RUNTIMES {
        let before = e.volumes();
        e.run_rt(
            rt,
            &["-v", "/data", "busybox", "sh", "-c", "echo y > /data/y"],
        );
        assert_eq!(e.volumes(), before, "{rt}");
    }
    e.assert_check_clean();
}

#[test]
fn copy_up_populates_empty_volumes_once_and_never_binds() {
    let e = Env::new("mnt-copyup");
    e.image("app:v1", &["VOLUME /app", "VOLUME /../../etc"], |d| {
        write(&d.join("app/config.txt"), "default config\n");
        write(&d.join("testfile"), "t\n");
        std::os::unix::fs::symlink("../../testfile", d.join("app/x")).unwrap();
        std::fs::create_dir_all(d.join("app/sub")).unwrap();
        std::fs::hard_link(d.join("app/config.txt"), d.join("app/sub/hard")).unwrap();
        sh(&format!(
            "chown -R 1000:1000 {0}/app && chmod 0750 {0}/app",
            d.display()
        ));
        write(&d.join("etc/image-marker"), "from the image\n");
        std::fs::create_dir_all(d.join("real/conf")).unwrap();
        write(&d.join("real/conf/c.conf"), "real\n");
        std::os::unix::fs::symlink("/real/conf", d.join("conf")).unwrap();
        write(&d.join("afile"), "file\n");
    });
    assert!(!Path::new("/real").exists());
    // An empty named volume gets the image's content, symlinks as symlinks, owner and mode of
    // the image directory, hardlinks kept.
    e.out(&[
        "run",
        "--rm",
        "-v",
        "appdata:/app",
        "app:v1",
        "sh",
        "-c",
        "echo user > /app/user.txt; echo changed > /app/config.txt",
    ]);
    let v = e.vol("appdata");
    assert_eq!(
        std::fs::read_link(v.join("x")).unwrap(),
        Path::new("../../testfile")
    );
    assert_eq!(mode(&v), 0o750);
    assert_eq!(std::fs::metadata(&v).unwrap().uid(), 1000);
    assert_eq!(
        std::fs::metadata(v.join("config.txt")).unwrap().ino(),
        std::fs::metadata(v.join("sub/hard")).unwrap().ino()
    );
    // Populated once: the next container sees what the last one wrote.
    assert_eq!(
        e.out(&[
            "run",
            "--rm",
            "-v",
            "appdata:/app",
            "app:v1",
            "sh",
            "-c",
            "cat /app/config.txt /app/user.txt"
        ]),
        "changed\nuser\n"
    );
    // A volume that has content keeps it and gets nothing.
    e.out(&[
        "run",
        "--rm",
        "-v",
        "full:/x",
        "busybox",
        "sh",
        "-c",
        "echo mine > /x/user.txt",
    ]);
    e.out(&["run", "--rm", "-v", "full:/app", "app:v1", "true"]);
    assert_eq!(list_dir(&e.vol("full")), ["user.txt"]);
    // nocopy: empty stays empty.
    e.out(&["run", "--rm", "-v", "nocp:/app:nocopy", "app:v1", "true"]);
    assert!(list_dir(&e.vol("nocp")).is_empty());
    e.out(&[
        "run",
        "--rm",
        "--mount",
        "type=volume,src=nocp2,dst=/app,volume-nocopy",
        "app:v1",
        "true",
    ]);
    assert!(list_dir(&e.vol("nocp2")).is_empty());
    // A bind mount never copies.
    let host = e.scratch("emptybind");
    std::fs::create_dir_all(&host).unwrap();
    let spec = format!("{}:/app", host.display());
    assert_eq!(
        e.out(&["run", "--rm", "-v", &spec, "app:v1", "ls", "-A", "/app"]),
        ""
    );
    assert!(list_dir(&host).is_empty());
    // The image's anonymous volumes: /app populated; `/../../etc` is the image's /etc.
    e.out(&["run", "--name", "anon", "app:v1", "true"]);
    let mounts = e.inspect_json("anon")["Mounts"].as_array().unwrap().clone();
    let by_dest = |d: &str| {
        mounts.iter().find(|m| m["Destination"] == d).unwrap()["Name"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        std::fs::read_to_string(e.vol(&by_dest("/app")).join("config.txt")).unwrap(),
        "default config\n"
    );
    let etc = e.vol(&by_dest("/etc"));
    assert_eq!(
        std::fs::read_to_string(etc.join("image-marker")).unwrap(),
        "from the image\n"
    );
    // Never the host's /etc.
    assert!(
        !etc.join("hostname").exists()
            || std::fs::read(etc.join("hostname")).unwrap()
                != std::fs::read("/etc/hostname").unwrap()
    );
    // A volume through an absolute symlink of the image copies the image's /real/conf.
    e.out(&["run", "--rm", "-v", "conf:/conf", "app:v1", "true"]);
    assert_eq!(
        std::fs::read_to_string(e.vol("conf").join("c.conf")).unwrap(),
        "real\n"
    );
    assert!(!Path::new("/real").exists());
    // A named volume over a file copies nothing at create (and cannot be mounted at start, as
    // with Docker); an anonymous one is refused at create, and nothing is left.
    e.out(&[
        "create",
        "--name",
        "onfile",
        "-v",
        "onfile:/afile",
        "app:v1",
        "true",
    ]);
    assert!(list_dir(&e.vol("onfile")).is_empty());
    let err = e.err(&["start", "onfile"], 1);
    assert!(err.contains("/afile"), "{err}");
    e.out(&["rm", "onfile"]);
    let before = e.volumes();
    let err = e.err(&["run", "-v", "/afile", "app:v1", "true"], 125);
    assert!(
        err.contains("cannot mount volume over existing file, file exists /afile"),
        "{err}"
    );
    assert_eq!(e.volumes(), before);
    e.out(&["rm", "-v", "anon"]);
    e.assert_check_clean();
}

#[test]
fn interrupted_population_is_never_partial_nor_repeated() {
    // ST-60: kill `create` while it populates a volume with 4 000 files.
    let e = Env::new("mnt-populate-kill");
    let n = 4_000;
    e.image("many:v1", &["VOLUME /data", "CMD [\"true\"]"], |d| {
        for i in 0..n {
            write(
                &d.join(format!("data/d{}/f{i}", i % 100)),
                &format!("{i}\n"),
            );
        }
    });
    let count = |v: &str| -> usize {
        let dir = e.vol(v);
        if !dir.is_dir() {
            return 0;
        }
        list_dir(&dir)
            .iter()
            .map(|d| list_dir(&dir.join(d)).len())
            .sum()
    };
    let mut killed = 0;
    let mut complete = false;
    for delay_ms in [
        20u64, 40, 60, 80, 100, 150, 200, 300, 400, 600, 800, 1200, 2000, 4000,
    ] {
        let mut child = e.spawn(
            &["create", "-v", "pop:/data", "many:v1"],
            std::process::Stdio::null(),
            std::process::Stdio::null(),
            std::process::Stdio::null(),
        );
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let st = child.wait().unwrap();
        e.forget_pid(child.id());
        if st.code().is_none() {
            killed += 1;
        }
        // The next command rolls back the interrupted create; the volume is empty or complete.
        e.out(&["ps", "-a"]);
        let c = count("pop");
        assert!(
            c == 0 || c == n,
            "a partly populated volume: {c} files after {delay_ms} ms"
        );
        if c == n {
            complete = true;
            break;
        }
    }
    assert!(killed > 0, "no create was interrupted");
    if !complete {
        e.out(&["create", "-v", "pop:/data", "many:v1"]);
        assert_eq!(count("pop"), n);
    }
    // The container writes; populating never runs again over it.
    e.out(&[
        "run",
        "--rm",
        "-v",
        "pop:/data",
        "many:v1",
        "sh",
        "-c",
        "echo mine > /data/marker; echo changed > /data/d0/f0; rm /data/d1/f1",
    ]);
    e.out(&["run", "--rm", "-v", "pop:/data", "many:v1", "true"]);
    assert_eq!(
        std::fs::read_to_string(e.vol("pop").join("marker")).unwrap(),
        "mine\n"
    );
    assert_eq!(
        std::fs::read_to_string(e.vol("pop").join("d0/f0")).unwrap(),
        "changed\n"
    );
    assert!(!e.vol("pop").join("d1/f1").exists());
    for id in e.out(&["ps", "-aq"]).lines() {
        e.out(&["rm", id]);
    }
    e.assert_check_clean();
}

// ---- binds ----------------------------------------------------------------------------------

#[test]
fn binds_are_live_and_read_only_recursively() {
    let e = Env::new("mnt-bind");
    let src = e.scratch("src");
    write(&src.join("f"), "one\n");
    // ST-47: a filesystem mounted inside the source is read-only in the container too.
    e.mount_tmpfs(&src.join("sub"), "1m");
    for rt in RUNTIMES {
        let ro = format!("{}:/s:ro", src.display());
        let out = e.run_rt(
            rt,
            &[
                "-v",
                &ro,
                "busybox",
                "sh",
                "-c",
                "cat /s/f; touch /s/a 2>&1; touch /s/sub/b 2>&1; grep ' /s' /proc/self/mountinfo",
            ],
        );
        assert!(out.starts_with("one\n"), "{rt}: {out}");
        assert!(
            out.contains("touch: /s/a: Read-only file system"),
            "{rt}: {out}"
        );
        assert!(
            out.contains("touch: /s/sub/b: Read-only file system"),
            "{rt}: {out}"
        );
        assert!(
            mountinfo_line(&out, "/s/sub")
                .split(' ')
                .nth(5)
                .unwrap()
                .starts_with("ro"),
            "{rt}: {out}"
        );
        let m = format!("type=bind,source={},target=/s,readonly", src.display());
        let out = e.run_rt(
            rt,
            &[
                "--mount",
                &m,
                "busybox",
                "sh",
                "-c",
                "touch /s/sub/b 2>&1 || true",
            ],
        );
        assert!(out.contains("Read-only file system"), "{rt}: {out}");
        // writable: only the top is read-only; disabled: submounts are not there.
        let m = format!(
            "type=bind,source={},target=/s,readonly,bind-recursive=writable",
            src.display()
        );
        e.run_rt(
            rt,
            &[
                "--mount",
                &m,
                "busybox",
                "sh",
                "-c",
                "touch /s/sub/b && ! touch /s/a",
            ],
        );
        assert!(src.join("sub/b").exists());
        std::fs::remove_file(src.join("sub/b")).unwrap();
        let m = format!(
            "type=bind,source={},target=/s,bind-recursive=disabled",
            src.display()
        );
        e.run_rt(
            rt,
            &["--mount", &m, "busybox", "sh", "-c", "touch /s/sub/c"],
        );
        assert!(
            !src.join("sub/c").exists(),
            "a non-recursive bind does not show the submount"
        );
        std::fs::remove_file(src.join("c")).ok();
        std::fs::remove_dir_all(src.join("sub/c")).ok();
        assert!(list_dir(&src.join("sub")).is_empty());
        // Writable binds see the host live and write through.
        let rw = format!("{}:/s", src.display());
        let name = format!("live-{rt}");
        e.out(&[
            "run",
            "-d",
            "--name",
            &name,
            "--runtime",
            rt,
            "-v",
            &rw,
            "busybox",
            "sleep",
            "60",
        ]);
        write(&src.join("f"), "two\n");
        assert_eq!(e.out(&["exec", &name, "cat", "/s/f"]), "two\n");
        e.out(&["exec", &name, "sh", "-c", "echo back > /s/from-container"]);
        assert_eq!(
            std::fs::read_to_string(src.join("from-container")).unwrap(),
            "back\n"
        );
        e.out(&["rm", "-f", &name]);
        std::fs::remove_file(src.join("from-container")).unwrap();
        write(&src.join("f"), "one\n");
    }
    // A missing -v source is created as a 0755 directory; a missing --mount source is an error
    // at create.
    let missing = e.scratch("made/by/start");
    let spec = format!("{}:/m", missing.display());
    e.out(&["run", "--rm", "-v", &spec, "busybox", "true"]);
    assert!(missing.is_dir());
    assert_eq!(mode(&missing), 0o755);
    let gone = e.scratch("nope");
    let m = format!("type=bind,source={},target=/m", gone.display());
    let err = e.err(&["run", "--mount", &m, "busybox", "true"], 125);
    assert!(
        err.contains(&format!(
            "invalid mount config for type \"bind\": bind source path does not exist: {}",
            gone.display()
        )),
        "{err}"
    );
    assert!(!gone.exists());
    let inspect = {
        e.out(&[
            "create",
            "--name",
            "insp",
            "-v",
            &format!("{}:/host:ro", src.display()),
            "busybox",
            "true",
        ]);
        e.inspect_json("insp")["Mounts"][0].clone()
    };
    assert_eq!(
        inspect,
        serde_json::json!({"Type": "bind", "Source": src.display().to_string(), "Destination": "/host",
            "Mode": "ro", "RW": false, "Propagation": "rprivate"})
    );
    e.assert_check_clean();
}

#[test]
fn bind_source_swapped_while_mounting_never_mounts_another_path() {
    let e = Env::new("mnt-swap");
    let a = e.scratch("a");
    let b = e.scratch("b");
    write(&a.join("marker"), "a\n");
    write(&b.join("marker"), "b\n");
    let link = e.scratch("link");
    std::os::unix::fs::symlink(&a, &link).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let (a, b, link, stop) = (a.clone(), b.clone(), link.clone(), stop.clone());
        let tmp = link.with_extension("tmp");
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let target = if n.is_multiple_of(2) { &b } else { &a };
                let _ = std::fs::remove_file(&tmp);
                std::os::unix::fs::symlink(target, &tmp).unwrap();
                std::fs::rename(&tmp, &link).unwrap();
                n += 1;
            }
        })
    };
    let spec = format!("{}:/x:ro", link.display());
    for i in 0..16 {
        let rt = RUNTIMES[i % 2];
        // The container sees one of the two directories, entirely (its marker and the inode
        // of its root agree), never anything else.
        let out = e.run_rt(
            rt,
            &[
                "-v",
                &spec,
                "busybox",
                "sh",
                "-c",
                "cat /x/marker; stat -c %i /x",
            ],
        );
        let mut lines = out.lines();
        let marker = lines.next().unwrap();
        let ino: u64 = lines.next().unwrap().parse().unwrap();
        let dir = match marker {
            "a" => &a,
            "b" => &b,
            other => panic!("unexpected content {other:?}"),
        };
        assert_eq!(std::fs::metadata(dir).unwrap().ino(), ino, "{out}");
    }
    stop.store(true, Ordering::Relaxed);
    swapper.join().unwrap();
    assert!(e.mounts().is_empty(), "left mounted: {:?}", e.mounts());
}

// ---- tmpfs ----------------------------------------------------------------------------------

#[test]
fn tmpfs_lives_in_memory_only() {
    let e = Env::new("mnt-tmpfs");
    for rt in RUNTIMES {
        let name = format!("t-{rt}");
        // Written by the container's shell, so no command line on disk holds it.
        let marker = format!("carrel-secret-{}", 1234 + rt.len());
        e.out(&[
            "run",
            "-d",
            "--name",
            &name,
            "--runtime",
            rt,
            "--tmpfs",
            "/cache:size=1g,mode=1777",
            "--mount",
            "type=tmpfs,target=/m,tmpfs-size=1g",
            "--tmpfs",
            "/run/secrets:mode=0700,uid=1000",
            "--tmpfs",
            "/plain",
            "busybox",
            "sleep",
            "60",
        ]);
        let write =
            "m=carrel-secret-$((1234 + ${#RT})); echo $m > /cache/f; echo $m > /run/secrets/s";
        e.out(&["exec", "-e", &format!("RT={rt}"), &name, "sh", "-c", write]);
        let info = e.out(&["exec", &name, "cat", "/proc/self/mountinfo"]);
        for dest in ["/cache", "/m", "/run/secrets", "/plain"] {
            let line = mountinfo_line(&info, dest);
            assert!(line.contains(" - tmpfs "), "{rt} {dest}: {line}");
            let opts = line.split(' ').nth(5).unwrap();
            for o in ["nosuid", "nodev", "noexec"] {
                assert!(opts.split(',').any(|x| x == o), "{rt} {dest}: {line}");
            }
        }
        assert!(
            mountinfo_line(&info, "/cache").contains("size=1048576k"),
            "{info}"
        );
        assert!(
            mountinfo_line(&info, "/m").contains("size=1048576k"),
            "{info}"
        );
        assert_eq!(
            e.out(&[
                "exec",
                &name,
                "stat",
                "-c",
                "%a %u",
                "/cache",
                "/run/secrets",
                "/plain"
            ]),
            "1777 0\n700 1000\n1777 0\n",
            "{rt}"
        );
        // Never on disk: nothing under the data root holds what was written.
        assert!(
            !tree_contains(e.root(), marker.as_bytes()),
            "{rt}: tmpfs data reached the disk"
        );
        // --mount tmpfs is listed by inspect, --tmpfs is not.
        let mounts = e.inspect_json(&name)["Mounts"].clone();
        assert_eq!(
            mounts,
            serde_json::json!([{"Type": "tmpfs", "Source": "", "Destination": "/m", "Mode": "",
                "RW": true, "Propagation": ""}])
        );
        // Gone after a stop.
        e.out(&["stop", "-t", "0", &name]);
        e.out(&["start", &name]);
        assert_eq!(
            e.out(&[
                "exec",
                &name,
                "sh",
                "-c",
                "ls -A /cache; ls -A /run/secrets"
            ]),
            ""
        );
        e.out(&["rm", "-f", &name]);
    }
    // ST-48: an unlimited tmpfs is refused when the container starts (create works, as Docker).
    e.out(&[
        "create",
        "--name",
        "unlimited",
        "--tmpfs",
        "/t:size=0",
        "busybox",
        "true",
    ]);
    let err = e.err(&["start", "unlimited"], 1);
    assert!(err.contains("an unlimited tmpfs is not allowed"), "{err}");
    let err = e.err(&["run", "--tmpfs", "/t:foo", "busybox", "true"], 125);
    assert!(err.contains("invalid tmpfs option \"foo\""), "{err}");
    e.assert_check_clean();
}

// ---- --volumes-from, --read-only, errors ----------------------------------------------------

#[test]
fn volumes_from_backup_and_restore() {
    let e = Env::new("mnt-backup");
    e.out(&[
        "run",
        "--name",
        "db",
        "-v",
        "/var/lib/db",
        "busybox",
        "sh",
        "-c",
        "mkdir -p /var/lib/db/data && echo rows > /var/lib/db/data/table",
    ]);
    let backups = e.scratch("backups");
    let bspec = format!("{}:/backup", backups.display());
    // The backup recipe (the backups directory is created by the start).
    e.out(&[
        "run",
        "--rm",
        "--volumes-from",
        "db",
        "-v",
        &bspec,
        "busybox",
        "tar",
        "czf",
        "/backup/db.tar.gz",
        "/var/lib/db",
    ]);
    assert!(backups.join("db.tar.gz").is_file());
    // db's volume stays: --rm removes inherited volumes only when nothing else uses them.
    let dbvol = e.inspect_json("db")["Mounts"][0]["Name"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(e.volumes().contains(&dbvol));
    // The restore recipe.
    e.out(&["volume", "create", "restored"]);
    e.out(&[
        "run",
        "--rm",
        "-v",
        "restored:/target",
        "-v",
        &bspec,
        "busybox",
        "sh",
        "-c",
        "cd /target && tar xzf /backup/db.tar.gz",
    ]);
    assert_eq!(
        std::fs::read_to_string(e.vol("restored").join("var/lib/db/data/table")).unwrap(),
        "rows\n"
    );
    // :ro and :rw.
    for rt in RUNTIMES {
        let out = e.run_rt(
            rt,
            &[
                "--volumes-from",
                "db:ro",
                "busybox",
                "sh",
                "-c",
                "cat /var/lib/db/data/table; touch /var/lib/db/x 2>&1 || true",
            ],
        );
        assert_eq!(
            out, "rows\ntouch: /var/lib/db/x: Read-only file system\n",
            "{rt}"
        );
        e.run_rt(
            rt,
            &[
                "--volumes-from",
                "db:rw",
                "busybox",
                "touch",
                "/var/lib/db/x",
            ],
        );
    }
    let err = e.err(&["run", "--volumes-from", "nope", "busybox", "true"], 125);
    assert!(err.contains("No such container: nope"), "{err}");
    e.out(&["rm", "-v", "db"]);
    assert!(!e.volumes().contains(&dbvol));
    e.assert_check_clean();
}

#[test]
fn read_only_root_keeps_mounts_writable() {
    let e = Env::new("mnt-ro");
    for rt in RUNTIMES {
        let out = e.run_rt(
            rt,
            &[
                "--read-only",
                "-v",
                "data:/data:rw",
                "--tmpfs",
                "/tmp",
                "busybox",
                "sh",
                "-c",
                "touch /data/x && touch /tmp/y && echo ok; touch /z 2>&1 || true",
            ],
        );
        assert_eq!(out, "ok\ntouch: /z: Read-only file system\n", "{rt}");
    }
    assert!(e.vol("data").join("x").exists());
    e.assert_check_clean();
}

#[test]
fn invalid_and_duplicate_mounts_leave_nothing() {
    let e = Env::new("mnt-dup");
    let before_vols = e.volumes();
    // Duplicates are found before any volume is made.
    let err = e.err(
        &[
            "run",
            "-v",
            "first:/data",
            "-v",
            "second:/data",
            "busybox",
            "true",
        ],
        125,
    );
    assert_eq!(one_line_error(&err), "Error: Duplicate mount point: /data");
    let err = e.err(
        &[
            "create",
            "-v",
            "/data",
            "--mount",
            "type=volume,src=vv,dst=/x",
            "-v",
            "av:/x",
            "busybox",
            "true",
        ],
        1,
    );
    assert_eq!(one_line_error(&err), "Error: Duplicate mount point: /x");
    let err = e.err(
        &[
            "run",
            "-v",
            "/srv:/data",
            "--tmpfs",
            "/data",
            "busybox",
            "true",
        ],
        125,
    );
    assert_eq!(one_line_error(&err), "Error: Duplicate mount point: /data");
    // The docker CLI's own errors, exit 125 for run and create.
    let err = e.err(
        &["run", "--mount", "type=bind,source", "busybox", "true"],
        125,
    );
    assert_eq!(
        one_line_error(&err),
        "Error: invalid argument \"type=bind,source\" for \"--mount\" flag: invalid field 'source' must be a key=value pair"
    );
    let err = e.err(&["create", "-v", "ab::cd", "busybox", "true"], 125);
    assert_eq!(
        one_line_error(&err),
        "Error: invalid spec: ab::cd: empty section between colons"
    );
    let err = e.err(
        &["run", "--rm", "--restart", "always", "busybox", "true"],
        125,
    );
    assert!(
        err.contains("conflicting options: cannot specify both --restart and --rm"),
        "{err}"
    );
    // Daemon errors.
    let err = e.err(&["run", "-v", "xv:/data:bogus", "busybox", "true"], 125);
    assert_eq!(one_line_error(&err), "Error: invalid mode: bogus");
    let err = e.err(&["run", "-v", "a/b:/data", "busybox", "true"], 125);
    assert!(
        err.contains("create a/b: \"a/b\" includes invalid characters for a local volume name"),
        "{err}"
    );
    // A failed create later than the checks (the second volume's driver refuses) removes the
    // anonymous volume made for the first.
    let err = e.err(
        &[
            "run",
            "--mount",
            "type=volume,dst=/anon",
            "--mount",
            "type=volume,src=bad,dst=/b,volume-driver=nosuch",
            "busybox",
            "true",
        ],
        125,
    );
    assert!(err.contains("plugin \"nosuch\" not found"), "{err}");
    assert_eq!(e.out(&["ps", "-aq"]), "", "no container is left");
    assert_eq!(
        e.volumes(),
        before_vols,
        "nothing of the failed creates is left"
    );
    e.assert_check_clean();
    // Refused at start (as Docker): the container is created, the start fails.
    let err = e.err(&["run", "-v", "/host:/proc/sys", "busybox", "true"], 125);
    assert!(
        err.contains("\"/proc/sys\" cannot be mounted because it is inside /proc"),
        "{err}"
    );
}

// ---- destinations, subpaths, views ----------------------------------------------------------

#[test]
fn destinations_resolve_inside_the_root() {
    let e = Env::new("mnt-dest");
    e.image("links:v1", &[], |d| {
        std::fs::create_dir_all(d.join("real/conf")).unwrap();
        std::os::unix::fs::symlink("/real/conf", d.join("conf")).unwrap();
        std::os::unix::fs::symlink("/root", d.join("sockets")).unwrap();
        std::os::unix::fs::symlink("/proc", d.join("myproc")).unwrap();
        std::os::unix::fs::symlink("../../../../../..", d.join("up")).unwrap();
    });
    let sock = e.scratch("docker.sock");
    write(&sock, "");
    let canary = e.scratch("canary");
    assert!(!Path::new("/real").exists());
    let bind = format!("{}:/sockets/docker.sock", sock.display());
    let up = format!("{}:/up/tmp/deep", canary.display());
    std::fs::create_dir_all(&canary).unwrap();
    for rt in RUNTIMES {
        let out = e.run_rt(
            rt,
            &[
                "--tmpfs",
                "/conf/stack",
                "-v",
                &bind,
                "-v",
                &up,
                "links:v1",
                "sh",
                "-c",
                "cat /proc/self/mountinfo",
            ],
        );
        assert!(
            mountinfo_line(&out, "/real/conf/stack").contains(" - tmpfs "),
            "{rt}: {out}"
        );
        mountinfo_line(&out, "/root/docker.sock");
        mountinfo_line(&out, "/tmp/deep");
        assert!(!Path::new("/real").exists(), "{rt}: the host got /real");
        assert!(!Path::new("/root/docker.sock").exists());
        assert!(!Path::new("/tmp/deep").exists());
        // A destination that resolves into /proc is refused at start.
        let err = e.err(
            &[
                "run",
                "--rm",
                "--runtime",
                rt,
                "-v",
                "xv:/myproc/sys",
                "links:v1",
                "true",
            ],
            125,
        );
        assert!(
            err.contains("\"/proc/sys\" cannot be mounted because it is inside /proc"),
            "{rt}: {err}"
        );
    }
    // A user mount replaces the generated /etc/hosts; one at /dev replaces all of /dev.
    let hosts = e.scratch("myhosts");
    write(&hosts, "10.9.8.7 mine\n");
    let spec = format!("{}:/etc/hosts:ro", hosts.display());
    assert_eq!(
        e.run_rt("crun", &["-v", &spec, "busybox", "cat", "/etc/hosts"]),
        "10.9.8.7 mine\n"
    );
    for rt in RUNTIMES {
        let out = e.run_rt(
            rt,
            &[
                "--tmpfs",
                "/dev:dev,exec,mode=755",
                "busybox",
                "sh",
                "-c",
                "awk '$5 ~ /^\\/dev/ { print $5 }' /proc/self/mountinfo",
            ],
        );
        assert_eq!(
            out, "/dev\n",
            "{rt}: no default mount below a user /dev: {out}"
        );
    }
    // cp into the bind's directory through the symlink works (ST-38).
    e.out(&[
        "create",
        "--name",
        "cc",
        "-v",
        &format!("{}:/sockets", canary.display()),
        "links:v1",
        "true",
    ]);
    let f = e.scratch("payload");
    write(&f, "p\n");
    e.out(&["cp", f.to_str().unwrap(), "cc:/sockets/"]);
    assert_eq!(
        std::fs::read_to_string(canary.join("payload")).unwrap(),
        "p\n"
    );
    assert!(e.mounts().is_empty(), "left mounted: {:?}", e.mounts());
    e.assert_check_clean();
}

#[test]
fn volume_subpaths_stay_inside_the_volume() {
    let e = Env::new("mnt-subpath");
    e.out(&["run", "--rm", "-v", "vol:/v", "busybox", "sh", "-c",
        "mkdir /v/sub && echo f > /v/sub/f && ln -s / /v/l_root && ln -s /etc/passwd /v/l_abs && ln -s ../../ /v/l_up && ln -s sub /v/l_good"]);
    for rt in RUNTIMES {
        for ok in ["sub", "sub/../sub", "l_good"] {
            let m = format!("type=volume,src=vol,dst=/d,volume-subpath={ok}");
            assert_eq!(
                e.run_rt(rt, &["--mount", &m, "busybox", "cat", "/d/f"]),
                "f\n",
                "{rt} {ok}"
            );
        }
        for bad in ["l_root", "l_abs", "l_up"] {
            let m = format!("type=volume,src=vol,dst=/d,volume-subpath={bad}");
            let err = e.err(
                &[
                    "run",
                    "--rm",
                    "--runtime",
                    rt,
                    "--mount",
                    &m,
                    "busybox",
                    "true",
                ],
                125,
            );
            assert!(
                err.contains("path concatenation escapes the base directory"),
                "{rt} {bad}: {err}"
            );
        }
        let m = "type=volume,src=vol,dst=/d,volume-subpath=missing";
        let err = e.err(
            &[
                "run",
                "--rm",
                "--runtime",
                rt,
                "--mount",
                m,
                "busybox",
                "true",
            ],
            127,
        );
        assert!(
            err.contains(&format!(
                "cannot access path {}/missing: no such file or directory",
                e.vol("vol").display()
            )),
            "{err}"
        );
    }
    let err = e.err(
        &[
            "run",
            "--mount",
            "type=volume,src=vol,dst=/d,volume-subpath=../x",
            "busybox",
            "true",
        ],
        125,
    );
    assert!(
        err.contains("subpath must be a relative path within the volume"),
        "{err}"
    );
    e.assert_check_clean();
}

#[test]
fn cp_reaches_the_volumes_of_a_stopped_container_and_leaves_no_mount() {
    let e = Env::new("mnt-cp");
    // The host's mounts that concern this test (other tests run beside it).
    let base = e.base().display().to_string();
    let host_info = || {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|l| l.contains(&base))
            .map(|l| l.split(' ').skip(1).collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>()
    };
    e.out(&[
        "create",
        "--name",
        "cc",
        "-v",
        "data:/data",
        "-v",
        "ro:/ro:ro",
        "--read-only",
        "busybox",
        "true",
    ]);
    e.out(&["start", "-a", "cc"]);
    let before = host_info();
    let f = e.scratch("file");
    write(&f, "into the volume\n");
    e.out(&["cp", f.to_str().unwrap(), "cc:/data/"]);
    assert_eq!(
        std::fs::read_to_string(e.vol("data").join("file")).unwrap(),
        "into the volume\n"
    );
    let err = e.err(&["cp", f.to_str().unwrap(), "cc:/ro/"], 1);
    assert!(err.contains("mounted volume is marked read-only"), "{err}");
    let err = e.err(&["cp", f.to_str().unwrap(), "cc:/"], 1);
    assert!(
        err.contains("container rootfs is marked read-only"),
        "{err}"
    );
    // And out of it.
    let out = e.scratch("out");
    std::fs::create_dir_all(&out).unwrap();
    e.out(&["cp", "cc:/data/file", out.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(out.join("file")).unwrap(),
        "into the volume\n"
    );
    // A container that never ran: the mountpoint is made, as Docker makes it.
    e.out(&[
        "create",
        "--name",
        "fresh",
        "-v",
        "data:/newdir",
        "busybox",
        "true",
    ]);
    e.out(&["cp", f.to_str().unwrap(), "fresh:/newdir/again"]);
    assert!(e.vol("data").join("again").is_file());
    e.out(&["rm", "fresh"]);
    // ST-44: no mount was added or left anywhere.
    assert_eq!(host_info(), before);
    assert!(e.mounts().is_empty(), "left mounted: {:?}", e.mounts());
    e.out(&["rm", "cc"]);
    e.assert_check_clean();
}

#[test]
fn volumes_binds_and_tmpfs_on_the_copy_driver() {
    let e = Env::with_driver("mnt-copydrv", "copy");
    e.image("app:v1", &["VOLUME /app"], |d| {
        write(&d.join("app/config.txt"), "default\n")
    });
    let src = e.scratch("src");
    write(&src.join("f"), "host\n");
    let ro = format!("{}:/h:ro", src.display());
    for rt in RUNTIMES {
        let out = e.run_rt(
            rt,
            &[
                "-v",
                "appdata:/app",
                "-v",
                &ro,
                "--tmpfs",
                "/t",
                "app:v1",
                "sh",
                "-c",
                "cat /app/config.txt /h/f; touch /h/x 2>&1 || true; stat -c %a /t",
            ],
        );
        assert_eq!(
            out, "default\nhost\ntouch: /h/x: Read-only file system\n1777\n",
            "{rt}"
        );
    }
    e.out(&[
        "create",
        "--name",
        "cc",
        "-v",
        "appdata:/app",
        "busybox",
        "true",
    ]);
    let f = e.scratch("payload");
    write(&f, "p\n");
    e.out(&["cp", f.to_str().unwrap(), "cc:/app/"]);
    assert_eq!(
        std::fs::read_to_string(e.vol("appdata").join("payload")).unwrap(),
        "p\n"
    );
    e.out(&["rm", "cc"]);
    assert!(e.mounts().is_empty(), "left mounted: {:?}", e.mounts());
    e.assert_check_clean();
}

#[test]
fn ps_filters_and_formats_mounts() {
    let e = Env::new("mnt-ps");
    e.out(&[
        "create",
        "--name",
        "withvol",
        "-v",
        "psvol:/data",
        "busybox",
        "true",
    ]);
    e.out(&["create", "--name", "without", "busybox", "true"]);
    e.out(&[
        "create", "--name", "anon", "-v", "/anon", "--tmpfs", "/t", "busybox", "true",
    ]);
    let anon = e.inspect_json("anon")["Mounts"][0]["Name"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        e.out(&[
            "ps",
            "-a",
            "--filter",
            "name=anon",
            "--format",
            "{{.Mounts}} {{.LocalVolumes}}"
        ]),
        format!("{}… 1\n", &anon[..14])
    );
    assert_eq!(
        e.out(&[
            "ps",
            "-a",
            "--no-trunc",
            "--filter",
            "name=anon",
            "--format",
            "{{.Mounts}}"
        ]),
        format!("{anon}\n")
    );
    let names = |f: &str| e.out(&["ps", "-a", "--filter", f, "--format", "{{.Names}}"]);
    assert_eq!(names("volume=psvol"), "withvol\n");
    assert_eq!(names("volume=/data"), "withvol\n");
    assert_eq!(names("volume=nothing"), "");
    assert_eq!(
        e.out(&[
            "ps",
            "-a",
            "--filter",
            "name=withvol",
            "--format",
            "{{.Mounts}} {{.LocalVolumes}}"
        ]),
        "psvol 1\n"
    );
}

// ---- concurrency ----------------------------------------------------------------------------

#[test]
fn volumes_removed_while_containers_are_created_on_them() {
    let e = Arc::new(Env::new("mnt-race"));
    let rounds = 12;
    let mut workers = Vec::new();
    for w in 0..2 {
        let e = e.clone();
        workers.push(std::thread::spawn(move || {
            for i in 0..rounds {
                let rt = RUNTIMES[(w + i) % 2];
                let o = e.run(&[
                    "run",
                    "--rm",
                    "--runtime",
                    rt,
                    "-v",
                    "shared:/data",
                    "-v",
                    "/anon",
                    "busybox",
                    "sh",
                    "-c",
                    "echo x > /data/x",
                ]);
                assert!(o.success(), "run failed: {o:?}");
            }
        }));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut removers = Vec::new();
    for kind in ["rm", "prune"] {
        let (e, stop) = (e.clone(), stop.clone());
        removers.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let o = if kind == "rm" {
                    e.run(&["volume", "rm", "shared"])
                } else {
                    e.run(&["volume", "prune", "-f", "-a"])
                };
                if !o.success() {
                    let ok = o.stderr.contains("volume is in use")
                        || o.stderr.contains("no such volume");
                    assert!(ok, "unexpected failure: {o:?}");
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }));
    }
    for w in workers {
        w.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for r in removers {
        r.join().unwrap();
    }
    assert_eq!(e.out(&["ps", "-aq"]), "");
    // No anonymous volume is left (each went with its --rm container or was pruned), and no
    // reference to a container that is gone.
    let left = e.volumes();
    assert!(left.iter().all(|v| v == "shared"), "left: {left:?}");
    e.assert_check_clean();
}
