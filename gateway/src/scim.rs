//! SCIM 2.0 service provider (RFC 7643 schema, RFC 7644 protocol) on the admin listener, at
//! `/scim/v2/{workspace}/…`: the organisation's identity provider (Okta, Entra ID, OneLogin,
//! Google) creates, updates, deactivates and deletes members, and keeps groups whose members hold
//! the role an admin mapped to the group (`mcpgw scim map`).
//!
//! - `Users`: a User is a member. `userName` is the member name (case-insensitively unique),
//!   `active: false` disables the member (every credential refused, on every process within a
//!   second, through the identity journal), `id` is the member's row id. Other attributes the
//!   provider sends (`name`, `displayName`, `emails`, extensions…) are kept and returned as sent;
//!   `password` never is.
//! - `Groups`: `displayName`, `externalId`, `members`.
//! - `ServiceProviderConfig`, `ResourceTypes`, `Schemas`; filters `attr eq "value"` on `userName`,
//!   `displayName`, `externalId` and `id`; `startIndex`/`count` paging; PATCH in the forms Okta and
//!   Entra ID send (paths, `members[value eq "…"]`, value objects, `"True"`/`"False"` strings).
//! - Auth: the workspace's SCIM bearer token (`mcpgw scim token WS`), compared as hashes in
//!   constant time. Errors are SCIM error objects.

use crate::identity::Directory;
use crate::store::{
    self,
    scim::{Filter, GroupChange, ScimGroup, ScimUser, UserFields},
};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use serde_json::{Map, Value, json};

/// Largest SCIM request body (a group replaced with its whole membership can be large).
pub const MAX_BODY: usize = 1024 * 1024;
/// Largest page of a list.
pub const MAX_RESULTS: i64 = 1000;
/// Largest kept set of other User attributes, as JSON.
const MAX_ATTRIBUTES: usize = 16 * 1024;

const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const LIST: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
const PATCH: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const ERROR: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
const CONTENT_TYPE: &str = "application/scim+json";

/// A refused SCIM request: its status, SCIM error type and detail (never a secret).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A protocol-level refusal.
    #[error("{detail}")]
    Scim {
        /// HTTP status.
        status: StatusCode,
        /// RFC 7644 §3.12 `scimType`.
        scim_type: Option<&'static str>,
        /// What is wrong.
        detail: String,
    },
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] store::Error),
}

fn bad(scim_type: &'static str, detail: impl Into<String>) -> Error {
    Error::Scim {
        status: StatusCode::BAD_REQUEST,
        scim_type: Some(scim_type),
        detail: detail.into(),
    }
}

fn not_found(detail: impl Into<String>) -> Error {
    Error::Scim {
        status: StatusCode::NOT_FOUND,
        scim_type: None,
        detail: detail.into(),
    }
}

impl Error {
    fn into_response(self) -> Response<Full<Bytes>> {
        let (status, scim_type, detail) = match self {
            Error::Scim {
                status,
                scim_type,
                detail,
            } => (status, scim_type, detail),
            Error::Store(e) => match &e {
                store::Error::Duplicate(..) => {
                    (StatusCode::CONFLICT, Some("uniqueness"), e.to_string())
                }
                store::Error::NotFound(..) => (StatusCode::NOT_FOUND, None, e.to_string()),
                store::Error::Invalid(_) => {
                    (StatusCode::BAD_REQUEST, Some("invalidValue"), e.to_string())
                }
                _ => {
                    tracing::error!(error = %e, "SCIM request failed");
                    (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        None,
                        "internal error; see the gateway log".to_owned(),
                    )
                }
            },
        };
        let mut body =
            json!({"schemas": [ERROR], "status": status.as_u16().to_string(), "detail": detail});
        if let Some(t) = scim_type {
            body["scimType"] = json!(t);
        }
        let mut resp = respond(status, &body);
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}

fn respond(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(CONTENT_TYPE),
    );
    resp
}

fn rfc3339(ms: i64) -> String {
    humantime::format_rfc3339_millis(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64),
    )
    .to_string()
}

/// Serves one request under `/scim/v2/{workspace}`; `rest` is the path after it.
pub async fn handle(
    directory: &Directory,
    req: Request<Incoming>,
    workspace: &str,
    rest: &[&str],
    query: &str,
) -> Response<Full<Bytes>> {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .trim()
        .to_owned();
    match directory.store().scim_token_check(workspace, &token).await {
        Ok(true) => {}
        Ok(false) => {
            return Error::Scim {
                status: StatusCode::UNAUTHORIZED,
                scim_type: None,
                detail: "the workspace's SCIM bearer token is required".into(),
            }
            .into_response();
        }
        Err(e) => return Error::Store(e).into_response(),
    }
    let scim = Scim {
        directory,
        workspace,
    };
    let method = req.method().clone();
    let writes = !matches!(method, Method::GET | Method::HEAD);
    let result = scim.route(req, &method, rest, query).await;
    if writes && result.is_ok() {
        // Hold at once on this process; the others follow through the journal.
        if let Err(e) = directory.reload().await {
            tracing::warn!(error = %e, "identity catch-up after a SCIM change failed");
        }
    }
    result.unwrap_or_else(Error::into_response)
}

