//! A fake Hetzner Cloud API on loopback, so the daon-snapshot tests (and the
//! official `hcloud` CLI, which proves the fake faithful) can create, wait for,
//! list and delete snapshots without a real project — and meet on demand the
//! failures the real API only shows on bad days: 5xx, slow answers, `locked`,
//! 429 with `RateLimit-Reset`, an action that ends in `error`, a POST that
//! answers 503 yet creates the image.
//!
//! API under `/v1` (Bearer token required). Test controls under `/admin`
//! (no token), also callable in-process with [`Fake::admin`]:
//! - `POST /admin/servers` `{name, labels?, backup_window?, id?}` → the server
//! - `POST /admin/images` `{type, status?, description?, created? | age_secs?,
//!   created_from? (server id), bound_to?, labels?, protected?, image_size?}` → the image
//! - `POST /admin/fail` `{path, method?, status, code?, message?, times?, apply?}`:
//!   the next `times` matching requests answer this error; with `apply` the
//!   request is carried out first (a POST that fails yet creates the image)
//! - `POST /admin/delay` `{path, ms, times?}`: slow answers (client timeouts)
//! - `POST /admin/rate_limit` `{reset_in_secs}`: every API request gets 429 until then
//! - `POST /admin/action_error` `{code, message}`: the next action ends in `error`
//! - `POST /admin/action_duration` `{ms}`: how long new actions run
//! - `POST /admin/lock` `{server, ms}`: an action of someone else runs on the server
//! - `GET /admin/requests`: every request seen (method, path, query, authorized)

pub mod http;
pub mod selector;

use chrono::{DateTime, SecondsFormat, Utc};
use http::{Request, Response};
use selector::Selector;
use serde_json::{json, Map, Value};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

const RATE_LIMIT: u64 = 3600;

#[derive(Debug, Clone)]
struct FailRule {
    method: String,
    path: String,
    status: u16,
    code: String,
    message: String,
    times: u64,
    apply: bool,
}

#[derive(Debug, Clone)]
struct DelayRule {
    path: String,
    ms: u64,
    times: u64,
}

#[derive(Debug, Clone)]
struct Action {
    id: u64,
    command: String,
    resources: Vec<(u64, &'static str)>,
    started: DateTime<Utc>,
    start: Instant,
    duration: Duration,
    status: &'static str,
    finished: Option<DateTime<Utc>>,
    error: Option<(String, String)>,
    fail: Option<(String, String)>,
}

impl Action {
    fn server(&self) -> Option<u64> {
        self.resources
            .iter()
            .find(|(_, t)| *t == "server")
            .map(|(id, _)| *id)
    }

    fn progress(&self) -> u64 {
        match self.status {
            "success" => 100,
            "running" => {
                let f = self.start.elapsed().as_secs_f64() / self.duration.as_secs_f64().max(1e-3);
                ((f * 100.0) as u64).min(99)
            }
            _ => {
                let f = self.duration.as_secs_f64().max(1e-3);
                ((self.start.elapsed().as_secs_f64().min(f) / f * 100.0) as u64).min(99)
            }
        }
    }

    fn json(&self) -> Value {
        json!({
            "id": self.id,
            "command": self.command,
            "status": self.status,
            "progress": self.progress(),
            "started": ts(self.started),
            "finished": self.finished.map(ts),
            "resources": self.resources.iter().map(|(id, t)| json!({"id": id, "type": t})).collect::<Vec<_>>(),
            "error": self.error.as_ref().map(|(c, m)| json!({"code": c, "message": m})),
        })
    }
}

#[derive(Debug)]
struct State {
    token: String,
    next_server: u64,
    next_image: u64,
    next_action: u64,
    servers: Vec<Value>,
    images: Vec<Value>,
    actions: Vec<Action>,
    fail: Vec<FailRule>,
    delay: Vec<DelayRule>,
    rate_limited_until: Option<(Instant, i64)>,
    next_action_error: Option<(String, String)>,
    action_duration: Duration,
    remaining: u64,
    requests: Vec<Value>,
}

struct Shared {
    state: Mutex<State>,
    stop: AtomicBool,
}

/// A running fake; stops when dropped.
pub struct Fake {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, false)
}

