//! Secrets from Azure Key Vault by plain REST, for `!keyvault NAME` in a config: one OAuth2
//! token for the vault (client credentials, workload identity or managed identity), then
//! `GET {vault}/secrets/{name}?api-version=7.4` for each secret. The Azure SDK crates would add
//! twenty-odd crates and OpenSSL for this; it is two requests.
//!
//! It runs while a config loads (a blocking step): on a thread of its own with a small runtime,
//! so it works whether or not the caller is inside one. Every request has the network's
//! timeout; an answer is read up to a cap. Nothing here logs or returns a secret's value
//! outside the [`Secret`] it is wrapped in.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::net::Network;
use crate::secret::Secret;

/// Key Vault's REST API version.
pub(crate) const API_VERSION: &str = "7.4";
/// The scope of a token for Key Vault in Azure's public cloud.
pub(crate) const PUBLIC_SCOPE: &str = "https://vault.azure.net/.default";
/// The largest answer read: a Key Vault secret is at most 25 KiB.
const MAX_ANSWER: u64 = 256 * 1024;
/// Tries of a request that may pass later (a connection error, 429, 5xx).
const TRIES: u32 = 3;

/// How the process proves who it is to Microsoft Entra ID.
#[derive(Clone, Debug)]
pub(crate) enum Credential {
    /// An app registration's client secret.
    ClientSecret {
        /// `{authority}/{tenant}/oauth2/v2.0/token`.
        token_url: String,
        /// The app's client id.
        client_id: String,
        /// Its secret.
        secret: Secret,
    },
    /// Kubernetes workload identity: a service account token file as the client assertion.
    WorkloadIdentity {
        /// `{authority}/{tenant}/oauth2/v2.0/token`.
        token_url: String,
        /// The app's client id.
        client_id: String,
        /// The projected token (`AZURE_FEDERATED_TOKEN_FILE`), read at each use.
        token_file: std::path::PathBuf,
    },
    /// The VM's or pod's managed identity through the instance metadata service.
    ManagedIdentity {
        /// `http://169.254.169.254` (or `AZURE_POD_IDENTITY_AUTHORITY_HOST`).
        host: String,
        /// A user-assigned identity's client id.
        client_id: Option<String>,
    },
}

impl Credential {
    /// What the log says was used (no secret).
    pub(crate) fn describe(&self) -> String {
        match self {
            Credential::ClientSecret { client_id, .. } => {
                format!("client secret of client {client_id}")
            }
            Credential::WorkloadIdentity { client_id, .. } => {
                format!("workload identity of client {client_id}")
            }
            Credential::ManagedIdentity { client_id, .. } => match client_id {
                Some(c) => format!("managed identity {c}"),
                None => "managed identity".to_owned(),
            },
        }
    }
}

/// A vault and how to sign in to it.
#[derive(Clone, Debug)]
pub(crate) struct Vault {
    /// `https://<name>.vault.azure.net`, without a trailing slash.
    pub(crate) url: String,
    /// The token's scope (`https://vault.azure.net/.default` in the public cloud).
    pub(crate) scope: String,
    pub(crate) credential: Credential,
    pub(crate) network: Network,
}

/// The scope of a token for the vault at `url`: its host without the vault's own name
/// (`https://vault.azure.cn/.default` for `https://x.vault.azure.cn`); the public cloud's for
/// an address that is not a vault's (a loopback test server).
pub(crate) fn scope_of(url: &str) -> String {
    let host = reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default();
    match host.split_once('.') {
        Some((_, rest)) if rest.starts_with("vault.") => format!("https://{rest}/.default"),
        _ => PUBLIC_SCOPE.to_owned(),
    }
}

/// Whether `name` is a Key Vault secret name: 1 to 127 letters, digits and dashes.
pub(crate) fn valid_name(name: &str) -> bool {
    (1..=127).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Gets the secrets `names` from `vault`. The outer error is the sign-in's (every secret fails
/// with it); each name has its own result otherwise.
pub(crate) fn fetch_blocking(
    vault: &Vault,
    names: &[String],
) -> Result<BTreeMap<String, Result<Secret, String>>, String> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| format!("cannot start the Key Vault client: {e}"))?;
                runtime.block_on(fetch(vault, names))
            })
            .join()
            .unwrap_or_else(|_| Err("the Key Vault client panicked".to_owned()))
    })
}

async fn fetch(
    vault: &Vault,
    names: &[String],
) -> Result<BTreeMap<String, Result<Secret, String>>, String> {
    let http = vault
        .network
        .client_builder()
        .timeout(vault.network.timeout())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("cannot build the Key Vault client: {e}"))?;
    let token = token(&http, vault).await?;
    let mut out = BTreeMap::new();
    for name in names {
        let got = secret(&http, vault, &token, name).await;
        out.insert(name.clone(), got);
    }
    Ok(out)
}

