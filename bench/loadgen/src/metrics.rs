//! `GET /metrics` from the host over a plain TCP connection (HTTP/1.1, one
//! request, `connection: close`), and the Prometheus-style lines the load
//! generator cares about.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What `GET /metrics` gave.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum MetricsFetch {
    /// 200: the lines of interest (`roomhost_wake*`, `roomhost_evictions_total`,
    /// `roomhost_instances_live`), as (series, value).
    Found {
        /// The matching series and their values.
        lines: Vec<(String, f64)>,
    },
    /// Any other status (a host without `/metrics` answers 404).
    Missing {
        /// The HTTP status.
        code: u16,
    },
    /// The request itself failed.
    Failed {
        /// Why.
        error: String,
    },
}

/// Whether a series is one the `wake` scenario reports.
pub fn interesting(series: &str) -> bool {
    series.starts_with("roomhost_wake")
        || series.starts_with("roomhost_evictions_total")
        || series.starts_with("roomhost_instances_live")
}

/// Parses Prometheus text lines `name{labels} value`, skipping comments.
pub fn parse_prometheus(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(char::is_whitespace)?;
            Some((series.trim().to_string(), value.trim().parse::<f64>().ok()?))
        })
        .collect()
}

/// Fetches `GET /metrics`; never fails, reporting problems in the result.
pub async fn fetch_metrics(host: SocketAddr) -> MetricsFetch {
    match http_get(host, "/metrics").await {
        Ok((200, body)) => MetricsFetch::Found {
            lines: parse_prometheus(&body)
                .into_iter()
                .filter(|(s, _)| interesting(s))
                .collect(),
        },
        Ok((code, _)) => MetricsFetch::Missing { code },
        Err(e) => MetricsFetch::Failed {
            error: format!("{e:#}"),
        },
    }
}

/// A minimal HTTP/1.1 GET; returns (status, body).
pub async fn http_get(host: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    http_request(host, "GET", path, &[], &[], Duration::from_secs(10)).await
}

/// One HTTP/1.1 request on a fresh connection (`connection: close`) to a
/// loopback `host`, with `headers` and `body` (sent with its
/// `content-length`); returns (status, body). Fails after `timeout`.
pub async fn http_request(
    host: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> anyhow::Result<(u16, String)> {
    crate::addr::check_loopback(host)?;
    let work = async {
        let mut s = TcpStream::connect(host)
            .await
            .with_context(|| format!("connecting to {host}"))?;
        let mut req = format!("{method} {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if !body.is_empty() || method != "GET" {
            req.push_str(&format!("content-length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).await?;
        s.write_all(body).await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        parse_response(&buf)
    };
    tokio::time::timeout(timeout, work).await.with_context(|| {
        format!(
            "{method} {path} timed out after {:.1} s",
            timeout.as_secs_f64()
        )
    })?
}

/// Splits a whole HTTP/1.1 response into status and (de-chunked) body.
pub fn parse_response(raw: &[u8]) -> anyhow::Result<(u16, String)> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("no end of headers in the response")?;
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no status in the response")?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(body).context("malformed chunked body")?
    } else {
        body.to_string()
    };
    Ok((status, body))
}

fn dechunk(mut body: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size_line, rest) = body.split_once("\r\n")?;
        let size = usize::from_str_radix(size_line.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        out.push_str(rest.get(..size)?);
        body = rest.get(size..)?.strip_prefix("\r\n")?;
    }
}

impl std::fmt::Display for MetricsFetch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetricsFetch::Found { lines } if lines.is_empty() => write!(
                f,
                "/metrics has no roomhost_wake* / roomhost_evictions_total lines"
            ),
            MetricsFetch::Found { lines } => {
                for (i, (s, v)) in lines.iter().enumerate() {
                    if i > 0 {
                        writeln!(f)?;
                    }
                    write!(f, "    {s} {v}")?;
                }
                Ok(())
            }
            MetricsFetch::Missing { code } => {
                write!(f, "the host has no /metrics (HTTP {code})")
            }
            MetricsFetch::Failed { error } => write!(f, "GET /metrics failed: {error}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prometheus_lines() {
        let text = "# HELP x\n# TYPE roomhost_wakes_total counter\nroomhost_wakes_total 12\n\
                    roomhost_wake_latency_microseconds{quantile=\"0.5\"} 37\n\
                    roomhost_wake_latency_microseconds{quantile=\"0.99\"} 80\n\
                    roomhost_instances_live 3\nroomhost_evictions_total 9\nroomhost_events_total 100\nbad line x\n";
        let all = parse_prometheus(text);
        assert_eq!(all.len(), 6);
        let wanted: Vec<_> = all.into_iter().filter(|(s, _)| interesting(s)).collect();
        assert_eq!(
            wanted,
            vec![
                ("roomhost_wakes_total".to_string(), 12.0),
                (
                    "roomhost_wake_latency_microseconds{quantile=\"0.5\"}".to_string(),
                    37.0
                ),
                (
                    "roomhost_wake_latency_microseconds{quantile=\"0.99\"}".to_string(),
                    80.0
                ),
                ("roomhost_instances_live".to_string(), 3.0),
                ("roomhost_evictions_total".to_string(), 9.0),
            ]
        );
    }

    #[test]
    fn parses_plain_and_chunked_responses() {
        let plain = b"HTTP/1.1 404 Not Found\r\ncontent-length: 9\r\n\r\nnot found";
        assert_eq!(
            parse_response(plain).expect("ok"),
            (404, "not found".into())
        );
        let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n7\r\n world!\r\n0\r\n\r\n";
        assert_eq!(
            parse_response(chunked).expect("ok"),
            (200, "hello world!".into())
        );
        assert!(parse_response(b"garbage").is_err());
    }
}
