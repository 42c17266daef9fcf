//! Container endpoints: create, list, inspect, start/stop/kill/restart/wait, rename, resize,
//! remove, prune, and the filesystem ones (changes, export, archive, commit).

use std::io::Read;
use std::time::Duration;

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use serde_json::{Value, json};

use carrel_engine::EngineError;
use carrel_engine::containers::fs::{CommitOptions, CopyFromOptions, CopyToOptions};
use carrel_engine::containers::list::ContainerFilter;
use carrel_engine::containers::types::{Config, CreateRequest, HostConfig, Status};
use carrel_engine::events::Event;

use crate::body::{self, Body, BodyReader, ChannelWriter};
use crate::error::{ApiError, ApiResult};
use crate::router::Ctx;
use crate::state::State;

/// Go's decoder reads `null` as "absent": drop null members of the objects the engine's types
/// read with defaults, and read a string `Cmd`/`Entrypoint` as a one-word list (Docker's
/// `StrSlice`).
fn normalize_create_body(v: &mut Value) {
    fn drop_nulls(v: &mut Value) {
        if let Value::Object(m) = v {
            m.retain(|_, x| !x.is_null());
        }
    }
    drop_nulls(v);
    if let Value::Object(m) = v {
        for key in ["Cmd", "Entrypoint"] {
            if let Some(Value::String(s)) = m.get(key).cloned() {
                m.insert(key.into(), json!([s]));
            }
        }
        if let Some(hc) = m.get_mut("HostConfig") {
            drop_nulls(hc);
            if let Value::Object(h) = hc {
                for key in ["LogConfig", "RestartPolicy"] {
                    if let Some(x) = h.get_mut(key) {
                        drop_nulls(x);
                    }
                }
                // The CLI sends `LogConfig: {"Type": ""}`: the default driver, json-file.
                if let Some(Value::Object(lc)) = h.get_mut("LogConfig")
                    && lc.get("Type").and_then(Value::as_str) == Some("")
                {
                    lc.insert("Type".into(), json!("json-file"));
                }
            }
        }
    }
}

/// `POST /containers/create?name=`.
pub async fn create(ctx: Ctx, req: Request<Incoming>) -> ApiResult<Response<Body>> {
    let data = body::read_all(req.into_body(), 8 << 20).await?;
    let mut v: Value = if data.trim_ascii().is_empty() {
        json!({})
    } else {
        serde_json::from_slice(&data)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))?
    };
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "invalid JSON: the body must be a JSON object",
        ));
    }
    normalize_create_body(&mut v);
    // A network compose created (a stub: carrel has no container networking) runs the
    // container without one, as `none` does; the network records the container.
    let mut stub_network = None;
    if let Some(mode) = v
        .pointer("/HostConfig/NetworkMode")
        .and_then(Value::as_str)
        .map(String::from)
        && !matches!(mode.as_str(), "" | "default" | "none" | "host" | "bridge")
        && !mode.starts_with("container:")
        && let Some(id) = crate::networks::resolve(&ctx.state, &mode)
    {
        stub_network = Some(id);
        v["HostConfig"]["NetworkMode"] = json!("none");
    }
    let host_config: HostConfig = match v.get("HostConfig") {
        Some(hc) => serde_json::from_value(hc.clone())
            .map_err(|e| ApiError::bad_request(format!("invalid HostConfig: {e}")))?,
        None => HostConfig::default(),
    };
    let config: Config = serde_json::from_value(v)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))?;
    let req = CreateRequest {
        name: ctx.query.string("name").unwrap_or_default(),
        config,
        host_config,
    };
    let resp = ctx.state.run(move |e| Ok(e.container_create(req)?)).await?;
    if let Some(net) = stub_network {
        crate::networks::record(&ctx.state, &net, &resp.id);
    }
    Ok(body::json(StatusCode::CREATED, &resp))
}

