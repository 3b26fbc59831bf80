//! `fault-proxy --listen 127.0.0.1:4576 --upstream 127.0.0.1:4575 [--kill-url URL]...`
//!
//! A loopback HTTP/1.1 proxy that forwards to the local stack and injects the
//! faults of the plan set on `/_fault/plan` (see the library). The gateway
//! names each request's destination in `X-Tally-Upstream` (moto, the Lambda
//! host, …; `--upstream` otherwise) and its signer in `X-Tally-Caller`; both
//! headers are removed before forwarding. Bodies are streamed through; a
//! request is read whole only when a fault must look into it (a
//! `body_contains` rule, `unprocessed`, `failed_entries`, a
//! query-protocol call's `Action`) — DynamoDB caps a request at 16 MB. The
//! kill faults ask every `--kill-url` (the Lambda host's `/_local/kill`, the
//! gateway's `/_local/ecs/kill`) to SIGKILL the process that signed the
//! request. It stops by itself after `--lifetime-s` or `--max-requests`, and
//! holds at most `--connections` client connections at once.

use anyhow::{Context, Result};
use bytes::Bytes;
use clap::Parser;
use fault_proxy::{
    access_key, add_conflict, conflict_answer, error_answer, fail_entries, item_count,
    merge_entries, merge_unprocessed, operation_of, query_action, withhold, Decision, Injector,
    Kind, Plan, Protocol,
};
use http_body_util::{combinators::BoxBody, BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};

type Body = BoxBody<Bytes, BoxError>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The largest body read whole (a `BatchWriteItem` is at most 16 MB).
const COLLECT_BYTES_MAX: usize = 32 << 20;

#[derive(Parser, Debug)]
#[command(about = "Test-only fault-injecting proxy in front of the local AWS stack")]
struct Args {
    #[arg(long, default_value = "127.0.0.1:4576")]
    listen: String,
    #[arg(long, default_value = "127.0.0.1:4575")]
    upstream: String,
    /// Stop after this many seconds.
    #[arg(long, default_value_t = 6 * 3600)]
    lifetime_s: u64,
    /// Stop after forwarding this many requests.
    #[arg(long, default_value_t = 50_000_000)]
    max_requests: u64,
    /// Client connections served at once.
    #[arg(long, default_value_t = 512)]
    connections: usize,
    /// A plan to start with (JSON file).
    #[arg(long)]
    plan: Option<std::path::PathBuf>,
    /// Where to ask for a caller's SIGKILL (`POST {"access_key_id": …}`),
    /// each tried in turn: the Lambda host's and the gateway's kill endpoints.
    #[arg(long = "kill-url")]
    kill_urls: Vec<String>,
}

struct Shared {
    injector: Mutex<Injector>,
    upstream: String,
    kill_urls: Vec<String>,
    requests_left: AtomicU64,
    stop: Notify,
}

/// The gateway's routing header: where a request goes.
const UPSTREAM: &str = "x-tally-upstream";
/// The gateway's header naming the request's signer.
const CALLER: &str = "x-tally-caller";

fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let body = body.into();
    let mut r = Response::new(Full::new(body.clone()).map_err(|e| match e {}).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_str(content_type).expect("ascii"),
    );
    r.headers_mut().insert(CONTENT_LENGTH, body.len().into());
    r
}

fn json(status: StatusCode, v: &impl serde::Serialize) -> Response<Body> {
    full(
        status,
        "application/json",
        serde_json::to_vec(v).expect("serialisable"),
    )
}

