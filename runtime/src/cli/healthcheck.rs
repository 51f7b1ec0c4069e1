//! `extractor-runtime healthcheck`: a container HEALTHCHECK without curl in the image.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use super::{CliError, Code, Outcome};

pub(crate) fn healthcheck(url: &str) -> Result<Outcome, CliError> {
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
    let addr = with_port(authority)
        .to_socket_addrs()
        .map_err(|e| fail(e.to_string()))?
        .next()
        .ok_or_else(|| fail("no address".into()))?;
    let timeout = Duration::from_secs(5);
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| fail(e.to_string()))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| fail(e.to_string()))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n")
        .map_err(|e| fail(e.to_string()))?;
    // Only the status line matters: read at most 64 KiB of a misbehaving server's answer.
    let mut answer = Vec::new();
    stream
        .take(64 * 1024)
        .read_to_end(&mut answer)
        .map_err(|e| fail(e.to_string()))?;
    let answer = String::from_utf8_lossy(&answer);
    let status = answer.split_whitespace().nth(1).unwrap_or("");
    if status == "200" {
        Ok(Outcome::Success)
    } else {
        Err(fail(format!("HTTP {status}")))
    }
}

/// `authority` with port 80 added when it has none (`host`, `[::1]`), as a URL without a port
/// means.
fn with_port(authority: &str) -> String {
    let host_end = authority.rfind(']').map_or(0, |i| i + 1);
    if authority[host_end..].contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    }
}

#[cfg(test)]
mod tests {
    use super::with_port;

    #[test]
    fn a_url_without_a_port_means_port_80() {
        assert_eq!(with_port("localhost"), "localhost:80");
        assert_eq!(with_port("127.0.0.1:9000"), "127.0.0.1:9000");
        assert_eq!(with_port("[::1]"), "[::1]:80");
        assert_eq!(with_port("[::1]:9000"), "[::1]:9000");
    }
}