/// `GET /containers/json?all=&limit=&size=&filters=`.
pub async fn list(ctx: Ctx) -> ApiResult<Response<Body>> {
    let filters = ctx.query.filters()?;
    let all = ctx.query.bool("all");
    let limit = ctx.query.int("limit")?.unwrap_or(-1);
    let out = ctx
        .state
        .run(move |e| {
            let f = ContainerFilter::parse(&filters)?;
            // (Containers whose monitor died are repaired by the listing.)
            let mut list = e.container_list(all || limit > 0, &f)?;
            if limit > 0 {
                list.truncate(limit as usize);
            }
            let mut out = Vec::new();
            for c in &list {
                let mut v = serde_json::to_value(e.container_summary(c))
                    .map_err(|e| ApiError::internal(e.to_string()))?;
                v["HostConfig"] = json!({"NetworkMode": c.spec.host_config.network_mode});
                v["NetworkSettings"] = json!({"Networks": {}});
                out.push(v);
            }
            Ok(out)
        })
        .await?;
    Ok(body::json(StatusCode::OK, &out))
}

/// `GET /containers/{id}/json`.
pub async fn inspect(ctx: Ctx, id: &str) -> ApiResult<Response<Body>> {
    let id = id.to_string();
    let out = ctx
        .state
        .run(move |e| {
            // A container whose monitor died is repaired before it is shown.
            let c = e.resolve_container(&id)?;
            let _ = e.refresh_container(&c.id);
            Ok(e.container_inspect(&c.id)?)
        })
        .await?;
    Ok(body::json(StatusCode::OK, &out))
}

/// `POST /containers/{id}/start`: as the CLI starts containers (their own monitor, so they
/// survive the server). An attach client waiting for this start gets the output from its first
/// byte. 304 when it runs already.
pub async fn start(ctx: Ctx, id: &str) -> ApiResult<Response<Body>> {
    let id = id.to_string();
    let state = ctx.state.clone();
    let started = ctx
        .state
        .run(move |e| {
            let c = e.resolve_container(&id)?;
            if c.is_running() {
                return Ok(false);
            }
            let mut waiters = State::lock(&state.attach_waiters)
                .remove(&c.id)
                .unwrap_or_default();
            waiters.retain(|(_, w)| !w.is_closed());
            let attach = !waiters.is_empty();
            match e.container_start(&c.id, attach, &state.opts.carrel_program) {
                Ok(Some(h)) => {
                    let mut stream = Some(h.stream);
                    for (_, w) in waiters {
                        let s = match stream.take() {
                            Some(s) => s,
                            None => match e.container_attach(&c.id) {
                                Ok(s) => s,
                                Err(_) => break,
                            },
                        };
                        let _ = w.send(s);
                    }
                    Ok(true)
                }
                Ok(None) => Ok(false),
                Err(err) => {
                    // dockerd removes an auto-remove container whose start failed (the CLI waits
                    // for that removal).
                    if c.spec.host_config.auto_remove
                        && let Err(re) = e.container_remove(&c.id, true, true)
                    {
                        tracing::warn!(%re, "could not remove the container that failed to start");
                    }
                    Err(err.into())
                }
            }
        })
        .await?;
    Ok(body::no_content(if started {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_MODIFIED
    }))
}

/// `POST /containers/{id}/stop?t=&signal=`: 304 when it does not run.
pub async fn stop(ctx: Ctx, id: &str) -> ApiResult<Response<Body>> {
    let id = id.to_string();
    let t = ctx.query.int("t")?.or(ctx.query.int("timeout")?);
    let signal = ctx.query.string("signal");
    let stopped = ctx
        .state
        .run(move |e| {
            let c = e.resolve_container(&id)?;
            if !c.is_running() {
                return Ok(false);
            }
            if let Some(sig) = &signal {
                e.container_kill(&c.id, Some(sig))?;
            }
            e.container_stop(&c.id, t)?;
            Ok(true)
        })
        .await?;
    Ok(body::no_content(if stopped {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_MODIFIED
    }))
}

/// `POST /containers/{id}/restart?t=`.
pub async fn restart(ctx: Ctx, id: &str) -> ApiResult<Response<Body>> {
    let id = id.to_string();
    let t = ctx.query.int("t")?;
    let program = ctx.state.opts.carrel_program.clone();
    ctx.state
        .run(move |e| Ok(e.container_restart(&id, t, &program)?))
        .await?;
    Ok(body::no_content(StatusCode::NO_CONTENT))
}

