//! shared/security/ADVERSARIAL.md cases this crate can decide: ST-36 (volume names), ST-37
//! (mount spec parsing and option injection) and the parsing half of ST-41 (/proc, /sys, /dev
//! destinations and image VOLUME paths).

use carrel_mountspec::{
    CliFlags, FixedHost, MountFlag, MountPlan, MountRequest, MountSpec, PlanContext, Stage,
    check_local_volume_create, plan_mounts,
};
use std::collections::BTreeMap;

const CWD: &str = "/home/user/proj";

fn host() -> FixedHost {
    FixedHost::new(["/srv/data", "/home/user/proj", "/h", "/p"])
}

fn run(args: &[(&str, &str)], image_volumes: &[&str]) -> Result<MountPlan, (Stage, String)> {
    let mut flags = CliFlags::new(CWD);
    for (flag, value) in args {
        match *flag {
            "-v" => {
                flags.volume(value);
            }
            "--mount" => {
                flags.mount(value).map_err(|e| (e.stage(), e.to_string()))?;
            }
            "--tmpfs" => {
                flags.tmpfs(value);
            }
            other => panic!("{other}"),
        }
    }
    let req = flags.finish().map_err(|e| (e.stage(), e.to_string()))?;
    plan_request(&req, image_volumes)
}

fn plan_request(req: &MountRequest, image_volumes: &[&str]) -> Result<MountPlan, (Stage, String)> {
    let host = host();
    let ctx = PlanContext {
        daemon_root: "/var/lib/carrel".into(),
        host: &host,
    };
    let images: Vec<String> = image_volumes.iter().map(|s| s.to_string()).collect();
    let plan = plan_mounts(req, &images, &ctx).map_err(|e| (e.stage(), e.to_string()))?;
    assert_destinations_safe(&plan);
    plan.check_start().map_err(|e| (e.stage(), e.to_string()))?;
    Ok(plan)
}

/// Every accepted destination lands on an absolute, cleaned path that is not `/`.
fn assert_destinations_safe(plan: &MountPlan) {
    for m in &plan.mounts {
        let p = m.container_path();
        assert!(p.starts_with('/') && p != "/", "{m:?}");
        assert_eq!(p, carrel_mountspec::path::clean(&p), "{m:?}");
        assert!(!p.split('/').any(|c| c == ".." || c == "."), "{m:?}");
    }
}

fn err(args: &[(&str, &str)]) -> (Stage, String) {
    run(args, &[]).expect_err("must be refused")
}

#[test]
fn st37_malformed_specs_get_specific_errors() {
    let cases: &[(&str, Stage, &str)] = &[
        (
            "/:../",
            Stage::DaemonCreate,
            "invalid mount path: '../' mount path must be absolute",
        ),
        (
            "/:path",
            Stage::DaemonCreate,
            "invalid mount path: 'path' mount path must be absolute",
        ),
        ("/h:/", Stage::DaemonCreate, "destination can't be '/'"),
        ("/h://", Stage::DaemonCreate, "destination can't be '/'"),
        ("/h:/.", Stage::DaemonCreate, "destination can't be '/'"),
        ("/path:/path:sw", Stage::DaemonCreate, "invalid mode: sw"),
        (
            "/path:/path:ro,rshared,rslave",
            Stage::DaemonCreate,
            "invalid mode: ro,rshared,rslave",
        ),
        (
            "/p:/d:rw,bind=/etc",
            Stage::DaemonCreate,
            "invalid mode: rw,bind=/etc",
        ),
        ("/p:/d:z,Z", Stage::DaemonCreate, "invalid mode: z,Z"),
        ("/a:/b:ro:rshared", Stage::Cli, "too many colons"),
    ];
    for (spec, stage, text) in cases {
        let (got_stage, got) = err(&[("-v", spec)]);
        assert_eq!(got_stage, *stage, "{spec}: {got}");
        assert!(got.contains(text), "{spec}: {got}");
    }
}

#[test]
fn st37_relative_sources_become_absolute() {
    for (spec, source) in [("./:/d", "/home/user/proj"), ("../:/d", "/home/user")] {
        let plan = run(&[("-v", spec)], &[]).unwrap();
        let MountSpec::Bind(b) = &plan.mounts[0] else {
            panic!("{spec}: {:?}", plan.mounts)
        };
        assert_eq!(b.source, source);
        assert_eq!(b.target, "/d");
    }
}

