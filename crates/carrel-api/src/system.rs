//! System endpoints: ping, version, info, disk usage, events, and the build-cache stub.

use std::collections::BTreeMap;

use http::{HeaderValue, Method, Response, StatusCode, header};
use serde_json::{Value, json};

use carrel_engine::events::{Event, EventReader};

use crate::body::{self, Body, ChannelWriter};
use crate::error::{ApiError, ApiResult};
use crate::router::Ctx;
use crate::version::{MAX_VERSION, MIN_VERSION};

/// `GET|HEAD /_ping`.
pub async fn ping(ctx: Ctx, m: &Method) -> ApiResult<Response<Body>> {
    let mut r = if *m == Method::HEAD {
        let mut r = body::no_content(StatusCode::OK);
        r.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        r
    } else {
        let mut r = Response::new(body::full("OK"));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        r
    };
    let h = r.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    if ctx.version.at_least(1, 42) {
        h.insert("Builder-Version", HeaderValue::from_static("1"));
        h.insert("Swarm", HeaderValue::from_static("inactive"));
    }
    Ok(r)
}

fn uname() -> (String, String) {
    let u = rustix::system::uname();
    (
        u.release().to_string_lossy().into_owned(),
        u.machine().to_string_lossy().into_owned(),
    )
}

fn go_arch(machine: &str) -> &str {
    match machine {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// `GET /version`.
pub async fn version(_ctx: Ctx) -> ApiResult<Response<Body>> {
    let (kernel, machine) = uname();
    let v = env!("CARGO_PKG_VERSION");
    let details = json!({
        "ApiVersion": MAX_VERSION.to_string(),
        "Arch": go_arch(&machine),
        "BuildTime": "",
        "Experimental": "false",
        "GitCommit": "",
        "GoVersion": "",
        "KernelVersion": kernel,
        "MinAPIVersion": MIN_VERSION.to_string(),
        "Os": "linux",
    });
    Ok(body::json(
        StatusCode::OK,
        &json!({
            "Platform": {"Name": "carrel"},
            "Components": [{"Name": "Engine", "Version": v, "Details": details}],
            "Version": v,
            "ApiVersion": MAX_VERSION.to_string(),
            "MinAPIVersion": MIN_VERSION.to_string(),
            "GitCommit": "",
            "GoVersion": "",
            "Os": "linux",
            "Arch": go_arch(&machine),
            "KernelVersion": kernel,
            "BuildTime": "",
        }),
    ))
}

/// `GET /info`: the engine's `info()` plus the fields Docker's clients read.
pub async fn info(ctx: Ctx) -> ApiResult<Response<Body>> {
    let info = ctx.state.run(|e| Ok(e.info()?)).await?;
    let mut v = serde_json::to_value(&info).map_err(|e| ApiError::internal(e.to_string()))?;
    let runtimes: BTreeMap<String, Value> = info
        .runtimes
        .iter()
        .map(|r| (r.clone(), json!({ "path": r })))
        .collect();
    let extra = json!({
        "Plugins": {"Volume": ["local"], "Network": ["host", "null"], "Authorization": null, "Log": ["json-file"]},
        "MemoryLimit": true,
        "SwapLimit": true,
        "CpuCfsPeriod": true,
        "CpuCfsQuota": true,
        "CPUShares": true,
        "CPUSet": true,
        "PidsLimit": true,
        "IPv4Forwarding": false,
        "Debug": false,
        "NFd": 0,
        "OomKillDisable": false,
        "NGoroutines": 0,
        "SystemTime": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        "LoggingDriver": "json-file",
        "CgroupDriver": "cgroupfs",
        "CgroupVersion": if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() { "2" } else { "1" },
        "NEventsListener": ctx.state.events.receiver_count(),
        "OSVersion": "",
        "IndexServerAddress": "https://index.docker.io/v1/",
        "RegistryConfig": {"IndexConfigs": {}, "InsecureRegistryCIDRs": [], "Mirrors": []},
        "GenericResources": null,
        "HttpProxy": "",
        "HttpsProxy": "",
        "NoProxy": "",
        "Labels": [],
        "ExperimentalBuild": false,
        "Runtimes": runtimes,
        "Swarm": {"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive", "ControlAvailable": false, "Error": "", "RemoteManagers": null},
        "LiveRestoreEnabled": true,
        "Isolation": "",
        "InitBinary": "",
        "ContainerdCommit": {"ID": "", "Expected": ""},
        "RuncCommit": {"ID": "", "Expected": ""},
        "InitCommit": {"ID": "", "Expected": ""},
        "SecurityOptions": ["name=seccomp,profile=default"],
        "Warnings": null,
    });
    if let (Value::Object(m), Value::Object(x)) = (&mut v, extra) {
        for (k, val) in x {
            m.insert(k, val);
        }
    }
    Ok(body::json(StatusCode::OK, &v))
}

/// `GET /system/df`: Docker's ≤1.51 shape (`LayersSize`, `Images`, `Containers`, `Volumes`).
pub async fn df(ctx: Ctx) -> ApiResult<Response<Body>> {
    let version = ctx.version;
    let out = ctx
        .state
        .run(move |e| {
            let du = e.system_df()?;
            let images: Vec<Value> = du
                .images
                .iter()
                .map(|i| {
                    let mut v = json!({
                        "Containers": i.containers,
                        "Created": i.created,
                        "Id": i.id,
                        "Labels": null,
                        "ParentId": "",
                        "RepoDigests": [],
                        "RepoTags": i.repo_tags,
                        "SharedSize": i.shared_size,
                        "Size": i.size,
                    });
                    if !version.at_least(1, 44) {
                        v["VirtualSize"] = json!(i.size);
                    }
                    v
                })
                .collect();
            let containers: Vec<Value> = du
                .containers
                .iter()
                .map(|c| {
                    json!({
                        "Id": c.id,
                        "Names": [format!("/{}", c.name)],
                        "Image": c.image,
                        "Command": c.command,
                        "Created": c.created,
                        "Ports": [],
                        "SizeRw": c.size_rw,
                        "SizeRootFs": 0,
                        "Labels": {},
                        "State": if c.active { "running" } else { "exited" },
                        "Status": c.status,
                        "HostConfig": {"NetworkMode": "none"},
                        "NetworkSettings": {"Networks": {}},
                        "Mounts": [],
                    })
                })
                .collect();
            let mut volumes = Vec::new();
            for u in &du.volumes {
                let Ok(vol) = e.volume_get(&u.name) else {
                    continue;
                };
                let mut v = serde_json::to_value(vol.inspect())
                    .map_err(|e| ApiError::internal(e.to_string()))?;
                v["UsageData"] = json!({"Size": u.size, "RefCount": u.links});
                volumes.push(v);
            }
            let mut out = json!({
                "LayersSize": du.layers_size,
                "Images": images,
                "Containers": containers,
                "Volumes": volumes,
                "BuildCache": [],
            });
            if !version.at_least(1, 42) {
                out["BuilderSize"] = json!(0);
            }
            Ok(out)
        })
        .await?;
    Ok(body::json(StatusCode::OK, &out))
}

/// `POST /build/prune`: carrel has no build cache.
pub async fn build_prune(_ctx: Ctx) -> ApiResult<Response<Body>> {
    Ok(body::json(
        StatusCode::OK,
        &json!({"CachesDeleted": null, "SpaceReclaimed": 0}),
    ))
}

/// `POST /auth`: no registries yet.
pub async fn auth(_ctx: Ctx) -> ApiResult<Response<Body>> {
    Err(ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        "carrel does not log in to registries: registries are not supported yet",
    ))
}

/// Docker's event JSON: the stored event plus the legacy `status`/`id`/`from` of container and
/// image events.
pub fn event_json(e: &Event) -> Value {
    let mut v = serde_json::to_value(e).unwrap_or(Value::Null);
    if e.kind == "container" || e.kind == "image" {
        v["status"] = json!(e.action);
        v["id"] = json!(e.actor.id);
        if let Some(img) = e.actor.attributes.get("image") {
            v["from"] = json!(img);
        }
    }
    v
}

/// The filters of `GET /events`.
struct EventFilter {
    filters: BTreeMap<String, Vec<String>>,
}

impl EventFilter {
    fn matches(&self, e: &Event) -> bool {
        let attrs = &e.actor.attributes;
        self.filters.iter().all(|(k, vals)| {
            vals.is_empty()
                || vals.iter().any(|v| match k.as_str() {
                    "type" => e.kind == *v,
                    "event" => e.action == *v || e.action.split(':').next() == Some(v.as_str()),
                    "container" => {
                        e.kind == "container"
                            && (e.actor.id.starts_with(v.as_str()) || attrs.get("name") == Some(v))
                    }
                    "image" => {
                        attrs.get("image") == Some(v)
                            || (e.kind == "image"
                                && (e.actor.id == *v || attrs.get("name") == Some(v)))
                    }
                    "volume" => e.kind == "volume" && e.actor.id == *v,
                    "network" => {
                        e.kind == "network" && (e.actor.id == *v || attrs.get("name") == Some(v))
                    }
                    "label" => match v.split_once('=') {
                        Some((lk, lv)) => attrs.get(lk).map(String::as_str) == Some(lv),
                        None => attrs.contains_key(v.as_str()),
                    },
                    "scope" => v == "local",
                    _ => false,
                })
        })
    }
}

/// Docker's `since`/`until`: Unix seconds with an optional fraction, or an RFC 3339 time.
fn parse_time(s: &str) -> ApiResult<i64> {
    if let Ok(f) = s.parse::<f64>() {
        return Ok((f * 1e9) as i64);
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_nanos_opt().unwrap_or(0))
        .map_err(|_| ApiError::bad_request(format!("invalid time value {s:?}")))
}

/// `GET /events?since=&until=&filters=`: past events from the log when `since` is given, then
/// live ones (from any carrel process) until `until` or the client goes away.
pub async fn events(ctx: Ctx) -> ApiResult<Response<Body>> {
    let filters = body::parse_filters(ctx.query.get("filters").unwrap_or(""))?;
    for k in filters.keys() {
        if !matches!(
            k.as_str(),
            "type"
                | "event"
                | "container"
                | "image"
                | "volume"
                | "network"
                | "label"
                | "scope"
                | "daemon"
                | "node"
                | "plugin"
                | "service"
                | "config"
        ) {
            return Err(ApiError::bad_request(format!("Invalid filter '{k}'")));
        }
    }
    let filter = EventFilter { filters };
    let since = ctx
        .query
        .string("since")
        .map(|s| parse_time(&s))
        .transpose()?;
    let until = ctx
        .query
        .string("until")
        .map(|s| parse_time(&s))
        .transpose()?;
    // Subscribed before the history is read: nothing falls between the two.
    let mut live = ctx.state.events.subscribe();
    let dir = ctx.state.engine.events_dir().to_path_buf();
    let (tx, b) = body::channel(16);
    tokio::spawn(async move {
        let mut last = i64::MIN;
        if let Some(since) = since {
            let past = tokio::task::spawn_blocking(move || {
                EventReader::open(&dir, true).and_then(|mut r| r.read_new())
            })
            .await;
            if let Ok(Ok(past)) = past {
                for e in past {
                    if e.time_nano < since
                        || until.is_some_and(|u| e.time_nano > u)
                        || !filter.matches(&e)
                    {
                        continue;
                    }
                    last = last.max(e.time_nano);
                    if send_event(&tx, &e).await.is_err() {
                        return;
                    }
                }
            }
        }
        let now = carrel_engine::containers::monitor::now_nanos();
        if until.is_some_and(|u| u <= now) {
            return;
        }
        let deadline = until.map(|u| {
            tokio::time::Instant::now() + std::time::Duration::from_nanos((u - now).max(0) as u64)
        });
        loop {
            let next = async {
                match deadline {
                    Some(d) => tokio::time::timeout_at(d, live.recv()).await.ok(),
                    None => Some(live.recv().await),
                }
            };
            tokio::select! {
                _ = tx.closed() => return,
                got = next => match got {
                    None => return,
                    Some(Ok(e)) => {
                        if e.time_nano <= last || !filter.matches(&e) {
                            continue;
                        }
                        if send_event(&tx, &e).await.is_err() {
                            return;
                        }
                    }
                    Some(Err(tokio::sync::broadcast::error::RecvError::Lagged(n))) => {
                        tracing::warn!(missed = n, "an events client fell behind");
                    }
                    Some(Err(_)) => return,
                }
            }
        }
    });
    let mut r = Response::new(b);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

async fn send_event(
    tx: &tokio::sync::mpsc::Sender<std::io::Result<bytes::Bytes>>,
    e: &Event,
) -> Result<(), ()> {
    let mut line = serde_json::to_vec(&event_json(e)).unwrap_or_default();
    line.push(b'\n');
    tx.send(Ok(line.into())).await.map_err(|_| ())
}

/// Write JSON-message-stream lines from a blocking thread.
pub fn write_json_line(w: &mut ChannelWriter, v: &Value) -> std::io::Result<()> {
    use std::io::Write;
    let mut line = serde_json::to_vec(v).unwrap_or_default();
    line.push(b'\n');
    w.write_all(&line)?;
    w.flush()
}