async fn control(req: Request<Incoming>, sh: &Shared) -> Result<Response<Body>, BoxError> {
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    Ok(match (method.as_str(), path.as_str()) {
        ("GET", "/_fault/health") => full(StatusCode::OK, "text/plain", "ok"),
        ("GET", "/_fault/stats") => {
            let stats = sh.injector.lock().expect("poisoned").stats().clone();
            json(StatusCode::OK, &stats)
        }
        ("DELETE", "/_fault/plan") => {
            sh.injector.lock().expect("poisoned").clear();
            eprintln!("[fault-proxy] plan cleared");
            json(StatusCode::OK, &serde_json::json!({"plan": null}))
        }
        ("PUT" | "POST", "/_fault/plan") => {
            let body = Limited::new(req.into_body(), 1 << 20)
                .collect()
                .await?
                .to_bytes();
            let plan: Result<Plan, String> =
                serde_json::from_slice(&body).map_err(|e| format!("plan: {e}"));
            let set = plan.and_then(|p| {
                let text = serde_json::to_string(&p).expect("serialisable");
                sh.injector
                    .lock()
                    .expect("poisoned")
                    .set(p, Instant::now())
                    .map(|()| text)
            });
            match set {
                Ok(text) => {
                    eprintln!("[fault-proxy] plan set: {text}");
                    json(StatusCode::OK, &serde_json::json!({"plan": "set"}))
                }
                Err(e) => json(StatusCode::BAD_REQUEST, &serde_json::json!({"error": e})),
            }
        }
        _ => json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": format!("no control endpoint {method} {path}")}),
        ),
    })
}

