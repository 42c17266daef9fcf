//! Data-driven conformance: every case of `mount-vectors.json` and `scenarios.json`
//! (`testdata/conformance`, copied unchanged from the project's shared facts, or `$CARREL_CONFORMANCE_DIR`) run through the CLI layer and/or the daemon
//! layer, asserting the normalized result or Docker's exact error at the right stage.
//!
//! The files are loaded as they are; a missing file fails the test.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;

use carrel_mountspec::{
    CliFlags, FixedHost, MountError, MountPlan, MountRequest, MountSpec, Origin, PlanContext,
    Stage, check_local_volume_create, plan_mounts,
};
use serde_json::{Value, json};

/// Section 0 of SEMANTICS.md: the host paths that exist (with their parents).
const FIXTURE_PATHS: &[&str] = &[
    "/srv/data",
    "/srv/a",
    "/srv/b",
    "/tmp",
    "/tmp/q",
    "/with space",
    "/a:b",
    "/srv/a,b",
    "/home/user/proj/content",
    "/var/lib/docker/volumes",
    // scenarios.json: `s-vf-overridden-by-mount` binds /tmp/data with --mount and expects success,
    // so the data directory of its setup exists on the host too.
    "/tmp/data",
];
const DAEMON_ROOT: &str = "/var/lib/docker";
const CWD: &str = "/home/user/proj";
/// What the volume service would name an anonymous volume in the local-driver checks.
const ANONYMOUS_NAME: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// Fields of cases this implementation deliberately does not reproduce: (case id, field, why).
/// Everything else of these cases is still asserted. Keep this list as short as possible.
const ALLOWED: &[(&str, &str, &str)] = &[(
    "v-d-driver-external",
    "selinux_relabel",
    // The vector says "z", but its own note says Mode stays "" for a non-local driver, and
    // moby's MountPoint.Setup relabels only when label.RelabelNeeded(m.Mode), i.e. when the mode
    // has z/Z. Following the code (SEMANTICS: code wins): no relabel, like every other volume
    // whose inspect mode has no z (v-vol-named-ro, m-vol-driver).
    "vector contradicts moby's Setup (relabel only from Mode, which is empty here)",
)];

/// Parts of cases the parser cannot decide; the engine enforces them (not asserted here).
const ENGINE: &[(&str, &str)] = &[
    (
        "m-subpath-missing",
        "at start: the subpath must exist inside the volume (`cannot access path <vol>/<sub>: …`)",
    ),
    (
        "v-bind-missing-src-created",
        "at start: create the missing -v source as a 0755 directory",
    ),
    (
        "m-create-src-flag",
        "at start: create the missing bind-create-src source",
    ),
    (
        "m-create-src-true",
        "at start: create the missing bind-create-src source",
    ),
    (
        "m-vol-driver",
        "at create: the volume plugin must exist (`plugin \"my-driver\" not found` otherwise)",
    ),
    (
        "v-d-driver-external",
        "at create: the volume plugin must exist",
    ),
    (
        "m-subpath",
        "at start: resolve the subpath inside the volume (exists in the fixture)",
    ),
    (
        "m-subpath-file",
        "at start: resolve the subpath inside the volume (exists in the fixture)",
    ),
    (
        "m-image-subpath",
        "at create: the image must be present locally; at start: resolve image-subpath",
    ),
    (
        "m-image-rw-ignored",
        "at create: the image must be present locally",
    ),
    (
        "m-nfs-quoted",
        "at first mount: the NFS server must be reachable",
    ),
];

fn conformance_dir() -> PathBuf {
    match std::env::var_os("CARREL_CONFORMANCE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/conformance"),
    }
}

fn load(name: &str) -> Vec<Value> {
    let path = conformance_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "conformance file {} is missing ({e}); set CARREL_CONFORMANCE_DIR to the directory holding mount-vectors.json and scenarios.json",
            path.display()
        )
    });
    let value: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", path.display()));
    match value {
        Value::Array(cases) if !cases.is_empty() => cases,
        _ => panic!("{} holds no cases", path.display()),
    }
}

fn allowed(id: &str, field: &str) -> bool {
    ALLOWED.iter().any(|(i, f, _)| *i == id && *f == field)
}

fn engine_part(id: &str) -> Option<&'static str> {
    ENGINE.iter().find(|(i, _)| *i == id).map(|(_, what)| *what)
}