/// `POST /containers/{id}/kill?signal=`: 409 when it does not run.
pub async fn kill(ctx: Ctx, id: &str) -> ApiResult<Response<Body>> {
    let id = id.to_string();
    let signal = ctx.query.string("signal");
    ctx.state
        .run(move |e| Ok(e.container_kill(&id, signal.as_deref())?))
        .await?;
    Ok(body::no_content(StatusCode::NO_CONTENT))
}

/// `POST /containers/{id}/rename?name=`.
pub async fn rename(ctx: Ctx, id: &str) -> ApiResult<Response<Body>> {
    let id = id.to_string();
    let name = ctx.query.get("name").unwrap_or("").to_string();
    ctx.state
        .run(move |e| Ok(e.container_rename(&id, &name)?))
        .await?;
    Ok(body::no_content(StatusCode::NO_CONTENT))
}

/// `POST /containers/{id}/resize?h=&w=`: the container's terminal.
pub async fn resize(ctx: Ctx, id: &str) -> ApiResult<Response<Body>> {
    let id = id.to_string();
    let h = ctx.query.int("h")?.unwrap_or(0).clamp(0, u16::MAX as i64) as u16;
    let w = ctx.query.int("w")?.unwrap_or(0).clamp(0, u16::MAX as i64) as u16;
    ctx.state
        .run(move |e| {
            let c = e.resolve_container(&id)?;
            if !c.is_running() {
                return Err(ApiError::conflict(format!(
                    "Container {} is not running",
                    c.id
                )));
            }
            let mut s = e.container_attach(&c.id)?;
            s.resize(h, w)?;
            Ok(())
        })
        .await?;
    Ok(body::no_content(StatusCode::OK))
}

/// `DELETE /containers/{id}?force=&v=`.
pub async fn remove(ctx: Ctx, id: &str) -> ApiResult<Response<Body>> {
    let id = id.to_string();
    let force = ctx.query.bool("force");
    let volumes = ctx.query.bool("v");
    if ctx.query.bool("link") {
        return Err(ApiError::bad_request(
            "carrel has no container links to remove",
        ));
    }
    ctx.state
        .run(move |e| Ok(e.container_remove(&id, force, volumes)?))
        .await?;
    Ok(body::no_content(StatusCode::NO_CONTENT))
}

/// `POST /containers/prune?filters=` (label filters).
pub async fn prune(ctx: Ctx) -> ApiResult<Response<Body>> {
    let filters = ctx.query.filters()?;
    let mut labels = Vec::new();
    for f in filters {
        match f.split_once('=') {
            Some(("label", v)) => labels.push(v.to_string()),
            Some(("until", _)) => {
                return Err(ApiError::bad_request(
                    "the until filter is not supported by carrel",
                ));
            }
            Some((k, _)) => return Err(ApiError::bad_request(format!("Invalid filter '{k}'"))),
            None => {}
        }
    }
    let (ids, reclaimed) = ctx
        .state
        .run(move |e| Ok(e.container_prune(&labels)?))
        .await?;
    let deleted = if ids.is_empty() {
        Value::Null
    } else {
        json!(ids)
    };
    Ok(body::json(
        StatusCode::OK,
        &json!({"ContainersDeleted": deleted, "SpaceReclaimed": reclaimed}),
    ))
}

/// What `wait` waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Condition {
    NotRunning,
    NextExit,
    Removed,
}

