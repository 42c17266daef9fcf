//! Image endpoints: list, inspect, history, tag, remove, prune, load, save, import, and pull
//! (offline: an image that is here is "up to date", any other is not found).

use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use serde_json::{Value, json};

use carrel_engine::NoProgress;
use carrel_engine::images::ImageFilter;
use carrel_engine::images::import::ImportOptions;
use carrel_engine::images::load::LoadInput;

use crate::body::{self, Body, BodyReader, ChannelWriter};
use crate::error::{ApiError, ApiResult};
use crate::router::Ctx;
use crate::system::write_json_line;

fn to_value<T: serde::Serialize>(v: &T) -> ApiResult<Value> {
    serde_json::to_value(v).map_err(|e| ApiError::internal(e.to_string()))
}

fn image_filter(filters: &[String]) -> ApiResult<ImageFilter> {
    let mut f = ImageFilter::default();
    for raw in filters {
        let (k, v) = raw.split_once('=').unwrap_or((raw.as_str(), ""));
        match k {
            "dangling" => {
                f.dangling = Some(match v {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    other => {
                        return Err(ApiError::bad_request(format!(
                            "Invalid filter 'dangling={other}'"
                        )));
                    }
                })
            }
            "reference" => f.reference.push(v.to_string()),
            "label" => f.label.push(v.to_string()),
            other => {
                return Err(ApiError::bad_request(format!("Invalid filter '{other}'")));
            }
        }
    }
    Ok(f)
}

/// `GET /images/json?all=&filters=`.
pub async fn list(ctx: Ctx) -> ApiResult<Response<Body>> {
    let filter = image_filter(&ctx.query.filters()?)?;
    let version = ctx.version;
    let list = ctx.state.run(move |e| Ok(e.image_list(&filter)?)).await?;
    let out: Vec<Value> = list
        .iter()
        .map(|i| {
            let tags: Value = if i.repo_tags.is_empty() && !version.at_least(1, 44) {
                json!(["<none>:<none>"])
            } else {
                json!(i.repo_tags)
            };
            let mut v = json!({
                "Containers": i.containers,
                "Created": i.created,
                "Id": i.id,
                "Labels": i.labels,
                "ParentId": "",
                "RepoDigests": [],
                "RepoTags": tags,
                "SharedSize": -1,
                "Size": i.size,
            });
            if !version.at_least(1, 44) {
                v["VirtualSize"] = json!(i.size);
            }
            v
        })
        .collect();
    Ok(body::json(StatusCode::OK, &out))
}

/// `GET /images/{name}/json`: with `VirtualSize` before 1.44 and `Container`/`ContainerConfig`
/// before 1.45, as Docker.
pub async fn inspect(ctx: Ctx, name: &str) -> ApiResult<Response<Body>> {
    let name = name.to_string();
    let i = ctx.state.run(move |e| Ok(e.image_inspect(&name)?)).await?;
    let mut v = to_value(&i)?;
    if !ctx.version.at_least(1, 44) {
        v["VirtualSize"] = json!(i.size);
    }
    if !ctx.version.at_least(1, 45) {
        v["Container"] = json!("");
        v["ContainerConfig"] = v["Config"].clone();
        if v["ContainerConfig"].is_null() {
            v["ContainerConfig"] = json!({});
        }
    }
    Ok(body::json(StatusCode::OK, &v))
}

/// `GET /images/{name}/history`.
pub async fn history(ctx: Ctx, name: &str) -> ApiResult<Response<Body>> {
    let name = name.to_string();
    let h = ctx.state.run(move |e| Ok(e.image_history(&name)?)).await?;
    let out: Vec<Value> = h
        .iter()
        .map(|x| {
            json!({
                "Id": x.id,
                "Created": x.created,
                "CreatedBy": x.created_by,
                "Tags": if x.tags.is_empty() { Value::Null } else { json!(x.tags) },
                "Size": x.size,
                "Comment": x.comment,
            })
        })
        .collect();
    Ok(body::json(StatusCode::OK, &out))
}

