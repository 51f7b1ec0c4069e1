//! A `coordination.k8s.io/v1` Lease, as client-go's leaderelection keeps it, over plain REST
//! (three calls: GET, POST to create, PUT with `resourceVersion` for optimistic concurrency;
//! a conflict answers 409).
//!
//! Expiry is judged by this replica's own clock, not the holder's: a record whose holder and
//! `renewTime` have not changed for `leaseDurationSeconds` since this replica first saw them is
//! expired, so clock skew between nodes does not matter.
//!
//! In a pod everything defaults to the service account: the API server from
//! `KUBERNETES_SERVICE_HOST`/`_PORT`, the namespace, token and CA from
//! `/var/run/secrets/kubernetes.io/serviceaccount/`. The token file is read at every request
//! (projected tokens rotate) and the CA again when it changes.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use tokio::time::Instant;

use super::{Attempt, BoxFuture, LeaseBackend, LeaseError};
use crate::config::KubernetesLeaseConfig;

const SERVICE_ACCOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// A record as last seen, and when it was first seen like that.
#[derive(Debug)]
struct Observed {
    holder: String,
    renew_time: String,
    at: Instant,
}

/// A Lease object in a Kubernetes API server.
#[derive(Debug)]
pub struct KubernetesLease {
    /// `…/namespaces/{ns}/leases`.
    collection: String,
    name: String,
    token_file: PathBuf,
    ca_file: Option<PathBuf>,
    /// The client, and the CA file's modification time it was built with.
    client: std::sync::Mutex<(Option<SystemTime>, Option<reqwest::Client>)>,
    observed: std::sync::Mutex<Option<Observed>>,
}

fn err(message: impl Into<String>) -> LeaseError {
    LeaseError::new("kubernetes", message)
}

/// `metav1.MicroTime`: RFC 3339 with exactly six fractional digits, in UTC.
fn micro_time() -> String {
    let now = jiff::Timestamp::now();
    format!(
        "{}.{:06}Z",
        now.strftime("%Y-%m-%dT%H:%M:%S"),
        now.subsec_microsecond()
    )
}

impl KubernetesLease {
    /// The Lease `name` of `config` (service account defaults filled in).
    pub fn new(config: &KubernetesLeaseConfig, name: &str) -> Result<KubernetesLease, LeaseError> {
        let api = match &config.api_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => {
                let host = std::env::var("KUBERNETES_SERVICE_HOST").map_err(|_| {
                    err("not in a Kubernetes pod (KUBERNETES_SERVICE_HOST is not set): set high-availability.kubernetes.api-url")
                })?;
                let port =
                    std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
                let host = if host.contains(':') {
                    format!("[{host}]")
                } else {
                    host
                };
                format!("https://{host}:{port}")
            }
        };
        let namespace = match &config.namespace {
            Some(ns) => ns.clone(),
            None => {
                let path = format!("{SERVICE_ACCOUNT}/namespace");
                std::fs::read_to_string(&path)
                    .map(|s| s.trim().to_owned())
                    .map_err(|e| err(format!("cannot read the pod's namespace from {path} ({e}): set high-availability.kubernetes.namespace")))?
            }
        };
        let token_file = PathBuf::from(
            config
                .token_file
                .clone()
                .unwrap_or_else(|| format!("{SERVICE_ACCOUNT}/token")),
        );
        let ca_file = match &config.ca_file {
            Some(f) => Some(PathBuf::from(f)),
            None if api.starts_with("https://") => Some(PathBuf::from(format!("{SERVICE_ACCOUNT}/ca.crt"))),
            None => None,
        };
        Ok(KubernetesLease {
            collection: format!(
                "{api}/apis/coordination.k8s.io/v1/namespaces/{}/leases",
                crate::percent::encode_segment(&namespace)
            ),
            name: name.to_owned(),
            token_file,
            ca_file,
            client: std::sync::Mutex::new((None, None)),
            observed: std::sync::Mutex::new(None),
        })
    }

    /// The HTTP client, trusting only the cluster's CA (built again when the file changes).
    fn client(&self) -> Result<reqwest::Client, LeaseError> {
        let mtime = match &self.ca_file {
            Some(f) => Some(
                std::fs::metadata(f)
                    .and_then(|m| m.modified())
                    .map_err(|e| err(format!("cannot read the CA {}: {e}", f.display())))?,
            ),
            None => None,
        };
        let mut cell = self.client.lock().expect("lock");
        if let (m, Some(c)) = &*cell
            && *m == mtime
        {
            return Ok(c.clone());
        }
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("extractor-runtime/", env!("CARGO_PKG_VERSION")));
        if let Some(f) = &self.ca_file {
            let pem = std::fs::read(f)
                .map_err(|e| err(format!("cannot read the CA {}: {e}", f.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| err(format!("the CA {} is not PEM: {e}", f.display())))?;
            builder = builder.tls_certs_only(certs);
        }
        let client = builder
            .build()
            .map_err(|e| err(format!("cannot build the HTTP client: {e}")))?;
        *cell = (mtime, Some(client.clone()));
        Ok(client)
    }

    fn token(&self) -> Result<String, LeaseError> {
        std::fs::read_to_string(&self.token_file)
            .map(|t| t.trim().to_owned())
            .map_err(|e| {
                err(format!(
                    "cannot read the service account token {}: {e}",
                    self.token_file.display()
                ))
            })
    }

    /// Sends a request; the status and the JSON body.
    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), LeaseError> {
        let mut request = self
            .client()?
            .request(method.clone(), url)
            .bearer_auth(self.token()?)
            .header("accept", "application/json");
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| err(format!("{method} {url}: {}", crate::net::explain(e))))?;
        let status = response.status().as_u16();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| err(format!("{method} {url}: {}", crate::net::explain(e))))?;
        if bytes.len() > 1 << 20 {
            return Err(err(format!("{method} {url}: an answer over 1 MiB")));
        }
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        match status {
            200..=299 | 404 | 409 => Ok((status, value)),
            _ => Err(err(format!(
                "{method} {url}: {status} {}",
                value["message"].as_str().unwrap_or("")
            ))),
        }
    }

    fn object_url(&self) -> String {
        format!(
            "{}/{}",
            self.collection,
            crate::percent::encode_segment(&self.name)
        )
    }

    /// A Lease held by `identity` from now.
    fn spec(identity: &str, duration: Duration, acquire: &str, transitions: i64) -> Value {
        json!({
            "holderIdentity": identity,
            "leaseDurationSeconds": duration.as_secs().max(1),
            "acquireTime": acquire,
            "renewTime": micro_time(),
            "leaseTransitions": transitions,
        })
    }

    async fn put(&self, mut lease: Value, spec: Value) -> Result<u16, LeaseError> {
        lease["spec"] = spec;
        let (status, _) = self
            .send(reqwest::Method::PUT, &self.object_url(), Some(&lease))
            .await?;
        Ok(status)
    }
}