fn err(status: u16, code: &str, message: &str) -> Response {
    Response::json(
        status,
        &json!({"error": {"code": code, "message": message, "details": null}}),
    )
}

fn not_found(what: &str) -> Response {
    err(404, "not_found", &format!("{what} not found"))
}

fn invalid(field: &str, message: &str) -> Response {
    Response::json(
        422,
        &json!({"error": {"code": "invalid_input", "message": format!("invalid input in field '{field}'"),
            "details": {"fields": [{"name": field, "messages": [message]}]}}}),
    )
}

impl Fake {
    /// Starts a fake on 127.0.0.1 with an ephemeral port, accepting `token`.
    pub fn start(token: &str) -> std::io::Result<Fake> {
        Self::start_on("127.0.0.1:0", token)
    }

    /// Starts a fake on `listen`.
    pub fn start_on(listen: &str, token: &str) -> std::io::Result<Fake> {
        let listener = TcpListener::bind(listen)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                token: token.to_string(),
                next_server: 40_000_001,
                next_image: 150_000_001,
                next_action: 1_700_000_001,
                servers: Vec::new(),
                images: vec![system_image()],
                actions: Vec::new(),
                fail: Vec::new(),
                delay: Vec::new(),
                rate_limited_until: None,
                next_action_error: None,
                action_duration: Duration::from_millis(1500),
                remaining: RATE_LIMIT,
                requests: Vec::new(),
            }),
            stop: AtomicBool::new(false),
        });
        let sh = shared.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if sh.stop.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = conn {
                    let sh = sh.clone();
                    std::thread::spawn(move || serve(&sh, stream));
                }
            }
        });
        Ok(Fake { addr, shared })
    }

    /// The API endpoint, for `HCLOUD_ENDPOINT`: `http://127.0.0.1:PORT/v1`.
    pub fn endpoint(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Calls an admin control in-process (same as `POST /admin/<what>`).
    pub fn admin(&self, what: &str, body: Value) -> Value {
        let req = Request {
            method: if what == "requests" { "GET" } else { "POST" }.into(),
            path: format!("/admin/{what}"),
            query: String::new(),
            headers: Vec::new(),
            body: body.to_string().into_bytes(),
        };
        let mut st = lock(&self.shared);
        let r = admin(&mut st, &req);
        r.body
            .and_then(|b| serde_json::from_str(&b).ok())
            .unwrap_or(Value::Null)
    }

    /// Adds a server and returns its id.
    pub fn add_server(&self, name: &str) -> u64 {
        self.admin("servers", json!({"name": name}))["id"]
            .as_u64()
            .unwrap_or(0)
    }

    /// Adds an image (see the module doc for fields) and returns its id.
    pub fn add_image(&self, spec: Value) -> u64 {
        self.admin("images", spec)["id"].as_u64().unwrap_or(0)
    }

    /// The API requests seen so far (admin calls excluded).
    pub fn requests(&self) -> Vec<Value> {
        lock(&self.shared).requests.clone()
    }

    /// Every snapshot and backup image currently known, as the API shows them.
    pub fn images(&self) -> Vec<Value> {
        let mut st = lock(&self.shared);
        tick(&mut st);
        st.images
            .iter()
            .filter(|i| i["type"] != "system")
            .cloned()
            .collect()
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

fn lock(sh: &Shared) -> MutexGuard<'_, State> {
    sh.state.lock().unwrap_or_else(|p| p.into_inner())
}

fn serve(sh: &Shared, stream: TcpStream) {
    let req = match http::read_request(&stream) {
        Ok(Some(r)) => r,
        _ => return,
    };
    let resp = handle(sh, &req);
    let _ = resp.write_to(&stream);
}

fn handle(sh: &Shared, req: &Request) -> Response {
    if req.path.starts_with("/admin/") {
        return admin(&mut lock(sh), req);
    }
    // Delays are served outside the lock so other requests go on meanwhile.
    let delay = {
        let mut st = lock(sh);
        let mut d = None;
        for rule in st.delay.iter_mut() {
            if rule.times > 0 && req.path.contains(&rule.path) {
                rule.times -= 1;
                d = Some(Duration::from_millis(rule.ms));
                break;
            }
        }
        st.delay.retain(|r| r.times > 0);
        d
    };
    if let Some(d) = delay {
        std::thread::sleep(d);
    }
    let mut st = lock(sh);
    let authorized = req
        .header("authorization")
        .and_then(|h| h.strip_prefix("Bearer "))
        .is_some_and(|t| t == st.token);
    st.requests.push(json!({
        "method": req.method, "path": req.path, "query": http::decode(&req.query),
        "authorized": authorized,
    }));
    tick(&mut st);
    let mut resp = route(&mut st, req, authorized);
    let reset = Utc::now().timestamp() + (RATE_LIMIT - st.remaining) as i64;
    let (remaining, reset) = match st.rate_limited_until {
        Some((_, at)) if resp.status == 429 => (0, at),
        _ => (st.remaining, reset),
    };
    resp.headers
        .push(("RateLimit-Limit".into(), RATE_LIMIT.to_string()));
    resp.headers
        .push(("RateLimit-Remaining".into(), remaining.to_string()));
    resp.headers
        .push(("RateLimit-Reset".into(), reset.to_string()));
    resp
}

fn route(st: &mut State, req: &Request, authorized: bool) -> Response {
    let Some(path) = req.path.strip_prefix("/v1") else {
        return not_found("route");
    };
    if !authorized {
        return err(401, "unauthorized", "unable to authenticate");
    }
    if let Some((until, _)) = st.rate_limited_until {
        if Instant::now() < until {
            return err(
                429,
                "rate_limit_exceeded",
                "limit of 3600 requests per hour reached",
            );
        }
        st.rate_limited_until = None;
    }
    st.remaining = st.remaining.saturating_sub(1);
    let rule = st
        .fail
        .iter_mut()
        .find(|r| {
            r.times > 0
                && (r.method == "*" || r.method.eq_ignore_ascii_case(&req.method))
                && path.contains(&r.path)
        })
        .map(|r| {
            r.times -= 1;
            r.clone()
        });
    st.fail.retain(|r| r.times > 0);
    if let Some(r) = &rule {
        if !r.apply {
            return err(r.status, &r.code, &r.message);
        }
    }
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let resp = match (req.method.as_str(), segs.as_slice()) {
        ("GET", ["servers"]) => list_servers(st, req),
        ("GET", ["servers", id]) => match find(&st.servers, id) {
            Some(s) => Response::json(200, &json!({"server": server_view(st, s)})),
            None => not_found("server"),
        },
        ("GET", ["servers", id, "actions"]) => match find(&st.servers, id) {
            Some(s) => {
                let sid = s["id"].as_u64();
                let statuses = req.query_all("status");
                let items: Vec<Value> = st
                    .actions
                    .iter()
                    .filter(|a| a.server() == sid)
                    .filter(|a| statuses.is_empty() || statuses.iter().any(|x| x == a.status))
                    .map(Action::json)
                    .collect();
                list_response(req, "actions", items)
            }
            None => not_found("server"),
        },
        ("POST", ["servers", id, "actions", "create_image"]) => create_image(st, id, req),
        ("POST", ["servers", id, "actions", "enable_backup"]) => enable_backup(st, id),
        ("GET", ["images"]) => list_images(st, req),
        ("GET", ["images", id]) => match find(&st.images, id) {
            Some(i) => Response::json(200, &json!({"image": i})),
            None => not_found("image"),
        },
        ("DELETE", ["images", id]) => delete_image(st, id),
        ("GET", ["actions"]) => {
            let ids: Vec<u64> = req
                .query_all("id")
                .iter()
                .filter_map(|i| i.parse().ok())
                .collect();
            if ids.is_empty() {
                return invalid("id", "is required");
            }
            let statuses = req.query_all("status");
            let items: Vec<Value> = st
                .actions
                .iter()
                .filter(|a| ids.contains(&a.id))
                .filter(|a| statuses.is_empty() || statuses.iter().any(|x| x == a.status))
                .map(Action::json)
                .collect();
            list_response(req, "actions", items)
        }
        ("GET", ["actions", id]) => {
            match st
                .actions
                .iter()
                .find(|a| id.parse::<u64>().ok() == Some(a.id))
            {
                Some(a) => Response::json(200, &json!({"action": a.json()})),
                None => not_found("action"),
            }
        }
        _ => not_found("route"),
    };
    match rule {
        Some(r) => err(r.status, &r.code, &r.message),
        None => resp,
    }
}

fn find<'a>(items: &'a [Value], id: &str) -> Option<&'a Value> {
    let id: u64 = id.parse().ok()?;
    items.iter().find(|v| v["id"].as_u64() == Some(id))
}

