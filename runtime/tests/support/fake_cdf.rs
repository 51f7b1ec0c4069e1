//! A stateful fake CDF (wiremock) that answers as CDF does when it refuses items:
//!
//! - `POST /timeseries/data`: 400 with `missing: [{externalId}]` for series it does not have
//!   (`[{instanceId: {space, externalId}}]` for CogniteTimeSeries nodes it does not have);
//!   a bare 400 (no item list) when a series id starts with [`BAD`] or a numeric value is
//!   outside CDF's range (±1e100);
//! - `POST /timeseries`: creates series, 409 with `duplicated` for ones it has;
//! - `POST /events`: 409 with `duplicated` for external ids it has; a bare 400 for [`BAD`] ids;
//! - `POST /events/update`: applies `update.*.set`, 400 with `missing` for unknown ids;
//! - `POST /raw/dbs/{db}/tables/{table}/rows`: a bare 400 for [`BAD`] keys; rows are kept
//!   with a `lastUpdatedTime`, listed by `GET …/rows` (404 for a table it does not have) and
//!   removed by `POST …/rows/delete`;
//! - `POST /models/instances`: upserts nodes (by `space:externalId`); a bare 400 for [`BAD`]
//!   external ids, and 400 with `duplicated` (`{space, externalId}`, as Data Modeling names
//!   instances) when a request holds the same node twice;
//! - Files: `POST /files` and `/files/initmultipartupload` (by external id), `/files/uploadlink`
//!   and `/files/multiuploadlink` (by `instanceId`) hand out upload URLs on this server
//!   (`PUT /upload/{file}/{part}`, no CDF token accepted there); `/files/completemultipartupload`
//!   joins the parts in order; a file's content is what its last upload gave it;
//! - any request whose body is larger than `max_body`: 413;
//! - `POST /extpipes/runs`: recorded;
//! - `POST /assets`: creates assets, 409 with `duplicated` for ones it has; `/assets/byids`
//!   by external id;
//! - `POST /datasets/byids` (by external id) and `/extpipes/byids` (by id): the data sets and
//!   pipelines it holds, 400 with `missing` for others.
//!
//! Bodies are read as the client sends them: gzipped ones inflated, datapoint inserts as JSON or
//! protocol buffers (read with the runtime's decoder; any other endpoint answers 415 to them).
//!
//! Every error answer carries an `x-request-id`. Shared by the runtime's and the built-ins'
//! tests and the upload bench (`#[path]`-included), so it depends on wiremock, serde_json,
//! flate2 and the runtime's `testing` feature only.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

// Also loaded by the test support modules, which some test binaries include beside this.
#[allow(clippy::duplicate_mod)]
#[path = "body.rs"]
mod body;
pub use body::{body_of, is_gzipped};

/// Ids and keys starting with this are refused with a bare 400.
pub const BAD: &str = "bad-";