#[test]
fn st37_propagation_cannot_smuggle_options() {
    // Unquoted, CSV splits it and `bind` is not a key=value pair.
    let (stage, text) = err(&[(
        "--mount",
        "type=bind,src=/srv/data,dst=/d,bind-propagation=rshared,bind",
    )]);
    assert_eq!(stage, Stage::Cli);
    assert_eq!(text, "invalid field 'bind' must be a key=value pair");
    // Quoted, the value reaches the daemon whole and is not one of the six modes.
    for (value, shown) in [
        ("\"bind-propagation=rshared,bind\"", "rshared,bind"),
        ("bind-propagation=unknown", "unknown"),
        (
            "\"bind-propagation=rshared,bind=/etc\"",
            "rshared,bind=/etc",
        ),
    ] {
        let (stage, text) = err(&[(
            "--mount",
            &format!("type=bind,src=/srv/data,dst=/d,{value}"),
        )]);
        assert_eq!(stage, Stage::DaemonCreate);
        assert_eq!(
            text,
            format!("invalid mount config for type \"bind\": invalid propagation mode: {shown}")
        );
    }
}

fn tmpfs_plan(opts: &str) -> Result<MountPlan, (Stage, String)> {
    run(&[("--tmpfs", &format!("/t:{opts}"))], &[])
}

#[test]
fn st37_tmpfs_options_come_from_the_allow_list() {
    // What Docker lets the user ask for explicitly.
    let plan = tmpfs_plan("exec,suid").unwrap();
    let MountSpec::Tmpfs(t) = &plan.mounts[0] else {
        panic!()
    };
    let args = t.mount_args();
    assert_eq!(args.set, [MountFlag::NoDev]);
    assert_eq!(args.clear, [MountFlag::NoExec, MountFlag::NoSuid]);
    assert_eq!(args.data, "");

    let plan = tmpfs_plan("dev").unwrap();
    let MountSpec::Tmpfs(t) = &plan.mounts[0] else {
        panic!()
    };
    assert_eq!(t.mount_args().clear, [MountFlag::NoDev]);

    let plan = tmpfs_plan("size=1m,mode=1777,uid=0").unwrap();
    let MountSpec::Tmpfs(t) = &plan.mounts[0] else {
        panic!()
    };
    let args = t.mount_args();
    assert_eq!(args.data, "size=1m,mode=1777,uid=0");
    assert_eq!(
        args.set,
        [MountFlag::NoExec, MountFlag::NoSuid, MountFlag::NoDev]
    );
    assert_eq!(t.size_bytes, Some(1 << 20));
    assert_eq!(t.effective_mode(), 0o1777);

    // Refused at start (docker create succeeds), with Docker's message.
    for (opts, key) in [
        ("noexec,,suid", ""),
        ("bind=/etc", "bind"),
        ("rbind", "rbind"),
        ("remount", "remount"),
        ("size", "size"),
        ("huge=always", "huge"),
        ("tmpcopyup", "tmpcopyup"),
    ] {
        let (stage, text) = tmpfs_plan(opts).unwrap_err();
        assert_eq!(stage, Stage::DaemonStart, "{opts}");
        assert_eq!(text, format!("invalid tmpfs option \"{key}\""), "{opts}");
    }
}

#[test]
fn st48_unlimited_tmpfs_is_refused() {
    for opts in ["size=0", "nr_blocks=0", "nr_inodes=0", "size=64m,size=0"] {
        let (stage, text) = tmpfs_plan(opts).unwrap_err();
        assert_eq!(stage, Stage::DaemonStart, "{opts}");
        assert!(text.contains("unlimited tmpfs is not allowed"), "{text}");
    }
    // `--mount tmpfs-size=0` means "not set": the kernel default (half of RAM), like Docker.
    let plan = run(&[("--mount", "type=tmpfs,dst=/t,tmpfs-size=0")], &[]).unwrap();
    let MountSpec::Tmpfs(t) = &plan.mounts[0] else {
        panic!()
    };
    assert_eq!(t.size_bytes, None);
    assert_eq!(t.options, ["noexec", "nosuid", "nodev", "rprivate"]);
}

#[test]
fn st36_volume_names() {
    let none = BTreeMap::new();
    for bad in [
        "x", "..", ".", "a/b", "a\\b", "a b", "a:b", "a\0b", ".hello",
    ] {
        assert!(
            check_local_volume_create(bad, &none, false).is_err(),
            "{bad:?}"
        );
    }
    for good in ["thing.d", "hello-world", "a_b", &"a".repeat(256)] {
        assert!(
            check_local_volume_create(good, &none, false).is_ok(),
            "{good:?}"
        );
    }
    // Through -v: names the CLI does not take for paths reach the local driver's check.
    for name in ["a b", "a\\b"] {
        let plan = run(&[("-v", &format!("{name}:/d"))], &[]).unwrap();
        let v = plan.volumes().next().expect("a volume");
        assert_eq!(v.name.as_deref(), Some(name));
        let e = check_local_volume_create(name, &v.driver_options, false).unwrap_err();
        assert_eq!(e.stage(), Stage::VolumeDriver);
        assert!(e.to_string().contains("includes invalid characters"));
    }
    // `/testvol`, `./hello`, `.hello` are host paths to the CLI: binds, never volume names.
    for spec in ["/testvol:/d", "./hello:/d", ".hello:/d"] {
        let plan = run(&[("-v", spec)], &[]).unwrap();
        assert!(matches!(plan.mounts[0], MountSpec::Bind(_)), "{spec}");
    }
}

