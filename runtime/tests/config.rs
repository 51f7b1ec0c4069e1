//! The config loader through its public API: substitution, redaction, typed task blocks, schema.

use std::collections::HashMap;
use std::path::Path;

use extractor_runtime::config::{Config, ConfigErrors, LoadOptions, Schedule};

fn load_with(yaml: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let env = move |name: &str| vars.get(name).cloned();
    Config::from_yaml(
        yaml,
        Some(Path::new("test.yaml")),
        &env,
        &LoadOptions::default(),
    )
}

const WITH_SECRET_FROM_ENV: &str = r#"
version: 1
cognite:
  project: demo
  idp-authentication:
    client-id: ${CLIENT_ID}
    secret: ${SECRET}
    token-url: https://login.example.com/token
    scopes: ["https://api.cognitedata.com/.default"]
"#;

/// Values that would change a YAML document's structure if pasted into its text.
const TRICKY_VALUES: &[&str] = &[
    "has # a hash",
    "key: value",
    "a: b # c: d",
    "\"double\" and 'single' quotes",
    "first line\nsecond line",
    "*not-an-alias",
    "&not-an-anchor",
    "!not-a-tag",
    "[not, a, list]",
    "{not: a map}",
    "|block",
    ">folded",
    "- not an item",
    "% percent",
    "@at `backtick`",
    "trailing space ",
    "${NOT_EXPANDED_TWICE}",
];

#[test]
fn substituted_values_arrive_byte_for_byte() {
    for value in TRICKY_VALUES {
        let config = load_with(
            WITH_SECRET_FROM_ENV,
            &[("CLIENT_ID", value), ("SECRET", value)],
        )
        .unwrap_or_else(|e| panic!("{value:?} failed to load: {e}"));
        let idp = config.cognite.idp_authentication.as_ref().unwrap();
        assert_eq!(idp.client_id, *value, "client-id for {value:?}");
        assert_eq!(
            idp.secret.as_ref().unwrap().expose_secret(),
            *value,
            "secret for {value:?}"
        );
        // The structure did not change: the same keys, the same scopes.
        assert_eq!(idp.scopes, ["https://api.cognitedata.com/.default"]);
        assert_eq!(
            idp.token_url.as_deref(),
            Some("https://login.example.com/token")
        );
        assert_eq!(config.cognite.project, "demo");
    }
}

#[test]
fn an_empty_secret_from_the_environment_is_an_error_that_names_the_key() {
    let err = load_with(WITH_SECRET_FROM_ENV, &[("CLIENT_ID", "id"), ("SECRET", "")]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "test.yaml:7:13: cognite.idp-authentication.secret: must not be empty"
    );
}

#[test]
fn substitution_works_inside_quoted_and_block_scalars_and_keeps_dollars() {
    let yaml = r#"
version: 1
cognite:
  project: "proj-${SUFFIX}"
  dry-run: true
  extraction-pipeline:
    external-id: |-
      pipe-$${literal}-${SUFFIX}-$$
"#;
    let config = load_with(yaml, &[("SUFFIX", "x1")]).unwrap();
    assert_eq!(config.cognite.project, "proj-x1");
    assert_eq!(
        config.cognite.extraction_pipeline.unwrap().external_id,
        Some("pipe-${literal}-x1-$".to_owned())
    );
}

#[test]
fn numbers_and_booleans_can_come_from_the_environment() {
    let yaml = r#"
version: 1
cognite:
  project: demo
  dry-run: ${DRY_RUN:-true}
metrics:
  server: {host: 127.0.0.1, port: "${PORT}"}
  push-gateways:
    - {host: "http://127.0.0.1:9091", job-name: j, username: "${PUSH_USER:-}", push-interval: "${PUSH_EVERY:-45}"}
"#;
    let config = load_with(yaml, &[("PORT", "9123")]).unwrap();
    assert!(config.cognite.dry_run);
    assert_eq!(config.metrics.server.unwrap().port, 9123);
    let gw = &config.metrics.push_gateways[0];
    assert_eq!(
        gw.username, None,
        "an empty value from the environment means unset"
    );
    assert_eq!(gw.push_interval.as_secs(), 45);
}

