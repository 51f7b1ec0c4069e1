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
