//! Request bodies as the CDF client sends them, for the fakes of both crates' tests.

/// A request's JSON body, inflated when it came gzipped (the CDF client gzips bodies from
/// 16 KiB up).
pub fn json_body(req: &wiremock::Request) -> serde_json::Value {
    let gzipped = req
        .headers
        .get("content-encoding")
        .is_some_and(|v| v.as_bytes() == b"gzip");
    if !gzipped {
        return serde_json::from_slice(&req.body).expect("a JSON body");
    }
    serde_json::from_reader(flate2::read::GzDecoder::new(&req.body[..]))
        .expect("a gzipped JSON body")
}