/// What the fake CDF holds.
#[derive(Debug, Default)]
pub struct CdfState {
    /// Time series by external id (the create request's item).
    pub series: BTreeMap<String, Value>,
    /// Accepted datapoint timestamps per series, in arrival order (a duplicate shows twice).
    pub datapoints: BTreeMap<String, Vec<i64>>,
    /// Events by external id, as created and then updated.
    pub events: BTreeMap<String, Value>,
    /// Events updated through `/events/update`.
    pub event_updates: usize,
    /// How often each RAW row key was accepted.
    pub rows: BTreeMap<String, usize>,
    /// RAW tables by `db/table` (as in the path): each row's columns and `lastUpdatedTime`.
    pub raw: BTreeMap<String, BTreeMap<String, (Value, i64)>>,
    /// Nodes by `space:externalId`: the last properties written, and how often.
    pub nodes: BTreeMap<String, (Value, usize)>,
    /// Files by external id (or `space:externalId`).
    pub files: BTreeMap<String, FakeFile>,
    /// The server's address, for upload URLs.
    pub base: String,
    /// PUTs to upload URLs, by URL path.
    pub puts: BTreeMap<String, usize>,
    /// The `Content-Type` of each PUT, by URL path.
    pub put_types: BTreeMap<String, String>,
    /// Each PUT to an upload URL waits this long first (to kill a client mid-upload).
    pub put_delay: std::time::Duration,
    /// While set, PUTs to upload URLs get 403 (expired signed URLs).
    pub put_expired: bool,
    /// While set, every answer to a CDF POST has this body instead of its own (same status, same
    /// effect): an answer far larger than any real one, as from a misbehaving gateway.
    pub body_override: Option<Arc<Vec<u8>>>,
    /// PUTs to the upload URLs of files whose id contains this get 500 (a storage failure).
    pub put_failing: Option<String>,
    /// Requests per endpoint (the path after the project, without the query, with RAW's
    /// database and table kept).
    pub requests: BTreeMap<String, usize>,
    /// Extraction pipeline runs reported.
    pub pipeline_runs: Vec<Value>,
    /// Bodies larger than this (inflated, when they came gzipped) get a 413.
    pub max_body: usize,
    /// Requests whose body came gzipped (`Content-Encoding: gzip`).
    pub gzipped: usize,
    /// Datapoint inserts that came as protocol buffers (`application/protobuf`).
    pub protobuf: usize,
    /// While set, every CDF request gets a 503 (the token endpoint still works).
    pub down: bool,
    /// Every CDF answer is delayed this long (after the request took effect, as when an answer
    /// is lost: a crash then leaves CDF with items the client does not know it delivered).
    pub delay: std::time::Duration,
    /// The config revisions of the extraction pipeline or integration (revision `i + 1` is
    /// `configs[i]`), served by `GET /extpipes/config` and `/integrations/config` (latest) and
    /// their `/revisions`.
    pub configs: Vec<String>,
    /// While set, `GET` config requests get this status (403: no access, 404: no pipeline).
    pub config_status: Option<u16>,
    /// `/integrations/startup` bodies received.
    pub startups: Vec<Value>,
    /// `/integrations/checkin` bodies received.
    pub checkins: Vec<Value>,
    /// Every config, integrations and RAW request, as `(method, path and query after the
    /// project, body)`: contract tests replay them to Prism.
    pub recorded: Vec<(String, String, Value)>,
    /// The `Authorization` header of every CDF POST, in order (`""` when there was none).
    pub bearers: Vec<String>,
    /// Data sets by external id (their internal ids), for `/datasets/byids`.
    pub data_sets: BTreeMap<String, i64>,
    /// Extraction pipelines by internal id (their external ids), for `/extpipes/byids`.
    pub pipelines: BTreeMap<i64, String>,
    /// Assets by external id (the create request's item, with its `id`).
    pub assets: BTreeMap<String, Value>,
}

/// A file the fake holds.
#[derive(Debug, Default, Clone)]
pub struct FakeFile {
    /// What the metadata request said.
    pub meta: Value,
    /// The content, once uploaded (a single PUT, or the parts joined at completion).
    pub content: Option<Vec<u8>>,
    /// Parts received for the current multipart upload.
    pub parts: BTreeMap<usize, Vec<u8>>,
    /// How many parts the current multipart upload has; 0: a single upload.
    pub expected_parts: usize,
    /// Completions of multipart uploads.
    pub completions: usize,
    /// The file's id (classic completion names it).
    pub id: i64,
    /// Uploads started: only the newest upload id completes.
    pub uploads: usize,
}

/// A wiremock server that can be dropped by a task that has spent tokio's cooperative budget.
///
/// `MockServer`'s `Drop` waits for a tokio lock with `futures::executor::block_on`. Dropped by a
/// task that just awaited many ready things (a thousand join handles), the lock finds the budget
/// spent, answers `Pending` and leaves its wake-up to the tokio scheduler, which the blocked
/// thread never gets back to: the drop spins for ever (a test hung until its watchdog in CI).
/// This wrapper drops the server with the budget lifted. It derefs to the server.
pub struct Server(Option<MockServer>);

impl Server {
    /// Wraps `server`.
    pub fn new(server: MockServer) -> Server {
        Server(Some(server))
    }
}

impl std::ops::Deref for Server {
    type Target = MockServer;
    fn deref(&self) -> &MockServer {
        self.0.as_ref().expect("present until dropped")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let server = self.0.take();
        // One poll completes it: the drop inside is synchronous, and unconstrained.
        let mut unbudgeted =
            std::pin::pin!(tokio::task::coop::unconstrained(
                async move { drop(server) }
            ));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(unbudgeted.as_mut().poll(&mut cx).is_ready());
    }
}

