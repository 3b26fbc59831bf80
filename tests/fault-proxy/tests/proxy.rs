//! The proxy binary between a raw HTTP client and a fake upstream that
//! records what reached it.

use fault_proxy::{control, Kind, Plan};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type Seen = Arc<Mutex<Vec<Value>>>;

/// An upstream that records each request body and answers like DynamoDB's
/// BatchWriteItem with nothing unprocessed.
async fn fake_upstream() -> (String, Seen) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let seen: Seen = Arc::default();
    let s = seen.clone();
    tokio::spawn(async move {
        loop {
            let (mut c, _) = l.accept().await.unwrap();
            let s = s.clone();
            tokio::spawn(async move {
                let body = read_http(&mut c).await;
                s.lock()
                    .unwrap()
                    .push(serde_json::from_slice(&body).unwrap_or(Value::Null));
                let out = br#"{"UnprocessedItems":{}}"#;
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.0\r\nContent-Length: {}\r\n\r\n",
                    out.len()
                );
                let _ = c.write_all(head.as_bytes()).await;
                let _ = c.write_all(out).await;
            });
        }
    });
    (addr, seen)
}

/// Reads one request or answer with a Content-Length; returns its body.
async fn read_http(c: &mut TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().unwrap())
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = c.read(&mut chunk).await.unwrap();
                assert!(n > 0, "short body");
                buf.extend_from_slice(&chunk[..n]);
            }
            return buf[end + 4..end + 4 + len].to_vec();
        }
        let n = c.read(&mut chunk).await.unwrap();
        if n == 0 {
            return Vec::new();
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Sends a DynamoDB-style request; returns (status, body), or None when the
/// connection closed without an answer.
async fn call(proxy: &str, op: &str, body: &Value) -> Option<(u16, Value)> {
    let mut c = TcpStream::connect(proxy).await.unwrap();
    let b = body.to_string();
    let req = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Target: DynamoDB_20120810.{op}\r\n\
         Content-Type: application/x-amz-json-1.0\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}",
        b.len()
    );
    c.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    c.read_to_end(&mut raw).await.ok()?;
    if raw.is_empty() {
        return None;
    }
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    Some((status, serde_json::from_str(body).unwrap_or(Value::Null)))
}

struct Proxy {
    addr: String,
    child: tokio::process::Child,
}

/// Starts the proxy on a port the kernel picks, and reads the bound address
/// from its first line (a port picked here and handed over could be taken,
/// or answered by a self-connection, before the proxy binds it).
async fn start_proxy(upstream: &str, extra: &[&str]) -> Proxy {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_fault-proxy"))
        .args(["--listen", "127.0.0.1:0", "--upstream", upstream])
        .args(extra)
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("fault-proxy did not start in 10 s")
        .unwrap()
        .expect("fault-proxy exited before it listened");
    eprintln!("{first}");
    let addr = first
        .strip_prefix("[fault-proxy] ")
        .and_then(|l| l.split(" -> ").next())
        .unwrap_or_else(|| panic!("unexpected first line: {first}"))
        .to_owned();
    // Keep its log flowing, or a full pipe would stall it.
    tokio::spawn(async move {
        while let Ok(Some(l)) = lines.next_line().await {
            eprintln!("{l}");
        }
    });
    Proxy { addr, child }
}

fn batch(n: usize) -> Value {
    let reqs: Vec<Value> = (0..n)
        .map(|i| json!({"PutRequest": {"Item": {"PK": {"S": format!("k{i}")}}}}))
        .collect();
    json!({"RequestItems": {"T": reqs}})
}