struct Scim<'a> {
    directory: &'a Directory,
    workspace: &'a str,
}

async fn read_json(req: Request<Incoming>) -> Result<Value, Error> {
    let body = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                Error::Scim {
                    status: StatusCode::PAYLOAD_TOO_LARGE,
                    scim_type: None,
                    detail: format!("request body over {MAX_BODY} bytes"),
                }
            } else {
                bad("invalidSyntax", "the request body could not be read")
            }
        })?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| {
        bad(
            "invalidSyntax",
            format!("not JSON: {}", store::json_error(&e)),
        )
    })
}

fn parse_id(id: &str, what: &str) -> Result<i64, Error> {
    id.parse::<i64>()
        .map_err(|_| not_found(format!("no {what} with id {id:?}")))
}

/// `attr eq "value"`; `names` are the attributes this resource can be filtered by.
fn parse_filter(filter: &str, name_attr: &str) -> Result<Filter, Error> {
    let unsupported = || {
        bad(
            "invalidFilter",
            format!("supported filters: {name_attr}, externalId or id eq \"value\""),
        )
    };
    let mut parts = filter.trim().splitn(3, ' ');
    let (Some(attr), Some(op), Some(value)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(unsupported());
    };
    if !op.eq_ignore_ascii_case("eq") {
        return Err(unsupported());
    }
    let value: String = serde_json::from_str(value.trim()).map_err(|_| unsupported())?;
    let attr = attr.rsplit(':').next().unwrap_or(attr);
    if attr.eq_ignore_ascii_case(name_attr) {
        Ok(Filter::Name(value))
    } else if attr.eq_ignore_ascii_case("externalId") {
        Ok(Filter::ExternalId(value))
    } else if attr.eq_ignore_ascii_case("id") {
        // An id that is not ours matches nobody.
        Ok(Filter::Id(value.parse().unwrap_or(-1)))
    } else {
        Err(unsupported())
    }
}

/// (filter, 0-based offset, count, members excluded) from the query string.
fn list_params(query: &str, name_attr: &str) -> Result<(Filter, i64, i64, bool), Error> {
    let mut filter = Filter::All;
    let mut start = 1i64;
    let mut count = 100i64;
    let mut exclude_members = false;
    for (k, v) in crate::admin::query_params(query) {
        match k.as_str() {
            "filter" => filter = parse_filter(&v, name_attr)?,
            "startIndex" => {
                start = v
                    .parse()
                    .map_err(|_| bad("invalidValue", "startIndex: an integer"))?
            }
            "count" => {
                count = v
                    .parse()
                    .map_err(|_| bad("invalidValue", "count: an integer"))?
            }
            "excludedAttributes" => {
                exclude_members = v
                    .split(',')
                    .any(|a| a.trim().eq_ignore_ascii_case("members"))
            }
            _ => {}
        }
    }
    // RFC 7644 §3.4.2.4: startIndex below 1 means 1, a negative count means 0.
    Ok((
        filter,
        start.max(1) - 1,
        count.clamp(0, MAX_RESULTS),
        exclude_members,
    ))
}

fn list(total: i64, offset: i64, resources: Vec<Value>) -> Value {
    json!({
        "schemas": [LIST],
        "totalResults": total,
        "startIndex": offset + 1,
        "itemsPerPage": resources.len(),
        "Resources": resources,
    })
}

/// `true`/`false`, or the strings Entra ID sends (`"True"`, `"False"`).
fn boolean(v: &Value, what: &str) -> Result<bool, Error> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(false),
        _ => Err(bad("invalidValue", format!("{what}: a boolean"))),
    }
}

/// The attributes SCIM itself owns, never kept with the others.
const USER_OWN: [&str; 8] = [
    "schemas",
    "id",
    "meta",
    "userName",
    "active",
    "externalId",
    "groups",
    "password",
];