/// The API request pieces as the vectors spell `client_request`.
fn request_json(req: &MountRequest) -> BTreeMap<&'static str, Value> {
    let mut out = BTreeMap::new();
    if !req.binds.is_empty() {
        out.insert("HostConfig.Binds", json!(req.binds));
    }
    if !req.config_volumes.is_empty() {
        out.insert("Config.Volumes", json!(req.config_volumes));
    }
    if !req.mounts.is_empty() {
        out.insert("HostConfig.Mounts", json!(req.mounts));
    }
    if !req.tmpfs.is_empty() {
        out.insert("HostConfig.Tmpfs", json!(req.tmpfs));
    }
    out
}

/// The normalized fields of a mount, named as in the vectors.
fn observed(m: &MountSpec) -> BTreeMap<&'static str, Value> {
    let mut o = BTreeMap::new();
    o.insert("type", json!(m.type_name()));
    o.insert("target", json!(m.target()));
    o.insert("readonly", json!(m.readonly()));
    if let Some(origin) = m.origin() {
        o.insert("api_field", json!(origin.api_field()));
    }
    match m {
        MountSpec::Bind(b) => {
            o.insert("source", json!(b.source));
            o.insert("propagation", json!(b.propagation.as_str()));
            o.insert("mode", json!(b.mode));
            o.insert("inspect_mode", json!(b.mode));
            o.insert(
                "selinux_relabel",
                json!(b.selinux_relabel.map(|s| s.as_str())),
            );
            o.insert("create_host_path", json!(b.create_host_path));
            o.insert("bind_recursive", json!(b.recursive.as_str()));
            o.insert("consistency", json!(b.consistency));
        }
        MountSpec::Volume(v) => {
            o.insert("source", json!(v.name));
            o.insert("anonymous", json!(v.anonymous));
            o.insert("propagation", Value::Null);
            o.insert("mode", json!(v.mode));
            o.insert("inspect_mode", json!(v.inspect_mode()));
            o.insert(
                "selinux_relabel",
                json!(v.selinux_relabel().map(|s| s.as_str())),
            );
            o.insert("nocopy", json!(v.nocopy));
            o.insert("driver", json!(v.driver));
            o.insert("driver_options", json!(v.driver_options));
            o.insert("labels", json!(v.labels));
            o.insert("subpath", json!(v.subpath));
            o.insert("consistency", json!(v.consistency));
            o.insert("copied_from_image", json!(v.copy_up()));
        }
        MountSpec::Tmpfs(t) => {
            o.insert("source", Value::Null);
            o.insert("propagation", Value::Null);
            o.insert("tmpfs_size_bytes", json!(t.size_bytes));
            o.insert("tmpfs_mode", json!(t.mode.map(|m| format!("{m:o}"))));
            o.insert("tmpfs_data", json!(t.data));
            o.insert("effective_options", json!(t.options));
        }
        MountSpec::Image(i) => {
            o.insert("source", json!(i.source));
            o.insert("propagation", json!("rprivate"));
            o.insert("subpath", json!(i.subpath));
        }
        MountSpec::VolumesFrom(_) => {}
    }
    if !matches!(m, MountSpec::Volume(_)) {
        o.insert("copied_from_image", json!(false));
    }
    if let Some(Origin::VolumesFrom(from)) = m.origin() {
        o.insert("from", json!(from));
    }
    o
}

/// Keys of `expect` that are not mount fields.
const CONTROL_KEYS: &[&str] = &[
    "error_contains",
    "error_full",
    "error_stage",
    "client_request",
    "note",
    "config_volumes_key",
];

struct Env {
    cwd: String,
    volume_driver: String,
    plugins: BTreeSet<String>,
    existing_volumes: BTreeSet<String>,
}

impl Env {
    fn of(case: &Value) -> Env {
        let env = &case["env"];
        Env {
            cwd: env["cwd"].as_str().unwrap_or(CWD).to_string(),
            volume_driver: env["volume_driver"].as_str().unwrap_or("").to_string(),
            plugins: env["volume_plugins"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default(),
            existing_volumes: env["existing_volumes"]
                .as_object()
                .map(|o| o.keys().cloned().collect())
                .unwrap_or_default(),
        }
    }
}

/// The local driver's checks for the volumes a plan creates (the `volume-driver` stage).
fn volume_driver_checks(plan: &MountPlan, env: &Env) -> Result<(), MountError> {
    for v in plan.volumes() {
        let driver = v.driver.as_deref().unwrap_or("local");
        if driver != "local" && env.plugins.contains(driver) {
            continue;
        }
        if v.name
            .as_ref()
            .is_some_and(|n| env.existing_volumes.contains(n))
        {
            continue;
        }
        let name = v.name.as_deref().unwrap_or(ANONYMOUS_NAME);
        check_local_volume_create(name, &v.driver_options, false)?;
    }
    Ok(())
}

fn ctx(host: &FixedHost) -> PlanContext<'_> {
    PlanContext {
        daemon_root: DAEMON_ROOT.to_string(),
        host,
    }
}