#[test]
fn an_env_value_in_the_wrong_type_is_not_repeated_in_the_error() {
    let yaml = "version: 1\ncognite:\n  project: demo\n  dry-run: true\nmetrics:\n  server: {port: '${PORT}'}\n";
    let err = load_with(yaml, &[("PORT", "super-secret-value")])
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "test.yaml:6:18: metrics.server.port: expected a number, found a string"
    );
    assert!(!err.contains("super-secret"));
}

#[test]
fn every_unset_variable_is_reported_at_once() {
    let err = load_with(WITH_SECRET_FROM_ENV, &[]).unwrap_err();
    let text = err.to_string();
    assert_eq!(err.errors().len(), 2, "{text}");
    assert!(text.contains("test.yaml:6:16: cognite.idp-authentication.client-id: environment variable `CLIENT_ID` is not set"), "{text}");
    assert!(text.contains("test.yaml:7:13: cognite.idp-authentication.secret: environment variable `SECRET` is not set"), "{text}");
}

#[test]
fn no_rendering_of_a_config_shows_a_secret() {
    let yaml = r#"
version: 1
cognite:
  project: demo
  idp-authentication:
    client-id: id
    secret: literal-client-secret-1
    tenant: my-tenant
    scopes: [s]
metrics:
  push-gateways:
    - {host: "http://127.0.0.1:9091", job-name: j, username: u, password: literal-push-password-2}
"#;
    let config = load_with(yaml, &[]).unwrap();
    let renderings = [format!("{config:?}"), format!("{config:#?}")];
    for text in &renderings {
        assert!(!text.contains("literal-client-secret-1"), "{text}");
        assert!(!text.contains("literal-push-password-2"), "{text}");
        assert!(text.contains("Secret(***)"), "{text}");
    }
    let idp = config.cognite.idp_authentication.as_ref().unwrap();
    assert_eq!(idp.secret.as_ref().unwrap().to_string(), "***");
    assert_eq!(
        idp.token_endpoint(),
        "https://login.microsoftonline.com/my-tenant/oauth2/v2.0/token"
    );

    // Errors from a config holding the same secret, with another problem in it.
    let broken = yaml.replace(
        "tenant: my-tenant",
        "tenant: my-tenant\n    min-ttl: forever",
    );
    let err = load_with(&broken, &[]).unwrap_err();
    for text in [err.to_string(), format!("{err:?}")] {
        assert!(!text.contains("literal-client-secret-1"), "{text}");
        assert!(!text.contains("literal-push-password-2"), "{text}");
    }
}

#[test]
fn task_config_blocks_parse_into_the_extractors_type_with_key_paths() {
    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "kebab-case")]
    struct HttpLike {
        url: String,
        #[serde(default)]
        page_size: u32,
    }
    let yaml = r#"
version: 1
cognite: {project: demo, dry-run: true}
tasks:
  - name: good
    type: http
    schedule: {type: startup}
    config:
      url: http://127.0.0.1/a
      page-size: 10
  - name: bad
    type: http
    schedule: {type: startup}
    config:
      url: http://127.0.0.1/b
      pagesize: 10
  - name: none
    type: http
    schedule: {type: startup}
"#;
    let config = load_with(yaml, &[]).unwrap();
    let good: HttpLike = config.tasks[0].config.parse().unwrap();
    assert_eq!(
        (good.url.as_str(), good.page_size),
        ("http://127.0.0.1/a", 10)
    );
    let err = config.tasks[1]
        .config
        .parse::<HttpLike>()
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "test.yaml:16:7: tasks[1].config.pagesize: unknown key `pagesize`, did you mean `page-size`?"
    );
    let err = config.tasks[2]
        .config
        .parse::<HttpLike>()
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "test.yaml:17:5: tasks[2].config.url: missing required key `url`"
    );
}