fn keys(v: &Value) -> Vec<String> {
    v["T"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            r["PutRequest"]["Item"]["PK"]["S"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn without_a_plan_requests_pass_through_unchanged() {
    let (up, seen) = fake_upstream().await;
    let p = start_proxy(&up, &[]).await;
    let (status, body) = call(&p.addr, "BatchWriteItem", &batch(3)).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(body, json!({"UnprocessedItems": {}}));
    assert_eq!(seen.lock().unwrap().as_slice(), &[batch(3)]);
    let stats = control::stats(&p.addr).await.unwrap();
    assert_eq!((stats.requests, stats.total_faults()), (1, 0));
}

#[tokio::test]
async fn throttle_answers_without_reaching_the_stack() {
    let (up, seen) = fake_upstream().await;
    let p = start_proxy(&up, &[]).await;
    control::set_plan(
        &p.addr,
        &Plan::one(1, Kind::Throttle, 1.0, &["BatchWriteItem"]),
    )
    .await
    .unwrap();
    let (status, body) = call(&p.addr, "BatchWriteItem", &batch(2)).await.unwrap();
    assert_eq!(status, 400);
    assert!(body["__type"]
        .as_str()
        .unwrap()
        .ends_with("#ProvisionedThroughputExceededException"));
    assert!(seen.lock().unwrap().is_empty());
    // Other operations are not in the rule.
    let (status, _) = call(&p.addr, "GetItem", &json!({})).await.unwrap();
    assert_eq!(status, 200);
    let stats = control::stats(&p.addr).await.unwrap();
    assert_eq!(stats.faults["throttle"], 1);
    assert_eq!(stats.by_operation["BatchWriteItem"], 1);
    control::clear(&p.addr).await.unwrap();
    let (status, _) = call(&p.addr, "BatchWriteItem", &batch(2)).await.unwrap();
    assert_eq!(status, 200, "cleared");
}

#[tokio::test]
async fn unprocessed_writes_part_and_returns_the_rest() {
    let (up, seen) = fake_upstream().await;
    let p = start_proxy(&up, &[]).await;
    control::set_plan(
        &p.addr,
        &Plan::one(5, Kind::Unprocessed, 1.0, &["BatchWriteItem"]),
    )
    .await
    .unwrap();
    let (status, body) = call(&p.addr, "BatchWriteItem", &batch(25)).await.unwrap();
    assert_eq!(status, 200);
    let held = keys(&body["UnprocessedItems"]);
    let written = keys(&seen.lock().unwrap()[0]["RequestItems"]);
    assert!(
        !held.is_empty() && !written.is_empty(),
        "{held:?} {written:?}"
    );
    let mut all: Vec<String> = held.iter().chain(&written).cloned().collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 25, "every item either written or returned, once");
    let stats = control::stats(&p.addr).await.unwrap();
    assert_eq!(stats.items_withheld, held.len() as u64);
}

#[tokio::test]
async fn drop_applies_the_request_and_gives_no_answer() {
    let (up, seen) = fake_upstream().await;
    let p = start_proxy(&up, &[]).await;
    control::set_plan(&p.addr, &Plan::one(1, Kind::Drop, 1.0, &[]))
        .await
        .unwrap();
    assert_eq!(call(&p.addr, "PutItem", &json!({"a": 1})).await, None);
    assert_eq!(seen.lock().unwrap().as_slice(), &[json!({"a": 1})]);
}

#[tokio::test]
async fn http_errors_and_a_bad_plan() {
    let (up, _) = fake_upstream().await;
    let p = start_proxy(&up, &[]).await;
    control::set_plan(&p.addr, &Plan::one(1, Kind::Http503, 1.0, &[]))
        .await
        .unwrap();
    assert_eq!(call(&p.addr, "Query", &json!({})).await.unwrap().0, 503);
    control::set_plan(&p.addr, &Plan::one(1, Kind::Http500, 1.0, &[]))
        .await
        .unwrap();
    assert_eq!(call(&p.addr, "Query", &json!({})).await.unwrap().0, 500);
    let e = control::set_plan(&p.addr, &Plan::one(1, Kind::Throttle, 2.0, &[]))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("rules[0].rate"), "{e}");
}

#[tokio::test]
async fn it_stops_by_itself_after_its_request_budget() {
    let (up, _) = fake_upstream().await;
    let mut p = start_proxy(&up, &["--max-requests", "2"]).await;
    call(&p.addr, "GetItem", &json!({})).await.unwrap();
    call(&p.addr, "GetItem", &json!({})).await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), p.child.wait())
        .await
        .expect("the proxy stopped")
        .unwrap();
    assert!(status.success());
}
