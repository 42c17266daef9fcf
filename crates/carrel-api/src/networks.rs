//! A stub network store for compose: carrel has no container networking (`none` and `host`
//! only), but compose creates, inspects, connects and deletes a project network. Networks are
//! recorded (name, driver, labels) for the server's lifetime and answered like Docker's.

use std::collections::BTreeMap;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::body::{self, Body};
use crate::error::{ApiError, ApiResult};
use crate::router::Ctx;
use crate::state::State;

/// A recorded network.
#[derive(Debug, Clone)]
pub struct Network {
    /// 64 hex characters.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its driver as asked (`bridge` by default).
    pub driver: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Options.
    pub options: BTreeMap<String, String>,
    /// Attachable.
    pub attachable: bool,
    /// Internal.
    pub internal: bool,
    /// Creation time (RFC 3339).
    pub created: String,
    /// Predefined (cannot be removed).
    pub predefined: bool,
    /// Containers connected (id → name).
    pub containers: BTreeMap<String, String>,
}

impl Network {
    fn json(&self) -> Value {
        let containers: BTreeMap<&String, Value> = self
            .containers
            .iter()
            .map(|(id, name)| {
                (
                    id,
                    json!({"Name": name, "EndpointID": "", "MacAddress": "", "IPv4Address": "", "IPv6Address": ""}),
                )
            })
            .collect();
        json!({
            "Name": self.name,
            "Id": self.id,
            "Created": self.created,
            "Scope": "local",
            "Driver": self.driver,
            "EnableIPv6": false,
            "IPAM": {"Driver": "default", "Options": null, "Config": []},
            "Internal": self.internal,
            "Attachable": self.attachable,
            "Ingress": false,
            "ConfigFrom": {"Network": ""},
            "ConfigOnly": false,
            "Containers": containers,
            "Options": self.options,
            "Labels": self.labels,
        })
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

fn predefined_network(name: &str, driver: &str) -> Network {
    // Stable ids for the predefined ones.
    let id = format!("{:0<64}", hex_of(name));
    Network {
        id,
        name: name.into(),
        driver: driver.into(),
        labels: BTreeMap::new(),
        options: BTreeMap::new(),
        attachable: false,
        internal: false,
        created: now(),
        predefined: true,
        containers: BTreeMap::new(),
    }
}

fn hex_of(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The networks every engine has (`none` and `host`, the two carrel runs containers on).
pub fn predefined() -> BTreeMap<String, Network> {
    [
        predefined_network("none", "null"),
        predefined_network("host", "host"),
    ]
    .into_iter()
    .map(|n| (n.id.clone(), n))
    .collect()
}

/// Find by full id, name, or unique id prefix.
fn find<'a>(nets: &'a BTreeMap<String, Network>, key: &str) -> ApiResult<&'a Network> {
    if let Some(n) = nets.get(key) {
        return Ok(n);
    }
    if let Some(n) = nets.values().find(|n| n.name == key) {
        return Ok(n);
    }
    let matches: Vec<&Network> = nets.values().filter(|n| n.id.starts_with(key)).collect();
    match matches.as_slice() {
        [n] if !key.is_empty() => Ok(n),
        [_, _, ..] => Err(ApiError::bad_request(format!(
            "network {key} is ambiguous ({} matches found based on ID prefix)",
            matches.len()
        ))),
        _ => Err(ApiError::not_found(format!("network {key} not found"))),
    }
}

/// The id of the recorded network named or identified by `key`, if any.
pub fn resolve(state: &State, key: &str) -> Option<String> {
    let nets = State::lock(&state.networks);
    find(&nets, key).ok().map(|n| n.id.clone())
}

/// Record that container `id` is on network `net` (its name is filled in when inspected).
pub fn record(state: &State, net: &str, id: &str) {
    if let Some(n) = State::lock(&state.networks).get_mut(net) {
        n.containers.insert(id.to_string(), String::new());
    }
}

/// `GET /networks?filters=`.
pub async fn list(ctx: Ctx) -> ApiResult<Response<Body>> {
    let filters = body::parse_filters(ctx.query.get("filters").unwrap_or(""))?;
    let nets = State::lock(&ctx.state.networks);
    let mut out = Vec::new();
    'next: for n in nets.values() {
        for (k, vals) in &filters {
            let ok = vals.iter().any(|v| match k.as_str() {
                "name" => n.name.contains(v.as_str()),
                "id" => n.id.starts_with(v.as_str()),
                "driver" => n.driver == *v,
                "label" => match v.split_once('=') {
                    Some((lk, lv)) => n.labels.get(lk).map(String::as_str) == Some(lv),
                    None => n.labels.contains_key(v.as_str()),
                },
                "scope" => v == "local",
                "type" => (v == "builtin") == n.predefined,
                "dangling" => true,
                _ => false,
            });
            if !ok {
                if !matches!(
                    k.as_str(),
                    "name" | "id" | "driver" | "label" | "scope" | "type" | "dangling"
                ) {
                    return Err(ApiError::bad_request(format!("Invalid filter '{k}'")));
                }
                continue 'next;
            }
        }
        out.push(n.json());
    }
    Ok(body::json(StatusCode::OK, &out))
}