#[test]
fn schedules_parse_to_typed_values() {
    let yaml = r#"
version: 1
cognite: {project: demo, dry-run: true}
tasks:
  - {name: a, type: t, schedule: {type: interval, expression: 90, run-on-start: false}}
  - {name: b, type: t, schedule: {type: cron, expression: "0 30 6 * * *", timezone: Europe/Oslo}}
  - {name: c, type: t, schedule: {type: continuous}}
  - {name: d, type: t, schedule: {type: startup}}
"#;
    let config = load_with(yaml, &[]).unwrap();
    match &config.tasks[0].schedule {
        Schedule::Interval {
            every,
            run_on_start,
        } => {
            assert_eq!(every.as_secs(), 90);
            assert!(!run_on_start);
        }
        other => panic!("{other:?}"),
    }
    match &config.tasks[1].schedule {
        Schedule::Cron { cron, timezone } => {
            assert_eq!(timezone.iana_name(), Some("Europe/Oslo"));
            assert_eq!(cron.as_str(), "0 30 6 * * *");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(config.tasks[2].schedule, Schedule::Continuous));
    assert!(matches!(config.tasks[3].schedule, Schedule::Startup));
}

#[test]
fn python_extractor_utils_cognite_sections_load_unchanged() {
    // A `cognite:` section as python-extractor-utils documents it (upper-case log level too).
    let yaml = r#"
version: 1
logger:
  console:
    level: INFO
cognite:
  host: https://westeurope-1.cognitedata.com
  project: my-project
  idp-authentication:
    client-id: abc
    secret: def
    tenant: 11111111-2222-3333-4444-555555555555
    authority: https://login.microsoftonline.com/
    scopes:
      - https://westeurope-1.cognitedata.com/.default
    min-ttl: 60
  extraction-pipeline:
    external-id: my-pipeline
"#;
    let config = load_with(yaml, &[]).unwrap();
    let idp = config.cognite.idp_authentication.unwrap();
    assert_eq!(idp.min_ttl.as_secs(), 60);
    assert_eq!(
        idp.token_endpoint(),
        "https://login.microsoftonline.com/11111111-2222-3333-4444-555555555555/oauth2/v2.0/token"
    );
}

#[test]
fn the_api_key_variable_is_refused_even_when_empty() {
    let err = load_with(WITH_SECRET_FROM_ENV, &[("COGNITE_API_KEY", "")]).unwrap_err();
    assert!(err.is_api_key_in_environment());
    let text = err.to_string();
    assert!(
        text.contains("COGNITE_API_KEY") && text.contains("Unset it"),
        "{text}"
    );
}

#[test]
fn dry_run_can_be_forced_and_then_needs_no_credentials() {
    let yaml = "version: 1\ncognite: {project: demo}\n";
    let env = |_: &str| None;
    assert!(Config::from_yaml(yaml, None, &env, &LoadOptions::default()).is_err());
    let config = Config::from_yaml(
        yaml,
        None,
        &env,
        &LoadOptions {
            force_dry_run: true,
            ..LoadOptions::default()
        },
    )
    .unwrap();
    assert!(config.cognite.dry_run);
}

#[path = "support/certs.rs"]
mod certs;

#[test]
fn every_config_example_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config-examples");
    let tmp = tempfile::tempdir().unwrap();
    let certificate = tmp.path().join("client.pem");
    let (cert, key) = certs::rsa_pem_pair();
    std::fs::write(&certificate, cert + &key).unwrap();
    let certificate = certificate.display().to_string();
    let mut loaded = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml")
            && !path.to_string_lossy().contains("rules")
        {
            let text = std::fs::read_to_string(&path).unwrap();
            // What the examples' comments say to set.
            let env = |name: &str| match name {
                "API_URL" => Some("https://api.example.com/v1/readings".to_owned()),
                "API_TOKEN" => Some("token".to_owned()),
                "POSTGRES_CONNECTION" => Some("host=127.0.0.1 user=u dbname=d".to_owned()),
                "COGNITE_CERTIFICATE" => Some(certificate.clone()),
                _ => None,
            };
            Config::from_yaml(&text, Some(&path), &env, &LoadOptions::default())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            loaded += 1;
        }
    }
    assert!(
        loaded >= 3,
        "only {loaded} examples found in {}",
        dir.display()
    );
}

#[test]
fn the_checked_in_schema_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.schema.json");
    let current = serde_json::to_string_pretty(&Config::json_schema()).unwrap() + "\n";
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &current).unwrap();
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == current,
        "{} is out of date: run `UPDATE_SCHEMA=1 cargo test -p extractor-runtime --test config`",
        path.display()
    );
    // The schema knows the python-compatible keys and forbids unknown ones.
    let schema: serde_json::Value = serde_json::from_str(&current).unwrap();
    let idp = &schema["$defs"]["IdpAuthenticationConfig"];
    assert!(idp["properties"]["client-id"].is_object(), "{idp}");
    assert_eq!(idp["additionalProperties"], serde_json::Value::Bool(false));
}

