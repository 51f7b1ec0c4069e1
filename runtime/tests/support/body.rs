//! Request bodies as the CDF client sends them (gzipped from 16 KiB up), for the fakes of both
//! crates' tests and benches.

use std::borrow::Cow;

/// Whether `req`'s body came gzipped (`Content-Encoding: gzip`).
pub fn is_gzipped(req: &wiremock::Request) -> bool {
    req.headers
        .get("content-encoding")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"))
}

/// `req`'s body, inflated when it came gzipped; `None` when that body is not gzip.
pub fn body_of(req: &wiremock::Request) -> Option<Cow<'_, [u8]>> {
    if !is_gzipped(req) {
        return Some(Cow::Borrowed(&req.body));
    }
    let mut out = Vec::with_capacity(req.body.len() * 8);
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&req.body[..]), &mut out).ok()?;
    Some(Cow::Owned(out))
}

/// A request's JSON body, inflated when it came gzipped.
pub fn json_body(req: &wiremock::Request) -> serde_json::Value {
    let body = body_of(req).expect("a gzip body");
    serde_json::from_slice(&body).expect("a JSON body")
}