#[test]
fn st41_proc_destinations_are_refused_and_no_prefix_false_positive() {
    for dest in [
        "/proc",
        "/proc/sysrq-trigger",
        "/proc/sys",
        "/proc/../proc/sys",
    ] {
        let (stage, text) = err(&[("-v", &format!("/srv/data:{dest}"))]);
        assert_eq!(stage, Stage::DaemonStart, "{dest}");
        assert!(text.contains("cannot be mounted because it is"), "{text}");
        let (stage, _) = err(&[("--tmpfs", dest)]);
        assert_eq!(stage, Stage::DaemonStart, "{dest}");
        let (stage, _) = err(&[("--mount", &format!("type=volume,dst={dest}"))]);
        assert_eq!(stage, Stage::DaemonStart, "{dest}");
    }
    for dest in [
        "/sysfiles/fs/cgroup",
        "/procfs",
        "/sys/fs/cgroup",
        "/dev/shm",
        "/proc/meminfo",
    ] {
        run(&[("-v", &format!("/srv/data:{dest}"))], &[])
            .unwrap_or_else(|e| panic!("{dest}: {e:?}"));
    }
}

#[test]
fn st41_image_volumes() {
    for bad in ["/proc/sys/kernel", "/sys/x", "/dev/y", "/proc"] {
        let (stage, text) = run(&[], &[bad]).unwrap_err();
        assert_eq!(stage, Stage::DaemonCreate, "{bad}");
        assert!(text.contains("not allowed"), "{text}");
    }
    let plan = run(&[], &["/../../../../etc"]).unwrap();
    assert_eq!(plan.mounts[0].target(), "/etc");
    // A user mount at the same place means no image volume is made, so no refusal either.
    run(&[("--tmpfs", "/sys/x")], &["/sys/x"]).unwrap();
}

#[test]
fn daemon_root_binds_are_rslave_or_refused() {
    let plan = run(&[("-v", "/:/host")], &[]).unwrap();
    let MountSpec::Bind(b) = &plan.mounts[0] else {
        panic!()
    };
    assert_eq!(b.propagation.as_str(), "rslave");
    for p in ["private", "rprivate", "slave", "shared"] {
        let (stage, text) = err(&[("-v", &format!("/var/lib/carrel/volumes:/v:{p}"))]);
        assert_eq!(stage, Stage::DaemonCreate);
        assert!(text.contains("must use either propagation mode"), "{text}");
    }
    run(&[("-v", "/var/lib/carrel/volumes:/v:rshared")], &[]).unwrap();
}

#[test]
fn api_requests_are_checked_like_cli_ones() {
    // Options that do not match the type, straight from the API.
    let req = MountRequest {
        mounts: vec![carrel_mountspec::ApiMount {
            kind: "volume".into(),
            target: "/d".into(),
            bind_options: Some(Default::default()),
            ..Default::default()
        }],
        ..MountRequest::default()
    };
    let (stage, text) = plan_request(&req, &[]).unwrap_err();
    assert_eq!(stage, Stage::DaemonCreate);
    assert_eq!(
        text,
        "BindOptions must not be specified on mount type \"volume\""
    );
    // API-only tmpfs options: exec/noexec only.
    let req = MountRequest {
        mounts: vec![carrel_mountspec::ApiMount {
            kind: "tmpfs".into(),
            target: "/t".into(),
            tmpfs_options: Some(carrel_mountspec::TmpfsOptions {
                options: vec![vec!["suid".into()]],
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..MountRequest::default()
    };
    let (_, text) = plan_request(&req, &[]).unwrap_err();
    assert_eq!(
        text,
        "invalid mount config for type \"tmpfs\": invalid option: suid"
    );
    // A bind whose read-only flags contradict ReadOnly fails at start, as in Docker.
    let req = MountRequest {
        mounts: vec![carrel_mountspec::ApiMount {
            kind: "bind".into(),
            source: "/srv/data".into(),
            target: "/d".into(),
            bind_options: Some(carrel_mountspec::BindOptions {
                read_only_non_recursive: true,
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..MountRequest::default()
    };
    let (stage, text) = plan_request(&req, &[]).unwrap_err();
    assert_eq!(stage, Stage::DaemonStart);
    assert_eq!(
        text,
        "mount options conflict: !ReadOnly && BindOptions.ReadOnlyNonRecursive"
    );
}