/// Credentials never go out in clear text: a plain-http token-url, authority or (outside
/// dry-run) CDF host is refused unless it is a loopback address.
#[test]
fn plain_http_to_another_host_is_refused_for_credentials() {
    let load = |cognite: &str| {
        Config::from_yaml(
            &format!("version: 1\ncognite:\n{cognite}"),
            None,
            &|_: &str| None,
            &LoadOptions::default(),
        )
    };
    let idp = |token: &str| {
        format!(
            "  project: p\n  host: https://api.cognitedata.com\n  idp-authentication: {{client-id: c, secret: s, scopes: [x], {token}}}\n"
        )
    };
    let err = load(&idp("token-url: 'http://idp.example.com/token'"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cognite.idp-authentication.token-url")
            && err.contains("would send the client secret in clear text"),
        "{err}"
    );
    let err = load(&idp("tenant: t, authority: 'http://login.example.com'"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cognite.idp-authentication.authority"),
        "{err}"
    );
    for loopback in [
        "http://127.0.0.1:8080/token",
        "http://localhost/token",
        "http://[::1]:9/token",
    ] {
        load(&idp(&format!("token-url: '{loopback}'")))
            .unwrap_or_else(|e| panic!("{loopback}: {e}"));
    }
    let err = load("  project: p\n  host: http://cdf.example.com\n  idp-authentication: {client-id: c, secret: s, scopes: [x], token-url: 'https://idp/token'}\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cognite.host") && err.contains("access token in clear text"),
        "{err}"
    );
    // Dry-run sends nothing: any host will do.
    load("  project: p\n  host: http://cdf.example.com\n  dry-run: true\n").unwrap();
}

/// The files a config names (the CA bundle, the sign-in certificate) are read once, when it
/// loads: gone afterwards, the clients and the token manager are still built from what was read.
#[tokio::test]
async fn named_files_are_read_once_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certs::rsa_pem_pair();
    let ca = dir.path().join("ca.pem");
    let client = dir.path().join("client.pem");
    std::fs::write(&ca, &cert).unwrap();
    std::fs::write(&client, cert + &key).unwrap();
    let config = load_with(
        &format!(
            "version: 1\ncognite:\n  project: p\n  connection: {{ca-file: '{}'}}\n  idp-authentication:\n    client-id: c\n    token-url: http://127.0.0.1:9/token\n    scopes: [s]\n    certificate: {{path: '{}'}}\n",
            ca.display(),
            client.display()
        ),
        &[],
    )
    .unwrap();
    std::fs::remove_file(&ca).unwrap();
    std::fs::remove_file(&client).unwrap();
    let network = config.cognite.connection.network().unwrap();
    assert!(
        network.describe().contains("1 certificate(s)"),
        "{}",
        network.describe()
    );
    let tokens = extractor_runtime::auth::TokenManager::spawn(
        config.cognite.idp_authentication.as_ref().unwrap(),
        extractor_runtime::auth::TokenManagerOptions::default(),
        None,
    )
    .expect("the certificate read at load is used");
    tokens.shutdown();
}

