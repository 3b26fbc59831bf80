//! The local stack's own endpoints (not AWS APIs): the Lambda host's
//! (`localstack/lambda_host.py`: instances, kills, test knobs on a
//! function's limits and environment) and the gateway's (`/_local/...`:
//! the ECS tasks it runs, their kills, its IAM counters).

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Clone)]
pub struct Local {
    /// host:port of the Lambda host (`TALLY_LAMBDA_HOST`, default 127.0.0.1:9000).
    pub lambda: String,
    /// host:port of the gateway (from `AWS_ENDPOINT_URL`).
    pub gateway: String,
}

impl Local {
    pub fn from_env() -> Local {
        let endpoint =
            std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| "http://127.0.0.1:4566".into());
        Local {
            lambda: std::env::var("TALLY_LAMBDA_HOST").unwrap_or_else(|_| "127.0.0.1:9000".into()),
            gateway: endpoint
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .to_owned(),
        }
    }

    /// Every instance of every function: function, instance, pid,
    /// access_key_id, busy, invocations.
    pub async fn instances(&self) -> Result<Vec<serde_json::Value>> {
        let v = call(&self.lambda, "GET", "/_local/instances", None).await?;
        Ok(v.as_array().cloned().unwrap_or_default())
    }

    /// SIGKILLs the instances of `function` that are running an invocation;
    /// returns their ids (each invocation is answered `Runtime.ExitError`).
    pub async fn kill_busy(&self, function: &str) -> Result<Vec<String>> {
        let v = call(
            &self.lambda,
            "POST",
            "/_local/kill",
            Some(serde_json::json!({"function": function, "busy_only": true})),
        )
        .await?;
        Ok(strings(&v["killed"]))
    }

    /// SIGKILLs one instance by its id.
    pub async fn kill_instance(&self, instance: &str) -> Result<Vec<String>> {
        let v = call(
            &self.lambda,
            "POST",
            "/_local/kill",
            Some(serde_json::json!({ "instance": instance })),
        )
        .await?;
        Ok(strings(&v["killed"]))
    }

    /// SIGKILLs whatever instance or container task signs with this key.
    pub async fn kill_by_key(&self, access_key_id: &str) -> Result<Vec<String>> {
        let sel = serde_json::json!({ "access_key_id": access_key_id });
        let mut out = strings(
            &call(&self.lambda, "POST", "/_local/kill", Some(sel.clone())).await?["killed"],
        );
        out.extend(strings(
            &call(&self.gateway, "POST", "/_local/ecs/kill", Some(sel)).await?["killed"],
        ));
        Ok(out)
    }

    /// The container tasks the gateway ran: task, pid, access_key_id, running.
    pub async fn tasks(&self) -> Result<Vec<serde_json::Value>> {
        let v = call(&self.gateway, "GET", "/_local/ecs/tasks", None).await?;
        Ok(v.as_array().cloned().unwrap_or_default())
    }

    /// SIGKILLs the running container tasks of a task definition family.
    pub async fn kill_tasks(&self, family: &str) -> Result<Vec<String>> {
        let v = call(
            &self.gateway,
            "POST",
            "/_local/ecs/kill",
            Some(serde_json::json!({ "family": family })),
        )
        .await?;
        Ok(strings(&v["killed"]))
    }

    /// Lays variables over a function's environment (`null` clears them).
    pub async fn set_environment(&self, function: &str, env: serde_json::Value) -> Result<()> {
        call(
            &self.lambda,
            "POST",
            &format!("/_local/functions/{function}/environment"),
            Some(env),
        )
        .await
        .map(|_| ())
    }

    /// A shorter timeout or memory size for a function (`null` clears it).
    pub async fn set_limits(&self, function: &str, limits: serde_json::Value) -> Result<()> {
        call(
            &self.lambda,
            "POST",
            &format!("/_local/functions/{function}/limits"),
            Some(limits),
        )
        .await
        .map(|_| ())
    }
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect()
}

/// One HTTP/1.1 request with a JSON body, answered with JSON.
async fn call(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<serde_json::Value> {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut conn = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("the local stack at {addr}"))?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(req.as_bytes()).await?;
    let mut resp = Vec::new();
    conn.read_to_end(&mut resp).await?;
    let text = String::from_utf8_lossy(&resp);
    let (head, body) = text.split_once("\r\n\r\n").context("an HTTP answer")?;
    let status = head.split_whitespace().nth(1).unwrap_or("?");
    if status != "200" {
        bail!("{method} {addr}{path}: HTTP {status}: {body}");
    }
    serde_json::from_str(body).with_context(|| format!("{method} {addr}{path}: {body}"))
}