/// `GET /networks/{id}`.
pub async fn inspect(ctx: Ctx, id: &str) -> ApiResult<Response<Body>> {
    let nets = State::lock(&ctx.state.networks);
    Ok(body::json(StatusCode::OK, &find(&nets, id)?.json()))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct CreateBody {
    name: String,
    driver: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    options: Option<BTreeMap<String, String>>,
    attachable: bool,
    internal: bool,
}

/// `POST /networks/create`.
pub async fn create(ctx: Ctx, req: Request<Incoming>) -> ApiResult<Response<Body>> {
    let data = body::read_all(req.into_body(), 1 << 20).await?;
    let b: CreateBody = body::decode(&data)?;
    if b.name.is_empty() {
        return Err(ApiError::bad_request("network name is required"));
    }
    let driver = b
        .driver
        .filter(|d| !d.is_empty())
        .unwrap_or("bridge".into());
    if matches!(driver.as_str(), "host" | "null") {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("only one instance of \"{driver}\" network is allowed"),
        ));
    }
    let mut nets = State::lock(&ctx.state.networks);
    if nets.values().any(|n| n.name == b.name) {
        return Err(ApiError::conflict(format!(
            "network with name {} already exists",
            b.name
        )));
    }
    let n = Network {
        id: carrel_core::id::random_id(),
        name: b.name,
        driver,
        labels: b.labels.unwrap_or_default(),
        options: b.options.unwrap_or_default(),
        attachable: b.attachable,
        internal: b.internal,
        created: now(),
        predefined: false,
        containers: BTreeMap::new(),
    };
    let id = n.id.clone();
    ctx.state.engine.emit_event(
        carrel_engine::events::EventType::Network,
        "create",
        &id,
        [
            ("name".to_string(), n.name.clone()),
            ("type".to_string(), n.driver.clone()),
        ]
        .into(),
    );
    nets.insert(id.clone(), n);
    Ok(body::json(
        StatusCode::CREATED,
        &json!({"Id": id, "Warning": ""}),
    ))
}

/// `DELETE /networks/{id}`.
pub async fn remove(ctx: Ctx, id: &str) -> ApiResult<Response<Body>> {
    let mut nets = State::lock(&ctx.state.networks);
    let n = find(&nets, id)?.clone();
    if n.predefined {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("{} is a pre-defined network and cannot be removed", n.name),
        ));
    }
    nets.remove(&n.id);
    ctx.state.engine.emit_event(
        carrel_engine::events::EventType::Network,
        "destroy",
        &n.id,
        [
            ("name".to_string(), n.name.clone()),
            ("type".to_string(), n.driver.clone()),
        ]
        .into(),
    );
    Ok(body::no_content(StatusCode::NO_CONTENT))
}

/// `POST /networks/prune`: every network that is not predefined and has no container.
pub async fn prune(ctx: Ctx) -> ApiResult<Response<Body>> {
    let mut nets = State::lock(&ctx.state.networks);
    let gone: Vec<String> = nets
        .values()
        .filter(|n| !n.predefined && n.containers.is_empty())
        .map(|n| n.id.clone())
        .collect();
    let names: Vec<String> = gone
        .iter()
        .filter_map(|id| nets.remove(id).map(|n| n.name))
        .collect();
    let deleted = if names.is_empty() {
        Value::Null
    } else {
        json!(names)
    };
    Ok(body::json(
        StatusCode::OK,
        &json!({"NetworksDeleted": deleted}),
    ))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct ConnectBody {
    container: String,
}

async fn connect_or_disconnect(
    ctx: Ctx,
    id: &str,
    req: Request<Incoming>,
    connect: bool,
) -> ApiResult<Response<Body>> {
    let data = body::read_all(req.into_body(), 1 << 20).await?;
    let b: ConnectBody = body::decode(&data)?;
    let name = b.container.clone();
    let c = ctx
        .state
        .run(move |e| Ok(e.resolve_container(&name)?))
        .await?;
    let mut nets = State::lock(&ctx.state.networks);
    let nid = find(&nets, id)?.id.clone();
    if let Some(n) = nets.get_mut(&nid) {
        if connect {
            n.containers.insert(c.id.clone(), c.name.clone());
        } else {
            n.containers.remove(&c.id);
        }
    }
    Ok(body::no_content(StatusCode::OK))
}

/// `POST /networks/{id}/connect`: recorded (carrel does no networking).
pub async fn connect(ctx: Ctx, id: &str, req: Request<Incoming>) -> ApiResult<Response<Body>> {
    connect_or_disconnect(ctx, id, req, true).await
}

/// `POST /networks/{id}/disconnect`.
pub async fn disconnect(ctx: Ctx, id: &str, req: Request<Incoming>) -> ApiResult<Response<Body>> {
    connect_or_disconnect(ctx, id, req, false).await
}