fn server_view(st: &State, s: &Value) -> Value {
    let mut s = s.clone();
    let sid = s["id"].as_u64();
    s["locked"] = json!(st
        .actions
        .iter()
        .any(|a| a.status == "running" && a.server() == sid));
    s
}

/// Applies `sort`, then `page`/`per_page`, and builds `{key: [...], meta}`.
fn list_response(req: &Request, key: &str, mut items: Vec<Value>) -> Response {
    for s in req.query_all("sort").iter().rev() {
        let (field, dir) = s.split_once(':').unwrap_or((s, "asc"));
        if ![
            "id", "name", "created", "started", "command", "status", "finished",
        ]
        .contains(&field)
        {
            return invalid("sort", &format!("unknown sort field {field:?}"));
        }
        items.sort_by(|a, b| {
            let o = match (&a[field], &b[field]) {
                (Value::Number(x), Value::Number(y)) => x
                    .as_f64()
                    .partial_cmp(&y.as_f64())
                    .unwrap_or(std::cmp::Ordering::Equal),
                (x, y) => x.to_string().cmp(&y.to_string()),
            };
            if dir == "desc" {
                o.reverse()
            } else {
                o
            }
        });
    }
    let per_page = match req.query("per_page").map(|p| p.parse::<u64>()) {
        None => 25,
        Some(Ok(n)) if (1..=50).contains(&n) => n,
        Some(_) => return invalid("per_page", "must be between 1 and 50"),
    };
    let page = match req.query("page").map(|p| p.parse::<u64>()) {
        None => 1,
        Some(Ok(n)) if n >= 1 => n,
        Some(_) => return invalid("page", "must be at least 1"),
    };
    let total = items.len() as u64;
    let last = total.div_ceil(per_page).max(1);
    let slice: Vec<Value> = items
        .into_iter()
        .skip(((page - 1) * per_page) as usize)
        .take(per_page as usize)
        .collect();
    let mut body = Map::new();
    body.insert(key.into(), Value::Array(slice));
    body.insert(
        "meta".into(),
        json!({"pagination": {
            "page": page, "per_page": per_page,
            "previous_page": (page > 1).then(|| page - 1),
            "next_page": (page < last).then(|| page + 1),
            "last_page": last, "total_entries": total,
        }}),
    );
    let mut r = Response::json(200, &Value::Object(body));
    if page < last {
        r.headers.push((
            "Link".into(),
            format!(
                "<{}?page={}&per_page={per_page}>; rel=\"next\"",
                req.path,
                page + 1
            ),
        ));
    }
    r
}