/// Compare an error with the case's expectation.
fn check_error(expect: &Value, err: &MountError, problems: &mut Vec<String>) {
    let stage = expect["error_stage"].as_str().unwrap_or("?");
    if err.stage().as_str() != stage {
        problems.push(format!(
            "stage: expected {stage}, got {} ({err})",
            err.stage()
        ));
    }
    if let Some(full) = expect["error_full"].as_str()
        && err.to_string() != full
    {
        problems.push(format!(
            "error_full:\n    expected {full:?}\n    got      {:?}",
            err.to_string()
        ));
    }
    if let Some(part) = expect["error_contains"].as_str()
        && !err.to_string().contains(part)
    {
        problems.push(format!(
            "error_contains: {part:?} not in {:?}",
            err.to_string()
        ));
    }
}

/// Run one vector; returns the problems found (empty: passed).
fn run_vector(case: &Value, host: &FixedHost) -> Vec<String> {
    let id = case["id"].as_str().unwrap_or("?");
    let expect = &case["expect"];
    let ok = case["ok"].as_bool().expect("ok is a bool");
    let input = case["input"].as_str().expect("input is a string");
    let flag = case["flag"].as_str().expect("flag is a string");
    let env = Env::of(case);
    let mut problems = Vec::new();

    // Layer 1: the CLI (or the raw API entry for `layer: daemon`).
    let req = match case["layer"].as_str() {
        Some("cli") => {
            let mut flags = CliFlags::new(env.cwd.clone());
            flags.volume_driver(&env.volume_driver);
            let added = match flag {
                "-v" => Ok(flags.volume(input)),
                "--mount" => flags.mount(input).map(|_| ()).map(|()| &mut flags),
                "--tmpfs" => Ok(flags.tmpfs(input)),
                other => panic!("{id}: unknown flag {other}"),
            }
            .map(|_| ());
            match added.and_then(|()| flags.finish()) {
                Ok(req) => req,
                Err(e) => {
                    if ok {
                        problems.push(format!("unexpected CLI error: {e}"));
                    } else {
                        check_error(expect, &e, &mut problems);
                    }
                    return problems;
                }
            }
        }
        Some("daemon") => {
            assert_eq!(flag, "-v", "{id}: daemon-layer cases are Binds entries");
            MountRequest {
                binds: vec![input.to_string()],
                volume_driver: env.volume_driver.clone(),
                ..MountRequest::default()
            }
        }
        other => panic!("{id}: unknown layer {other:?}"),
    };
    if let Some(want) = expect.get("client_request") {
        let got = request_json(&req);
        let want: BTreeMap<&str, Value> = want
            .as_object()
            .expect("client_request is an object")
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        if got != want {
            problems.push(format!(
                "client_request:\n    expected {}\n    got      {}",
                json!(want),
                json!(got)
            ));
        }
    }
    if let Some(key) = expect["config_volumes_key"].as_str()
        && !req.config_volumes.contains_key(key)
    {
        problems.push(format!("Config.Volumes lacks {key:?}"));
    }

    // Layer 2: the daemon, then the volume driver, then start.
    let outcome = plan_mounts(&req, &[], &ctx(host)).and_then(|plan| {
        volume_driver_checks(&plan, &env)?;
        plan.check_start()?;
        Ok(plan)
    });
    let plan = match (outcome, ok) {
        (Err(e), true) => {
            problems.push(format!("unexpected error at {}: {e}", e.stage()));
            return problems;
        }
        (Err(e), false) => {
            check_error(expect, &e, &mut problems);
            return problems;
        }
        (Ok(plan), true) => plan,
        (Ok(_), false) => {
            if engine_part(id).is_none() {
                problems.push(format!(
                    "expected a {} error, got none",
                    expect["error_stage"].as_str().unwrap_or("?")
                ));
            }
            return problems;
        }
    };
    if plan.mounts.len() != 1 {
        problems.push(format!("expected one mount, got {:?}", plan.mounts));
        return problems;
    }
    let got = observed(&plan.mounts[0]);
    let fields = expect.as_object().expect("expect is an object");
    for (key, want) in fields {
        if CONTROL_KEYS.contains(&key.as_str()) || allowed(id, key) {
            continue;
        }
        match got.get(key.as_str()) {
            Some(value) if value == want => {}
            // An empty consistency is "none" (vectors only give it when set).
            Some(value) => problems.push(format!("{key}: expected {want}, got {value}")),
            None => problems.push(format!("{key}: not produced (expected {want})")),
        }
    }
    problems
}

