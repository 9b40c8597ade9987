//! A lean HTTP/1.1 keep-alive client for the receiver's load generator, in the manner of
//! `wrk`: one TCP connection, the request head written once and reused, the response read
//! into one buffer and parsed only for its status and length. The generator shares the two
//! cores with the receiver it measures, and reqwest spent about 45 µs of CPU per request,
//! close to what the receiver itself needs.

use std::io::Write as _;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// One keep-alive connection that posts JSON bodies to one path.
pub struct Connection {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    /// The request up to the value of `Content-Length`.
    head: Vec<u8>,
    request: Vec<u8>,
    response: Vec<u8>,
}

/// A request that got no answer, or an answer other than 2xx.
#[derive(Debug)]
pub enum Failure {
    Io(String),
    Status(u16, String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io(e) => write!(f, "{e}"),
            Self::Status(status, body) => write!(f, "{status} {body}"),
        }
    }
}

impl Connection {
    pub fn new(addr: SocketAddr, path: &str, authorization: &str) -> Self {
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: {addr}\r\nauthorization: {authorization}\r\n\
             content-type: application/json\r\ncontent-length: "
        )
        .into_bytes();
        Self {
            addr,
            stream: None,
            head,
            request: Vec::with_capacity(4096),
            response: Vec::with_capacity(4096),
        }
    }

    /// Posts `body` and waits for the whole answer. After any failure to talk, the next
    /// request opens a new connection.
    pub async fn post(&mut self, body: &[u8]) -> Result<(), Failure> {
        let result = self.exchange(body).await;
        if matches!(result, Err(Failure::Io(_))) {
            self.stream = None;
        }
        result
    }

    async fn exchange(&mut self, body: &[u8]) -> Result<(), Failure> {
        let io = |e: std::io::Error| Failure::Io(e.to_string());
        let stream = match &mut self.stream {
            Some(stream) => stream,
            None => {
                let stream = TcpStream::connect(self.addr).await.map_err(io)?;
                stream.set_nodelay(true).map_err(io)?;
                self.stream.insert(stream)
            }
        };
        self.request.clear();
        self.request.extend_from_slice(&self.head);
        let _ = write!(self.request, "{}\r\n\r\n", body.len());
        self.request.extend_from_slice(body);
        stream.write_all(&self.request).await.map_err(io)?;

        self.response.clear();
        let (head_end, status, length, close) = loop {
            if stream.read_buf(&mut self.response).await.map_err(io)? == 0 {
                return Err(Failure::Io("the server closed the connection".into()));
            }
            if let Some(end) = find(&self.response, b"\r\n\r\n") {
                let (status, length, close) = parse_head(&self.response[..end])?;
                break (end + 4, status, length, close);
            }
        };
        while self.response.len() < head_end + length {
            if stream.read_buf(&mut self.response).await.map_err(io)? == 0 {
                return Err(Failure::Io(
                    "the server closed the connection mid-body".into(),
                ));
            }
        }
        if close {
            self.stream = None;
        }
        if (200..300).contains(&status) {
            Ok(())
        } else {
            let body = &self.response[head_end..head_end + length];
            Err(Failure::Status(
                status,
                String::from_utf8_lossy(body).into_owned(),
            ))
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Status, body length and whether the server closes the connection after this answer.
fn parse_head(head: &[u8]) -> Result<(u16, usize, bool), Failure> {
    let bad = |what: &str| Failure::Io(format!("malformed response: {what}"));
    let text = std::str::from_utf8(head).map_err(|_| bad("not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| bad("no status line"))?;
    let mut length = None;
    let mut close = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse().map_err(|_| bad("content-length"))?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(bad("chunked bodies are not read by this client"));
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
    }
    Ok((
        status,
        length.ok_or_else(|| bad("no content-length"))?,
        close,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn reads_answers_on_one_connection_and_reports_failures() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            let answers: [&[u8]; 2] = [
                b"HTTP/1.1 200 OK\r\nContent-Length: 16\r\n\r\n{\"success\":true}",
                b"HTTP/1.1 400 Bad Request\r\ncontent-length: 5\r\nConnection: close\r\n\r\nnope!",
            ];
            for answer in answers {
                let n = socket.read(&mut buf).await.expect("read");
                seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
                socket.write_all(answer).await.expect("write");
            }
            seen
        });
        let mut connection = Connection::new(addr, "/v1/track", "Basic a2V5Og==");
        connection
            .post(b"{\"a\":1}")
            .await
            .expect("first answer is 200");
        match connection.post(b"{}").await {
            Err(Failure::Status(400, body)) => assert_eq!(body, "nope!"),
            other => panic!("expected a 400, got {other:?}"),
        }
        assert!(connection.stream.is_none(), "closed on `Connection: close`");
        let seen = server.await.expect("server");
        assert!(seen[0].starts_with("POST /v1/track HTTP/1.1\r\n"));
        assert!(seen[0].contains("authorization: Basic a2V5Og==\r\n"));
        assert!(seen[0].ends_with("content-length: 7\r\n\r\n{\"a\":1}"));
        assert!(seen[1].ends_with("content-length: 2\r\n\r\n{}"));
    }
}