impl LeaseBackend for KubernetesLease {
    fn try_acquire_or_renew<'a>(
        &'a self,
        identity: &'a str,
        duration: Duration,
    ) -> BoxFuture<'a, Result<Attempt, LeaseError>> {
        Box::pin(async move {
            let (status, lease) = self
                .send(reqwest::Method::GET, &self.object_url(), None)
                .await?;
            if status == 404 {
                let now = micro_time();
                let body = json!({
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": self.name},
                    "spec": Self::spec(identity, duration, &now, 0),
                });
                let (status, _) = self
                    .send(reqwest::Method::POST, &self.collection, Some(&body))
                    .await?;
                return Ok(match status {
                    409 => Attempt::HeldBy(None),
                    _ => Attempt::Held { previous: None },
                });
            }
            let spec = &lease["spec"];
            let holder = spec["holderIdentity"].as_str().unwrap_or("").to_owned();
            let renew_time = spec["renewTime"].as_str().unwrap_or("").to_owned();
            let transitions = spec["leaseTransitions"].as_i64().unwrap_or(0);
            let lease_seconds = spec["leaseDurationSeconds"]
                .as_u64()
                .unwrap_or(duration.as_secs());
            if holder == identity {
                let acquire = spec["acquireTime"].as_str().unwrap_or("").to_owned();
                let status = self
                    .put(lease.clone(), Self::spec(identity, duration, &acquire, transitions))
                    .await?;
                return match status {
                    409 => Err(err("the Lease changed under this renewal (409 Conflict)")),
                    _ => Ok(Attempt::Held { previous: None }),
                };
            }
            if !holder.is_empty() {
                let mut observed = self.observed.lock().expect("lock");
                let unchanged = observed
                    .as_ref()
                    .is_some_and(|o| o.holder == holder && o.renew_time == renew_time);
                if !unchanged {
                    *observed = Some(Observed {
                        holder: holder.clone(),
                        renew_time,
                        at: Instant::now(),
                    });
                }
                let since = observed.as_ref().map_or(Duration::ZERO, |o| o.at.elapsed());
                if since < Duration::from_secs(lease_seconds) {
                    return Ok(Attempt::HeldBy(Some(holder)));
                }
            }
            let now = micro_time();
            let status = self
                .put(lease.clone(), Self::spec(identity, duration, &now, transitions + 1))
                .await?;
            Ok(match status {
                409 => Attempt::HeldBy(None),
                _ => Attempt::Held {
                    previous: Some(holder).filter(|h| !h.is_empty()),
                },
            })
        })
    }

    fn release<'a>(&'a self, identity: &'a str) -> BoxFuture<'a, Result<(), LeaseError>> {
        Box::pin(async move {
            let (status, lease) = self
                .send(reqwest::Method::GET, &self.object_url(), None)
                .await?;
            if status == 404 || lease["spec"]["holderIdentity"].as_str() != Some(identity) {
                return Ok(());
            }
            let now = micro_time();
            let spec = json!({
                "leaseDurationSeconds": 1,
                "acquireTime": now,
                "renewTime": now,
                "leaseTransitions": lease["spec"]["leaseTransitions"].as_i64().unwrap_or(0),
            });
            match self.put(lease, spec).await? {
                409 => Err(err("the Lease changed under the release (409 Conflict)")),
                _ => Ok(()),
            }
        })
    }

    fn describe(&self) -> String {
        format!("Kubernetes Lease {}", self.object_url())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn micro_time_has_six_fractional_digits() {
        let t = super::micro_time();
        assert_eq!(t.len(), "2026-12-06T21:00:00.123456Z".len(), "{t}");
        assert!(t.ends_with('Z') && t.as_bytes()[19] == b'.', "{t}");
        t.parse::<jiff::Timestamp>().unwrap();
    }
}
