//! `extractor-runtime token`: fetch one token and describe it, never printing it.

use std::path::Path;
use std::time::UNIX_EPOCH;

use crate::auth;
use crate::config::Flow;

use super::{CliError, Outcome};

pub(crate) fn token(
    path: &Path,
    options: &crate::config::LoadOptions,
) -> Result<Outcome, CliError> {
    let config = super::load(path, options)?;
    let idp = super::idp(path, &config)?;
    let network = super::network(path, &config)?;
    if let Some(warning) = super::certificate_warning(&config) {
        eprintln!("warning: {warning}");
    }
    let (token, refresh_after) =
        super::current_thread()?.block_on(auth::fetch_once(idp, &network))?;
    let expires_unix = token
        .expires_at_wall()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    let expires = jiff::Timestamp::from_second(expires_unix)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| expires_unix.to_string());
    println!("token endpoint: {}", idp.token_endpoint());
    match idp.flow {
        Flow::ClientCredentials if idp.certificate.is_some() => {
            println!("flow:           client credentials (certificate)")
        }
        Flow::ClientCredentials => println!("flow:           client credentials (secret)"),
        Flow::DeviceCode | Flow::Interactive => {
            let flow = if idp.flow == Flow::DeviceCode {
                "device code"
            } else {
                "interactive"
            };
            println!("flow:           {flow} (signed in with `login`)");
            println!("sign-in cache:  {}", auth::cache_path(idp).display());
        }
    }
    println!("token type:     {}", token.token_type());
    println!(
        "expires:        {expires} (in {}s)",
        token.remaining().as_secs()
    );
    println!(
        "refresh:        {}s after fetching ({}s before expiry, before jitter)",
        refresh_after.as_secs(),
        token
            .remaining()
            .as_secs()
            .saturating_sub(refresh_after.as_secs())
    );
    match token.claims() {
        Some(c) => {
            let show = |v: Option<String>| v.unwrap_or_else(|| "-".into());
            println!("claims:");
            println!("  aud:   {}", show(c.aud.as_ref().map(|a| a.to_string())));
            println!("  iss:   {}", show(c.iss.clone()));
            println!("  exp:   {}", show(c.exp.map(|e| e.to_string())));
            println!("  tid:   {}", show(c.tid.clone()));
            println!("  appid: {}", show(c.appid.clone().or(c.azp.clone())));
            println!("  roles: {}", show(c.roles.as_ref().map(|r| r.join(", "))));
            println!(
                "  user:  {}",
                show(c.upn.clone().or(c.preferred_username.clone()))
            );
            println!("  oid:   {}", show(c.oid.clone()));
            println!("  sub:   {}", show(c.sub.clone()));
        }
        None => println!("claims:         (not a JWT)"),
    }
    Ok(Outcome::Success)
}