/// Issue 15: an enum in a config type is written `{type: variant, key: value, ...}` (or as a
/// bare string for a unit variant) and read as that variant by the config's deserializer, with
/// the key path and line:column of each problem; `{variant: {...}}` works too.
#[test]
fn tagged_enums_are_read_as_variants_with_positions() {
    #[derive(Debug, PartialEq, serde::Deserialize)]
    #[serde(
        rename_all = "kebab-case",
        rename_all_fields = "kebab-case",
        deny_unknown_fields
    )]
    enum Auth {
        None,
        Bearer { token: String },
        Basic(Basic),
    }
    #[derive(Debug, PartialEq, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Basic {
        username: String,
        #[serde(default)]
        password: Option<String>,
    }
    #[derive(Debug, PartialEq, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Source {
        auth: Auth,
    }
    use extractor_runtime::testing::config;
    let read = |yaml: &str| config::<Source>(yaml).map(|s| s.auth);
    assert_eq!(read("auth: none").unwrap(), Auth::None);
    assert_eq!(read("auth: {type: none}").unwrap(), Auth::None);
    assert_eq!(
        read("auth: {type: bearer, token: t}").unwrap(),
        Auth::Bearer { token: "t".into() }
    );
    assert_eq!(
        read("auth: {type: basic, username: u}").unwrap(),
        Auth::Basic(Basic {
            username: "u".into(),
            password: None
        })
    );
    assert_eq!(
        read("auth: {bearer: {token: t}}").unwrap(),
        Auth::Bearer { token: "t".into() }
    );
    // Each error is at line 8 of the composed file, where the block's YAML starts at column 7:
    // `check(yaml, token, rest)` expects the error at the column of `token`.
    let check = |yaml: &str, token: &str, rest: &str| {
        let column = 7 + yaml.find(token).expect("token in yaml");
        assert_eq!(
            read(yaml).unwrap_err().to_string(),
            format!("8:{column}: tasks[0].config.auth{rest}"),
            "{yaml}"
        );
    };
    check(
        "auth: {type: bearr, token: t}",
        "bearr",
        ".type: unknown value `bearr`, did you mean `bearer`?",
    );
    check(
        "auth: {type: bearer}",
        "{",
        ".token: `type: bearer` needs `token`",
    );
    check(
        "auth: {type: bearer, token: t, username: u}",
        "u}",
        ".username: `username` does not apply to `type: bearer`",
    );
    check(
        "auth: {type: bearer, tokn: t}",
        "t}",
        ".tokn: `tokn` does not apply to `type: bearer`, did you mean `token`?",
    );
    check(
        "auth: {type: basic, username: u, pasword: p}",
        "p}",
        ".pasword: `pasword` does not apply to `type: basic`, did you mean `password`?",
    );
    check(
        "auth: {type: none, token: t}",
        "t}",
        ".token: `type: none` takes no `token`",
    );
    check(
        "auth: {token: t}",
        "{",
        ".type: missing required key `type` (one of `none`, `bearer`, `basic`)",
    );
    check(
        "auth: {type: [bearer]}",
        "[",
        ".type: expected one of `none`, `bearer`, `basic`, found a list",
    );
}

#[test]
fn a_remote_file_is_checked_offline_and_a_fetched_revision_gets_its_cognite_section() {
    let remote = "type: remote\ncognite:\n  project: demo\n  dry-run: true\n  extraction-pipeline: {external-id: p}\nbuffer-file: kept.json\n";
    let stub = load_with(remote, &[]).unwrap();
    let r = stub.remote().expect("a remote file");
    assert_eq!(r.external_id, "p");
    assert_eq!(r.buffer_file, Path::new("kept.json"));
    assert!(stub.tasks.is_empty());
    // A fetched revision: its own `cognite:` is replaced by the local one; its errors name the
    // revision with line:column inside it.
    let fetched = "version: 1\ncognite: {project: other}\ntasks:\n  - {name: a, type: t, schedule: {type: continuous}}\n";
    let config = Config::from_remote(
        fetched,
        "extraction pipeline `p` revision 7",
        r,
        &|_| None,
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(config.cognite.project, "demo");
    assert!(config.cognite.dry_run);
    assert_eq!(config.tasks.len(), 1);
    let broken = "version: 1\ntasks:\n  - {name: a, type: t, schedule: {type: sometimes}}\n";
    let err = Config::from_remote(
        broken,
        "extraction pipeline `p` revision 8",
        r,
        &|_| None,
        &LoadOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("extraction pipeline `p` revision 8:3:"),
        "{err}"
    );
    // A fetched document is never another pointer.
    let err = Config::from_remote(
        "type: remote\ncognite: {project: x}\n",
        "r9",
        r,
        &|_| None,
        &LoadOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("not another `type: remote` file"), "{err}");
    // `source` and `buffer-file` belong to a remote file only.
    let err = load_with(
        "version: 1\ncognite: {project: demo, dry-run: true}\nsource: integration\n",
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("test.yaml:3:9: source: `source` applies only to a `type: remote` file"),
        "{err}"
    );
    // A remote file's own keys are checked as strictly as any.
    let err = load_with(&remote.replace("buffer-file", "bufer-file"), &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unknown key `bufer-file`, did you mean `buffer-file`?"),
        "{err}"
    );
}

#[test]
fn tags_name_where_a_secret_comes_from_and_unknown_tags_are_located() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secret");
    std::fs::write(&file, "from a file\r\n").unwrap();
    let yaml = format!(
        "version: 1\ncognite:\n  project: !env PROJECT\n  idp-authentication:\n    client-id: c\n    secret: !file {}\n    token-url: https://login.example.com/token\n    scopes: [s]\n",
        file.display()
    );
    let config = load_with(&yaml, &[("PROJECT", "from-env")]).unwrap();
    assert_eq!(config.cognite.project, "from-env");
    let idp = config.cognite.idp_authentication.as_ref().unwrap();
    assert_eq!(
        idp.secret.as_ref().unwrap().expose_secret(),
        "from a file",
        "one trailing newline trimmed"
    );
    assert!(!format!("{config:?}").contains("from a file"));
    // `${VAR}` works inside a `!file` path.
    let via_var = yaml.replace(&file.display().to_string(), "${DIR}/secret");
    let config = load_with(
        &via_var,
        &[("PROJECT", "p"), ("DIR", &dir.path().display().to_string())],
    )
    .unwrap();
    assert_eq!(
        config
            .cognite
            .idp_authentication
            .unwrap()
            .secret
            .unwrap()
            .expose_secret(),
        "from a file"
    );

    let err = load_with(
        "version: 1\ncognite: {project: !secret x, dry-run: true}\n",
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("test.yaml:2:28: cognite.project: unknown YAML tag `!secret`: a value may carry `!env NAME`"),
        "{err}"
    );
    let err = load_with(
        "version: 1\ncognite: {project: !keyvault p, dry-run: true}\n",
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("test.yaml:2:30: cognite.project: `!keyvault` needs a top-level `azure-keyvault:` section"),
        "{err}"
    );
    let err = load_with(
        "version: 1\ncognite: {project: !file {a: 1}, dry-run: true}\n",
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("cognite.project: `!file` takes a name"),
        "{err}"
    );
    let err = load_with(
        "version: 1\ncognite: {project: !file /no/such/file, dry-run: true}\n",
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("`!file /no/such/file`: cannot read it"),
        "{err}"
    );
}