/// A User body as the store keeps it.
fn user_fields(body: &Value) -> Result<UserFields, Error> {
    let Some(obj) = body.as_object() else {
        return Err(bad("invalidSyntax", "a User is a JSON object"));
    };
    let user_name = obj
        .get("userName")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("invalidValue", "userName: required, a string"))?
        .to_owned();
    let active = match obj.get("active") {
        None | Some(Value::Null) => true,
        Some(v) => boolean(v, "active")?,
    };
    let external_id = match obj.get("externalId") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(bad("invalidValue", "externalId: a string")),
    };
    let rest: Map<String, Value> = obj
        .iter()
        .filter(|(k, _)| !USER_OWN.iter().any(|o| o.eq_ignore_ascii_case(k)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let attributes = Value::Object(rest).to_string();
    if attributes.len() > MAX_ATTRIBUTES {
        return Err(bad(
            "invalidValue",
            format!("the User's other attributes are over {MAX_ATTRIBUTES} bytes"),
        ));
    }
    Ok(UserFields {
        user_name,
        active,
        external_id,
        attributes,
    })
}

/// The User as SCIM returns it.
fn user_json(workspace: &str, u: &ScimUser) -> Value {
    let mut obj: Map<String, Value> = serde_json::from_str(&u.attributes).unwrap_or_default();
    obj.insert("schemas".into(), json!([USER]));
    obj.insert("id".into(), json!(u.id.to_string()));
    obj.insert("userName".into(), json!(u.user_name));
    obj.insert("active".into(), json!(u.active));
    if let Some(e) = &u.external_id {
        obj.insert("externalId".into(), json!(e));
    }
    obj.insert(
        "groups".into(),
        Value::Array(
            u.groups
                .iter()
                .map(|(id, name)| {
                    json!({"value": id.to_string(), "display": name,
                           "$ref": format!("/scim/v2/{workspace}/Groups/{id}")})
                })
                .collect(),
        ),
    );
    obj.insert(
        "meta".into(),
        json!({
            "resourceType": "User",
            "created": rfc3339(u.created_ms),
            "lastModified": rfc3339(u.modified_ms),
            "location": format!("/scim/v2/{workspace}/Users/{}", u.id),
            "version": format!("W/\"{}\"", u.modified_ms),
        }),
    );
    Value::Object(obj)
}

fn group_json(workspace: &str, g: &ScimGroup, with_members: bool) -> Value {
    let mut v = json!({
        "schemas": [GROUP],
        "id": g.id.to_string(),
        "displayName": g.display_name,
        "meta": {
            "resourceType": "Group",
            "created": rfc3339(g.created_ms),
            "lastModified": rfc3339(g.modified_ms),
            "location": format!("/scim/v2/{workspace}/Groups/{}", g.id),
            "version": format!("W/\"{}\"", g.modified_ms),
        },
    });
    if let Some(e) = &g.external_id {
        v["externalId"] = json!(e);
    }
    if with_members {
        v["members"] = Value::Array(
            g.members
                .iter()
                .map(|(id, name)| {
                    json!({"value": id.to_string(), "display": name,
                           "$ref": format!("/scim/v2/{workspace}/Users/{id}")})
                })
                .collect(),
        );
    }
    v
}

/// Member ids from `[{"value": "12"}, …]`.
fn member_ids(v: &Value) -> Result<Vec<i64>, Error> {
    let items: Vec<&Value> = match v {
        Value::Array(a) => a.iter().collect(),
        Value::Object(_) => vec![v],
        Value::Null => Vec::new(),
        _ => return Err(bad("invalidValue", "members: [{\"value\": id}, …]")),
    };
    items
        .into_iter()
        .map(|m| {
            let id = m.get("value").and_then(|x| match x {
                Value::String(s) => s.parse().ok(),
                Value::Number(n) => n.as_i64(),
                _ => None,
            });
            id.ok_or_else(|| bad("invalidValue", "members: each needs the value of a User id"))
        })
        .collect()
}

/// One PATCH operation: (op in lower case, path, value).
fn operations(body: &Value) -> Result<Vec<(String, Option<String>, Value)>, Error> {
    let schemas_ok = body
        .get("schemas")
        .and_then(Value::as_array)
        .is_some_and(|s| s.iter().any(|x| x.as_str() == Some(PATCH)));
    if !schemas_ok {
        return Err(bad(
            "invalidSyntax",
            format!("a PATCH body lists the schema {PATCH}"),
        ));
    }
    let Some(ops) = body.get("Operations").and_then(Value::as_array) else {
        return Err(bad("invalidSyntax", "Operations: required, an array"));
    };
    ops.iter()
        .map(|o| {
            let op = o
                .get("op")
                .and_then(Value::as_str)
                .map(str::to_ascii_lowercase)
                .filter(|op| matches!(op.as_str(), "add" | "replace" | "remove"))
                .ok_or_else(|| bad("invalidSyntax", "op: add, replace or remove"))?;
            let path = o.get("path").and_then(Value::as_str).map(str::to_owned);
            let value = o.get("value").cloned().unwrap_or(Value::Null);
            Ok((op, path, value))
        })
        .collect()
}

/// Applies one operation on a User's body (`body` is the User as a JSON object).
fn patch_user(
    body: &mut Map<String, Value>,
    op: &str,
    path: Option<&str>,
    value: Value,
) -> Result<(), Error> {
    let Some(path) = path else {
        // No path: the value is an object of attributes to set.
        let Value::Object(attrs) = value else {
            return Err(bad(
                "invalidValue",
                "an operation without a path needs an object value",
            ));
        };
        for (k, v) in attrs {
            patch_user(body, op, Some(&k), v)?;
        }
        return Ok(());
    };
    if path.eq_ignore_ascii_case("active") && op == "remove" {
        return Err(bad("mutability", "active cannot be removed"));
    }
    if path.eq_ignore_ascii_case("userName") && op == "remove" {
        return Err(bad("mutability", "userName is required"));
    }
    // `urn:…:User:attr` (an extension's attribute), `emails[type eq "work"].value`,
    // `name.givenName`, or a plain attribute.
    let (container, rest): (Option<&str>, &str) = match path.rfind(':') {
        Some(i) if path.starts_with("urn:") => {
            let schema = &path[..i];
            if schema.eq_ignore_ascii_case(USER) {
                (None, &path[i + 1..])
            } else {
                (Some(schema), &path[i + 1..])
            }
        }
        _ => (None, path),
    };
    let target: &mut Map<String, Value> = match container {
        Some(schema) => {
            let entry = body.entry(schema.to_owned()).or_insert_with(|| json!({}));
            if !entry.is_object() {
                *entry = json!({});
            }
            entry
                .as_object_mut()
                .ok_or_else(|| bad("invalidPath", path))?
        }
        None => body,
    };
    // Canonical spelling of the core attributes SCIM owns.
    let canonical = |a: &str| -> String {
        [
            "userName",
            "active",
            "externalId",
            "displayName",
            "name",
            "emails",
        ]
        .iter()
        .find(|c| c.eq_ignore_ascii_case(a))
        .map(|c| (*c).to_owned())
        .unwrap_or_else(|| a.to_owned())
    };
    if let Some(open) = rest.find('[') {
        // attr[type eq "work"].sub
        let attr = canonical(&rest[..open]);
        let close = rest.find(']').ok_or_else(|| bad("invalidPath", path))?;
        let Filter::Name(kind) = parse_filter(&rest[open + 1..close], "type")? else {
            return Err(bad("invalidPath", path));
        };
        let sub = rest[close + 1..].strip_prefix('.');
        let list = target.entry(attr).or_insert_with(|| json!([]));
        if !list.is_array() {
            *list = json!([]);
        }
        let items = list
            .as_array_mut()
            .ok_or_else(|| bad("invalidPath", path))?;
        let pos = items
            .iter()
            .position(|i| i.get("type").and_then(Value::as_str) == Some(kind.as_str()));
        match (op, sub, pos) {
            ("remove", None, Some(p)) => {
                items.remove(p);
            }
            ("remove", Some(s), Some(p)) => {
                if let Some(o) = items[p].as_object_mut() {
                    o.remove(s);
                }
            }
            ("remove", _, None) => {}
            (_, Some(s), Some(p)) => {
                if let Some(o) = items[p].as_object_mut() {
                    o.insert(s.to_owned(), value);
                }
            }
            (_, Some(s), None) => items.push(json!({"type": kind, s: value})),
            (_, None, pos) => {
                let mut v = value;
                if let Some(o) = v.as_object_mut() {
                    o.insert("type".into(), json!(kind));
                }
                match pos {
                    Some(p) => items[p] = v,
                    None => items.push(v),
                }
            }
        }
        return Ok(());
    }
    let (attr, sub) = match rest.split_once('.') {
        Some((a, s)) => (canonical(a), Some(s)),
        None => (canonical(rest), None),
    };
    match (op, sub) {
        ("remove", None) => {
            target.remove(&attr);
        }
        ("remove", Some(s)) => {
            if let Some(o) = target.get_mut(&attr).and_then(Value::as_object_mut) {
                o.remove(s);
            }
        }
        (_, Some(s)) => {
            let entry = target.entry(attr).or_insert_with(|| json!({}));
            if !entry.is_object() {
                *entry = json!({});
            }
            if let Some(o) = entry.as_object_mut() {
                o.insert(s.to_owned(), value);
            }
        }
        ("add", None) if value.is_array() => {
            // Adding to a multi-valued attribute appends.
            let entry = target.entry(attr).or_insert_with(|| json!([]));
            match (entry.as_array_mut(), value) {
                (Some(items), Value::Array(new)) => items.extend(new),
                (_, value) => *entry = value,
            }
        }
        (_, None) => {
            target.insert(attr, value);
        }
    }
    Ok(())
}

impl Scim<'_> {
    fn store(&self) -> &store::Store {
        self.directory.store()
    }

    async fn route(
        &self,
        req: Request<Incoming>,
        method: &Method,
        rest: &[&str],
        query: &str,
    ) -> Result<Response<Full<Bytes>>, Error> {
        let ok = |v: Value| Ok(respond(StatusCode::OK, &v));
        match (method, rest) {
            (&Method::GET, ["ServiceProviderConfig"]) => ok(service_provider_config()),
            (&Method::GET, ["ResourceTypes"]) => {
                let types = vec![resource_type("User", USER), resource_type("Group", GROUP)];
                ok(list(2, 0, types))
            }
            (&Method::GET, ["ResourceTypes", name]) => match *name {
                "User" => ok(resource_type("User", USER)),
                "Group" => ok(resource_type("Group", GROUP)),
                _ => Err(not_found(format!("no resource type {name:?}"))),
            },
            (&Method::GET, ["Schemas"]) => ok(list(2, 0, vec![user_schema(), group_schema()])),
            (&Method::GET, ["Schemas", urn]) => match *urn {
                USER => ok(user_schema()),
                GROUP => ok(group_schema()),
                _ => Err(not_found(format!("no schema {urn:?}"))),
            },
            (&Method::GET, ["Users"]) => {
                let (filter, offset, count, _) = list_params(query, "userName")?;
                let (total, users) = self
                    .store()
                    .scim_users(self.workspace, &filter, offset, count)
                    .await?;
                let resources = users.iter().map(|u| user_json(self.workspace, u)).collect();
                ok(list(total, offset, resources))
            }
            (&Method::POST, ["Users"]) => {
                let fields = user_fields(&read_json(req).await?)?;
                let id = self
                    .store()
                    .scim_user_create(self.workspace, &fields)
                    .await?;
                tracing::info!(workspace = %self.workspace, member = %fields.user_name, active = fields.active, "SCIM: member created");
                let user = self.user(id).await?;
                let mut resp = respond(StatusCode::CREATED, &user_json(self.workspace, &user));
                if let Ok(v) = header::HeaderValue::from_str(&format!(
                    "/scim/v2/{}/Users/{id}",
                    self.workspace
                )) {
                    resp.headers_mut().insert(header::LOCATION, v);
                }
                Ok(resp)
            }
            (&Method::GET, ["Users", id]) => {
                let user = self.user(parse_id(id, "User")?).await?;
                ok(user_json(self.workspace, &user))
            }
            (&Method::PUT, ["Users", id]) => {
                let id = parse_id(id, "User")?;
                let fields = user_fields(&read_json(req).await?)?;
                self.replace_user(id, &fields).await?;
                ok(user_json(self.workspace, &self.user(id).await?))
            }
            (&Method::PATCH, ["Users", id]) => {
                let id = parse_id(id, "User")?;
                let ops = operations(&read_json(req).await?)?;
                let current = self.user(id).await?;
                let Value::Object(mut body) = user_json(self.workspace, &current) else {
                    return Err(bad("invalidSyntax", "User"));
                };
                for (op, path, value) in ops {
                    patch_user(&mut body, &op, path.as_deref(), value)?;
                }
                let fields = user_fields(&Value::Object(body))?;
                self.replace_user(id, &fields).await?;
                ok(user_json(self.workspace, &self.user(id).await?))
            }
            (&Method::DELETE, ["Users", id]) => {
                let id = parse_id(id, "User")?;
                self.store().scim_user_delete(self.workspace, id).await?;
                tracing::info!(workspace = %self.workspace, member_id = id, "SCIM: member deleted");
                Ok(no_content())
            }
            (&Method::GET, ["Groups"]) => {
                let (filter, offset, count, exclude) = list_params(query, "displayName")?;
                let (total, groups) = self
                    .store()
                    .scim_groups(self.workspace, &filter, offset, count, !exclude)
                    .await?;
                let resources = groups
                    .iter()
                    .map(|g| group_json(self.workspace, g, !exclude))
                    .collect();
                ok(list(total, offset, resources))
            }
            (&Method::POST, ["Groups"]) => {
                let body = read_json(req).await?;
                let name = body
                    .get("displayName")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad("invalidValue", "displayName: required, a string"))?;
                let external = body.get("externalId").and_then(Value::as_str);
                let members = member_ids(body.get("members").unwrap_or(&Value::Null))?;
                let id = self
                    .store()
                    .scim_group_create(self.workspace, name, external, &members)
                    .await?;
                let group = self.group(id, true).await?;
                let mut resp = respond(
                    StatusCode::CREATED,
                    &group_json(self.workspace, &group, true),
                );
                if let Ok(v) = header::HeaderValue::from_str(&format!(
                    "/scim/v2/{}/Groups/{id}",
                    self.workspace
                )) {
                    resp.headers_mut().insert(header::LOCATION, v);
                }
                Ok(resp)
            }
            (&Method::GET, ["Groups", id]) => {
                let (_, _, _, exclude) = list_params(query, "displayName")?;
                let group = self.group(parse_id(id, "Group")?, !exclude).await?;
                ok(group_json(self.workspace, &group, !exclude))
            }
            (&Method::PUT, ["Groups", id]) => {
                let id = parse_id(id, "Group")?;
                let body = read_json(req).await?;
                let name = body
                    .get("displayName")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad("invalidValue", "displayName: required, a string"))?;
                let change = GroupChange {
                    display_name: Some(name.to_owned()),
                    external_id: Some(
                        body.get("externalId")
                            .and_then(Value::as_str)
                            .map(str::to_owned),
                    ),
                    add: member_ids(body.get("members").unwrap_or(&Value::Null))?,
                    remove: Vec::new(),
                    replace_members: true,
                };
                self.store()
                    .scim_group_update(self.workspace, id, &change)
                    .await?;
                ok(group_json(
                    self.workspace,
                    &self.group(id, true).await?,
                    true,
                ))
            }
            (&Method::PATCH, ["Groups", id]) => {
                let id = parse_id(id, "Group")?;
                let ops = operations(&read_json(req).await?)?;
                // Exists at all?
                self.group(id, false).await?;
                let mut change = GroupChange::default();
                for (op, path, value) in ops {
                    group_operation(&mut change, &op, path.as_deref(), value)?;
                }
                self.store()
                    .scim_group_update(self.workspace, id, &change)
                    .await?;
                Ok(no_content())
            }
            (&Method::DELETE, ["Groups", id]) => {
                let id = parse_id(id, "Group")?;
                self.store().scim_group_delete(self.workspace, id).await?;
                Ok(no_content())
            }
            _ => Err(not_found(format!(
                "no SCIM endpoint {method} /{}",
                rest.join("/")
            ))),
        }
    }

    async fn user(&self, id: i64) -> Result<ScimUser, Error> {
        self.store()
            .scim_user(self.workspace, id)
            .await?
            .ok_or_else(|| not_found(format!("no User with id {id}")))
    }

    async fn group(&self, id: i64, members: bool) -> Result<ScimGroup, Error> {
        self.store()
            .scim_group(self.workspace, id, members)
            .await?
            .ok_or_else(|| not_found(format!("no Group with id {id}")))
    }

    async fn replace_user(&self, id: i64, fields: &UserFields) -> Result<(), Error> {
        let before = self.user(id).await?;
        self.store()
            .scim_user_replace(self.workspace, id, fields)
            .await?;
        if before.active != fields.active {
            tracing::info!(workspace = %self.workspace, member = %fields.user_name, active = fields.active,
                "SCIM: member {}", if fields.active { "reactivated" } else { "deactivated" });
        }
        Ok(())
    }
}

