//! `type: http`: poll a JSON REST API.
//!
//! Each run fetches `url` (with `query`, `headers`, `auth`), takes the array at the JSON pointer
//! `items` of each response, follows `pagination` (a next link, or a cursor sent back as a query
//! parameter) until a page has none, and queues every item for its `destination`. Requests are
//! retried on connection errors, timeouts, 408, 429 and 5xx with exponential backoff and jitter,
//! honouring `Retry-After`; other answers and malformed JSON fail the run (permanently: trying
//! again at once would get the same).
//!
//! With `incremental`, the highest value of `field` among the items becomes the watermark; the
//! next run sends it as the query parameter `param`. It is stored only after CDF accepted every
//! item of the run (items need not come sorted, so a watermark is only safe once the run is
//! complete); a failed run is read again from the previous watermark (at-least-once).

pub mod config;
#[cfg(test)]
mod tests;

use extractor_runtime::retry::{self, RetryPolicy};
use extractor_runtime::upload::Upload;
use extractor_runtime::{Extractor, Rejection, RunContext, TaskError};
use reqwest::Url;
use serde_json::Value;

use crate::destination::{Destination, Field};
pub use config::{Auth, HttpConfig, Method, Pagination};

/// The `http` extractor.
pub struct Http {
    config: HttpConfig,
    url: Url,
    /// Built at the first run, with the runtime's CA roots and proxy.
    client: extractor_runtime::net::ClientCell,
    destination: Destination,
    watermark: Option<Field>,
    /// Query parameters whose values the config sets: shown as `***` in messages.
    redact: std::collections::BTreeSet<String>,
}

impl std::fmt::Debug for Http {
    /// The URL as messages show it (query secrets and a password as `***`); headers and auth
    /// are `Secret`s.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http")
            .field("url", &self.shown(&self.url))
            .field("method", &self.config.method)
            .field("headers", &self.config.headers)
            .field("auth", &self.config.auth)
            .field("pagination", &self.config.pagination)
            .field("destination", &self.destination)
            .finish_non_exhaustive()
    }
}

