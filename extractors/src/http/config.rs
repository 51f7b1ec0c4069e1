//! The `http` extractor's `config:` block.

use extractor_runtime::Duration;
use std::collections::BTreeMap;

use extractor_runtime::Secret;
use serde::Deserialize;

use crate::destination::DestinationConfig;

/// `tasks[].config` for `type: http`.
#[derive(Clone, Debug, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HttpConfig {
    /// The first page's URL (http or https).
    pub url: String,
    /// `GET` (default) or `POST`.
    #[serde(default)]
    pub method: Method,
    /// Extra request headers; values may come from the environment (`${API_KEY}`) and are never
    /// logged.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// Query parameters added to the URL; values may be secrets (`api_key: ${API_KEY}`) and are
    /// shown as `***` in logs and errors.
    #[serde(default)]
    pub query: BTreeMap<String, Secret>,
    /// A JSON body for `POST`.
    #[serde(default)]
    pub body: Option<serde_json::Value>,
    /// How to authenticate.
    #[serde(default)]
    pub auth: Auth,
    /// A JSON pointer to the array of items in a response (`""`, the default, is the response
    /// itself).
    #[serde(default)]
    pub items: String,
    /// How to get the next page.
    #[serde(default)]
    pub pagination: Option<Pagination>,
    /// Incremental extraction: the highest `field` seen is kept in the state store and sent as
    /// the query parameter `param` on the next run.
    #[serde(default)]
    pub incremental: Option<IncrementalConfig>,
    /// Per request.
    #[serde(default = "default_timeout")]
    pub timeout: Duration,
    /// The largest answer read (`64MiB` by default): a larger page fails the run naming its URL
    /// instead of filling the memory.
    #[serde(
        default = "default_max_response_size",
        deserialize_with = "extractor_runtime::size::deserialize_size"
    )]
    #[schemars(with = "extractor_runtime::size::SizeSchema")]
    pub max_response_size: u64,
    /// Retries on connection errors, timeouts, 408, 429 and 5xx.
    #[serde(default)]
    pub retries: RetriesConfig,
    /// Where the items go.
    pub destination: DestinationConfig,
}

/// HTTP methods.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
pub enum Method {
    /// GET.
    #[default]
    #[serde(rename = "GET", alias = "get")]
    Get,
    /// POST, with `body` as JSON.
    #[serde(rename = "POST", alias = "post")]
    Post,
}

/// `auth:`: `{type: none}` (the default), `{type: bearer, token}` or `{type: basic, username,
/// password}`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
#[schemars(tag = "type")]
pub enum Auth {
    /// No credentials.
    #[default]
    None,
    /// `Authorization: Bearer <token>`.
    Bearer {
        /// The token, like `${API_TOKEN}`.
        token: Secret,
    },
    /// `Authorization: Basic ...`.
    Basic {
        /// The user name.
        username: String,
        /// The password.
        #[serde(default)]
        password: Option<Secret>,
    },
}

/// `pagination:`: where the response says how to get the next page. The last page has none
/// (or null, or "").
#[derive(Clone, Debug, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case",
    rename_all_fields = "kebab-case"
)]
#[schemars(tag = "type")]
pub enum Pagination {
    /// The response holds the next page's URL (absolute, or relative to the page's).
    NextLink {
        /// A JSON pointer to the next link.
        pointer: String,
        /// Stop after this many pages in one run (a guard against an API that always links on).
        #[serde(default = "default_max_pages")]
        max_pages: u64,
    },
    /// The response holds an opaque cursor, sent as the query parameter `param`.
    Cursor {
        /// A JSON pointer to the cursor.
        pointer: String,
        /// The query parameter that carries the cursor.
        param: String,
        /// Stop after this many pages in one run (a guard against an API that always links on).
        #[serde(default = "default_max_pages")]
        max_pages: u64,
    },
}

impl Pagination {
    /// The JSON pointer to the next link or the cursor.
    pub fn pointer(&self) -> &str {
        match self {
            Pagination::NextLink { pointer, .. } | Pagination::Cursor { pointer, .. } => pointer,
        }
    }

    /// The most pages one run reads.
    pub fn max_pages(&self) -> u64 {
        match self {
            Pagination::NextLink { max_pages, .. } | Pagination::Cursor { max_pages, .. } => {
                *max_pages
            }
        }
    }
}

/// `incremental:`.
#[derive(Clone, Debug, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct IncrementalConfig {
    /// The item field (a name or a JSON pointer) whose highest value is the watermark.
    pub field: String,
    /// The query parameter the watermark is sent as.
    pub param: String,
    /// The watermark of the first run (when the state store has none).
    #[serde(default)]
    pub initial: Option<serde_json::Value>,
}

/// `retries:`.
#[derive(Clone, Debug, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RetriesConfig {
    /// Retries after the first attempt.
    #[serde(default = "default_max_retries")]
    pub max_retries: usize,
    /// The first wait; it doubles (with jitter) up to `max-backoff`.
    #[serde(default = "default_initial_backoff")]
    pub initial_backoff: Duration,
    /// The longest wait between attempts, and the longest `Retry-After` honoured.
    #[serde(default = "default_max_backoff")]
    pub max_backoff: Duration,
}

impl Default for RetriesConfig {
    fn default() -> Self {
        RetriesConfig {
            max_retries: default_max_retries(),
            initial_backoff: default_initial_backoff(),
            max_backoff: default_max_backoff(),
        }
    }
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_max_response_size() -> u64 {
    64 << 20
}

fn default_max_pages() -> u64 {
    10_000
}

fn default_max_retries() -> usize {
    5
}

fn default_initial_backoff() -> Duration {
    Duration::from_secs(1)
}

fn default_max_backoff() -> Duration {
    Duration::from_secs(60)
}