/// Folds one Group PATCH operation into `change`.
fn group_operation(
    change: &mut GroupChange,
    op: &str,
    path: Option<&str>,
    value: Value,
) -> Result<(), Error> {
    let Some(path) = path else {
        let Value::Object(attrs) = value else {
            return Err(bad(
                "invalidValue",
                "an operation without a path needs an object value",
            ));
        };
        for (k, v) in attrs {
            if k.eq_ignore_ascii_case("id")
                || k.eq_ignore_ascii_case("schemas")
                || k.eq_ignore_ascii_case("meta")
            {
                continue;
            }
            group_operation(change, op, Some(&k), v)?;
        }
        return Ok(());
    };
    if path.eq_ignore_ascii_case("displayName") {
        match (op, value) {
            ("remove", _) => return Err(bad("mutability", "displayName is required")),
            (_, Value::String(s)) => change.display_name = Some(s),
            _ => return Err(bad("invalidValue", "displayName: a string")),
        }
    } else if path.eq_ignore_ascii_case("externalId") {
        change.external_id = Some(match (op, value) {
            ("remove", _) | (_, Value::Null) => None,
            (_, Value::String(s)) => Some(s),
            _ => return Err(bad("invalidValue", "externalId: a string")),
        });
    } else if path.eq_ignore_ascii_case("members") {
        let ids = member_ids(&value)?;
        match op {
            "add" => change.add.extend(ids),
            // Entra ID names the members to remove in the value; no value removes everyone.
            "remove" if value.is_null() => {
                change.replace_members = true;
                change.add.clear();
            }
            "remove" => change.remove.extend(ids),
            _ => {
                change.replace_members = true;
                change.add = ids;
            }
        }
    } else if let Some(filter) = path
        .strip_prefix("members[")
        .and_then(|p| p.strip_suffix(']'))
    {
        // Okta: members[value eq "12"]
        let Filter::Name(id) = parse_filter(filter, "value")? else {
            return Err(bad("invalidPath", path.to_owned()));
        };
        let id: i64 = id
            .parse()
            .map_err(|_| bad("invalidValue", "members: the value of a User id"))?;
        if op != "remove" {
            return Err(bad("invalidPath", "members[…] only with remove"));
        }
        change.remove.push(id);
    } else {
        return Err(bad(
            "invalidPath",
            format!("Group has no attribute {path:?}"),
        ));
    }
    Ok(())
}