impl Http {
    /// Checks the config.
    pub fn new(config: HttpConfig) -> Result<Self, Rejection> {
        let mut problems = Rejection::new();
        let url = match Url::parse(&config.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => Some(u),
            Ok(u) => {
                problems.push(
                    "url",
                    format!("must be http or https, not `{}`", u.scheme()),
                );
                None
            }
            Err(e) => {
                problems.push("url", format!("`{}` is not a URL: {e}", config.url));
                None
            }
        };
        for (name, value) in &config.headers {
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                problems.push(
                    format!("headers.{name}"),
                    format!("`{name}` is not a header name"),
                );
            } else if reqwest::header::HeaderValue::from_str(value.expose_secret()).is_err() {
                // The value may be a secret: never quote it.
                problems.push(
                    format!("headers.{name}"),
                    "the value has characters a header cannot carry",
                );
            }
        }
        if config.body.is_some() && config.method == Method::Get {
            problems.push("body", "a body needs `method: POST`");
        }
        if !config.items.is_empty() && !config.items.starts_with('/') {
            problems.push(
                "items",
                format!(
                    "`{}` is not a JSON pointer: it must be \"\" or start with `/`",
                    config.items
                ),
            );
        }
        if let Some(p) = &config.pagination {
            if !p.pointer().starts_with('/') {
                problems.push(
                    "pagination.pointer",
                    format!(
                        "`{}` is not a JSON pointer: it must start with `/`",
                        p.pointer()
                    ),
                );
            }
            if let Pagination::Cursor { param, .. } = p
                && param.trim().is_empty()
            {
                problems.push("pagination.param", "must not be empty");
            }
            if p.max_pages() == 0 {
                problems.push("pagination.max-pages", "must be at least 1");
            }
        }
        let watermark = match &config.incremental {
            Some(inc) => {
                if inc.param.trim().is_empty() {
                    problems.push("incremental.param", "must not be empty");
                }
                match Field::parse(&inc.field) {
                    Ok(f) => Some(f),
                    Err(e) => {
                        problems.push("incremental.field", e);
                        None
                    }
                }
            }
            None => None,
        };
        if config.timeout.is_zero() {
            problems.push("timeout", "must be more than 0");
        }
        let destination = Destination::new(&config.destination)
            .map_err(|r| problems.extend_under("destination", r))
            .ok();
        match (url, destination) {
            (Some(url), Some(destination)) if problems.is_empty() => Ok(Http {
                redact: config
                    .query
                    .keys()
                    .cloned()
                    .chain(url.query_pairs().map(|(k, _)| k.into_owned()))
                    .collect(),
                config,
                url,
                client: extractor_runtime::net::ClientCell::new(),
                destination,
                watermark,
            }),
            _ => Err(problems),
        }
    }

    /// The HTTP client: built once, at the first run, from the runtime's network settings.
    fn client(&self, ctx: &RunContext) -> Result<&reqwest::Client, TaskError> {
        let timeout = self.config.timeout;
        self.client
            .get(ctx.network(), |builder| {
                // Headers, auth and query secrets go only where the config sends them: a redirect
                // is followed only within the same scheme, host and port.
                builder.timeout(timeout.get()).redirect(reqwest::redirect::Policy::custom(|attempt| {
                    let same = attempt
                        .previous()
                        .first()
                        .is_some_and(|first| first.origin() == attempt.url().origin());
                    if !same {
                        let to = attempt.url().origin().ascii_serialization();
                        attempt.error(format!(
                            "a redirect to {to} (another origin) is not followed: the request's credentials go only to the configured url"
                        ))
                    } else if attempt.previous().len() >= 10 {
                        attempt.error("more than 10 redirects")
                    } else {
                        attempt.follow()
                    }
                }))
            })
            .map_err(|e| TaskError::permanent(format!("cannot build an HTTP client: {e}")))
    }

    /// The first page's URL: `url` with `query`, and the watermark when there is one.
    fn first_url(&self, since: Option<&Value>) -> Url {
        let mut url = self.url.clone();
        {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in &self.config.query {
                pairs.append_pair(k, v.expose_secret());
            }
            if let (Some(inc), Some(since)) = (&self.config.incremental, since) {
                pairs.append_pair(&inc.param, &text_of(since));
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        url
    }

    /// One page, with retries.
    async fn fetch(&self, ctx: &RunContext, url: &Url) -> Result<Value, TaskError> {
        let retries = &self.config.retries;
        // `max-backoff` caps the backoff and the `Retry-After` honoured alike.
        let mut backoff =
            RetryPolicy::new(retries.initial_backoff.get(), retries.max_backoff.get())
                .with_max_retries(retries.max_retries)
                .backoff();
        // Query values from the config may be secrets (`?api_key=`): never shown.
        let shown = self.shown(url);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (problem, retry_after) = match self.request(self.client(ctx)?, url).send().await {
                Ok(response) => {
                    let status = response.status();
                    let retry_after = retry::retry_after(response.headers());
                    if status.is_success() {
                        let bytes = self.read_bounded(response, &shown).await?;
                        return serde_json::from_slice(&bytes).map_err(|e| {
                            TaskError::permanent(format!(
                                "{} {shown}: the answer is not JSON: {e} (it starts with {:?})",
                                self.method(),
                                String::from_utf8_lossy(&bytes[..bytes.len().min(80)])
                            ))
                        });
                    }
                    let retryable = retry::retryable_status(status.as_u16(), false).is_some();
                    // Only the start of an error answer is shown: read no more of it.
                    let body = first_bytes(response, 4096).await;
                    let problem = format!(
                        "{} {shown}: {status}: {}",
                        self.method(),
                        body.chars().take(200).collect::<String>().trim()
                    );
                    if !retryable {
                        return Err(TaskError::permanent(problem));
                    }
                    (problem, retry_after)
                }
                Err(e) if retry::retryable_error(&e).is_some() => (
                    format!(
                        "{} {shown}: {}",
                        self.method(),
                        extractor_runtime::net::explain(e)
                    ),
                    None,
                ),
                Err(e) if e.is_redirect() => {
                    // Why the redirect was not followed is in the source.
                    let e = e.without_url();
                    let why = std::error::Error::source(&e)
                        .map_or_else(|| e.to_string(), |s| format!("{e}: {s}"));
                    return Err(TaskError::permanent(format!(
                        "{} {shown}: {why}",
                        self.method()
                    )));
                }
                Err(e) => {
                    return Err(TaskError::permanent(format!(
                        "{} {shown}: {}",
                        self.method(),
                        e.without_url()
                    )));
                }
            };
            let Some(wait) = backoff.next_delay(retry_after) else {
                return Err(TaskError::transient(format!(
                    "gave up after {attempt} attempts: {problem}"
                )));
            };
            tracing::warn!(task = %ctx.task(), attempt, wait_ms = wait.as_millis() as u64, "retrying: {problem}");
            tokio::select! {
                () = ctx.cancelled() => return Err(TaskError::transient(format!("cancelled while waiting to retry {shown}"))),
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// `url` for messages, with the values of the query parameters the config sets (in `query`
    /// or in `url` itself) replaced by `***`.
    fn shown(&self, url: &Url) -> String {
        let mut shown = url.clone();
        if url.password().is_some() {
            let _ = shown.set_password(Some("***"));
        }
        if self.redact.is_empty() || url.query().is_none() {
            return shown.to_string().replace("%2A%2A%2A", "***");
        }
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let v = if self.redact.contains(k.as_ref()) {
                    "***".into()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        shown.query_pairs_mut().clear().extend_pairs(pairs);
        shown.to_string().replace("%2A%2A%2A", "***")
    }

    /// The answer's body, at most `max-response-size` of it (streamed: a larger answer is
    /// refused without being kept).
    async fn read_bounded(
        &self,
        response: reqwest::Response,
        shown: &str,
    ) -> Result<Vec<u8>, TaskError> {
        let max = self.config.max_response_size;
        extractor_runtime::net::read_capped(response, max)
            .await
            .map_err(|e| match e {
                extractor_runtime::net::ReadError::TooLarge { .. } => TaskError::permanent(format!(
                    "{} {shown}: the answer is larger than max-response-size ({}); raise it or ask for smaller pages",
                    self.method(),
                    extractor_runtime::size::show_size(max)
                )),
                extractor_runtime::net::ReadError::Transport(e) => TaskError::transient(format!(
                    "{} {shown}: reading the answer: {}",
                    self.method(),
                    e.without_url()
                )),
            })
    }

    /// Checkpoints the highest watermark read (if it moved) and waits until CDF settled this
    /// task's items.
    async fn settle(
        upload: &Upload,
        highest: Option<Value>,
        since: Option<&Value>,
    ) -> Result<(), TaskError> {
        if let Some(h) = highest.filter(|h| Some(h) != since) {
            upload.checkpoint("", &h);
        }
        upload.settled().await
    }

    fn method(&self) -> &'static str {
        match self.config.method {
            Method::Get => "GET",
            Method::Post => "POST",
        }
    }

    fn request(&self, client: &reqwest::Client, url: &Url) -> reqwest::RequestBuilder {
        let mut request = match self.config.method {
            Method::Get => client.get(url.clone()),
            Method::Post => client
                .post(url.clone())
                .json(self.config.body.as_ref().unwrap_or(&Value::Null)),
        };
        request = request.header(reqwest::header::ACCEPT, "application/json");
        for (name, value) in &self.config.headers {
            request = request.header(name.as_str(), value.expose_secret());
        }
        match &self.config.auth {
            Auth::None => request,
            Auth::Bearer { token } => request.bearer_auth(token.expose_secret()),
            Auth::Basic { username, password } => {
                request.basic_auth(username, password.as_ref().map(|p| p.expose_secret()))
            }
        }
    }

    /// The next page's URL, if the response names one.
    fn next_url(&self, current: &Url, body: &Value) -> Result<Option<Url>, TaskError> {
        let Some(p) = &self.config.pagination else {
            return Ok(None);
        };
        let next = match body.pointer(p.pointer()) {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::String(s)) if s.is_empty() => return Ok(None),
            Some(v) => text_of(v),
        };
        match p {
            Pagination::NextLink { .. } => {
                let url = current.join(&next).map_err(|e| {
                    TaskError::permanent(format!(
                        "{}: the next link `{next}` is not a URL: {e}",
                        self.shown(current)
                    ))
                })?;
                // The next page gets the headers and auth: only on the configured origin.
                if url.origin() != self.url.origin() {
                    return Err(TaskError::permanent(format!(
                        "{}: the next link points to {}, another origin than the configured url; not followed, so the request's credentials do not leave {}",
                        self.shown(current),
                        url.origin().ascii_serialization(),
                        self.url.origin().ascii_serialization()
                    )));
                }
                Ok(Some(url))
            }
            Pagination::Cursor { param, .. } => {
                let param = param.as_str();
                let mut url = current.clone();
                let kept: Vec<(String, String)> = current
                    .query_pairs()
                    .filter(|(k, _)| k != param)
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect();
                url.query_pairs_mut()
                    .clear()
                    .extend_pairs(kept)
                    .append_pair(param, &next);
                Ok(Some(url))
            }
        }
    }
}

impl Extractor for Http {
    async fn run(&self, ctx: RunContext) -> Result<(), TaskError> {
        let upload = self.destination.upload(&ctx);
        let since = match &self.config.incremental {
            Some(inc) => upload.resume::<Value>("")?.or_else(|| inc.initial.clone()),
            None => None,
        };
        let mut url = self.first_url(since.as_ref());
        let mut highest = since.clone();
        let (mut pages, mut items) = (0u64, 0u64);
        loop {
            let mut body = match self.fetch(&ctx, &url).await {
                Ok(body) => body,
                Err(e) => {
                    // What the pages before this one gave is delivered; the watermark stays
                    // (items need not be sorted: the next run reads them all again).
                    let _ = upload.deliver().await;
                    return Err(e);
                }
            };
            // A bad next link fails the run after this page is delivered.
            let next = self.next_url(&url, &body);
            let list = match body.pointer_mut(&self.config.items).map(Value::take) {
                Some(Value::Array(list)) => list,
                Some(Value::Null) | None if pages > 0 => Vec::new(),
                other => {
                    return Err(TaskError::permanent(format!(
                        "{}: `items: \"{}\"` points to {}, not to an array",
                        self.shown(&url),
                        self.config.items,
                        other.as_ref().map_or("nothing", describe)
                    )));
                }
            };
            for item in list {
                if let Some(field) = &self.watermark
                    && let Some(v) = field.resolve(&item)
                    && !v.is_null()
                    && highest.as_ref().is_none_or(|h| newer(&v, h))
                {
                    highest = Some(v.into_owned());
                }
                self.destination.send(&ctx, &upload, item).await?;
                items += 1;
            }
            pages += 1;
            if ctx.is_cancelled() {
                return Err(TaskError::transient(format!(
                    "cancelled after {pages} pages"
                )));
            }
            let next = match next {
                Ok(next) => next,
                Err(e) => {
                    let _ = upload.deliver().await;
                    return Err(e);
                }
            };
            match next {
                Some(next) => {
                    let max = self
                        .config
                        .pagination
                        .as_ref()
                        .map_or(1, Pagination::max_pages);
                    if pages >= max {
                        tracing::warn!(task = %ctx.task(), pages, "stopped at `max-pages`; the rest comes next run");
                        break;
                    }
                    url = next;
                }
                None => break,
            }
        }
        Self::settle(&upload, highest, since.as_ref()).await?;
        tracing::info!(task = %ctx.task(), pages, items, "http run done");
        Ok(())
    }
}

/// A watermark as a query parameter: a string as it is, anything else as JSON.
fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Whether `a` is past `b`: numbers by value, anything else by its text (RFC 3339 times in one
/// format sort as text).
fn newer(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(a), Some(b)) => a > b,
        _ => text_of(a) > text_of(b),
    }
}

fn describe(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The first `limit` bytes of an answer, as text (lossy).
async fn first_bytes(mut response: reqwest::Response, limit: usize) -> String {
    let mut body = Vec::new();
    while body.len() < limit {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                body.extend_from_slice(&chunk[..chunk.len().min(limit - body.len())])
            }
            _ => break,
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}
