//! `carrel volume …` and `carrel system df|prune` through the real binary, against Docker's texts
//! (`/work/shared/conformance/VOLUME_API.md`): create/ls/inspect/rm/prune behaviour and errors,
//! name validation (ST-36), concurrent creates from several processes (ST-59), volumes in use
//! (a real container with a reference row), export/import round trips, `system df` numbers with
//! 1000 volumes (timed) and `system prune`.

mod common;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Instant;

use common::{TestRoot, busybox, one_line_error};

use carrel_engine::volumes::VolumeCreate;
use carrel_engine::{Engine, EngineOptions};

fn engine(t: &TestRoot) -> Engine {
    Engine::open(&EngineOptions {
        root: t.root().to_path_buf(),
        storage_driver: t.driver().map(str::to_string),
    })
    .unwrap()
}

/// Record that container `id` references volume `vol` (what container create does once mounts
/// are wired in).
fn add_ref(t: &TestRoot, vol: &str, id: &str) {
    engine(t)
        .meta()
        .write(|tx| {
            tx.execute(
                "INSERT INTO volume_refs (volume, container) VALUES (?1, ?2)",
                [vol, id],
            )?;
            Ok(())
        })
        .unwrap();
}

fn lines(s: &str) -> Vec<&str> {
    s.lines().collect()
}

#[test]
fn create_ls_inspect_rm_like_docker() {
    let t = TestRoot::new("vol-basic");
    assert_eq!(t.ok(&["volume", "create", "data"]), "data\n");
    let anon = t.ok(&["volume", "create"]).trim().to_string();
    assert_eq!(anon.len(), 64);
    assert!(anon.bytes().all(|b| b.is_ascii_hexdigit()));
    t.ok(&[
        "volume",
        "create",
        "--label",
        "tier=gold",
        "--label",
        "empty",
        "v10",
    ]);
    t.ok(&["volume", "create", "v9"]);
    t.ok(&["volume", "create", "--name", "hidden"]);
    // Same name again: the existing one, the name printed.
    assert_eq!(
        t.ok(&["volume", "create", "--label", "x=y", "data"]),
        "data\n"
    );
    assert_eq!(
        one_line_error(&t.fail(&["volume", "create", "-d", "other", "data"])),
        "Error: create data: driver 'local' already has volume 'data': volume name must be unique"
    );
    assert_eq!(
        one_line_error(&t.fail(&["volume", "create", "--name", "a1", "b1"])),
        "Error: conflicting options: cannot specify a volume-name through both --name and as a positional arg"
    );
    let err = t.fail(&["volume", "create", "a1", "b1"]);
    assert!(
        err.starts_with("carrel: 'carrel volume create' requires at most 1 argument"),
        "{err}"
    );
    assert_eq!(
        one_line_error(&t.fail(&["volume", "create", "--label", "=x", "a1"])),
        "Error: invalid label '=x': empty name"
    );
    assert_eq!(
        one_line_error(&t.fail(&["volume", "create", "-o", "size=10m", "q1"])),
        "Error: create q1: quota size requested but no quota support"
    );
    assert!(!t.path("volumes/q1").exists());

    let ls = t.ok(&["volume", "ls"]);
    let mut names = vec![
        anon.clone(),
        "data".into(),
        "hidden".into(),
        "v9".into(),
        "v10".into(),
    ];
    names.sort_by(|a, b| carrel_engine::volumes::natural_cmp(a, b));
    assert_eq!(names[3..], ["v9".to_string(), "v10".to_string()]);
    let mut expected = String::from("DRIVER    VOLUME NAME\n");
    for n in &names {
        expected.push_str(&format!("local     {n}\n"));
    }
    assert_eq!(ls, expected);
    assert_eq!(
        t.ok(&["volume", "list", "-q", "-f", "name=^v"]),
        "v9\nv10\n"
    );
    assert_eq!(t.ok(&["volume", "ls", "-q", "-f", "name=ata"]), "data\n");
    assert_eq!(
        t.ok(&["volume", "ls", "-q", "-f", "label=tier=gold"]),
        "v10\n"
    );
    assert_eq!(
        t.ok(&[
            "volume",
            "ls",
            "-q",
            "-f",
            "label=tier",
            "-f",
            "label=empty="
        ]),
        "v10\n"
    );
    assert_eq!(t.ok(&["volume", "ls", "-q", "-f", "driver=nope"]), "");
    assert_eq!(
        t.ok(&["volume", "ls", "-q", "-f", "dangling=true"])
            .lines()
            .count(),
        5
    );
    assert_eq!(
        one_line_error(&t.fail(&["volume", "ls", "-f", "dangling=maybe"])),
        "Error: invalid filter 'dangling=[maybe]'"
    );
    assert_eq!(
        one_line_error(&t.fail(&["volume", "ls", "-f", "until=1h"])),
        "Error: invalid filter 'until'"
    );
    assert_eq!(
        one_line_error(&t.fail(&["volume", "ls", "-f", "dangling"])),
        "Error: bad format of filter (expected name=value)"
    );
    assert_eq!(
        t.ok(&[
            "volume",
            "ls",
            "-f",
            "name=v1",
            "--format",
            "{{.Name}} {{.Labels}} {{.Label \"tier\"}} {{.Size}}"
        ]),
        "v10 empty=,tier=gold gold N/A\n"
    );
    assert_eq!(
        t.ok(&[
            "volume",
            "ls",
            "-f",
            "name=v1",
            "--format",
            "table {{.Name}}\t{{.Label \"tier\"}}"
        ]),
        "VOLUME NAME   TIER\nv10           gold\n"
    );
    let json = t.ok(&["volume", "ls", "-f", "name=^data$", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "Availability",
            "Driver",
            "Group",
            "Labels",
            "Links",
            "Mountpoint",
            "Name",
            "Scope",
            "Size",
            "Status"
        ]
    );
    assert_eq!(
        v["Mountpoint"],
        t.path("volumes/data/_data").display().to_string()
    );

    let ins = t.ok(&["volume", "inspect", "v10"]);
    let arr: serde_json::Value = serde_json::from_str(&ins).unwrap();
    let o = &arr[0];
    let keys: Vec<&String> = o.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "CreatedAt",
            "Driver",
            "Labels",
            "Mountpoint",
            "Name",
            "Options",
            "Scope"
        ]
    );
    assert_eq!(o["Labels"]["tier"], "gold");
    assert_eq!(o["Scope"], "local");
    let created = o["CreatedAt"].as_str().unwrap();
    assert!(chrono::DateTime::parse_from_rfc3339(created).is_ok() && !created.contains('.'));
    assert!(ins.starts_with("[\n    {\n        \"CreatedAt\""), "{ins}");
    assert_eq!(
        t.ok(&["volume", "inspect", "--format", "{{.Driver}}", "data"]),
        "local\n"
    );
    let out = t.run(&["volume", "inspect", "-f", "{{.Name}}", "data", "nope"]);
    assert_eq!(out.code(), Some(1));
    assert_eq!(out.stdout, "data\n");
    assert_eq!(out.stderr, "Error: get nope: no such volume\n");
    assert_eq!(
        t.run(&["volume", "inspect", "-f", "{{.Name", "data"])
            .code(),
        Some(64)
    );

    let out = t.run(&["volume", "rm", "v9", "nope", "v10"]);
    assert_eq!(out.code(), Some(1));
    assert_eq!(out.stdout, "v9\nv10\n");
    assert_eq!(out.stderr, "Error: get nope: no such volume\n");
    assert_eq!(t.ok(&["volume", "rm", "-f", "nope"]), "nope\n");
    assert!(!t.path("volumes/v9").exists());
    t.assert_check_clean();
}