fn no_content() -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::NO_CONTENT;
    resp
}

fn service_provider_config() -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
        "documentationUri": "https://github.com/mcpgw/mcpgw/blob/main/docs/admin-api.md#scim-20",
        "patch": {"supported": true},
        "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
        "filter": {"supported": true, "maxResults": MAX_RESULTS},
        "changePassword": {"supported": false},
        "sort": {"supported": false},
        "etag": {"supported": false},
        "authenticationSchemes": [{
            "type": "oauthbearertoken",
            "name": "Bearer token",
            "description": "The workspace's SCIM token, issued by `mcpgw scim token WORKSPACE`",
            "primary": true,
        }],
        "meta": {"resourceType": "ServiceProviderConfig"},
    })
}

fn resource_type(name: &str, schema: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
        "id": name,
        "name": name,
        "endpoint": format!("/{name}s"),
        "schema": schema,
        "meta": {"resourceType": "ResourceType"},
    })
}

/// One attribute of a published schema (RFC 7643 §7).
fn attribute(
    name: &str,
    kind: &str,
    required: bool,
    case_exact: bool,
    mutability: &str,
    uniqueness: &str,
) -> Value {
    json!({
        "name": name, "type": kind, "multiValued": false, "required": required,
        "caseExact": case_exact, "mutability": mutability, "returned": "default",
        "uniqueness": uniqueness,
    })
}

