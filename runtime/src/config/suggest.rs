//! Suggestions for misspelled keys and values.

/// `, did you mean `x`?` when one of `known` is close to `got`, else the list of what is known.
pub fn did_you_mean(got: &str, known: &[&str]) -> String {
    let best = known
        .iter()
        .map(|k| (strsim::damerau_levenshtein(got, k), *k))
        .min_by_key(|(d, _)| *d);
    match best {
        // Close enough to be a typo: at most a third of the word changed (and at least one edit).
        Some((distance, key)) if distance <= (got.len().max(key.len()) / 3).max(1) => {
            format!(", did you mean `{key}`?")
        }
        _ if known.is_empty() => String::new(),
        _ => {
            let list: Vec<String> = known.iter().map(|k| format!("`{k}`")).collect();
            format!("; expected one of {}", list.join(", "))
        }
    }
}

/// What to write instead of `key`, a key of dotnet-extractor-utils' `cognite:` section (or an
/// API key) that has no meaning of its own here, when `expected` (the keys of the mapping it is
/// in) says it is that section.
pub(crate) fn foreign_key(key: &str, expected: &[&str]) -> Option<&'static str> {
    let in_cognite = expected.contains(&"idp-authentication");
    let in_idp = expected.contains(&"client-id") && expected.contains(&"token-url");
    let in_pipeline = expected.contains(&"seen-interval");
    Some(match key {
        "api-key" if in_cognite => "is not read: API keys are retired; sign in with `idp-authentication` (OAuth2 client credentials)",
        "cdf-retries" if in_cognite => "is dotnet-extractor-utils' key: write `connection: {max-retries, max-retry-backoff, timeout}`",
        "cdf-chunking" if in_cognite => "is dotnet-extractor-utils' key: leave it out, the upload queues split requests at CDF's limits",
        "cdf-throttling" if in_cognite => "is dotnet-extractor-utils' key: leave it out, each upload queue keeps one request in flight",
        "sdk-logging" if in_cognite => "is dotnet-extractor-utils' key: CDF requests are logged at debug level (`logger.console.level: debug`)",
        "nan-replacement" if in_cognite => "is dotnet-extractor-utils' key: leave it out; a value CDF cannot take is refused alone and written to `upload-queue.dead-letter`",
        "certificates" if in_cognite => "is dotnet-extractor-utils' key: write `connection.ca-file` (a PEM bundle added to the system's roots); certificate checks cannot be turned off",
        "metadata-targets" if in_cognite => "is dotnet-extractor-utils' key: a task's `destination:` says where its data goes",
        "implementation" if in_idp => "is dotnet-extractor-utils' key (MSAL or Basic): leave it out, the token request is the same",
        "frequency" if in_pipeline => "is dotnet-extractor-utils' key: write `seen-interval` (how often a long-running process reports `seen`)",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::did_you_mean;

    #[test]
    fn suggests_the_nearest_key() {
        let known = ["client-id", "secret", "token-url", "tenant"];
        assert_eq!(
            did_you_mean("clent-id", &known),
            ", did you mean `client-id`?"
        );
        assert_eq!(
            did_you_mean("token_url", &known),
            ", did you mean `token-url`?"
        );
        assert_eq!(did_you_mean("secert", &known), ", did you mean `secret`?");
    }

    #[test]
    fn lists_known_keys_when_nothing_is_close() {
        let msg = did_you_mean("frobnicate", &["a-key", "b-key"]);
        assert_eq!(msg, "; expected one of `a-key`, `b-key`");
    }
}
