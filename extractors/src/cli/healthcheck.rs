//! `extractor-runtime healthcheck`: a container HEALTHCHECK without curl in the image.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use super::{CliError, Code, Outcome};

pub fn healthcheck(url: &str) -> Result<Outcome, CliError> {
    let fail = |why: String| CliError::new(Code::TaskFailed, anyhow::anyhow!("{url}: {why}"));
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        CliError::new(
            Code::Config,
            anyhow::anyhow!("{url}: only http:// URLs are supported"),
        )
    })?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = authority
        .to_socket_addrs()
        .map_err(|e| fail(e.to_string()))?
        .next()
        .ok_or_else(|| fail("no address".into()))?;
    let timeout = Duration::from_secs(5);
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| fail(e.to_string()))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| fail(e.to_string()))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n")
        .map_err(|e| fail(e.to_string()))?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(|e| fail(e.to_string()))?;
    let status = answer.split_whitespace().nth(1).unwrap_or("");
    if status == "200" {
        Ok(Outcome::Success)
    } else {
        Err(fail(format!("HTTP {status}")))
    }
}