/// A plain read-write string.
fn string(name: &str) -> Value {
    attribute(name, "string", false, false, "readWrite", "none")
}

/// A complex attribute with its sub-attributes.
fn complex(name: &str, multi: bool, mutability: &str, sub: Vec<Value>) -> Value {
    json!({
        "name": name, "type": "complex", "multiValued": multi, "required": false,
        "mutability": mutability, "returned": "default", "uniqueness": "none",
        "subAttributes": sub,
    })
}

/// A multi-valued attribute such as `emails` (RFC 7643 §2.4).
fn multi_valued(name: &str) -> Value {
    complex(
        name,
        true,
        "readWrite",
        vec![
            string("value"),
            string("display"),
            string("type"),
            attribute("primary", "boolean", false, false, "readWrite", "none"),
        ],
    )
}

/// References to users or groups: `value`, `$ref`, `display`, `type`.
fn reference(name: &str, mutability: &str, to: &str) -> Value {
    complex(
        name,
        true,
        mutability,
        vec![
            attribute("value", "string", false, true, "immutable", "none"),
            json!({"name": "$ref", "type": "reference", "referenceTypes": [to], "multiValued": false,
                   "required": false, "caseExact": true, "mutability": "immutable",
                   "returned": "default", "uniqueness": "none"}),
            attribute("display", "string", false, false, "readOnly", "none"),
            attribute("type", "string", false, false, "immutable", "none"),
        ],
    )
}

