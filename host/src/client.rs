//! A client of the admin API, for the CLI: `roomhost deploy`, `rollback`,
//! `promote` and `classes` talk to a running host over HTTP/1.1 (plain
//! `http://`, meant for 127.0.0.1 or a private network; put TLS in front of
//! an admin listener that must cross an untrusted one).

use std::path::Path;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;

/// Why an admin command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The URL is not `http://HOST:PORT`.
    #[error("--url {0:?}: expected http://HOST:PORT")]
    BadUrl(String),
    /// No token was given and none could be found.
    #[error(
        "no admin token: pass --token, set ROOMHOST_ADMIN_TOKEN, or point --data at the host's database (its admin.token is beside it: {0})"
    )]
    NoToken(String),
    /// The file to deploy could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The host could not be reached.
    #[error("cannot reach the host at {url}")]
    Connect {
        /// The host.
        url: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("the request to the host failed")]
    Http(#[source] hyper::Error),
    /// The host answered with an error.
    #[error("the host refused ({status}): {message}")]
    Refused {
        /// The HTTP status.
        status: StatusCode,
        /// The host's reason.
        message: String,
    },
    /// The host's answer was not the JSON expected.
    #[error("the host's answer is not JSON")]
    BadAnswer(#[source] serde_json::Error),
}

/// The token to use: `--token`, else `ROOMHOST_ADMIN_TOKEN`, else the token
/// file beside the database named by `--data`.
pub fn find_token(flag: Option<String>, data: &Path) -> Result<String, ClientError> {
    if let Some(t) = flag.filter(|t| !t.is_empty()) {
        return Ok(t);
    }
    if let Ok(t) = std::env::var(crate::http::admin::TOKEN_ENV)
        && !t.trim().is_empty()
    {
        return Ok(t.trim().to_string());
    }
    let file = crate::http::admin::token_file(data);
    match std::fs::read_to_string(&file) {
        Ok(t) if !t.trim().is_empty() => Ok(t.trim().to_string()),
        _ => Err(ClientError::NoToken(file.display().to_string())),
    }
}

/// A client of one host's admin API.
pub struct AdminClient {
    url: String,
    authority: String,
    token: String,
}

impl AdminClient {
    /// A client for `url` (`http://127.0.0.1:8080`) with `token`.
    pub fn new(url: &str, token: String) -> Result<AdminClient, ClientError> {
        let authority = url
            .strip_prefix("http://")
            .map(|rest| rest.trim_end_matches('/'))
            .filter(|a| !a.is_empty() && !a.contains('/'))
            .ok_or_else(|| ClientError::BadUrl(url.to_string()))?;
        Ok(AdminClient {
            url: url.trim_end_matches('/').to_string(),
            authority: authority.to_string(),
            token,
        })
    }

    /// Sends one request and returns the host's JSON answer; an error status
    /// becomes [`ClientError::Refused`] with the host's `error` text.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
        headers: &[(&str, String)],
    ) -> Result<serde_json::Value, ClientError> {
        let stream = tokio::net::TcpStream::connect(&self.authority)
            .await
            .map_err(|source| ClientError::Connect {
                url: self.url.clone(),
                source,
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(ClientError::Http)?;
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, &self.authority)
            .header(
                hyper::header::AUTHORIZATION,
                format!("Bearer {}", self.token),
            );
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| ClientError::BadUrl(format!("{}{path}: {e}", self.url)))?;
        let resp = sender.send_request(req).await.map_err(ClientError::Http)?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(ClientError::Http)?
            .to_bytes();
        let value: Result<serde_json::Value, _> = serde_json::from_slice(&bytes);
        if !status.is_success() {
            let message = match &value {
                Ok(v) => v["error"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string()),
                Err(_) => String::from_utf8_lossy(&bytes).trim().to_string(),
            };
            return Err(ClientError::Refused { status, message });
        }
        value.map_err(ClientError::BadAnswer)
    }

    /// `PUT /admin/classes/{class}` with the file's bytes.
    pub async fn deploy(
        &self,
        class: &str,
        file: &Path,
        canary: Option<u8>,
        deployed_by: &str,
    ) -> Result<serde_json::Value, ClientError> {
        let bytes = std::fs::read(file).map_err(|source| ClientError::Read {
            path: file.display().to_string(),
            source,
        })?;
        let path = match canary {
            Some(n) => format!("/admin/classes/{class}?canary={n}"),
            None => format!("/admin/classes/{class}"),
        };
        let by = [("x-roomhost-deployed-by", deployed_by.to_string())];
        self.request(Method::PUT, &path, bytes, &by).await
    }

    /// `POST /admin/classes/{class}/rollback[?to=VERSION]`.
    pub async fn rollback(
        &self,
        class: &str,
        to: Option<&str>,
    ) -> Result<serde_json::Value, ClientError> {
        let path = match to {
            Some(v) => format!("/admin/classes/{class}/rollback?to={v}"),
            None => format!("/admin/classes/{class}/rollback"),
        };
        self.request(Method::POST, &path, Vec::new(), &[]).await
    }

    /// `POST /admin/classes/{class}/promote`.
    pub async fn promote(&self, class: &str) -> Result<serde_json::Value, ClientError> {
        let path = format!("/admin/classes/{class}/promote");
        self.request(Method::POST, &path, Vec::new(), &[]).await
    }

    /// `GET /admin/classes`.
    pub async fn classes(&self) -> Result<serde_json::Value, ClientError> {
        self.request(Method::GET, "/admin/classes", Vec::new(), &[])
            .await
    }
}