#[test]
fn names_are_validated() {
    let t = TestRoot::new("vol-names");
    let long = "a".repeat(256);
    for bad in [
        "x",
        "..",
        ".",
        "/testvol",
        "./hello",
        ".hello",
        "a/b",
        "a\\b",
        "a b",
        "a:b",
        &long[..],
    ] {
        let out = t.run(&["volume", "create", bad]);
        assert_eq!(out.code(), Some(1), "{out:?}");
        assert!(
            out.stderr.starts_with(&format!("Error: create {bad}: ")),
            "{out:?}"
        );
    }
    assert_eq!(
        t.fail(&["volume", "create", "x"]),
        "Error: create x: volume name is too short, names should be at least two alphanumeric characters\n"
    );
    assert_eq!(
        t.fail(&["volume", "create", "a:b"]),
        "Error: create a:b: \"a:b\" includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host directory, use absolute path\n"
    );
    for ok in ["thing.d", "hello-world", "a_b"] {
        t.ok(&["volume", "create", ok]);
    }
    // A named create never reuses an anonymous volume's name (ST-36), nor sets its label (ST-53).
    let anon = t.ok(&["volume", "create"]).trim().to_string();
    let err = t.fail(&["volume", "create", &anon]);
    assert!(
        err.contains("the name is taken by an anonymous volume"),
        "{err}"
    );
    let err = t.fail(&[
        "volume",
        "create",
        "--label",
        "com.docker.volume.anonymous",
        "named",
    ]);
    assert!(
        err.contains("label com.docker.volume.anonymous is reserved"),
        "{err}"
    );
    let mut dirs = common::list_dir(&t.path("volumes"));
    dirs.sort();
    let mut want = vec![anon, "a_b".into(), "hello-world".into(), "thing.d".into()];
    want.sort();
    assert_eq!(dirs, want);
    assert!(!t.scratch("testvol").exists());
}