#[test]
fn a_python_extractor_utils_config_loads_with_its_spellings_version_and_precedence() {
    // No `version`, underscore keys, both `token_url` and `tenant`, an upper-case level.
    let pxu = r#"
cognite:
  project: demo
  host: https://api.cognitedata.com
  idp_authentication:
    client_id: c
    secret: s
    token_url: https://login.example.com/token
    tenant: my-tenant
    scopes: ["https://api.cognitedata.com/.default"]
    min_ttl: 30
  extraction_pipeline: {external_id: my-pipeline}
logger:
  console: {level: INFO}
state_store:
  local: {path: states.json, save_interval: 30}
"#;
    let config = load_with(pxu, &[]).unwrap();
    assert_eq!(config.version, None);
    let idp = config.cognite.idp_authentication.as_ref().unwrap();
    assert_eq!(idp.token_endpoint(), "https://login.example.com/token");
    assert_eq!(
        config
            .cognite
            .extraction_pipeline
            .as_ref()
            .unwrap()
            .external_id
            .as_deref(),
        Some("my-pipeline")
    );
    assert!(config.state_store.is_some());
    let warnings = config.warnings().join("\n");
    assert!(
        warnings.contains("test.yaml:9:13: cognite.idp-authentication.tenant: both `token-url` and `tenant` are given: `token-url` is used"),
        "{warnings}"
    );
    // `version` as a number or a string of one; another version is refused.
    for v in ["1", "\"1\"", "'1'"] {
        let config = load_with(&format!("version: {v}\n{pxu}"), &[]).unwrap();
        assert_eq!(config.version, Some(1), "{v}");
    }
    let err = load_with(&format!("version: \"2\"\n{pxu}"), &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("version: unsupported config version 2"),
        "{err}"
    );
    let err = load_with(&format!("version: one\n{pxu}"), &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("`one` is not a version"), "{err}");
    // Both spellings of one key: an error at the second.
    let twice = pxu.replace("    min_ttl: 30\n", "    min_ttl: 30\n    min-ttl: 20\n");
    let err = load_with(&twice, &[]).unwrap_err().to_string();
    assert!(
        err.contains(
            "test.yaml:12:5: cognite.idp-authentication.min-ttl: `min-ttl` is given twice"
        ),
        "{err}"
    );
    // Task blocks keep their names as written (free-form keys such as environment variables).
    let task = "version: 1\ncognite: {project: demo, dry-run: true}\ntasks:\n  - {name: t, type: x, schedule: {type: continuous}, config: {env: {MY_VAR: v}}}\n";
    let config = load_with(task, &[]).unwrap();
    let block = config.tasks[0].config.node().unwrap();
    assert!(block.get("env").unwrap().get("MY_VAR").is_some());
}