/// One answer: status, `Retry-After`-free body (capped), or why there is none.
async fn send(
    request: reqwest::RequestBuilder,
    what: &str,
    network: &Network,
) -> Result<(u16, Vec<u8>), String> {
    let mut last = String::new();
    for attempt in 0..TRIES {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
        }
        let Some(request) = request.try_clone() else {
            break;
        };
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let body = crate::net::read_capped(response, MAX_ANSWER)
                    .await
                    .map_err(|e| format!("{what}: {e}"))?;
                if status == 429 || status >= 500 {
                    last = format!("{what} answered HTTP {status}");
                    continue;
                }
                return Ok((status, body));
            }
            Err(e) => last = format!("{what} failed: {}", network.explain(e)),
        }
    }
    Err(format!("{last} ({TRIES} tries)"))
}

/// An access token for the vault.
async fn token(http: &reqwest::Client, vault: &Vault) -> Result<Secret, String> {
    let (request, secret) = match &vault.credential {
        Credential::ClientSecret {
            token_url,
            client_id,
            secret,
        } => (
            http.post(token_url).form(&[
                ("grant_type", "client_credentials"),
                ("client_id", client_id),
                ("client_secret", secret.expose_secret()),
                ("scope", &vault.scope),
            ]),
            Some(secret),
        ),
        Credential::WorkloadIdentity {
            token_url,
            client_id,
            token_file,
        } => {
            let assertion = std::fs::read_to_string(token_file).map_err(|e| {
                format!(
                    "cannot read the workload identity token {} (AZURE_FEDERATED_TOKEN_FILE): {e}",
                    token_file.display()
                )
            })?;
            (
                http.post(token_url).form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", client_id),
                    (
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    ),
                    ("client_assertion", assertion.trim()),
                    ("scope", &vault.scope),
                ]),
                None,
            )
        }
        Credential::ManagedIdentity { host, client_id } => {
            let resource = vault.scope.trim_end_matches("/.default");
            let mut query = vec![("api-version", "2018-02-01"), ("resource", resource)];
            if let Some(c) = client_id {
                query.push(("client_id", c));
            }
            let url = reqwest::Url::parse_with_params(
                &format!(
                    "{}/metadata/identity/oauth2/token",
                    host.trim_end_matches('/')
                ),
                &query,
            )
            .map_err(|e| format!("the managed identity endpoint `{host}` is not a URL: {e}"))?;
            (http.get(url).header("Metadata", "true"), None)
        }
    };
    let what = format!(
        "the Key Vault token request ({})",
        vault.credential.describe()
    );
    let (status, body) = send(request, &what, &vault.network).await?;
    if (200..300).contains(&status) {
        let parsed: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|_| format!("{what}: the answer (HTTP {status}) is not JSON"))?;
        return match parsed["access_token"].as_str() {
            Some(t) if !t.is_empty() => Ok(Secret::new(t)),
            _ => Err(format!("{what}: the answer has no `access_token`")),
        };
    }
    Err(format!(
        "{what} was refused: {}",
        crate::idp_error::describe(status, &body, secret)
    ))
}

/// One secret's value.
async fn secret(
    http: &reqwest::Client,
    vault: &Vault,
    token: &Secret,
    name: &str,
) -> Result<Secret, String> {
    let url = format!("{}/secrets/{name}?api-version={API_VERSION}", vault.url);
    let what = format!("Key Vault {} secret `{name}`", vault.url);
    let request = http.get(&url).bearer_auth(token.expose_secret());
    let (status, body) = send(request, &what, &vault.network).await?;
    let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    match status {
        200 => match parsed["value"].as_str() {
            Some(v) => Ok(Secret::new(v)),
            None => Err(format!("{what}: the answer has no `value`")),
        },
        _ => {
            let code = parsed["error"]["code"].as_str().unwrap_or("");
            let message = parsed["error"]["message"]
                .as_str()
                .map(|m| crate::text::cut_message(m.lines().next().unwrap_or(m)))
                .unwrap_or_default();
            let hint = match status {
                404 => "it does not exist in this vault (or is disabled)",
                403 => {
                    "this identity may not read it: grant it `get` on secrets (an access policy, or the Key Vault Secrets User role)"
                }
                401 => "the vault refused the token: check the tenant and the vault URL",
                _ => "the vault refused the request",
            };
            Err(format!("{what}: {hint} (HTTP {status} {code}: {message})"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scope_follows_the_cloud_of_the_vault() {
        assert_eq!(scope_of("https://plant.vault.azure.net"), PUBLIC_SCOPE);
        assert_eq!(
            scope_of("https://plant.vault.azure.cn"),
            "https://vault.azure.cn/.default"
        );
        assert_eq!(
            scope_of("https://plant.vault.usgovcloudapi.net/"),
            "https://vault.usgovcloudapi.net/.default"
        );
        assert_eq!(scope_of("http://127.0.0.1:8080"), PUBLIC_SCOPE);
    }

    #[test]
    fn secret_names_are_letters_digits_and_dashes() {
        assert!(valid_name("cdf-client-secret"));
        assert!(valid_name("A1"));
        assert!(!valid_name(""));
        assert!(!valid_name("a/b"));
        assert!(!valid_name("a_b"));
        assert!(!valid_name(&"a".repeat(128)));
    }

    #[test]
    fn a_credential_is_described_without_its_secret() {
        let c = Credential::ClientSecret {
            token_url: "https://login.microsoftonline.com/t/oauth2/v2.0/token".into(),
            client_id: "app".into(),
            secret: Secret::new("hunter2"),
        };
        assert_eq!(c.describe(), "client secret of client app");
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