#[test]
fn concurrent_creates_from_many_processes() {
    let t = TestRoot::new("vol-race");
    t.ok(&["volume", "ls"]);
    for round in 0..5 {
        let name = format!("data{round}");
        let children: Vec<_> = (0..16)
            .map(|i| {
                let mut c = t.command(&["volume", "create", "--label", &format!("n={i}")]);
                if i == 15 {
                    c.args(["-d", "other"]);
                }
                c.arg(&name).stdout(Stdio::piped()).stderr(Stdio::piped());
                (i, t.spawn_cmd(c))
            })
            .collect();
        let mut ok = 0;
        for (i, child) in children {
            let out = t.wait(child, "volume create");
            if i == 15 {
                assert!(!out.success());
                assert!(
                    out.stderr.contains("already has volume") || out.stderr.contains("not found"),
                    "{out:?}"
                );
            } else {
                assert!(out.success(), "{out:?}");
                assert_eq!(out.stdout, format!("{name}\n"));
                ok += 1;
            }
        }
        assert_eq!(ok, 15);
        // The first creator's labels stay.
        let labels = t.ok(&["volume", "inspect", "-f", "{{json .Labels}}", &name]);
        assert!(labels.starts_with("{\"n\":\""), "{labels}");
    }
    assert_eq!(common::list_dir(&t.path("volumes")).len(), 5);
    t.assert_check_clean();
}

#[test]
fn volumes_in_use_cannot_be_removed_or_pruned() {
    let t = TestRoot::new("vol-inuse");
    busybox(&t);
    t.ok(&["volume", "create", "busy"]);
    let id = t.ok(&["create", "busybox", "true"]).trim().to_string();
    add_ref(&t, "busy", &id);
    for args in [
        &["volume", "rm", "busy"][..],
        &["volume", "rm", "-f", "busy"][..],
    ] {
        let out = t.run(args);
        assert_eq!(out.code(), Some(1));
        assert_eq!(
            out.stderr,
            format!("Error: remove busy: volume is in use - [{id}]\n")
        );
    }
    assert_eq!(
        t.ok(&["volume", "ls", "-q", "-f", "dangling=false"]),
        "busy\n"
    );
    assert_eq!(
        t.ok(&["volume", "prune", "-a", "-f"]),
        "Total reclaimed space: 0B\n"
    );
    let df = t.ok(&[
        "system",
        "df",
        "--format",
        "{{.Type}}:{{.TotalCount}}:{{.Active}}",
    ]);
    assert!(df.contains("Local Volumes:1:1"), "{df}");
    let v = t.ok(&["system", "df", "-v"]);
    assert!(v.contains("Local Volumes space usage:"), "{v}");
    assert!(
        v.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["busy", "1", "0B"]),
        "{v}"
    );
    // The reference goes with the container.
    t.ok(&["rm", &id]);
    assert_eq!(t.ok(&["volume", "rm", "busy"]), "busy\n");
}