/// `POST /images/{name}/tag?repo=&tag=`.
pub async fn tag(ctx: Ctx, name: &str) -> ApiResult<Response<Body>> {
    let name = name.to_string();
    let Some(repo) = ctx.query.string("repo") else {
        return Err(ApiError::bad_request(
            "repository name must have at least one component",
        ));
    };
    let target = match ctx.query.string("tag") {
        Some(t) => format!("{repo}:{t}"),
        None => repo,
    };
    ctx.state
        .run(move |e| Ok(e.image_tag(&name, &target)?))
        .await?;
    Ok(body::no_content(StatusCode::CREATED))
}

/// `DELETE /images/{name}?force=&noprune=`.
pub async fn remove(ctx: Ctx, name: &str) -> ApiResult<Response<Body>> {
    let name = name.to_string();
    let force = ctx.query.bool("force");
    let records = ctx
        .state
        .run(move |e| Ok(e.image_remove(&name, force)?))
        .await?;
    Ok(body::json(StatusCode::OK, &records))
}

/// `POST /images/prune?filters=` (`dangling=false`: every unused image).
pub async fn prune(ctx: Ctx) -> ApiResult<Response<Body>> {
    let mut all = false;
    let mut rest = Vec::new();
    for f in ctx.query.filters()? {
        match f.as_str() {
            "dangling=false" | "dangling=0" => all = true,
            "dangling=true" | "dangling=1" => {}
            _ if f.starts_with("label=") => rest.push(f),
            _ if f.starts_with("until=") => {
                return Err(ApiError::bad_request(
                    "the until filter is not supported by carrel",
                ));
            }
            other => {
                let k = other.split('=').next().unwrap_or(other);
                return Err(ApiError::bad_request(format!("Invalid filter '{k}'")));
            }
        }
    }
    let filter = image_filter(&rest)?;
    let report = ctx
        .state
        .run(move |e| Ok(e.image_prune(all, &filter)?))
        .await?;
    let deleted = if report.deleted.is_empty() {
        Value::Null
    } else {
        to_value(&report.deleted)?
    };
    Ok(body::json(
        StatusCode::OK,
        &json!({"ImagesDeleted": deleted, "SpaceReclaimed": report.reclaimed}),
    ))
}

fn json_stream_response(b: Body) -> Response<Body> {
    let mut r = Response::new(b);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// Docker's in-band error of a JSON message stream.
fn error_line(message: &str) -> Value {
    json!({"errorDetail": {"message": message}, "error": message})
}

/// `POST /images/load?quiet=`: the body is an image archive; 200 and a JSON message stream
/// (`Loaded image: …`), errors in band. A client that goes away mid-upload leaves nothing: the
/// load's lease rolls back what it made.
pub async fn load(ctx: Ctx, req: Request<Incoming>) -> ApiResult<Response<Body>> {
    let reader = BodyReader::new(req.into_body());
    let (tx, b) = body::channel(8);
    let engine = ctx.state.engine.clone();
    tokio::task::spawn_blocking(move || {
        let mut w = ChannelWriter::new(tx);
        match engine.image_load(LoadInput::Stream(Box::new(reader)), &NoProgress) {
            Ok(images) => {
                for img in images {
                    if img.tags.is_empty() {
                        let _ = write_json_line(
                            &mut w,
                            &json!({"stream": format!("Loaded image ID: {}\n", img.id)}),
                        );
                    }
                    for t in &img.tags {
                        let _ = write_json_line(
                            &mut w,
                            &json!({"stream": format!("Loaded image: {t}\n")}),
                        );
                    }
                }
            }
            Err(e) => {
                let _ = write_json_line(&mut w, &error_line(&e.to_string()));
            }
        }
    });
    Ok(json_stream_response(b))
}

/// `GET /images/get?names=` and `GET /images/{name}/get`: a docker-save tar. Unknown names are a
/// 404 before anything is sent.
pub async fn save(ctx: Ctx, names: Vec<String>) -> ApiResult<Response<Body>> {
    if names.is_empty() {
        return Err(ApiError::bad_request("no images to save"));
    }
    let check = names.clone();
    ctx.state
        .run(move |e| {
            for n in &check {
                e.resolve_image(n)?;
            }
            Ok(())
        })
        .await?;
    let (tx, b) = body::channel(8);
    let engine = ctx.state.engine.clone();
    tokio::task::spawn_blocking(move || {
        let mut w = ChannelWriter::new(tx);
        match engine.image_save(&names, &mut w, &NoProgress) {
            Ok(()) => {
                let _ = std::io::Write::flush(&mut w);
            }
            Err(e) => {
                tracing::warn!(%e, "save failed midway");
                w.abort(std::io::Error::other(e.to_string()));
            }
        }
    });
    let mut r = Response::new(b);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-tar"),
    );
    Ok(r)
}