fn selector(req: &Request) -> Result<Option<Selector>, Response> {
    match req.query("label_selector") {
        None => Ok(None),
        Some(s) if s.is_empty() => Ok(None),
        Some(s) => Selector::parse(&s)
            .map(Some)
            .map_err(|m| invalid("label_selector", &m)),
    }
}

fn list_servers(st: &State, req: &Request) -> Response {
    let sel = match selector(req) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let name = req.query("name");
    let statuses = req.query_all("status");
    let items = st
        .servers
        .iter()
        .filter(|s| name.as_ref().is_none_or(|n| s["name"] == n.as_str()))
        .filter(|s| statuses.is_empty() || statuses.iter().any(|x| s["status"] == x.as_str()))
        .filter(|s| sel.as_ref().is_none_or(|l| l.matches(&s["labels"])))
        .map(|s| server_view(st, s))
        .collect();
    list_response(req, "servers", items)
}

fn list_images(st: &State, req: &Request) -> Response {
    let sel = match selector(req) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let types = req.query_all("type");
    for t in &types {
        if !["system", "app", "snapshot", "backup"].contains(&t.as_str()) {
            return invalid("type", &format!("unknown image type {t:?}"));
        }
    }
    let statuses = req.query_all("status");
    let bound_to: Vec<u64> = req
        .query_all("bound_to")
        .iter()
        .filter_map(|b| b.parse().ok())
        .collect();
    let name = req.query("name");
    let arch = req.query("architecture");
    let items = st
        .images
        .iter()
        .filter(|i| types.is_empty() || types.iter().any(|t| i["type"] == t.as_str()))
        .filter(|i| statuses.is_empty() || statuses.iter().any(|s| i["status"] == s.as_str()))
        .filter(|i| {
            bound_to.is_empty()
                || i["bound_to"]
                    .as_u64()
                    .is_some_and(|b| bound_to.contains(&b))
        })
        .filter(|i| name.as_ref().is_none_or(|n| i["name"] == n.as_str()))
        .filter(|i| {
            arch.as_ref()
                .is_none_or(|a| i["architecture"] == a.as_str())
        })
        .filter(|i| sel.as_ref().is_none_or(|l| l.matches(&i["labels"])))
        .cloned()
        .collect();
    list_response(req, "images", items)
}

