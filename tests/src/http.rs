//! A tiny blocking HTTP/1.0 client for driving HAProxy frontends from a chosen
//! loopback source address (so that each client is its own `src` stick-table key).

use crate::error::{HarnessError, Result};
use socket2::{Domain, Protocol, Socket, Type};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

/// Connect, read and write timeout of every request.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(3);

/// A TCP connection from `src` to `dst`, with [`HTTP_TIMEOUT`] on every step.
pub fn connect_from(src: Ipv4Addr, dst: SocketAddr) -> Result<TcpStream> {
    let io = |what: &str, e| HarnessError::io(format!("{what} ({src} -> {dst})"), e);
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))
        .map_err(|e| io("creating a socket", e))?;
    s.bind(&SocketAddr::from((src, 0)).into())
        .map_err(|e| io("binding the client address", e))?;
    s.connect_timeout(&dst.into(), HTTP_TIMEOUT)
        .map_err(|e| io("connecting", e))?;
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(HTTP_TIMEOUT))
        .and_then(|()| s.set_write_timeout(Some(HTTP_TIMEOUT)))
        .map_err(|e| io("setting timeouts", e))?;
    Ok(s)
}

/// A blocking HTTP/1.0 `GET /` from source address `src`, with extra `headers`;
/// returns the status code.
pub fn http_get(src: Ipv4Addr, dst: SocketAddr, headers: &[(&str, &str)]) -> Result<u16> {
    let mut s = connect_from(src, dst)?;
    let mut req = String::from("GET / HTTP/1.0\r\nHost: stktagg-tests\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())
        .map_err(|e| HarnessError::io(format!("sending a request to {dst}"), e))?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer)
        .map_err(|e| HarnessError::io(format!("reading the answer of {dst}"), e))?;
    let text = String::from_utf8_lossy(&answer);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| HarnessError::Unexpected(format!("not an HTTP answer from {dst}: {text}")))
}
