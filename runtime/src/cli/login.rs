//! `extractor-runtime login` and `logout`: a person signs in once (device code, or a browser);
//! the refresh token is cached (mode 0600) and never printed.

use std::path::Path;

use crate::auth;
use crate::config::{Flow, IdpAuthenticationConfig};

use super::{CliError, Code, Outcome};

/// The `idp-authentication` of a `device-code` config, or a usage error.
fn user_flow<'a>(
    path: &Path,
    config: &'a crate::config::Config,
) -> Result<&'a IdpAuthenticationConfig, CliError> {
    match super::idp(path, config)? {
        idp if idp.flow.is_user() => Ok(idp),
        _ => Err(CliError::new(
            Code::Config,
            anyhow::anyhow!(
                "{}: cognite.idp-authentication.flow is `client-credentials`: the application signs in by itself, there is nothing to log in to (set `flow: device-code` to sign in as a person)",
                path.display()
            ),
        )),
    }
}

pub(crate) fn login(
    path: &Path,
    options: &crate::config::LoadOptions,
) -> Result<Outcome, CliError> {
    let config = super::load(path, options)?;
    let idp = user_flow(path, &config)?;
    let network = super::network(path, &config)?;
    let runtime = super::current_thread()?;
    // Our prompts are several lines; what they quote from outside can add no escape sequence.
    let mut show = |line: &str| eprintln!("{}", crate::text::escape_lines(line));
    let outcome = runtime
        .block_on(async {
            tokio::select! {
                r = async {
                    if idp.flow == Flow::Interactive {
                        auth::login_interactive(idp, &network, &mut show).await
                    } else {
                        auth::login_device_code(idp, &network, &mut show).await
                    }
                } => Some(r),
                _ = tokio::signal::ctrl_c() => None,
            }
        })
        .ok_or_else(|| {
            CliError::new(Code::Auth, anyhow::anyhow!("the sign-in was interrupted"))
        })??;
    let who = outcome
        .claims
        .as_ref()
        .and_then(|c| {
            c.upn
                .clone()
                .or(c.preferred_username.clone())
                .or(c.sub.clone())
        })
        .unwrap_or_else(|| "(the provider gave no user claims)".to_owned());
    println!("signed in as {}", crate::text::escape(&who));
    println!(
        "refresh token saved to {} (mode 0600)",
        outcome.cache_file.display()
    );
    Ok(Outcome::Success)
}

pub(crate) fn logout(
    path: &Path,
    options: &crate::config::LoadOptions,
) -> Result<Outcome, CliError> {
    let config = super::load(path, options)?;
    let idp = user_flow(path, &config)?;
    match auth::logout(idp) {
        Ok(Some(file)) => println!("signed out: removed {}", file.display()),
        Ok(None) => println!(
            "not signed in: {} does not exist",
            auth::cache_path(idp).display()
        ),
        Err(e) => {
            return Err(CliError::new(
                Code::Config,
                anyhow::anyhow!("cannot remove {}: {e}", auth::cache_path(idp).display()),
            ));
        }
    }
    Ok(Outcome::Success)
}