fn new_action(st: &mut State, command: &str, resources: Vec<(u64, &'static str)>) -> Action {
    let id = st.next_action;
    st.next_action += 1;
    let a = Action {
        id,
        command: command.into(),
        resources,
        started: Utc::now(),
        start: Instant::now(),
        duration: st.action_duration,
        status: "running",
        finished: None,
        error: None,
        fail: st.next_action_error.take(),
    };
    st.actions.push(a.clone());
    a
}

fn locked(st: &State, sid: u64) -> bool {
    st.actions
        .iter()
        .any(|a| a.status == "running" && a.server() == Some(sid))
}

fn create_image(st: &mut State, id: &str, req: &Request) -> Response {
    let Some(server) = find(&st.servers, id).cloned() else {
        return not_found("server");
    };
    let sid = server["id"].as_u64().unwrap_or(0);
    let body: Value = if req.body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(&req.body) {
            Ok(v) => v,
            Err(e) => return err(422, "json_error", &format!("invalid JSON: {e}")),
        }
    };
    let Some(obj) = body.as_object() else {
        return err(422, "json_error", "body must be a JSON object");
    };
    for k in obj.keys() {
        if !["description", "type", "labels"].contains(&k.as_str()) {
            return invalid(k, "unknown field");
        }
    }
    let kind = obj
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("snapshot");
    if !["snapshot", "backup"].contains(&kind) {
        return invalid("type", "must be snapshot or backup");
    }
    let labels = obj.get("labels").cloned().unwrap_or(json!({}));
    if !labels.is_object()
        || labels
            .as_object()
            .is_some_and(|m| m.values().any(|v| !v.is_string()))
    {
        return invalid("labels", "must be an object of strings");
    }
    if obj
        .get("description")
        .is_some_and(|d| !d.is_string() && !d.is_null())
    {
        return invalid("description", "must be a string");
    }
    if locked(st, sid) {
        return err(423, "locked", "server is locked by another action");
    }
    let image = new_image(
        st,
        &json!({
            "type": kind, "status": "creating", "created_from": sid,
            "description": obj.get("description").cloned().unwrap_or(Value::Null),
            "labels": labels, "image_size": null,
        }),
    );
    let iid = image["id"].as_u64().unwrap_or(0);
    let a = new_action(st, "create_image", vec![(sid, "server"), (iid, "image")]);
    Response::json(201, &json!({"image": image, "action": a.json()}))
}

fn enable_backup(st: &mut State, id: &str) -> Response {
    let Some(server) = find(&st.servers, id).cloned() else {
        return not_found("server");
    };
    let sid = server["id"].as_u64().unwrap_or(0);
    if locked(st, sid) {
        return err(423, "locked", "server is locked by another action");
    }
    let a = new_action(st, "enable_backup", vec![(sid, "server")]);
    Response::json(201, &json!({"action": a.json()}))
}

