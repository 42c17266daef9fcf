//! Volume endpoints, on the engine's volume service.

use std::collections::BTreeMap;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;

use carrel_engine::volumes::{PruneFilter, VolumeCreate, VolumeFilter};

use crate::body::{self, Body};
use crate::error::{ApiError, ApiResult};
use crate::router::Ctx;

/// `GET /volumes?filters=`.
pub async fn list(ctx: Ctx) -> ApiResult<Response<Body>> {
    let filters = ctx.query.filters()?;
    let vols = ctx
        .state
        .run(move |e| {
            let f = VolumeFilter::parse(&filters).map_err(invalid_filter)?;
            Ok(e.volume_list(&f)?)
        })
        .await?;
    let list: Vec<_> = vols.iter().map(|v| v.inspect()).collect();
    Ok(body::json(
        StatusCode::OK,
        &json!({"Volumes": list, "Warnings": null}),
    ))
}

/// Docker's `Invalid filter 'x'` (capitalized in the API's answer).
fn invalid_filter(e: carrel_engine::EngineError) -> ApiError {
    let mut err = ApiError::from(e);
    if let Some(rest) = err.message.strip_prefix("invalid filter") {
        err.message = format!("Invalid filter{rest}");
    }
    err
}

/// The body of `POST /volumes/create` (every field optional).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct CreateBody {
    name: Option<String>,
    driver: Option<String>,
    driver_opts: Option<BTreeMap<String, String>>,
    labels: Option<BTreeMap<String, String>>,
}

/// `POST /volumes/create`.
pub async fn create(ctx: Ctx, req: Request<Incoming>) -> ApiResult<Response<Body>> {
    let data = body::read_all(req.into_body(), 1 << 20).await?;
    let b: CreateBody = body::decode(&data)?;
    let req = VolumeCreate {
        name: b.name.filter(|n| !n.is_empty()),
        driver: b.driver.filter(|d| !d.is_empty()),
        labels: b.labels.unwrap_or_default(),
        options: b.driver_opts.unwrap_or_default(),
    };
    let v = ctx
        .state
        .run(move |e| Ok(e.volume_create_named(&req)?))
        .await?;
    Ok(body::json(StatusCode::CREATED, &v.inspect()))
}

/// `GET /volumes/{name}`.
pub async fn inspect(ctx: Ctx, name: &str) -> ApiResult<Response<Body>> {
    let name = name.to_string();
    let v = ctx.state.run(move |e| Ok(e.volume_get(&name)?)).await?;
    Ok(body::json(StatusCode::OK, &v.inspect()))
}

/// `DELETE /volumes/{name}?force=`.
pub async fn remove(ctx: Ctx, name: &str) -> ApiResult<Response<Body>> {
    let name = name.to_string();
    let force = ctx.query.bool("force");
    ctx.state
        .run(move |e| Ok(e.volume_remove(&name, force)?))
        .await?;
    Ok(body::no_content(StatusCode::NO_CONTENT))
}

/// `POST /volumes/prune?filters=`: before API 1.42 every unused volume, from 1.42 on only
/// anonymous ones unless `all=true` (moby adds `all=true` for older clients).
pub async fn prune(ctx: Ctx) -> ApiResult<Response<Body>> {
    let filters = ctx.query.filters()?;
    let all_by_version = !ctx.version.at_least(1, 42);
    let report = ctx
        .state
        .run(move |e| {
            let mut f = PruneFilter::parse(&filters, false).map_err(invalid_filter)?;
            if all_by_version {
                f.all = true;
            }
            Ok(e.volume_prune(&f)?)
        })
        .await?;
    let deleted = if report.deleted.is_empty() {
        serde_json::Value::Null
    } else {
        json!(report.deleted)
    };
    Ok(body::json(
        StatusCode::OK,
        &json!({"VolumesDeleted": deleted, "SpaceReclaimed": report.reclaimed}),
    ))
}
