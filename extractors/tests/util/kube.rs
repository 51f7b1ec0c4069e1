//! A Kubernetes API server's Lease endpoint, written from the API reference
//! (`coordination.k8s.io/v1`): GET, POST (create; 409 `AlreadyExists`) and PUT (replace; 409
//! `Conflict` unless `metadata.resourceVersion` is the current one) of
//! `/apis/coordination.k8s.io/v1/namespaces/{ns}/leases[/{name}]`, a bearer token required,
//! the spec's types and MicroTime format checked (422 `Invalid`). No API server can be
//! installed here; this is what one answers.

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use wiremock::matchers::path_regex;
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

/// What the fake holds.
#[derive(Debug, Default)]
pub struct LeaseState {
    /// Leases by name.
    pub leases: std::collections::BTreeMap<String, Value>,
    /// The last resourceVersion handed out.
    pub version: u64,
    /// While set, every request gets 503.
    pub down: bool,
    /// Requests by method.
    pub requests: std::collections::BTreeMap<String, usize>,
    /// 409 answers given.
    pub conflicts: usize,
    /// The next PUT finds the Lease changed since its GET (another writer came between).
    pub change_before_next_put: bool,
}

/// The fake and its state.
pub struct KubeApi {
    /// The server.
    pub server: MockServer,
    /// What it holds.
    pub state: Arc<Mutex<LeaseState>>,
}

fn status(code: u16, reason: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(code).set_body_json(json!({
        "kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": message, "reason": reason, "code": code,
    }))
}

/// Whether `v` is a `metav1.MicroTime` as the API server writes it.
fn micro_time(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        s.len() == 27
            && s.ends_with('Z')
            && s.as_bytes()[19] == b'.'
            && s.bytes().enumerate().all(|(i, b)| match i {
                4 | 7 => b == b'-',
                10 => b == b'T',
                13 | 16 => b == b':',
                19 => b == b'.',
                26 => b == b'Z',
                _ => b.is_ascii_digit(),
            })
    })
}

/// The spec's problems, as the API server's validation names them.
fn invalid(spec: &Value) -> Option<String> {
    let Some(spec) = spec.as_object() else {
        return Some("spec: Required value".into());
    };
    for (key, value) in spec {
        let ok = match key.as_str() {
            "holderIdentity" => value.is_string() || value.is_null(),
            "leaseDurationSeconds" | "leaseTransitions" => value.as_i64().is_some_and(|n| n >= 0),
            "acquireTime" | "renewTime" => micro_time(value) || value.is_null(),
            _ => false,
        };
        if !ok {
            return Some(format!("spec.{key}: Invalid value: {value}"));
        }
    }
    None
}

impl KubeApi {
    /// Starts it; requests must carry `Authorization: Bearer <token>`.
    pub async fn start(token: &str) -> KubeApi {
        let server = MockServer::start().await;
        let state = Arc::new(Mutex::new(LeaseState::default()));
        let s = state.clone();
        let bearer = format!("Bearer {token}");
        Mock::given(path_regex(
            "^/apis/coordination.k8s.io/v1/namespaces/[^/]+/leases(/[^/]+)?$",
        ))
        .respond_with(move |req: &Request| {
            let mut state = s.lock().unwrap();
            *state.requests.entry(req.method.to_string()).or_default() += 1;
            if state.down {
                return status(503, "ServiceUnavailable", "the server is currently unable to handle the request");
            }
            if req.headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(bearer.as_str()) {
                return status(401, "Unauthorized", "Unauthorized");
            }
            let segments: Vec<&str> = req.url.path().split('/').collect();
            let namespace = segments[5].to_owned();
            let name = segments.get(7).map(|n| (*n).to_owned());
            let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
            match (req.method.as_str(), name) {
                ("GET", Some(name)) => match state.leases.get(&name) {
                    Some(lease) => ResponseTemplate::new(200).set_body_json(lease),
                    None => status(404, "NotFound", &format!("leases.coordination.k8s.io \"{name}\" not found")),
                },
                ("POST", None) => {
                    let Some(name) = body["metadata"]["name"].as_str().map(str::to_owned) else {
                        return status(422, "Invalid", "metadata.name: Required value");
                    };
                    if body["kind"] != "Lease" || body["apiVersion"] != "coordination.k8s.io/v1" {
                        return status(400, "BadRequest", "the object is not a coordination.k8s.io/v1 Lease");
                    }
                    if let Some(why) = invalid(&body["spec"]) {
                        return status(422, "Invalid", &why);
                    }
                    if state.leases.contains_key(&name) {
                        state.conflicts += 1;
                        return status(409, "AlreadyExists", &format!("leases.coordination.k8s.io \"{name}\" already exists"));
                    }
                    state.version += 1;
                    let mut lease = body.clone();
                    lease["metadata"]["namespace"] = json!(namespace);
                    lease["metadata"]["resourceVersion"] = json!(state.version.to_string());
                    state.leases.insert(name, lease.clone());
                    ResponseTemplate::new(201).set_body_json(lease)
                }
                ("PUT", Some(name)) => {
                    if std::mem::take(&mut state.change_before_next_put) {
                        state.version += 1;
                        let version = state.version.to_string();
                        if let Some(lease) = state.leases.get_mut(&name) {
                            lease["metadata"]["resourceVersion"] = json!(version);
                        }
                    }
                    let Some(current) = state.leases.get(&name) else {
                        return status(404, "NotFound", &format!("leases.coordination.k8s.io \"{name}\" not found"));
                    };
                    if body["metadata"]["name"].as_str() != Some(name.as_str()) {
                        return status(400, "BadRequest", "the name of the object does not match the name on the URL");
                    }
                    if let Some(why) = invalid(&body["spec"]) {
                        return status(422, "Invalid", &why);
                    }
                    if body["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"] {
                        state.conflicts += 1;
                        return status(409, "Conflict", &format!("Operation cannot be fulfilled on leases.coordination.k8s.io \"{name}\": the object has been modified; please apply your changes to the latest version and try again"));
                    }
                    state.version += 1;
                    let mut lease = body.clone();
                    lease["metadata"]["resourceVersion"] = json!(state.version.to_string());
                    state.leases.insert(name, lease.clone());
                    ResponseTemplate::new(200).set_body_json(lease)
                }
                _ => status(405, "MethodNotAllowed", "the server does not allow this method on the requested resource"),
            }
        })
        .mount(&server)
        .await;
        KubeApi { server, state }
    }

    /// The Lease `name`'s spec, if it exists.
    pub fn spec(&self, name: &str) -> Option<Value> {
        self.state
            .lock()
            .unwrap()
            .leases
            .get(name)
            .map(|l| l["spec"].clone())
    }

    /// Another writer changes the Lease between the leader's next GET and PUT (as a label
    /// update would): that PUT gets 409.
    pub fn change_before_next_put(&self) {
        self.state.lock().unwrap().change_before_next_put = true;
    }
}