fn delete_image(st: &mut State, id: &str) -> Response {
    let Some(img) = find(&st.images, id).cloned() else {
        return not_found("image");
    };
    if img["type"] != "snapshot" && img["type"] != "backup" {
        return err(
            403,
            "forbidden",
            "only snapshot and backup images can be deleted",
        );
    }
    if img["protection"]["delete"] == true {
        return err(423, "protected", "image is delete protected");
    }
    st.images.retain(|i| i["id"] != img["id"]);
    Response::empty(204)
}

/// Finishes actions whose time is up: creating images become available (or
/// vanish if the action fails), backups get a window.
fn tick(st: &mut State) {
    let now = Utc::now();
    let mut done = Vec::new();
    for a in st.actions.iter_mut() {
        if a.status == "running" && a.start.elapsed() >= a.duration {
            a.finished = Some(now);
            match a.fail.take() {
                Some(e) => {
                    a.status = "error";
                    a.error = Some(e);
                }
                None => a.status = "success",
            }
            done.push(a.clone());
        }
    }
    for a in done {
        let image = a.resources.iter().find(|(_, t)| *t == "image").map(|r| r.0);
        match (a.command.as_str(), a.status, image) {
            ("create_image", "success", Some(iid)) => {
                if let Some(i) = st.images.iter_mut().find(|i| i["id"] == iid) {
                    i["status"] = json!("available");
                    i["image_size"] = json!(1.25);
                }
            }
            ("create_image", _, Some(iid)) => st.images.retain(|i| i["id"] != iid),
            ("enable_backup", "success", _) => {
                if let Some(s) = st
                    .servers
                    .iter_mut()
                    .find(|s| s["id"].as_u64() == a.server())
                {
                    s["backup_window"] = json!("22-02");
                }
            }
            _ => {}
        }
    }
}

fn system_image() -> Value {
    json!({
        "id": 67794396, "type": "system", "status": "available", "name": "ubuntu-22.04",
        "description": "Ubuntu 22.04", "image_size": null, "disk_size": 5,
        "created": "2022-04-21T13:32:38+00:00", "created_from": null, "bound_to": null,
        "os_flavor": "ubuntu", "os_version": "22.04", "architecture": "x86",
        "rapid_deploy": true, "protection": {"delete": false}, "deprecated": null,
        "deleted": null, "labels": {},
    })
}

fn new_image(st: &mut State, spec: &Value) -> Value {
    let id = spec["id"].as_u64().unwrap_or_else(|| {
        st.next_image += 1;
        st.next_image - 1
    });
    let created = match (spec["created"].as_str(), spec["age_secs"].as_f64()) {
        (Some(c), _) => c.to_string(),
        (None, Some(age)) => ts(Utc::now() - chrono::Duration::milliseconds((age * 1000.0) as i64)),
        _ => ts(Utc::now()),
    };
    let from = spec["created_from"].as_u64();
    let from_name = from.and_then(|f| {
        st.servers
            .iter()
            .find(|s| s["id"].as_u64() == Some(f))
            .map(|s| s["name"].clone())
    });
    let kind = spec["type"].as_str().unwrap_or("snapshot");
    let image = json!({
        "id": id,
        "type": kind,
        "status": spec["status"].as_str().unwrap_or("available"),
        "name": null,
        "description": spec["description"].as_str().map(str::to_string)
            .unwrap_or_else(|| format!("{kind} {id}")),
        "image_size": if spec.get("image_size").is_some() { spec["image_size"].clone() } else { json!(1.25) },
        "disk_size": 40,
        "created": created,
        "created_from": from.map(|f| json!({"id": f, "name": from_name.unwrap_or(json!("gone"))})),
        "bound_to": spec["bound_to"].as_u64().or(if kind == "backup" { from } else { None }),
        "os_flavor": "ubuntu",
        "os_version": null,
        "architecture": "x86",
        "rapid_deploy": false,
        "protection": {"delete": spec["protected"].as_bool().unwrap_or(false)},
        "deprecated": null,
        "deleted": null,
        "labels": if spec["labels"].is_object() { spec["labels"].clone() } else { json!({}) },
    });
    st.images.push(image.clone());
    image
}