/// The core User schema's attributes (RFC 7643 §4.1): clients that build their models from
/// `/Schemas` (scim2-client does) then accept what is kept and returned.
fn user_schema() -> Value {
    let name = complex(
        "name",
        false,
        "readWrite",
        [
            "formatted",
            "familyName",
            "givenName",
            "middleName",
            "honorificPrefix",
            "honorificSuffix",
        ]
        .into_iter()
        .map(string)
        .collect(),
    );
    let addresses = complex(
        "addresses",
        true,
        "readWrite",
        [
            "formatted",
            "streetAddress",
            "locality",
            "region",
            "postalCode",
            "country",
            "type",
        ]
        .into_iter()
        .map(string)
        .chain([attribute(
            "primary",
            "boolean",
            false,
            false,
            "readWrite",
            "none",
        )])
        .collect(),
    );
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Schema"],
        "id": USER,
        "name": "User",
        "description": "A member of the workspace; other attributes are kept as sent",
        "attributes": [
            attribute("userName", "string", true, false, "readWrite", "server"),
            name,
            string("displayName"),
            string("nickName"),
            attribute("profileUrl", "reference", false, false, "readWrite", "none"),
            string("title"),
            string("userType"),
            string("preferredLanguage"),
            string("locale"),
            string("timezone"),
            attribute("active", "boolean", false, false, "readWrite", "none"),
            multi_valued("emails"),
            multi_valued("phoneNumbers"),
            multi_valued("ims"),
            multi_valued("photos"),
            addresses,
            reference("groups", "readOnly", "Group"),
            multi_valued("entitlements"),
            multi_valued("roles"),
        ],
        "meta": {"resourceType": "Schema", "location": format!("/Schemas/{USER}")},
    })
}