/// The fake and its state.
pub struct FakeCdf {
    /// The server: CDF at `uri()`, the token endpoint at `uri()/token`.
    pub server: Server,
    /// What it holds.
    pub state: Arc<Mutex<CdfState>>,
}

impl FakeCdf {
    /// A fake CDF for project `demo` with the time series `series` already there.
    pub async fn start(series: &[&str]) -> FakeCdf {
        let server = MockServer::start().await;
        let mut state = CdfState {
            max_body: usize::MAX,
            gzipped: 0,
            protobuf: 0,
            ..CdfState::default()
        };
        for s in series {
            state
                .series
                .insert((*s).to_owned(), json!({"externalId": s}));
        }
        state.base = server.uri();
        let state = Arc::new(Mutex::new(state));
        let s = state.clone();
        Mock::given(method("PUT"))
            .and(path_regex("^/upload/"))
            .respond_with(move |req: &Request| {
                let mut state = s.lock().unwrap();
                let delay = state.put_delay;
                if state.put_expired {
                    return ResponseTemplate::new(403).set_body_string("Request has expired");
                }
                if req.headers.get("authorization").is_some() {
                    return error(400, "an upload URL takes no CDF token", None);
                }
                let path = req.url.path().to_owned();
                if let Some(failing) = &state.put_failing
                    && percent_decode(&path).contains(failing.as_str())
                {
                    return ResponseTemplate::new(500).set_body_string("storage unavailable");
                }
                *state.puts.entry(path.clone()).or_default() += 1;
                let content_type = req
                    .headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                state.put_types.insert(path.clone(), content_type);
                let mut parts = path.trim_start_matches("/upload/").rsplitn(2, '/');
                let part: usize = parts.next().unwrap().parse().unwrap();
                let id = percent_decode(parts.next().unwrap());
                let Some(file) = state.files.get_mut(&id) else {
                    return error(404, "no such upload", None);
                };
                if file.expected_parts == 0 {
                    file.content = Some(req.body.clone());
                } else {
                    file.parts.insert(part, req.body.clone());
                }
                ResponseTemplate::new(201).set_delay(delay)
            })
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path("/token"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(json!({"access_token": "t", "expires_in": 3600})),
            )
            .mount(&server)
            .await;
        let requests = Arc::new(AtomicUsize::new(0));
        let s = state.clone();
        Mock::given(method("POST"))
            .and(path_regex("^/api/v1/projects/demo/"))
            .respond_with(move |req: &Request| {
                let n = requests.fetch_add(1, Ordering::SeqCst);
                let mut state = s.lock().unwrap();
                let mut template = answer(&mut state, req);
                if let Some(body) = &state.body_override {
                    template = template.set_body_raw(body.as_slice().to_vec(), "application/json");
                }
                template
                    .insert_header("x-request-id", format!("req-{n}").as_str())
                    .set_delay(state.delay)
            })
            .mount(&server)
            .await;
        let s = state.clone();
        Mock::given(method("GET"))
            .and(path_regex("^/api/v1/projects/demo/raw/dbs/[^/]+/tables/[^/]+/rows$"))
            .respond_with(move |req: &Request| {
                let mut state = s.lock().unwrap();
                let endpoint = req.url.path().trim_start_matches("/api/v1/projects/demo").to_owned();
                *state.requests.entry(format!("GET {endpoint}")).or_default() += 1;
                if state.down {
                    return error(503, "Service Unavailable", None);
                }
                state.recorded.push(("GET".into(), format!("{endpoint}?{}", req.url.query().unwrap_or("")), Value::Null));
                match state.raw.get(&raw_table(&endpoint)) {
                    None => error(404, "Table not found", None),
                    Some(rows) => {
                        let items: Vec<Value> = rows
                            .iter()
                            .map(|(k, (columns, t))| json!({"key": k, "columns": columns, "lastUpdatedTime": t}))
                            .collect();
                        ResponseTemplate::new(200).set_body_json(json!({"items": items}))
                    }
                }
            })
            .mount(&server)
            .await;
        let s = state.clone();
        Mock::given(method("GET"))
            .and(path_regex(
                "^/api/v1/projects/demo/(extpipes|integrations)/config",
            ))
            .respond_with(move |req: &Request| get_config(&mut s.lock().unwrap(), req))
            .mount(&server)
            .await;
        FakeCdf {
            server: Server::new(server),
            state,
        }
    }

    /// The server's address (`http://127.0.0.1:port`).
    pub fn uri(&self) -> String {
        self.server.uri()
    }

