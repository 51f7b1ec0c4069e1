//! Percent-encoding of one URL path segment (RFC 3986 unreserved characters pass through).

/// `s` encoded for use as one path segment: RAW database and table names, Pushgateway job
/// names, RAW cursors.
pub(crate) fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn encodes_everything_but_unreserved() {
        assert_eq!(
            super::encode_segment("plant db/ø~x_1.-"),
            "plant%20db%2F%C3%B8~x_1.-"
        );
    }
}