fn new_server(st: &mut State, spec: &Value) -> Value {
    let id = spec["id"].as_u64().unwrap_or_else(|| {
        st.next_server += 1;
        st.next_server - 1
    });
    let name = spec["name"].as_str().unwrap_or("server");
    let s = json!({
        "id": id,
        "name": name,
        "status": "running",
        "created": ts(Utc::now() - chrono::Duration::days(30)),
        "public_net": {
            "ipv4": {"id": id + 1000, "ip": "203.0.113.10", "blocked": false, "dns_ptr": format!("static.10.113.0.203.clients.your-server.de")},
            "ipv6": {"id": id + 2000, "ip": "2001:db8::/64", "blocked": false, "dns_ptr": []},
            "floating_ips": [],
            "firewalls": [],
        },
        "private_net": [],
        "server_type": {
            "id": 22, "name": "cx22", "description": "CX22", "cores": 2, "memory": 4.0, "disk": 40,
            "deprecated": false, "deprecation": null, "storage_type": "local", "cpu_type": "shared",
            "architecture": "x86", "included_traffic": 21990232555520u64,
            "prices": [{"location": "nbg1", "price_hourly": {"net": "0.0060", "gross": "0.0071"},
                        "price_monthly": {"net": "3.7900", "gross": "4.5101"},
                        "included_traffic": 21990232555520u64,
                        "price_per_tb_traffic": {"net": "1.0000", "gross": "1.1900"}}],
        },
        "datacenter": {
            "id": 2, "name": "nbg1-dc3", "description": "Nuremberg 1 virtual DC 3",
            "location": {"id": 2, "name": "nbg1", "description": "Nuremberg DC Park 1", "country": "DE",
                         "city": "Nuremberg", "latitude": 49.452102, "longitude": 11.076665,
                         "network_zone": "eu-central"},
            "server_types": {"supported": [22], "available": [22], "available_for_migration": [22]},
        },
        "image": system_image(),
        "iso": null,
        "rescue_enabled": false,
        "locked": false,
        "backup_window": spec.get("backup_window").cloned().unwrap_or(Value::Null),
        "outgoing_traffic": 0,
        "ingoing_traffic": 0,
        "included_traffic": 21990232555520u64,
        "protection": {"delete": false, "rebuild": false},
        "labels": if spec["labels"].is_object() { spec["labels"].clone() } else { json!({}) },
        "volumes": [],
        "load_balancers": [],
        "primary_disk_size": 40,
        "placement_group": null,
    });
    st.servers.push(s.clone());
    s
}