#[test]
fn prune_prompts_and_removes_only_what_docker_would() {
    let t = TestRoot::new("vol-prune");
    let anon1 = t.ok(&["volume", "create"]).trim().to_string();
    let anon2 = t
        .ok(&["volume", "create", "--label", "keep=yes"])
        .trim()
        .to_string();
    t.ok(&["volume", "create", "named"]);
    t.ok(&[
        "volume",
        "create",
        "-o",
        "type=tmpfs",
        "-o",
        "device=tmpfs",
        "opts",
    ]);
    std::fs::write(t.path(&format!("volumes/{anon1}/_data/f")), vec![1u8; 36]).unwrap();

    let out = t.run_stdin(&["volume", "prune"], b"n\n");
    assert!(out.success(), "{out:?}");
    assert_eq!(
        out.stdout,
        "WARNING! This will remove anonymous local volumes not used by at least one container.\nAre you sure you want to continue? [y/N] "
    );
    assert_eq!(out.stderr, "volume prune has been cancelled\n");
    assert_eq!(t.ok(&["volume", "ls", "-q"]).lines().count(), 4);

    let out = t.ok_stdin(&["volume", "prune", "--filter", "label!=keep=yes"], b"y\n");
    assert_eq!(
        out,
        format!(
            "WARNING! This will remove anonymous local volumes not used by at least one container.\nAre you sure you want to continue? [y/N] Deleted Volumes:\n{anon1}\n\nTotal reclaimed space: 36B\n"
        )
    );
    assert_eq!(
        one_line_error(&t.fail(&["volume", "prune", "-a", "--filter", "all=1"])),
        "Error: conflicting options: cannot specify both --all and --filter all=1"
    );
    assert_eq!(
        one_line_error(&t.fail(&["volume", "prune", "--filter", "until=1h"])),
        "Error: invalid filter 'until'"
    );
    assert_eq!(
        one_line_error(&t.fail(&["volume", "prune", "--filter", "all=x"])),
        "Error: invalid filter 'all': strconv.ParseBool: parsing \"x\": invalid syntax"
    );
    let out = t.ok_stdin(&["volume", "prune", "-a"], b"y\n");
    assert!(
        out.starts_with(
            "WARNING! This will remove all local volumes not used by at least one container.\n"
        ),
        "{out}"
    );
    assert!(
        out.contains(&format!("Deleted Volumes:\n{anon2}\nnamed\n\n")),
        "{out}"
    );
    // Volumes with options are never pruned.
    assert_eq!(t.ok(&["volume", "ls", "-q"]), "opts\n");
    assert_eq!(
        t.ok(&["volume", "prune", "-f"]),
        "Total reclaimed space: 0B\n"
    );
}

#[test]
fn export_import_round_trip_through_files_and_stdin() {
    let t = TestRoot::new("vol-backup");
    t.ok(&["volume", "create", "src"]);
    let d = t.path("volumes/src/_data");
    std::fs::create_dir(d.join("dir")).unwrap();
    std::fs::write(d.join("dir/file"), b"payload").unwrap();
    std::os::unix::fs::symlink("dir/file", d.join("link")).unwrap();
    let tar = t.scratch("backup.tar");
    assert_eq!(
        t.ok(&["volume", "export", "-o", tar.to_str().unwrap(), "src"]),
        ""
    );
    t.ok(&["volume", "create", "dst"]);
    t.ok(&["volume", "import", "dst", tar.to_str().unwrap()]);
    assert_eq!(
        std::fs::read(t.path("volumes/dst/_data/dir/file")).unwrap(),
        b"payload"
    );
    // To stdout, and back from stdin.
    let out = t.run(&["volume", "export", "--no-pause", "src"]);
    assert!(out.success());
    assert_eq!(out.stdout_raw, std::fs::read(&tar).unwrap());
    t.ok(&["volume", "create", "dst2"]);
    t.ok_stdin(&["volume", "import", "dst2", "-"], &out.stdout_raw);
    assert_eq!(
        std::fs::read_link(t.path("volumes/dst2/_data/link")).unwrap(),
        std::path::Path::new("dir/file")
    );
    assert_eq!(
        one_line_error(&t.fail(&["volume", "import", "nope", tar.to_str().unwrap()])),
        "Error: get nope: no such volume"
    );
    assert_eq!(
        one_line_error(&t.fail(&["volume", "export", "-o", tar.to_str().unwrap(), "nope"])),
        "Error: get nope: no such volume"
    );
    // A failed export leaves the previous file alone.
    assert_eq!(std::fs::read(&tar).unwrap(), out.stdout_raw);
}

#[test]
fn system_df_with_a_thousand_volumes_stays_fast() {
    let t = TestRoot::new("vol-df");
    let e = engine(&t);
    let mut total = 0u64;
    for i in 0..1000 {
        let v = e
            .volume_create(&VolumeCreate {
                name: if i % 10 == 0 {
                    None
                } else {
                    Some(format!("v{i}"))
                },
                driver: None,
                labels: BTreeMap::new(),
                options: BTreeMap::new(),
            })
            .unwrap();
        if i % 100 == 1 {
            std::fs::write(v.mountpoint.join("f"), vec![0u8; 1000 * i]).unwrap();
            e.volume_measure(&v.name).unwrap();
            total += 1000 * i as u64;
        }
    }
    // A driver-backed volume is not counted.
    e.volume_create(&VolumeCreate {
        name: Some("tmp".into()),
        options: [("type", "tmpfs"), ("device", "tmpfs")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    })
    .unwrap();
    drop(e);
    let started = Instant::now();
    let df = t.ok(&["system", "df"]);
    let took = started.elapsed();
    eprintln!("system df with 1000 volumes: {took:?}");
    assert!(took.as_secs_f64() < 2.0, "system df took {took:?}");
    let line = df.lines().find(|l| l.starts_with("Local Volumes")).unwrap();
    let size = carrel_core::units::human_size(total);
    assert_eq!(
        line.split_whitespace().collect::<Vec<_>>(),
        ["Local", "Volumes", "1000", "0", &size, &size, "(100%)"],
        "{df}"
    );
    assert_eq!(
        lines(&df)[0].split_whitespace().collect::<Vec<_>>(),
        ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]
    );
    assert!(
        df.contains("Build Cache     0         0         0B        0B\n"),
        "{df}"
    );
    let json = t.ok(&["system", "df", "--format", "json"]);
    let rows: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows[2]["Type"], "Local Volumes");
    assert_eq!(rows[2]["TotalCount"], "1000");
    let started = Instant::now();
    let verbose = t.ok(&["system", "df", "-v"]);
    eprintln!("system df -v with 1000 volumes: {:?}", started.elapsed());
    assert_eq!(
        verbose
            .lines()
            .skip_while(|l| !l.starts_with("Local Volumes space usage:"))
            .filter(|l| l.ends_with('B') && !l.starts_with("Build"))
            .count(),
        1000
    );
}

