//! `!keyvault NAME` values: read from the Azure Key Vault of the `azure-keyvault:` section
//! once the rest of the document is substituted (so that section may use `${VAR}`, `!env` and
//! `!file`), through `cognite.connection`'s CA and proxy. Each value is a secret from then on.

use std::collections::BTreeSet;

use super::env::Lookup;
use super::error::{ConfigError, ConfigErrorKind};
use super::model::{AzureKeyVaultConfig, ConnectionConfig, KeyVaultAuthentication};
use super::node::{Node, NodeKind};
use super::path::KeyPath;
use crate::keyvault::{Credential, Vault};

/// The sign-in authority of Azure's public cloud.
const AUTHORITY: &str = "https://login.microsoftonline.com";
/// The instance metadata service (managed identity).
const IMDS: &str = "http://169.254.169.254";

/// A tagged value: where it is and the secret's name.
struct Tagged {
    path: String,
    mark: super::Mark,
    name: String,
}

/// Replaces every `!keyvault NAME` value of `tree` by the secret; every problem, located.
pub(super) fn resolve(tree: &mut Node, env: Lookup<'_>) -> Vec<ConfigError> {
    let mut tagged = Vec::new();
    find(tree, &KeyPath::Root, &mut tagged);
    if tagged.is_empty() {
        return Vec::new();
    }
    let at_each = |message: &str| -> Vec<ConfigError> {
        tagged
            .iter()
            .map(|t| {
                ConfigError::new(ConfigErrorKind::Environment, message.to_owned())
                    .at(Some(t.mark), t.path.clone())
            })
            .collect()
    };
    if let Some(inside) = tagged.iter().find(|t| {
        t.path.starts_with("azure-keyvault.") || t.path.starts_with("key-vault.")
    }) {
        return vec![
            ConfigError::new(
                ConfigErrorKind::Invalid,
                "the vault's own credentials cannot come from the vault: use `${VAR}`, `!env` or `!file`",
            )
            .at(Some(inside.mark), inside.path.clone()),
        ];
    }
    let key = ["azure-keyvault", "key-vault"]
        .into_iter()
        .find(|k| tree.get(k).is_some());
    let Some(key) = key else {
        return at_each("`!keyvault` needs a top-level `azure-keyvault:` section (keyvault-name, authentication-method)");
    };
    let section = tree.get(key).expect("found above");
    let config: AzureKeyVaultConfig =
        match super::deserialize_node(section, &KeyPath::Key(&KeyPath::Root, key)) {
            Ok(c) => c,
            Err(e) => return vec![e],
        };
    let vault = match vault(&config, tree, env, key, section) {
        Ok(v) => v,
        Err(e) => return vec![e],
    };
    let names: Vec<String> = tagged
        .iter()
        .map(|t| t.name.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    tracing::debug!(vault = %vault.url, secrets = names.len(), how = %vault.credential.describe(), "reading secrets from Azure Key Vault");
    let got = match crate::keyvault::fetch_blocking(&vault, &names) {
        Ok(got) => got,
        Err(message) => {
            return vec![
                ConfigError::new(ConfigErrorKind::Environment, message)
                    .at(Some(section.mark()), key),
            ];
        }
    };
    let mut errors = Vec::new();
    for t in &tagged {
        if let Some(Err(message)) = got.get(&t.name) {
            errors.push(
                ConfigError::new(ConfigErrorKind::Environment, message.clone())
                    .at(Some(t.mark), t.path.clone()),
            );
        }
    }
    if errors.is_empty() {
        replace(tree, &got);
    }
    errors
}

/// The vault and credential `config` describes.
fn vault(
    config: &AzureKeyVaultConfig,
    tree: &Node,
    env: Lookup<'_>,
    key: &str,
    section: &Node,
) -> Result<Vault, ConfigError> {
    let located = |field: &str, message: String| {
        let node = section.get(field).unwrap_or(section);
        let path = if section.get(field).is_some() {
            format!("{key}.{field}")
        } else {
            key.to_owned()
        };
        ConfigError::new(ConfigErrorKind::Invalid, message).at(Some(node.mark()), path)
    };
    if !crate::keyvault::valid_name(&config.keyvault_name) {
        return Err(located(
            "keyvault-name",
            format!("`{}` is not a vault name (letters, digits and dashes)", config.keyvault_name),
        ));
    }
    let url = config
        .vault_url
        .clone()
        .unwrap_or_else(|| format!("https://{}.vault.azure.net", config.keyvault_name))
        .trim_end_matches('/')
        .to_owned();
    let authority = config
        .authority_url
        .clone()
        .or_else(|| env("AZURE_AUTHORITY_HOST").filter(|a| !a.is_empty()))
        .unwrap_or_else(|| AUTHORITY.to_owned())
        .trim_end_matches('/')
        .to_owned();
    let fixed_token_url = config.token_url.clone();
    let mut urls = vec![("vault-url", url.clone()), ("authority-url", authority.clone())];
    if let Some(t) = &fixed_token_url {
        urls.push(("token-url", t.clone()));
    }
    for (field, value) in &urls {
        let value = value.as_str();
        if reqwest::Url::parse(value).is_err() {
            return Err(located(field, format!("`{value}` is not a URL")));
        }
        if super::validate::is_cleartext_remote(value) {
            return Err(located(
                field,
                format!("`{value}` would send a token in clear text: use https:// (plain http:// only for a loopback address)"),
            ));
        }
    }
    let token_url = |tenant: &str| {
        fixed_token_url
            .clone()
            .unwrap_or_else(|| format!("{authority}/{tenant}/oauth2/v2.0/token"))
    };
    let credential = match config.authentication_method {
        KeyVaultAuthentication::ClientSecret => {
            let (Some(client_id), Some(tenant), Some(secret)) =
                (&config.client_id, &config.tenant_id, &config.secret)
            else {
                return Err(located(
                    "authentication-method",
                    "`client-secret` needs `client-id`, `tenant-id` and `secret`".to_owned(),
                ));
            };
            Credential::ClientSecret {
                token_url: token_url(tenant),
                client_id: client_id.clone(),
                secret: secret.clone(),
            }
        }
        KeyVaultAuthentication::Default => {
            let var = |name: &str| env(name).filter(|v| !v.is_empty());
            match (
                var("AZURE_CLIENT_ID"),
                var("AZURE_TENANT_ID"),
                var("AZURE_CLIENT_SECRET"),
                var("AZURE_FEDERATED_TOKEN_FILE"),
            ) {
                (Some(client_id), Some(tenant), Some(secret), _) => Credential::ClientSecret {
                    token_url: token_url(&tenant),
                    client_id,
                    secret: crate::secret::Secret::new(secret),
                },
                (Some(client_id), Some(tenant), None, Some(file)) => {
                    Credential::WorkloadIdentity {
                        token_url: token_url(&tenant),
                        client_id,
                        token_file: file.into(),
                    }
                }
                (client_id, ..) => Credential::ManagedIdentity {
                    host: var("AZURE_POD_IDENTITY_AUTHORITY_HOST")
                        .unwrap_or_else(|| IMDS.to_owned()),
                    client_id,
                },
            }
        }
    };
    // `cognite.connection`'s CA file and proxy (its problems are reported by validation).
    let network = tree
        .get("cognite")
        .and_then(|c| c.get("connection"))
        .and_then(|n| {
            super::deserialize_node::<ConnectionConfig>(n, &KeyPath::Root)
                .ok()?
                .network()
                .ok()
        })
        .unwrap_or_default();
    Ok(Vault {
        scope: crate::keyvault::scope_of(&url),
        url,
        credential,
        network,
    })
}

fn find(node: &Node, path: &KeyPath<'_>, out: &mut Vec<Tagged>) {
    if node.tag.as_deref() == Some("!keyvault") {
        if let NodeKind::Str { value, .. } = &node.kind {
            out.push(Tagged {
                path: path.to_string(),
                mark: node.mark(),
                name: value.clone(),
            });
        }
        return;
    }
    match &node.kind {
        NodeKind::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                find(item, &KeyPath::Index(path, i), out);
            }
        }
        NodeKind::Map(entries) => {
            for (key, value) in entries {
                let key = key.as_text().unwrap_or("?");
                find(value, &KeyPath::Key(path, key), out);
            }
        }
        _ => {}
    }
}

fn replace(
    node: &mut Node,
    got: &std::collections::BTreeMap<String, Result<crate::secret::Secret, String>>,
) {
    if node.tag.as_deref() == Some("!keyvault") {
        node.tag = None;
        if let NodeKind::Str { value, .. } = &node.kind
            && let Some(Ok(secret)) = got.get(value)
        {
            node.kind = NodeKind::Str {
                value: secret.expose_secret().to_owned(),
                substituted: true,
                from_env: true,
            };
        }
        return;
    }
    match &mut node.kind {
        NodeKind::Seq(items) => items.iter_mut().for_each(|n| replace(n, got)),
        NodeKind::Map(entries) => entries.iter_mut().for_each(|(_, v)| replace(v, got)),
        _ => {}
    }
}