/// The containers `--volumes-from` refers to in scenarios.json, built with the same pipeline.
fn fixture_container(
    name: &str,
    setup: &str,
    host: &FixedHost,
) -> Result<Vec<MountSpec>, MountError> {
    let spec = match name {
        "data1" | "data2" => "/tmp/data".to_string(),
        "test" => "/foo".to_string(),
        "parent" => setup
            .split_once("parent has -v ")
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "parentvol:/test".to_string()),
        other => {
            return Err(MountError::new(
                Stage::DaemonCreate,
                carrel_core::ErrorKind::InvalidArgument,
                format!("No such container: {other}"),
            ));
        }
    };
    let mut flags = CliFlags::new(CWD);
    flags.volume(&spec);
    let mut plan = plan_mounts(&flags.finish()?, &[], &ctx(host))?;
    for m in &mut plan.mounts {
        if let MountSpec::Volume(v) = m
            && v.name.is_none()
        {
            v.name = Some(format!("{name}-anonymous{}", v.target.replace('/', "-")));
        }
    }
    Ok(plan.mounts)
}

fn run_scenario(case: &Value, host: &FixedHost) -> Vec<String> {
    let expect = &case["expect"];
    let ok = case["ok"].as_bool().expect("ok is a bool");
    let setup = case["setup"].as_str().unwrap_or("");
    let mut problems = Vec::new();
    let image_volumes: Vec<String> = case["image_volumes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();

    let mut flags = CliFlags::new(CWD);
    let mut cli_result: Result<(), MountError> = Ok(());
    for arg in case["args"].as_array().expect("args is a list") {
        let arg: Vec<&str> = arg
            .as_array()
            .expect("an arg is a list")
            .iter()
            .map(|v| v.as_str().expect("arg strings"))
            .collect();
        match arg.as_slice() {
            ["-v", v] => {
                flags.volume(v);
            }
            ["--mount", v] => {
                if let Err(e) = flags.mount(v) {
                    cli_result = Err(e);
                    break;
                }
            }
            ["--tmpfs", v] => {
                flags.tmpfs(v);
            }
            ["--volumes-from", v] => {
                flags.volumes_from(v);
            }
            ["--read-only"] => {
                flags.read_only(true);
            }
            ["--rm"] => {
                flags.auto_remove(true);
            }
            ["--restart", v] => {
                flags.restart(v);
            }
            other => panic!("unknown scenario argument {other:?}"),
        }
    }
    let outcome = cli_result.and_then(|()| flags.finish()).and_then(|req| {
        let mut plan = plan_mounts(&req, &image_volumes, &ctx(host))?;
        plan.resolve_volumes_from(|name| fixture_container(name, setup, host))?;
        plan.check_start()?;
        Ok((req, plan))
    });
    let (req, plan) = match (outcome, ok) {
        (Err(e), false) => {
            check_error(expect, &e, &mut problems);
            return problems;
        }
        (Err(e), true) => {
            problems.push(format!("unexpected error at {}: {e}", e.stage()));
            return problems;
        }
        (Ok(_), false) => {
            problems.push("expected an error, got none".to_string());
            return problems;
        }
        (Ok(x), true) => x,
    };
    if let Some(want) = expect["mounts"].as_array() {
        if want.len() != plan.mounts.len() {
            problems.push(format!(
                "expected {} mounts, got {}: {:?}",
                want.len(),
                plan.mounts.len(),
                plan.mounts
            ));
        }
        for w in want {
            let target = w["target"].as_str().expect("expected mounts name a target");
            let Some(m) = plan.mounts.iter().find(|m| m.target() == target) else {
                problems.push(format!("no mount at {target}"));
                continue;
            };
            let got = observed(m);
            for (key, want) in w.as_object().expect("mount is an object") {
                let want = match (key.as_str(), want) {
                    // "same as parent": the fixture parent's mount at that target.
                    ("readonly", Value::String(_)) => {
                        let parent = fixture_container("parent", setup, host).expect("parent");
                        let p = parent
                            .iter()
                            .find(|p| p.target() == target)
                            .expect("parent mount");
                        json!(p.readonly())
                    }
                    // "only if myvol is empty": copy-up is on; the emptiness test is the engine's.
                    ("copied_from_image", Value::String(_)) => json!(true),
                    _ => want.clone(),
                };
                match got.get(key.as_str()) {
                    Some(value) if *value == want => {}
                    Some(value) => {
                        problems.push(format!("{target} {key}: expected {want}, got {value}"))
                    }
                    None => problems.push(format!("{target} {key}: not produced")),
                }
            }
        }
    }
    if let Some(want) = expect["inspect_mounts"].as_array() {
        let got = plan.inspect_mounts();
        if want.len() != got.len() {
            problems.push(format!(
                "inspect mounts: expected {}, got {got:?}",
                want.len()
            ));
        }
    }
    if let Some(want) = expect["rootfs_readonly"].as_bool()
        && plan.readonly_rootfs != want
    {
        problems.push(format!("rootfs_readonly: expected {want}"));
    }
    if expect.get("config_volumes") == Some(&Value::Null) && !req.config_volumes.is_empty() {
        problems.push(format!(
            "Config.Volumes: expected none, got {:?}",
            req.config_volumes
        ));
    }
    if let Some(removed) = expect["on_exit"]["removed_volumes"].as_array() {
        let got: Vec<String> = if plan.auto_remove {
            plan.volumes_removed_with_container()
                .iter()
                .map(|v| format!("<anonymous {}>", v.target))
                .collect()
        } else {
            Vec::new()
        };
        let want: Vec<String> = removed
            .iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect();
        if got != want {
            problems.push(format!("removed on exit: expected {want:?}, got {got:?}"));
        }
    }
    problems
}

#[test]
fn conformance_vectors_and_scenarios() {
    let host = FixedHost::new(FIXTURE_PATHS);
    let vectors = load("mount-vectors.json");
    let scenarios = load("scenarios.json");

    let ids: BTreeSet<&str> = vectors
        .iter()
        .chain(&scenarios)
        .filter_map(|c| c["id"].as_str())
        .collect();
    for (id, _, _) in ALLOWED {
        assert!(ids.contains(id), "allow-list names an unknown case {id}");
    }
    for (id, _) in ENGINE {
        assert!(ids.contains(id), "engine table names an unknown case {id}");
    }

    let mut failures: Vec<String> = Vec::new();
    let mut vectors_passed = 0;
    for case in &vectors {
        let problems = run_vector(case, &host);
        if problems.is_empty() {
            vectors_passed += 1;
        } else {
            failures.push(format!(
                "{} ({} {:?}):\n  {}",
                case["id"].as_str().unwrap_or("?"),
                case["flag"].as_str().unwrap_or("?"),
                case["input"].as_str().unwrap_or("?"),
                problems.join("\n  ")
            ));
        }
    }
    let mut scenarios_passed = 0;
    for case in &scenarios {
        let problems = run_scenario(case, &host);
        if problems.is_empty() {
            scenarios_passed += 1;
        } else {
            failures.push(format!(
                "{}:\n  {}",
                case["id"].as_str().unwrap_or("?"),
                problems.join("\n  ")
            ));
        }
    }
    let uncertain = vectors
        .iter()
        .chain(&scenarios)
        .filter(|c| c["uncertain"].as_bool() == Some(true))
        .count();
    let summary = format!(
        "mount conformance: vectors {vectors_passed}/{} passed, scenarios {scenarios_passed}/{} passed ({uncertain} uncertain cases run; {} field(s) allow-listed; {} case(s) with engine-enforced parts)",
        vectors.len(),
        scenarios.len(),
        ALLOWED.len(),
        ENGINE.len(),
    );
    // Written to stderr directly so it shows without --nocapture.
    let _ = writeln!(std::io::stderr(), "{summary}");
    assert!(
        failures.is_empty(),
        "{summary}\n\n{}",
        failures.join("\n\n")
    );
}