fn admin(st: &mut State, req: &Request) -> Response {
    let body: Value = serde_json::from_slice(&req.body).unwrap_or(json!({}));
    let s = |k: &str, d: &str| body[k].as_str().unwrap_or(d).to_string();
    match (req.method.as_str(), req.path.as_str()) {
        ("POST", "/admin/servers") => Response::json(201, &new_server(st, &body)),
        ("POST", "/admin/images") => Response::json(201, &new_image(st, &body)),
        ("POST", "/admin/fail") => {
            let status = body["status"].as_u64().unwrap_or(503) as u16;
            let code = match status {
                500 => "server_error",
                502 => "bad_gateway",
                503 => "unavailable",
                504 => "timeout",
                409 => "conflict",
                423 => "locked",
                _ => "server_error",
            };
            st.fail.push(FailRule {
                method: s("method", "*"),
                path: s("path", "/"),
                status,
                code: s("code", code),
                message: s("message", "service temporarily unavailable"),
                times: body["times"].as_u64().unwrap_or(1),
                apply: body["apply"].as_bool().unwrap_or(false),
            });
            Response::json(200, &json!({"ok": true}))
        }
        ("POST", "/admin/delay") => {
            st.delay.push(DelayRule {
                path: s("path", "/"),
                ms: body["ms"].as_u64().unwrap_or(1000),
                times: body["times"].as_u64().unwrap_or(1),
            });
            Response::json(200, &json!({"ok": true}))
        }
        ("POST", "/admin/rate_limit") => {
            let secs = body["reset_in_secs"].as_f64().unwrap_or(2.0);
            // RateLimit-Reset is a whole UNIX second: the limit lifts exactly then.
            let now_ms = Utc::now().timestamp_millis();
            let at = (now_ms + (secs * 1000.0) as i64 + 999) / 1000;
            let until = Instant::now() + Duration::from_millis((at * 1000 - now_ms).max(0) as u64);
            st.rate_limited_until = Some((until, at));
            Response::json(200, &json!({"reset": at}))
        }
        ("POST", "/admin/action_error") => {
            st.next_action_error =
                Some((s("code", "action_failed"), s("message", "action failed")));
            Response::json(200, &json!({"ok": true}))
        }
        ("POST", "/admin/action_duration") => {
            st.action_duration = Duration::from_millis(body["ms"].as_u64().unwrap_or(1500));
            Response::json(200, &json!({"ok": true}))
        }
        ("POST", "/admin/lock") => {
            let sid = body["server"].as_u64().unwrap_or(0);
            let saved = (st.action_duration, st.next_action_error.take());
            st.action_duration = Duration::from_millis(body["ms"].as_u64().unwrap_or(2000));
            let a = new_action(st, "change_protection", vec![(sid, "server")]);
            st.action_duration = saved.0;
            st.next_action_error = saved.1;
            Response::json(200, &a.json())
        }
        ("GET", "/admin/requests") => Response::json(200, &json!({"requests": st.requests})),
        _ => not_found("admin route"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(f: &Fake, method: &str, path: &str, auth: bool, body: &str) -> (u16, String) {
        use std::io::{Read, Write};
        let mut s = TcpStream::connect(f.addr()).unwrap();
        let auth = if auth {
            "Authorization: Bearer t\r\n"
        } else {
            ""
        };
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let status = out[9..12].parse().unwrap();
        (status, out)
    }

    #[test]
    fn admin_endpoint_over_http_injects_faults_and_the_api_wants_the_token() {
        let f = Fake::start("t").unwrap();
        f.add_server("s1");
        let (st, out) = raw(&f, "GET", "/v1/servers", false, "");
        assert_eq!(st, 401, "{out}");
        assert!(out.contains("unauthorized") && out.contains("Content-Type: application/json"));
        let (st, _) = raw(
            &f,
            "POST",
            "/admin/fail",
            false,
            r#"{"path":"/servers","status":503}"#,
        );
        assert_eq!(st, 200);
        let (st, out) = raw(&f, "GET", "/v1/servers", true, "");
        assert_eq!(st, 503, "{out}");
        assert!(out.contains("RateLimit-Reset: "), "{out}");
        let (st, out) = raw(
            &f,
            "GET",
            "/v1/servers?label_selector=a%3Db&per_page=1",
            true,
            "",
        );
        assert_eq!(st, 200, "{out}");
        assert!(out.contains(r#""servers":[]"#), "{out}");
        let (st, out) = raw(&f, "GET", "/v1/servers?name=s1", true, "");
        assert_eq!(st, 200);
        assert!(out.contains(r#""next_page":null"#), "{out}");
        let (st, out) = raw(&f, "GET", "/admin/requests", false, "");
        assert_eq!(st, 200);
        assert_eq!(out.matches(r#""method":"GET""#).count(), 4, "{out}");
    }

    #[test]
    fn create_image_then_it_becomes_available_and_locks_meanwhile() {
        let f = Fake::start("t").unwrap();
        f.admin("action_duration", json!({"ms": 300}));
        let sid = f.add_server("s1");
        let mut st = lock(&f.shared);
        let req = |m: &str, p: &str, body: &str| Request {
            method: m.into(),
            path: p.into(),
            query: String::new(),
            headers: vec![("authorization".into(), "Bearer t".into())],
            body: body.as_bytes().to_vec(),
        };
        let path = format!("/v1/servers/{sid}/actions/create_image");
        let r = route(&mut st, &req("POST", &path, r#"{"type":"snapshot"}"#), true);
        assert_eq!(r.status, 201);
        let r2 = route(&mut st, &req("POST", &path, "{}"), true);
        assert_eq!(r2.status, 423);
        let bad = route(&mut st, &req("POST", &path, r#"{"labels":[]}"#), true);
        assert_eq!(bad.status, 422);
        drop(st);
        std::thread::sleep(Duration::from_millis(350));
        let imgs = f.images();
        assert_eq!(imgs.len(), 1);
        assert_eq!(imgs[0]["status"], "available");
    }
}