#[test]
fn system_prune_removes_stopped_containers_anonymous_volumes_and_dangling_images() {
    let t = TestRoot::new("vol-sysprune");
    busybox(&t);
    let id = t.ok(&["create", "busybox", "true"]).trim().to_string();
    let anon = t.ok(&["volume", "create"]).trim().to_string();
    t.ok(&["volume", "create", "named"]);
    let out = t.run_stdin(&["system", "prune", "--volumes"], b"n\n");
    assert!(out.success());
    assert_eq!(
        out.stdout,
        "WARNING! This will remove:\n  - all stopped containers\n  - all anonymous volumes not used by at least one container\n  - all dangling images\n\nAre you sure you want to continue? [y/N] "
    );
    assert_eq!(t.ok(&["ps", "-aq"]).lines().count(), 1);
    let out = t.ok(&["system", "prune", "-f"]);
    assert!(
        out.starts_with(&format!(
            "Deleted Containers:\n{id}\n\nTotal reclaimed space: "
        )),
        "{out}"
    );
    assert_eq!(t.ok(&["volume", "ls", "-q"]).lines().count(), 2);
    let out = t.ok(&["system", "prune", "-f", "--volumes"]);
    assert!(
        out.starts_with(&format!(
            "Deleted Volumes:\n{anon}\n\nTotal reclaimed space: "
        )),
        "{out}"
    );
    assert_eq!(t.ok(&["volume", "ls", "-q"]), "named\n");
    let out = t.ok(&["system", "prune", "-a", "-f"]);
    assert!(
        out.starts_with("Deleted Images:\nuntagged: busybox:latest\ndeleted: sha256:"),
        "{out}"
    );
    assert!(t.ok(&["images", "-q"]).is_empty());
    assert_eq!(
        one_line_error(&t.fail(&["system", "prune", "-f", "--volumes", "--filter", "until=1h"])),
        "Error: ERROR: The \"until\" filter is not supported with \"--volumes\""
    );
    let df = t.ok(&["system", "df"]);
    assert!(
        df.contains("Images          0         0         0B        0B\n"),
        "{df}"
    );
    assert!(
        df.contains("Containers      0         0         0B        0B\n"),
        "{df}"
    );
}

#[test]
fn export_pauses_running_users_and_import_needs_force() {
    let t = TestRoot::new("vol-pause");
    busybox(&t);
    t.ok(&["volume", "create", "live"]);
    std::fs::write(t.path("volumes/live/_data/f"), b"x").unwrap();
    let id = t
        .ok(&["run", "-d", "busybox", "sleep", "1000"])
        .trim()
        .to_string();
    add_ref(&t, "live", &id);
    let tar = t.scratch("live.tar");
    let tar = tar.to_str().unwrap();
    let out = t.run(&["-D", "volume", "export", "-o", tar, "live"]);
    assert!(out.success(), "{out:?}");
    assert!(out.stderr.contains("paused for export"), "{out:?}");
    // Thawed afterwards: the container still runs processes.
    t.ok(&["exec", &id, "true"]);
    let out = t.run(&["-D", "volume", "export", "--no-pause", "-o", tar, "live"]);
    assert!(
        out.success() && !out.stderr.contains("paused for export"),
        "{out:?}"
    );
    assert_eq!(
        one_line_error(&t.fail(&["volume", "import", "live", tar])),
        format!(
            "Error: volume live is in use by running container(s) [{id}]: stop them first, or import with --force"
        )
    );
    t.ok(&["volume", "import", "--force", "live", tar]);
    t.ok(&["rm", "-f", &id]);
}