/// `POST /containers/{id}/wait?condition=`: the status line and headers go out at once (the
/// docker CLI sends `start` only after it has them); the body when the condition is met.
pub async fn wait(ctx: Ctx, id: &str) -> ApiResult<Response<Body>> {
    let cond = match ctx.query.get("condition").unwrap_or("") {
        "" | "not-running" => Condition::NotRunning,
        "next-exit" => Condition::NextExit,
        "removed" => Condition::Removed,
        other => {
            return Err(ApiError::bad_request(format!(
                "invalid condition: \"{other}\""
            )));
        }
    };
    // Subscribed before the state is read, so no exit falls in between.
    let events = ctx.state.events.subscribe();
    let id = id.to_string();
    let c = ctx
        .state
        .run(move |e| {
            let c = e.resolve_container(&id)?;
            Ok(match e.refresh_container(&c.id) {
                Ok(c) => c,
                Err(EngineError::NotFound(_)) => c,
                Err(err) => return Err(err.into()),
            })
        })
        .await?;
    let (tx, b) = body::channel(1);
    let state = ctx.state.clone();
    tokio::spawn(async move {
        let outcome = tokio::select! {
            _ = tx.closed() => return,
            o = wait_for(&state, &c.id, c.state.status, c.state.exit_code, c.state.finished_at, cond, events) => o,
        };
        let error = match outcome.1 {
            Some(m) => json!({"Message": m}),
            None => Value::Null,
        };
        let mut line = serde_json::to_vec(&json!({"Error": error, "StatusCode": outcome.0}))
            .unwrap_or_default();
        line.push(b'\n');
        let _ = tx.send(Ok(line.into())).await;
    });
    let mut r = Response::new(b);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

/// Wait for `cond` on container `id`: events from the log wake it, and the recorded state is
/// checked every half second too (a monitor killed before it recorded the exit is repaired by
/// that check). Returns the exit code and an error message.
async fn wait_for(
    state: &std::sync::Arc<State>,
    id: &str,
    status: Status,
    mut code: i64,
    finished_at: i64,
    cond: Condition,
    mut events: tokio::sync::broadcast::Receiver<Event>,
) -> (i64, Option<String>) {
    let running = |s: Status| matches!(s, Status::Running | Status::Paused | Status::Restarting);
    if cond == Condition::NotRunning && !running(status) {
        return (code, None);
    }
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.tick().await;
    loop {
        tokio::select! {
            got = events.recv() => match got {
                Ok(e) if e.kind == "container" && e.actor.id == id => match e.action.as_str() {
                    "die" => {
                        code = e.actor.attributes.get("exitCode").and_then(|c| c.parse().ok()).unwrap_or(code);
                        if cond != Condition::Removed {
                            return (code, None);
                        }
                    }
                    "destroy" if cond == Condition::Removed => return (code, None),
                    _ => {}
                },
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => return (code, Some("the server is shutting down".into())),
            },
            _ = tick.tick() => {
                let id2 = id.to_string();
                let now = state.run(move |e| match e.refresh_container(&id2) {
                    Ok(c) => Ok(Some(c)),
                    Err(EngineError::NotFound(_)) => Ok(None),
                    Err(err) => Err(err.into()),
                }).await;
                match now {
                    Ok(None) => return (code, None),
                    Ok(Some(c)) => {
                        let exited_again = c.state.finished_at != finished_at && !running(c.state.status);
                        match cond {
                            Condition::NotRunning if !running(c.state.status) => return (c.state.exit_code, None),
                            Condition::NextExit if exited_again => return (c.state.exit_code, None),
                            _ => {
                                if exited_again {
                                    code = c.state.exit_code;
                                }
                            }
                        }
                    }
                    Err(e) => return (code, Some(e.message)),
                }
            }
        }
    }
}

/// `GET /containers/{id}/changes`.
pub async fn changes(ctx: Ctx, id: &str) -> ApiResult<Response<Body>> {
    let id = id.to_string();
    let out = ctx
        .state
        .run(move |e| Ok(e.container_changes(&id)?))
        .await?;
    if out.is_empty() {
        return Ok(body::json(StatusCode::OK, &Value::Null));
    }
    Ok(body::json(StatusCode::OK, &out))
}

/// Stream what `produce` writes as the body (`content_type`); a failure midway truncates the
/// stream (the client sees an incomplete archive, never a complete wrong one).
fn stream_response<F>(ctx: &Ctx, content_type: &'static str, produce: F) -> Response<Body>
where
    F: FnOnce(&carrel_engine::Engine, &mut ChannelWriter) -> ApiResult<()> + Send + 'static,
{
    let (tx, b) = body::channel(8);
    let engine = ctx.state.engine.clone();
    tokio::task::spawn_blocking(move || {
        let mut w = ChannelWriter::new(tx);
        match produce(&engine, &mut w) {
            Ok(()) => {
                let _ = std::io::Write::flush(&mut w);
            }
            Err(e) => {
                tracing::warn!(message = %e.message, "stream failed");
                w.abort(std::io::Error::other(e.message));
            }
        }
    });
    let mut r = Response::new(b);
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// `GET /containers/{id}/export`.
pub async fn export(ctx: Ctx, id: &str) -> ApiResult<Response<Body>> {
    let id = id.to_string();
    let c = ctx
        .state
        .run(move |e| Ok(e.resolve_container(&id)?))
        .await?;
    Ok(stream_response(
        &ctx,
        "application/octet-stream",
        move |e, w| {
            e.container_export(&c.id, w)?;
            Ok(())
        },
    ))
}

/// `HEAD|GET /containers/{id}/archive?path=`: the path's stat in `X-Docker-Container-Path-Stat`,
/// and for GET a tar of it.
pub async fn archive_get(ctx: Ctx, id: &str, m: &Method) -> ApiResult<Response<Body>> {
    let id = id.to_string();
    let Some(path) = ctx.query.string("path") else {
        return Err(ApiError::bad_request("path parameter is required"));
    };
    if *m == Method::HEAD {
        let st = ctx
            .state
            .run(move |e| Ok(e.container_stat_path(&id, &path)?))
            .await?;
        let mut r = body::no_content(StatusCode::OK);
        r.headers_mut().insert(
            "X-Docker-Container-Path-Stat",
            HeaderValue::from_str(&st.header_value())
                .map_err(|e| ApiError::internal(e.to_string()))?,
        );
        return Ok(r);
    }
    let (st, stream) = ctx
        .state
        .run(move |e| Ok(e.container_copy_from(&id, &path, &CopyFromOptions::default())?))
        .await?;
    let mut r = stream_response(&ctx, "application/x-tar", move |_, w| {
        let mut stream = stream;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = stream.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            std::io::Write::write_all(w, &buf[..n])?;
        }
    });
    r.headers_mut().insert(
        "X-Docker-Container-Path-Stat",
        HeaderValue::from_str(&st.header_value()).map_err(|e| ApiError::internal(e.to_string()))?,
    );
    Ok(r)
}

/// `PUT /containers/{id}/archive?path=&noOverwriteDirNonDir=&copyUIDGID=`: extract the tar body
/// into the directory `path`.
pub async fn archive_put(ctx: Ctx, id: &str, req: Request<Incoming>) -> ApiResult<Response<Body>> {
    let id = id.to_string();
    let Some(path) = ctx.query.string("path") else {
        return Err(ApiError::bad_request("path parameter is required"));
    };
    let opts = CopyToOptions {
        no_overwrite_dir_non_dir: ctx.query.bool("noOverwriteDirNonDir"),
        copy_uid_gid: ctx.query.bool("copyUIDGID"),
    };
    let reader = BodyReader::new(req.into_body());
    ctx.state
        .run(move |e| Ok(e.container_copy_to(&id, &path, Box::new(reader), &opts)?))
        .await?;
    Ok(body::no_content(StatusCode::OK))
}

/// `POST /commit?container=&repo=&tag=&comment=&author=&pause=&changes=`.
pub async fn commit(ctx: Ctx, req: Request<Incoming>) -> ApiResult<Response<Body>> {
    let data = body::read_all(req.into_body(), 8 << 20).await?;
    // A config body (`{}` from docker-py, `null` or nothing from the CLI) must at least be JSON.
    let _: Value = if data.trim_ascii().is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&data)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))?
    };
    let Some(container) = ctx.query.string("container") else {
        return Err(ApiError::not_found("No such container: "));
    };
    let reference = match (ctx.query.string("repo"), ctx.query.string("tag")) {
        (Some(r), Some(t)) => Some(format!("{r}:{t}")),
        (Some(r), None) => Some(r),
        (None, Some(_)) => {
            return Err(ApiError::bad_request("tag without a repository"));
        }
        (None, None) => None,
    };
    let opts = CommitOptions {
        reference,
        comment: ctx.query.get("comment").unwrap_or("").to_string(),
        author: ctx.query.get("author").unwrap_or("").to_string(),
        changes: ctx
            .query
            .all("changes")
            .into_iter()
            .flat_map(|c| c.lines().map(String::from).collect::<Vec<_>>())
            .filter(|c| !c.trim().is_empty())
            .collect(),
        pause: ctx.query.bool_or("pause", true),
    };
    let id = ctx
        .state
        .run(move |e| Ok(e.container_commit(&container, &opts)?))
        .await?;
    Ok(body::json(
        StatusCode::CREATED,
        &json!({"Id": id.to_string()}),
    ))
}