fn group_schema() -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Schema"],
        "id": GROUP,
        "name": "Group",
        "description": "A group; its members hold the role an admin mapped to it",
        "attributes": [
            attribute("displayName", "string", true, true, "readWrite", "server"),
            reference("members", "readWrite", "User"),
        ],
        "meta": {"resourceType": "Schema", "location": format!("/Schemas/{GROUP}")},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_in_the_forms_providers_send() {
        assert!(
            matches!(parse_filter("userName eq \"alice@example.com\"", "userName"), Ok(Filter::Name(n)) if n == "alice@example.com")
        );
        assert!(
            matches!(parse_filter("username EQ \"a\\\"b\"", "userName"), Ok(Filter::Name(n)) if n == "a\"b")
        );
        assert!(
            matches!(parse_filter("externalId eq \"00u1\"", "userName"), Ok(Filter::ExternalId(n)) if n == "00u1")
        );
        assert!(matches!(
            parse_filter("id eq \"x\"", "userName"),
            Ok(Filter::Id(-1))
        ));
        assert!(matches!(
            parse_filter(
                "urn:ietf:params:scim:schemas:core:2.0:User:userName eq \"a\"",
                "userName"
            ),
            Ok(Filter::Name(_))
        ));
        for refused in [
            "userName sw \"a\"",
            "emails eq \"a\"",
            "userName eq a",
            "userName",
            "",
        ] {
            assert!(parse_filter(refused, "userName").is_err(), "{refused}");
        }
    }

    #[test]
    fn user_patches_as_okta_and_entra_send_them() {
        let mut body: Map<String, Value> = serde_json::from_value(json!({
            "userName": "alice@example.com", "active": true,
            "emails": [{"type": "work", "value": "alice@example.com", "primary": true}]
        }))
        .unwrap();
        // Entra ID: capitalised op, string boolean.
        patch_user(&mut body, "replace", Some("active"), json!("False")).unwrap();
        patch_user(
            &mut body,
            "replace",
            Some("emails[type eq \"work\"].value"),
            json!("a@new.example"),
        )
        .unwrap();
        patch_user(&mut body, "add", Some("name.givenName"), json!("Alice")).unwrap();
        patch_user(
            &mut body,
            "add",
            Some("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department"),
            json!("R&D"),
        )
        .unwrap();
        // Okta: no path, a value object.
        patch_user(
            &mut body,
            "replace",
            None,
            json!({"displayName": "Alice A."}),
        )
        .unwrap();
        let fields = user_fields(&Value::Object(body.clone())).unwrap();
        assert!(!fields.active);
        let attrs: Value = serde_json::from_str(&fields.attributes).unwrap();
        assert_eq!(attrs["emails"][0]["value"], "a@new.example");
        assert_eq!(attrs["name"]["givenName"], "Alice");
        assert_eq!(
            attrs["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"]["department"],
            "R&D"
        );
        assert_eq!(attrs["displayName"], "Alice A.");
        assert!(patch_user(&mut body, "remove", Some("active"), Value::Null).is_err());
        assert!(user_fields(&json!({"userName": "bob", "active": "maybe"})).is_err());
        let with_password =
            user_fields(&json!({"userName": "bob", "password": "hunter2"})).unwrap();
        assert!(
            !with_password.attributes.contains("hunter2"),
            "a password is never kept"
        );
    }

    #[test]
    fn group_patches_as_okta_and_entra_send_them() {
        let mut c = GroupChange::default();
        group_operation(
            &mut c,
            "add",
            Some("members"),
            json!([{"value": "3"}, {"value": "4"}]),
        )
        .unwrap();
        group_operation(
            &mut c,
            "remove",
            Some("members[value eq \"5\"]"),
            Value::Null,
        )
        .unwrap();
        group_operation(&mut c, "remove", Some("members"), json!([{"value": "6"}])).unwrap();
        group_operation(
            &mut c,
            "replace",
            None,
            json!({"id": "9", "displayName": "eng"}),
        )
        .unwrap();
        assert_eq!(
            (c.add.as_slice(), c.remove.as_slice()),
            (&[3, 4][..], &[5, 6][..])
        );
        assert_eq!(c.display_name.as_deref(), Some("eng"));
        assert!(!c.replace_members);
        group_operation(&mut c, "replace", Some("members"), json!([{"value": "7"}])).unwrap();
        assert!(c.replace_members && c.add == [7]);
        assert!(group_operation(&mut c, "add", Some("owner"), json!("x")).is_err());
        assert!(group_operation(&mut c, "add", Some("members"), json!([{"value": "x"}])).is_err());
    }
}
