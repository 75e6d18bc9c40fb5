//! A loopback Lambda Runtime API for running the real `bootstrap` binary outside Lambda: it
//! hands out the given events one by one on `GET /runtime/invocation/next` and records what the
//! function posts back (responses, invocation errors, init errors). It implements the documented
//! HTTP interface (docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html), nothing more.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Something the function did, with when it happened.
#[derive(Debug, Clone)]
pub enum Call {
    /// The function asked for its next event: it is initialised and ready.
    Next(Instant),
    /// The function answered invocation `request_id` with `body`.
    Response { request_id: String, body: String },
    /// The function reported invocation `request_id` as failed.
    InvocationError { request_id: String, body: String },
    /// The function reported an init failure.
    InitError {
        body: String,
        error_type: Option<String>,
    },
}

/// A running loopback Runtime API.
pub struct RuntimeApi {
    /// `127.0.0.1:<port>`, the value of `AWS_LAMBDA_RUNTIME_API`.
    pub address: String,
    /// What the function did, in order.
    pub calls: Receiver<Call>,
}

/// Starts a Runtime API that serves `events` (JSON payloads) in order; once they are all served,
/// further `next` requests wait forever (as on Lambda, where the sandbox is frozen).
pub fn start(events: Vec<String>) -> RuntimeApi {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (tx, rx) = channel();
    let queue = Arc::new(Mutex::new(
        events.into_iter().enumerate().collect::<VecDeque<_>>(),
    ));
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let (tx, queue) = (tx.clone(), queue.clone());
            std::thread::spawn(move || serve(conn, &tx, &queue));
        }
    });
    RuntimeApi { address, calls: rx }
}

fn serve(conn: TcpStream, tx: &Sender<Call>, queue: &Mutex<VecDeque<(usize, String)>>) {
    let mut writer = conn.try_clone().unwrap();
    let mut reader = BufReader::new(conn);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end().to_string();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let len: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let body = String::from_utf8_lossy(&body).into_owned();
        let mut parts = request_line.split_whitespace();
        let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let path = path.strip_prefix("/2018-06-01/runtime").unwrap_or(path);
        if method == "GET" && path == "/invocation/next" {
            let _ = tx.send(Call::Next(Instant::now()));
            let next = queue.lock().unwrap().pop_front();
            let Some((n, event)) = next else {
                // No more events: hold the request open, as a frozen sandbox would.
                std::thread::park();
                return;
            };
            let deadline = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis()
                + 60_000;
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                 Lambda-Runtime-Aws-Request-Id: req-{n}\r\nLambda-Runtime-Deadline-Ms: {deadline}\r\n\
                 Lambda-Runtime-Invoked-Function-Arn: arn:aws:lambda:us-east-1:123456789012:function:test\r\n\
                 Lambda-Runtime-Trace-Id: Root=1-00000000-000000000000000000000000\r\n\r\n",
                event.len()
            );
            if writer
                .write_all(head.as_bytes())
                .and_then(|_| writer.write_all(event.as_bytes()))
                .is_err()
            {
                return;
            }
            continue;
        }
        let call = if let Some(rest) = path.strip_prefix("/invocation/") {
            let (id, what) = rest.split_once('/').unwrap_or((rest, ""));
            if what == "response" {
                Call::Response {
                    request_id: id.to_string(),
                    body,
                }
            } else {
                Call::InvocationError {
                    request_id: id.to_string(),
                    body,
                }
            }
        } else if path == "/init/error" {
            Call::InitError {
                body,
                error_type: header("lambda-runtime-function-error-type"),
            }
        } else {
            let _ = writer.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
            continue;
        };
        let _ = tx.send(call);
        if writer.write_all(b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nContent-Length: 16\r\n\r\n{\"status\":\"OK\"}\n").is_err() {
            return;
        }
    }
}