    /// Runs `f` on the state.
    pub fn with<T>(&self, f: impl FnOnce(&mut CdfState) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }

    /// Requests made to the endpoint whose path (after the project) starts with `prefix`.
    pub fn requests(&self, prefix: &str) -> usize {
        self.with(|s| {
            s.requests
                .iter()
                .filter(|(k, _)| k.starts_with(prefix))
                .map(|(_, n)| n)
                .sum()
        })
    }
}

/// `db/table` of a `/raw/dbs/{db}/tables/{table}/rows` path.
fn raw_table(path: &str) -> String {
    let parts: Vec<&str> = path.split('/').collect();
    format!("{}/{}", parts[3], parts[5])
}

/// Starts an upload of the file `key` in `parts` parts (0: one PUT): its id, and the URLs on
/// this server to PUT to (`uploadUrl`, or `uploadId` and `uploadUrls`).
fn start_upload(state: &mut CdfState, key: &str, parts: usize, meta: Option<Value>) -> Value {
    let base = state.base.clone();
    let next_id = state.files.len() as i64 + 1;
    let file = state.files.entry(key.to_owned()).or_default();
    if file.id == 0 {
        file.id = next_id;
    }
    if let Some(meta) = meta {
        file.meta = meta;
    }
    file.parts.clear();
    file.expected_parts = parts;
    file.uploads += 1;
    let url = |i: usize| format!("{base}/upload/{}/{i}", percent_encode(key));
    let mut answer = json!({"id": file.id});
    if parts == 0 {
        answer["uploadUrl"] = json!(url(0));
    } else {
        answer["uploadId"] = json!(upload_id(file));
        answer["uploadUrls"] = json!((0..parts).map(url).collect::<Vec<_>>());
    }
    answer
}

/// The id of `file`'s newest multipart upload.
fn upload_id(file: &FakeFile) -> String {
    format!("up-{}-{}", file.id, file.uploads)
}

/// `parts=N` of the request's query (0 without one).
fn query_parts(req: &Request) -> usize {
    req.url
        .query_pairs()
        .find(|(k, _)| k == "parts")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) =
                u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or(""), 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `GET /extpipes/config`, `/integrations/config` (the latest revision) and their
/// `/revisions` (newest first).
fn get_config(state: &mut CdfState, req: &Request) -> ResponseTemplate {
    let endpoint = req
        .url
        .path()
        .trim_start_matches("/api/v1/projects/demo")
        .to_owned();
    *state.requests.entry(endpoint.clone()).or_default() += 1;
    let query = req.url.query().map(|q| format!("?{q}")).unwrap_or_default();
    state
        .recorded
        .push(("GET".into(), format!("{endpoint}{query}"), Value::Null));
    if state.down {
        return error(503, "Service Unavailable", None);
    }
    if let Some(status) = state.config_status {
        return error(status, "no access to the config", None);
    }
    let external_id = req
        .url
        .query_pairs()
        .find(|(k, _)| k == "externalId")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let latest = state.configs.len();
    if endpoint.ends_with("/revisions") {
        let items: Vec<Value> = (1..=latest)
            .rev()
            .map(|r| json!({"externalId": external_id, "revision": r, "createdTime": 1_700_000_000_000_i64 + r as i64}))
            .collect();
        return ResponseTemplate::new(200).set_body_json(json!({ "items": items }));
    }
    if latest == 0 {
        return error(404, "no config revision", None);
    }
    ResponseTemplate::new(200).set_body_json(json!({
        "externalId": external_id,
        "revision": latest,
        "config": state.configs[latest - 1],
        "createdTime": 1_700_000_000_000_i64,
        "lastUpdatedTime": 1_700_000_000_000_i64,
    }))
}

fn error(status: u16, message: &str, list: Option<(&str, Vec<Value>)>) -> ResponseTemplate {
    let mut error = json!({"code": status, "message": message});
    if let Some((name, items)) = list {
        error[name] = Value::Array(items);
    }
    ResponseTemplate::new(status).set_body_json(json!({ "error": error }))
}

/// A 409 naming the ids of `all` that `held` has already, if any.
fn duplicated<V>(
    all: &[&str],
    held: &BTreeMap<String, V>,
    message: &str,
) -> Option<ResponseTemplate> {
    let hit: Vec<&str> = all
        .iter()
        .copied()
        .filter(|id| held.contains_key(*id))
        .collect();
    (!hit.is_empty()).then(|| error(409, message, Some(("duplicated", named(&hit)))))
}