/// A request body read whole, refused above `COLLECT_BYTES_MAX`.
async fn read_whole(mut body: Body) -> Result<Bytes, BoxError> {
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            if buf.len() + data.len() > COLLECT_BYTES_MAX {
                return Err(format!("request body over {COLLECT_BYTES_MAX} bytes").into());
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

async fn forward(upstream: &str, req: Request<Body>) -> Result<Response<Incoming>, BoxError> {
    let stream = TcpStream::connect(upstream).await?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender.send_request(req).await?)
}

fn unavailable(e: &BoxError) -> Response<Body> {
    json(
        StatusCode::SERVICE_UNAVAILABLE,
        &serde_json::json!({"__type": "ServiceUnavailable", "message": format!("fault-proxy: upstream: {e}")}),
    )
}

async fn proxy(req: Request<Incoming>, sh: Arc<Shared>) -> Result<Response<Body>, BoxError> {
    if req.uri().path().starts_with("/_fault/") {
        return control(req, &sh).await;
    }
    let left = sh.requests_left.fetch_sub(1, Ordering::Relaxed);
    if left <= 1 {
        sh.stop.notify_one();
    }
    let (mut parts, body) = req.into_parts();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let upstream = header(UPSTREAM).unwrap_or_else(|| sh.upstream.clone());
    let caller = header(CALLER).unwrap_or_default();
    let target = header("x-amz-target");
    let content_type = header("content-type");
    let key = header("authorization")
        .as_deref()
        .and_then(access_key)
        .map(str::to_owned);
    parts.headers.remove(UPSTREAM);
    parts.headers.remove(CALLER);
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let protocol = Protocol::of(target.as_deref(), content_type.as_deref(), parts.uri.path());
    let copy = parts.headers.contains_key("x-amz-copy-source");
    let mut op = operation_of(target.as_deref(), parts.method.as_str(), &path, copy);
    let query = protocol == Protocol::Query;
    let needs_body = query || sh.injector.lock().expect("poisoned").needs_body(&op);
    let (req, body) = if needs_body {
        let bytes = Limited::new(body, COLLECT_BYTES_MAX)
            .collect()
            .await?
            .to_bytes();
        if query {
            if let Some(action) = query_action(&bytes) {
                op = action;
            }
        }
        parts.headers.insert(CONTENT_LENGTH, bytes.len().into());
        let full: Body = Full::new(bytes.clone()).map_err(|e| match e {}).boxed();
        (Request::from_parts(parts, full), Some(bytes))
    } else {
        (
            Request::from_parts(parts, body.map_err(BoxError::from).boxed()),
            None,
        )
    };
    let decision = sh.injector.lock().expect("poisoned").decide_for(
        &op,
        body.as_deref(),
        &caller,
        Instant::now(),
    );
    let call = Call {
        upstream,
        op,
        protocol,
        key,
    };
    let Some(d) = decision else {
        return Ok(relay(forward(&call.upstream, req).await));
    };
    inject(req, &sh, &call, d).await
}

/// Where a request goes and what it is.
struct Call {
    upstream: String,
    op: String,
    protocol: Protocol,
    /// The access key that signed it.
    key: Option<String>,
}

fn relay(r: Result<Response<Incoming>, BoxError>) -> Response<Body> {
    match r {
        Ok(r) => r.map(|b| b.map_err(BoxError::from).boxed()),
        Err(e) => unavailable(&e),
    }
}

/// Asks the stack to SIGKILL the process that signs with `key`; true when
/// one was killed.
async fn kill_caller(sh: &Shared, key: Option<&str>) -> bool {
    let Some(key) = key else { return false };
    let body = serde_json::json!({ "access_key_id": key }).to_string();
    for url in &sh.kill_urls {
        let Some(rest) = url.strip_prefix("http://") else {
            continue;
        };
        let (addr, path) = rest.split_once('/').unwrap_or((rest, ""));
        let req = Request::post(format!("/{path}"))
            .header(CONTENT_TYPE, "application/json")
            .header(CONTENT_LENGTH, body.len())
            .header("host", addr)
            .body(
                Full::new(Bytes::from(body.clone()))
                    .map_err(|e| match e {})
                    .boxed(),
            )
            .expect("a request");
        if let Ok(r) = forward(addr, req).await {
            let answer = r.into_body().collect().await.map(|b| b.to_bytes());
            let killed = answer
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .and_then(|v| v["killed"].as_array().map(|a| !a.is_empty()))
                .unwrap_or(false);
            if killed {
                eprintln!("[fault-proxy] killed the caller {key} ({url})");
                sh.injector.lock().expect("poisoned").count_kill();
                return true;
            }
        }
    }
    false
}

async fn inject(
    req: Request<Body>,
    sh: &Shared,
    call: &Call,
    d: Decision,
) -> Result<Response<Body>, BoxError> {
    let op = call.op.as_str();
    let count = |withheld: u64| {
        sh.injector
            .lock()
            .expect("poisoned")
            .count(d.kind, op, withheld)
    };
    if let Some((status, headers, body)) = error_answer(d.kind, call.protocol) {
        count(0);
        // Drain the request so the client sees an answer, not a reset.
        let _ = read_whole(req.into_body()).await;
        let mut r = full(
            StatusCode::from_u16(status).expect("valid"),
            "application/octet-stream",
            body,
        );
        for (k, v) in headers {
            r.headers_mut()
                .insert(k, HeaderValue::from_str(&v).expect("ascii"));
        }
        return Ok(r);
    }
    match d.kind {
        Kind::Latency => {
            count(0);
            tokio::time::sleep(d.latency).await;
            Ok(relay(forward(&call.upstream, req).await))
        }
        Kind::Drop => {
            count(0);
            // Apply the request, read the whole answer, then give none.
            if let Ok(r) = forward(&call.upstream, req).await {
                let _ = r.into_body().collect().await;
            }
            Err("fault-proxy: connection dropped after the request was applied".into())
        }
        Kind::KillCaller => {
            // Apply the request, read the answer, kill the caller, answer nothing.
            let applied = forward(&call.upstream, req).await;
            if let Ok(r) = applied {
                let _ = r.into_body().collect().await;
            }
            if kill_caller(sh, call.key.as_deref()).await {
                count(0);
            }
            Err("fault-proxy: the caller was killed with its request applied".into())
        }
        Kind::KillCallerBefore => {
            if kill_caller(sh, call.key.as_deref()).await {
                count(0);
                return Err("fault-proxy: the caller was killed before its request".into());
            }
            // No process of ours signs this: an ordinary request.
            Ok(relay(forward(&call.upstream, req).await))
        }
        Kind::Detach => {
            count(0);
            // The invocation runs on; its answer goes nowhere.
            let upstream = call.upstream.clone();
            tokio::spawn(async move {
                if let Ok(r) = forward(&upstream, req).await {
                    let _ = r.into_body().collect().await;
                }
            });
            let mut r = json(
                StatusCode::INTERNAL_SERVER_ERROR,
                &serde_json::json!({"Type": "Service", "message": "fault-proxy: injected ServiceException (the invocation runs on)"}),
            );
            r.headers_mut().insert(
                "x-amzn-errortype",
                HeaderValue::from_static("ServiceException"),
            );
            Ok(r)
        }
        Kind::TruncateBody => {
            let r = match forward(&call.upstream, req).await {
                Ok(r) => r,
                Err(e) => return Ok(unavailable(&e)),
            };
            if r.status() != StatusCode::OK {
                return Ok(r.map(|b| b.map_err(BoxError::from).boxed()));
            }
            count(0);
            let (parts, body) = r.into_parts();
            let bytes = Limited::new(body, COLLECT_BYTES_MAX)
                .collect()
                .await?
                .to_bytes();
            // The headers promise it all; half comes, then the stream fails.
            let half = bytes.slice(..bytes.len() / 2);
            let stream = futures::stream::iter(vec![
                Ok::<_, BoxError>(hyper::body::Frame::data(half)),
                Err::<hyper::body::Frame<Bytes>, BoxError>(
                    "fault-proxy: body cut mid-stream".into(),
                ),
            ]);
            let body: Body = http_body_util::StreamBody::new(stream).boxed();
            Ok(Response::from_parts(parts, body))
        }
        Kind::FailedEntries => failed_entries(req, sh, call, d).await,
        Kind::TransactionConflict => {
            let body = read_whole(req.into_body()).await?;
            let items = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["TransactItems"].as_array().map(|a| a.len()))
                .unwrap_or(1);
            count(0);
            let answer = conflict_answer(items, d.seed, d.request);
            Ok(full(
                StatusCode::BAD_REQUEST,
                "application/x-amz-json-1.0",
                serde_json::to_vec(&answer)?,
            ))
        }
        Kind::MixedCancellation => {
            let r = match forward(&call.upstream, req).await {
                Ok(r) => r,
                Err(e) => return Ok(unavailable(&e)),
            };
            let (parts, body) = r.into_parts();
            let bytes = Limited::new(body, COLLECT_BYTES_MAX)
                .collect()
                .await?
                .to_bytes();
            let mixed = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| add_conflict(&v, d.seed, d.request));
            let out = match mixed {
                Some(v) => {
                    count(0);
                    Bytes::from(serde_json::to_vec(&v)?)
                }
                None => bytes,
            };
            let mut r = Response::from_parts(
                parts,
                Full::new(out.clone()).map_err(|e| match e {}).boxed(),
            );
            r.headers_mut().insert(CONTENT_LENGTH, out.len().into());
            Ok(r)
        }
        Kind::Unprocessed => unprocessed(req, sh, call, d).await,
        _ => unreachable!("error kinds answered above"),
    }
}