#[test]
fn python_connection_settings_map_onto_ours() {
    let base = |connection: &str, cognite: &str| {
        format!(
            "version: 1\ncognite:\n  project: demo\n  dry-run: true\n{cognite}  connection:\n{connection}"
        )
    };
    let config = load_with(
        &base(
            "    disable_gzip: true\n    status_forcelist: [429, 503]\n    max_retries_connect: 3\n    max_connection_pool_size: 8\n    proxies: {https: 'http://user:pw@proxy.example:3128', http: 'http://other:3128'}\n",
            "  timeout: 45\n",
        ),
        &[],
    )
    .unwrap();
    let c = &config.cognite.connection;
    assert_eq!(
        c.timeout.get(),
        std::time::Duration::from_secs(45),
        "cognite.timeout is the request timeout"
    );
    assert_eq!(c.status_forcelist, Some(vec![429, 503]));
    assert_eq!(c.max_retries_connect, Some(3));
    assert_eq!(c.max_connection_pool_size, Some(8));
    assert_eq!(
        c.proxy.as_ref().unwrap().expose_secret(),
        "http://user:pw@proxy.example:3128",
        "the https proxy is the one used"
    );
    assert!(
        !format!("{config:?}").contains("user:pw"),
        "a proxy's password is a secret"
    );

    let err = load_with(&base("    disable-ssl: true\n", ""), &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(
            "cognite.connection.disable-ssl: certificate checks cannot be turned off: give the CA"
        ),
        "{err}"
    );
    let err = load_with(&base("    timeout: 10s\n", "  timeout: 30\n"), &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cognite.timeout: give the request timeout once"),
        "{err}"
    );
    let err = load_with(
        &base(
            "    proxy: http://a:1\n    proxies: {https: 'http://b:2'}\n",
            "",
        ),
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("cognite.connection.proxies: give the proxy once"),
        "{err}"
    );
    let err = load_with(&base("    proxies: {ftp: 'http://b:2'}\n", ""), &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cognite.connection.proxies.ftp: unknown scheme `ftp`"),
        "{err}"
    );
}