/// A 400 naming the ids of `all` that `held` does not have, if any.
fn missing<V>(all: &[&str], held: &BTreeMap<String, V>, message: &str) -> Option<ResponseTemplate> {
    let hit: Vec<&str> = all
        .iter()
        .copied()
        .filter(|id| !held.contains_key(*id))
        .collect();
    (!hit.is_empty()).then(|| error(400, message, Some(("missing", named(&hit)))))
}

fn ids(items: &[Value]) -> Vec<&str> {
    items
        .iter()
        .filter_map(|i| i["externalId"].as_str())
        .collect()
}

/// `[{"externalId": id}, ...]`, each id once.
fn named(ids: &[&str]) -> Vec<Value> {
    let mut seen = std::collections::BTreeSet::new();
    ids.iter()
        .filter(|id| seen.insert(**id))
        .map(|id| json!({ "externalId": id }))
        .collect()
}

fn answer(state: &mut CdfState, req: &Request) -> ResponseTemplate {
    let endpoint = req
        .url
        .path()
        .trim_start_matches("/api/v1/projects/demo")
        .to_owned();
    *state.requests.entry(endpoint.clone()).or_default() += 1;
    let bearer = req
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    state.bearers.push(bearer);
    if state.down {
        return error(503, "Service Unavailable", None);
    }
    let gzipped = is_gzipped(req);
    state.gzipped += usize::from(gzipped);
    let Some(raw) = body_of(req) else {
        return error(400, "Invalid gzip body", None);
    };
    if raw.len() > state.max_body {
        return error(413, "Request Entity Too Large", None);
    }
    let protobuf = req
        .headers
        .get("content-type")
        .is_some_and(|v| v.as_bytes() == b"application/protobuf");
    let body: Value = if protobuf {
        if endpoint != "/timeseries/data" {
            return error(415, "Unsupported Media Type", None);
        }
        state.protobuf += 1;
        match extractor_runtime::queues::insertion_request_json(&raw) {
            Ok(v) => v,
            Err(e) => return error(400, &format!("Invalid protobuf: {e}"), None),
        }
    } else {
        match serde_json::from_slice(&raw) {
            Ok(v) => v,
            Err(e) => return error(400, &format!("Invalid JSON: {e}"), None),
        }
    };
    let empty = Vec::new();
    let items = body["items"].as_array().unwrap_or(&empty);
    if endpoint.starts_with("/raw/") {
        let query = req.url.query().map(|q| format!("?{q}")).unwrap_or_default();
        state
            .recorded
            .push(("POST".into(), format!("{endpoint}{query}"), body.clone()));
    }
    match endpoint.as_str() {
        "/timeseries/data" if items.iter().any(|i| i.get("instanceId").is_some()) => {
            // Data Modeling time series: the CogniteTimeSeries nodes it holds.
            let node = |i: &Value| {
                let id = &i["instanceId"];
                format!(
                    "{}:{}",
                    id["space"].as_str().unwrap_or(""),
                    id["externalId"].as_str().unwrap_or("")
                )
            };
            let missing: Vec<Value> = items
                .iter()
                .filter(|i| {
                    state
                        .nodes
                        .get(&node(i))
                        .is_none_or(|(p, _)| p.get("type").is_none())
                })
                .map(|i| json!({"instanceId": i["instanceId"]}))
                .collect();
            if !missing.is_empty() {
                return error(400, "Time series not found", Some(("missing", missing)));
            }
            for item in items {
                let points = state.datapoints.entry(node(item)).or_default();
                for dp in item["datapoints"].as_array().unwrap() {
                    points.push(dp["timestamp"].as_i64().unwrap());
                }
            }
            ResponseTemplate::new(200).set_body_json(json!({}))
        }
        "/timeseries/data" => {
            let all = ids(items);
            if let Some(refusal) = missing(&all, &state.series, "Time series not found") {
                return refusal;
            }
            let out_of_range = items
                .iter()
                .flat_map(|i| i["datapoints"].as_array().into_iter().flatten())
                .any(|dp| dp["value"].as_f64().is_some_and(|v| v.abs() > 1e100));
            if all.iter().any(|id| id.starts_with(BAD)) || out_of_range {
                return error(400, "Invalid datapoint value", None);
            }
            for item in items {
                let id = item["externalId"].as_str().unwrap().to_owned();
                let points = state.datapoints.entry(id).or_default();
                for dp in item["datapoints"].as_array().unwrap() {
                    points.push(dp["timestamp"].as_i64().unwrap());
                }
            }
            ResponseTemplate::new(200).set_body_json(json!({}))
        }
        "/timeseries" => {
            let all = ids(items);
            if let Some(refusal) = duplicated(&all, &state.series, "Duplicate external ids") {
                return refusal;
            }
            for item in items {
                let id = item["externalId"].as_str().unwrap().to_owned();
                state.series.insert(id, item.clone());
            }
            ResponseTemplate::new(201).set_body_json(json!({ "items": items }))
        }
        "/events" => {
            let all = ids(items);
            if let Some(refusal) = duplicated(&all, &state.events, "Resource already exists") {
                return refusal;
            }
            if all.iter().any(|id| id.starts_with(BAD)) {
                return error(400, "Invalid event", None);
            }
            for item in items {
                let id = item["externalId"].as_str().unwrap().to_owned();
                state.events.insert(id, item.clone());
            }
            ResponseTemplate::new(201).set_body_json(json!({ "items": items }))
        }
        "/events/update" => {
            let all = ids(items);
            if let Some(refusal) = missing(&all, &state.events, "Events not found") {
                return refusal;
            }
            for item in items {
                let id = item["externalId"].as_str().unwrap();
                let event = state.events.get_mut(id).unwrap();
                for (field, change) in item["update"].as_object().unwrap() {
                    event[field] = change["set"].clone();
                }
                state.event_updates += 1;
            }
            ResponseTemplate::new(200).set_body_json(json!({ "items": items }))
        }
        "/assets" => {
            let all = ids(items);
            if let Some(refusal) = duplicated(&all, &state.assets, "Duplicate external ids") {
                return refusal;
            }
            let mut created = Vec::new();
            for item in items {
                let mut asset = item.clone();
                asset["id"] = json!(1000 + state.assets.len() as i64);
                state.assets.insert(
                    item["externalId"].as_str().unwrap().to_owned(),
                    asset.clone(),
                );
                created.push(asset);
            }
            ResponseTemplate::new(201).set_body_json(json!({ "items": created }))
        }
        "/assets/byids" => {
            let all = ids(items);
            if let Some(refusal) = missing(&all, &state.assets, "Ids not found") {
                return refusal;
            }
            let found: Vec<Value> = all.iter().map(|id| state.assets[*id].clone()).collect();
            ResponseTemplate::new(200).set_body_json(json!({ "items": found }))
        }
        "/datasets/byids" | "/extpipes/byids" => {
            let mut found = Vec::new();
            let mut missing = Vec::new();
            for item in items {
                let hit = if endpoint == "/datasets/byids" {
                    item["externalId"].as_str().and_then(|x| {
                        state
                            .data_sets
                            .get(x)
                            .map(|id| json!({"id": id, "externalId": x}))
                    })
                } else {
                    item["id"].as_i64().and_then(|id| {
                        state
                            .pipelines
                            .get(&id)
                            .map(|x| json!({"id": id, "externalId": x}))
                    })
                };
                match hit {
                    Some(h) => found.push(h),
                    None => missing.push(item.clone()),
                }
            }
            if !missing.is_empty() {
                return error(400, "Ids not found", Some(("missing", missing)));
            }
            ResponseTemplate::new(200).set_body_json(json!({ "items": found }))
        }
        "/extpipes/runs" => {
            state.pipeline_runs.extend(items.iter().cloned());
            ResponseTemplate::new(201).set_body_json(json!({ "items": items }))
        }
        "/integrations/startup" | "/integrations/checkin" => {
            state
                .recorded
                .push(("POST".into(), endpoint.clone(), body.clone()));
            if endpoint.ends_with("startup") {
                state.startups.push(body.clone());
            } else {
                state.checkins.push(body.clone());
            }
            let mut answer = json!({"externalId": body["externalId"]});
            if !state.configs.is_empty() {
                answer["lastConfigRevision"] = json!(state.configs.len());
            }
            ResponseTemplate::new(200).set_body_json(answer)
        }
        raw if raw.starts_with("/raw/dbs/") && raw.ends_with("/rows/delete") => {
            let table = raw_table(raw.trim_end_matches("/delete"));
            if let Some(rows) = state.raw.get_mut(&table) {
                for r in items {
                    rows.remove(r["key"].as_str().unwrap_or(""));
                }
            }
            ResponseTemplate::new(200).set_body_json(json!({}))
        }
        raw if raw.starts_with("/raw/dbs/") && raw.ends_with("/rows") => {
            if items
                .iter()
                .any(|r| r["key"].as_str().is_some_and(|k| k.starts_with(BAD)))
            {
                return error(400, "Invalid row", None);
            }
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as i64;
            let table = state.raw.entry(raw_table(raw)).or_default();
            for r in items {
                table.insert(
                    r["key"].as_str().unwrap().to_owned(),
                    (r["columns"].clone(), now),
                );
            }
            for r in items {
                *state
                    .rows
                    .entry(r["key"].as_str().unwrap().to_owned())
                    .or_default() += 1;
            }
            ResponseTemplate::new(201).set_body_json(json!({}))
        }
        "/models/instances" => {
            let id = |n: &Value| {
                format!(
                    "{}:{}",
                    n["space"].as_str().unwrap_or(""),
                    n["externalId"].as_str().unwrap_or("")
                )
            };
            if items
                .iter()
                .any(|n| n["externalId"].as_str().is_some_and(|k| k.starts_with(BAD)))
            {
                return error(400, "Invalid value for property", None);
            }
            let mut seen = std::collections::BTreeSet::new();
            let twice: Vec<Value> = items
                .iter()
                .filter(|n| !seen.insert(id(n)))
                .map(|n| json!({"space": n["space"], "externalId": n["externalId"]}))
                .collect();
            if !twice.is_empty() {
                return error(
                    400,
                    "Duplicate instances in the request",
                    Some(("duplicated", twice)),
                );
            }
            for n in items {
                let entry = state.nodes.entry(id(n)).or_insert((Value::Null, 0));
                entry.0 = n["sources"][0]["properties"].clone();
                entry.1 += 1;
            }
            ResponseTemplate::new(200).set_body_json(json!({ "items": items }))
        }
        "/files" | "/files/initmultipartupload" => {
            let key = body["externalId"].as_str().unwrap_or_default().to_owned();
            let mut answer = start_upload(state, &key, query_parts(req), Some(body.clone()));
            answer["externalId"] = json!(key);
            answer["name"] = body["name"].clone();
            ResponseTemplate::new(201).set_body_json(answer)
        }
        "/files/uploadlink" | "/files/multiuploadlink" => {
            let instance = &items[0]["instanceId"];
            let key = format!(
                "{}:{}",
                instance["space"].as_str().unwrap_or(""),
                instance["externalId"].as_str().unwrap_or("")
            );
            if !state.nodes.contains_key(&key) {
                return error(
                    400,
                    "Files not found",
                    Some(("missing", vec![json!({"instanceId": instance})])),
                );
            }
            let mut item = start_upload(state, &key, query_parts(req), None);
            item["instanceId"] = instance.clone();
            ResponseTemplate::new(201).set_body_json(json!({"items": [item]}))
        }
        "/files/completemultipartupload" => {
            let key = match body.get("instanceId") {
                Some(i) => format!(
                    "{}:{}",
                    i["space"].as_str().unwrap_or(""),
                    i["externalId"].as_str().unwrap_or("")
                ),
                None => state
                    .files
                    .iter()
                    .find(|(_, f)| Some(f.id) == body["id"].as_i64())
                    .map(|(k, _)| k.clone())
                    .unwrap_or_default(),
            };
            let Some(file) = state.files.get_mut(&key) else {
                return error(400, "Files not found", None);
            };
            if body["uploadId"].as_str() != Some(upload_id(file).as_str()) {
                return error(400, "the upload id is not this file's current upload", None);
            }
            if file.parts.len() != file.expected_parts {
                return error(
                    400,
                    &format!(
                        "{} of {} parts uploaded",
                        file.parts.len(),
                        file.expected_parts
                    ),
                    None,
                );
            }
            file.content = Some(file.parts.values().flatten().copied().collect());
            file.completions += 1;
            ResponseTemplate::new(200).set_body_json(json!({}))
        }
        other => error(404, &format!("no such endpoint in the fake: {other}"), None),
    }
}