/// `POST /images/create`: import (`fromSrc=-`, the body is a root filesystem tar) or pull
/// (`fromImage=`: offline, an image that is here is up to date, any other is not found).
pub async fn create(ctx: Ctx, req: Request<Incoming>) -> ApiResult<Response<Body>> {
    if let Some(image) = ctx.query.string("fromImage") {
        return pull(ctx, &image).await;
    }
    match ctx.query.get("fromSrc") {
        Some("-") => {}
        Some(src) if !src.is_empty() => {
            return Err(ApiError::bad_request(format!(
                "cannot import from {src}: carrel imports only from the request body (fromSrc=-)"
            )));
        }
        _ => {
            return Err(ApiError::bad_request(
                "either fromImage or fromSrc must be given",
            ));
        }
    }
    let reference = match (ctx.query.string("repo"), ctx.query.string("tag")) {
        (Some(r), Some(t)) => Some(format!("{r}:{t}")),
        (Some(r), None) => Some(r),
        _ => None,
    };
    let opts = ImportOptions {
        reference,
        changes: ctx
            .query
            .all("changes")
            .into_iter()
            .flat_map(|c| c.lines().map(String::from).collect::<Vec<_>>())
            .filter(|c| !c.trim().is_empty())
            .collect(),
        message: ctx.query.string("message"),
        created: None,
    };
    let reader = BodyReader::new(req.into_body());
    let (tx, b) = body::channel(8);
    let engine = ctx.state.engine.clone();
    tokio::task::spawn_blocking(move || {
        let mut w = ChannelWriter::new(tx);
        match engine.image_import(LoadInput::Stream(Box::new(reader)), &opts, &NoProgress) {
            Ok(id) => {
                let _ = write_json_line(&mut w, &json!({"status": id.to_string()}));
            }
            Err(e) => {
                let _ = write_json_line(&mut w, &error_line(&e.to_string()));
            }
        }
    });
    Ok(json_stream_response(b))
}

/// The offline pull.
async fn pull(ctx: Ctx, image: &str) -> ApiResult<Response<Body>> {
    let tag = ctx.query.string("tag");
    let full = match &tag {
        Some(t) if t.starts_with("sha256:") => format!("{image}@{t}"),
        Some(t) => format!("{image}:{t}"),
        None => image.to_string(),
    };
    let name = full.clone();
    let found = ctx
        .state
        .run(move |e| Ok(e.resolve_image(&name).is_ok()))
        .await?;
    let familiar = full
        .strip_prefix("docker.io/library/")
        .or_else(|| full.strip_prefix("docker.io/"))
        .unwrap_or(&full)
        .to_string();
    let repo = familiar
        .split(['@', ':'])
        .next()
        .unwrap_or(&familiar)
        .to_string();
    if !found {
        return Err(ApiError::not_found(format!(
            "pull access denied for {repo}, repository does not exist or may require 'docker login': carrel cannot pull (registries are not supported yet)"
        )));
    }
    let tag = tag.unwrap_or_else(|| "latest".into());
    let lines = [
        json!({"status": format!("Pulling from {repo}"), "id": tag}),
        json!({"status": format!("Status: Image is up to date for {familiar}")}),
    ];
    let mut data = Vec::new();
    for l in lines {
        data.extend(serde_json::to_vec(&l).unwrap_or_default());
        data.push(b'\n');
    }
    Ok(json_stream_response(body::full(data)))
}