/// `azure-keyvault: {authentication-method: default}` signs in as Azure's default credential
/// chain does: Kubernetes workload identity when `AZURE_FEDERATED_TOKEN_FILE` is set (the file's
/// token as the client assertion, at `AZURE_AUTHORITY_HOST`), else the managed identity
/// (`Metadata: true` to the instance metadata service, here `AZURE_POD_IDENTITY_AUTHORITY_HOST`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_vault_default_credentials_are_workload_then_managed_identity() {
    use wiremock::matchers::{body_string_contains, header, method, path, query_param};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let entra = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/plant-tenant/oauth2/v2.0/token"))
        .and(body_string_contains("client_assertion=projected-sa-token"))
        .and(body_string_contains("scope=https%3A%2F%2Fvault.azure.net%2F.default"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            serde_json::json!({"access_token": "workload-token", "token_type": "Bearer", "expires_in": 3600}),
        ))
        .mount(&entra)
        .await;
    Mock::given(method("GET"))
        .and(path("/metadata/identity/oauth2/token"))
        .and(header("Metadata", "true"))
        .and(query_param("resource", "https://vault.azure.net"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(
                serde_json::json!({"access_token": "imds-token", "expires_in": "3599"}),
            ),
        )
        .mount(&entra)
        .await;
    let vault = MockServer::start().await;
    for (token, value) in [
        ("workload-token", "via-workload"),
        ("imds-token", "via-imds"),
    ] {
        Mock::given(method("GET"))
            .and(path("/secrets/cdf-secret"))
            .and(query_param("api-version", "7.4"))
            .and(header("authorization", format!("Bearer {token}").as_str()))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(serde_json::json!({"value": value})),
            )
            .mount(&vault)
            .await;
    }
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("azure-identity-token");
    std::fs::write(&token_file, "projected-sa-token\n").unwrap();
    let yaml = format!(
        "azure-keyvault: {{keyvault-name: plant, authentication-method: default, vault-url: '{}'}}\ncognite:\n  project: p\n  idp-authentication:\n    client-id: c\n    secret: !keyvault cdf-secret\n    token-url: https://login.example.com/token\n    scopes: [s]\n",
        vault.uri()
    );
    let entra_uri = entra.uri();
    let token_path = token_file.display().to_string();
    let yaml2 = yaml.clone();
    let workload = tokio::task::spawn_blocking(move || {
        load_with(
            &yaml2,
            &[
                ("AZURE_CLIENT_ID", "app"),
                ("AZURE_TENANT_ID", "plant-tenant"),
                ("AZURE_FEDERATED_TOKEN_FILE", &token_path),
                ("AZURE_AUTHORITY_HOST", &entra_uri),
            ],
        )
    })
    .await
    .unwrap()
    .unwrap();
    let secret = |c: &Config| {
        c.cognite
            .idp_authentication
            .as_ref()
            .unwrap()
            .secret
            .as_ref()
            .unwrap()
            .expose_secret()
            .to_owned()
    };
    assert_eq!(secret(&workload), "via-workload");
    assert!(!format!("{workload:?}").contains("via-workload"));
    let entra_uri = entra.uri();
    let managed = tokio::task::spawn_blocking(move || {
        load_with(&yaml, &[("AZURE_POD_IDENTITY_AUTHORITY_HOST", &entra_uri)])
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(secret(&managed), "via-imds");
}

#[test]
fn a_keyvault_tag_without_a_vault_or_in_the_vault_section_is_located() {
    let e = load_with(
        "cognite:\n  project: p\n  idp-authentication:\n    client-id: c\n    secret: !keyvault cdf-secret\n    token-url: https://l/t\n    scopes: [s]\n",
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("5:23: cognite.idp-authentication.secret: `!keyvault` needs a top-level `azure-keyvault:` section"),
        "{e}"
    );
    let e = load_with(
        "azure-keyvault:\n  keyvault-name: v\n  authentication-method: client-secret\n  client-id: a\n  tenant-id: t\n  secret: !keyvault other\ncognite:\n  project: p\n  idp-authentication:\n    client-id: c\n    secret: !keyvault cdf-secret\n    token-url: https://l/t\n    scopes: [s]\n",
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("azure-keyvault.secret: the vault's own credentials cannot come from the vault"),
        "{e}"
    );
    let e = load_with(
        "cognite:\n  project: p\n  idp-authentication:\n    client-id: c\n    secret: !keyvault bad_name\n    token-url: https://l/t\n    scopes: [s]\n",
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("a Key Vault secret name is 1 to 127 letters"),
        "{e}"
    );
}

/// A program declares the config versions it reads (a custom extractor:
/// `Registry::config_versions`); other versions are refused naming them, and a file without
/// one is read.
#[test]
fn the_versions_a_program_reads_are_its_own() {
    let load = |version: &str, versions: Vec<u32>| {
        Config::from_yaml(
            &format!("{version}cognite: {{project: p, dry-run: true}}\n"),
            Some(Path::new("v.yaml")),
            &|_| None,
            &LoadOptions {
                versions,
                ..LoadOptions::default()
            },
        )
    };
    assert_eq!(load("version: 2\n", vec![1, 2]).unwrap().version, Some(2));
    assert_eq!(load("version: '2'\n", vec![1, 2]).unwrap().version, Some(2));
    assert_eq!(load("", vec![1, 2]).unwrap().version, None);
    let e = load("version: 3\n", vec![1, 2]).unwrap_err().to_string();
    assert!(
        e.contains(
            "v.yaml:1:10: version: unsupported config version 3: this build reads versions 1, 2"
        ),
        "{e}"
    );
    let e = load("version: 2\n", vec![]).unwrap_err().to_string();
    assert!(e.contains("this build reads version 1"), "{e}");
}

/// A config's size limits grow with its text: 30 000 tasks (past the parser's default of
/// 250 000 values, which stopped at about 22 000) load; the alias bomb in the bad-config corpus
/// still stops at the default.
#[test]
fn a_config_with_thirty_thousand_tasks_loads() {
    let mut yaml = String::from("version: 1\ncognite: {project: demo, dry-run: true}\ntasks:\n");
    for i in 0..30_000 {
        yaml.push_str(&format!(
            "  - {{name: t{i}, type: command, schedule: {{type: interval, expression: {}s}}, config: {{command: [echo]}}}}\n",
            1 + i % 5
        ));
    }
    let config = load_with(&yaml, &[]).unwrap();
    assert_eq!(config.tasks.len(), 30_000);
}