async fn failed_entries(
    req: Request<Body>,
    sh: &Shared,
    call: &Call,
    d: Decision,
) -> Result<Response<Body>, BoxError> {
    let (mut parts, body) = req.into_parts();
    let body = read_whole(body).await?;
    let Ok(parsed) = serde_json::from_slice::<serde_json::Value>(&body) else {
        let req = Request::from_parts(parts, Full::new(body).map_err(|e| match e {}).boxed());
        return Ok(relay(forward(&call.upstream, req).await));
    };
    let total = parsed["Entries"].as_array().map_or(0, |a| a.len());
    let (fwd, failed) = fail_entries(&parsed, d.seed, d.request).map_err(BoxError::from)?;
    let answer = match fwd {
        None => None,
        Some(fwd) => {
            let bytes = Bytes::from(serde_json::to_vec(&fwd)?);
            parts.headers.insert(CONTENT_LENGTH, bytes.len().into());
            let req = Request::from_parts(parts, Full::new(bytes).map_err(|e| match e {}).boxed());
            let r = match forward(&call.upstream, req).await {
                Ok(r) => r,
                Err(e) => return Ok(unavailable(&e)),
            };
            if r.status() != StatusCode::OK {
                return Ok(r.map(|b| b.map_err(BoxError::from).boxed()));
            }
            let bytes = Limited::new(r.into_body(), COLLECT_BYTES_MAX)
                .collect()
                .await?
                .to_bytes();
            Some(serde_json::from_slice::<serde_json::Value>(&bytes)?)
        }
    };
    sh.injector
        .lock()
        .expect("poisoned")
        .count(d.kind, &call.op, failed.len() as u64);
    Ok(full(
        StatusCode::OK,
        "application/x-amz-json-1.1",
        serde_json::to_vec(&merge_entries(answer.as_ref(), &failed, total))?,
    ))
}

async fn unprocessed(
    req: Request<Body>,
    sh: &Shared,
    call: &Call,
    d: Decision,
) -> Result<Response<Body>, BoxError> {
    let op = call.op.as_str();
    let (mut parts, body) = req.into_parts();
    let body = read_whole(body).await?;
    let parsed: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => {
            // Not ours to judge: let the stack answer the malformed request.
            let req = Request::from_parts(parts, Full::new(body).map_err(|e| match e {}).boxed());
            return Ok(match forward(&call.upstream, req).await {
                Ok(r) => r.map(|b| b.map_err(BoxError::from).boxed()),
                Err(e) => unavailable(&e),
            });
        }
    };
    let (fwd, held) = withhold(&parsed, d.seed, d.request).map_err(BoxError::from)?;
    let withheld = item_count(&held);
    let mut answer = match fwd {
        None => serde_json::json!({"UnprocessedItems": {}}),
        Some(fwd) => {
            let bytes = Bytes::from(serde_json::to_vec(&fwd)?);
            parts.headers.insert(CONTENT_LENGTH, bytes.len().into());
            let req = Request::from_parts(parts, Full::new(bytes).map_err(|e| match e {}).boxed());
            let r = match forward(&call.upstream, req).await {
                Ok(r) => r,
                Err(e) => return Ok(unavailable(&e)),
            };
            if r.status() != StatusCode::OK {
                // The stack refused the kept part: its answer stands.
                return Ok(r.map(|b| b.map_err(BoxError::from).boxed()));
            }
            let bytes = Limited::new(r.into_body(), COLLECT_BYTES_MAX)
                .collect()
                .await?
                .to_bytes();
            serde_json::from_slice(&bytes)?
        }
    };
    merge_unprocessed(&mut answer, &held);
    sh.injector
        .lock()
        .expect("poisoned")
        .count(d.kind, op, withheld);
    Ok(full(
        StatusCode::OK,
        "application/x-amz-json-1.0",
        serde_json::to_vec(&answer)?,
    ))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let mut injector = Injector::new();
    if let Some(path) = &args.plan {
        let plan: Plan = serde_json::from_slice(&std::fs::read(path)?)
            .with_context(|| format!("plan {}", path.display()))?;
        injector
            .set(plan, Instant::now())
            .map_err(|e| anyhow::anyhow!("plan {}: {e}", path.display()))?;
    }
    let shared = Arc::new(Shared {
        injector: Mutex::new(injector),
        upstream: args.upstream.clone(),
        kill_urls: args.kill_urls.clone(),
        requests_left: AtomicU64::new(args.max_requests.max(1)),
        stop: Notify::new(),
    });
    let listener = TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("bind {}", args.listen))?;
    // The bound address, so that `--listen 127.0.0.1:0` tells its port.
    eprintln!(
        "[fault-proxy] {} -> {}; stops after {} s or {} requests",
        listener.local_addr()?,
        args.upstream,
        args.lifetime_s,
        args.max_requests
    );
    let slots = Arc::new(Semaphore::new(args.connections.max(1)));
    let lifetime = tokio::time::sleep(Duration::from_secs(args.lifetime_s));
    tokio::pin!(lifetime);
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p?,
            _ = &mut lifetime => break,
            _ = shared.stop.notified() => break,
        };
        let (stream, _) = tokio::select! {
            a = listener.accept() => a?,
            _ = &mut lifetime => break,
            _ = shared.stop.notified() => break,
        };
        let _ = stream.set_nodelay(true);
        let sh = shared.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| proxy(req, sh.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
            drop(permit);
        });
    }
    // Let the requests in flight finish (bounded), then report.
    let all = u32::try_from(args.connections.max(1)).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(Duration::from_secs(10), slots.acquire_many(all)).await;
    let stats = shared.injector.lock().expect("poisoned").stats().clone();
    eprintln!(
        "[fault-proxy] stopping: {}",
        serde_json::to_string(&stats).unwrap_or_default()
    );
    Ok(())
}
