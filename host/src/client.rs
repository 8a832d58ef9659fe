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
    /// The output could not be written.
    #[error("cannot write the output")]
    Write(#[source] std::io::Error),
    /// The host's answer ended early.
    #[error("the answer ended after {written} of {announced} bytes")]
    Incomplete {
        /// Bytes received.
        written: u64,
        /// Bytes announced.
        announced: u64,
    },
    /// The backup received is not a database that opens.
    #[error("the backup received does not open as a redb database")]
    NotADatabase(#[source] Box<redb::DatabaseError>),
}

/// A path segment or query value, percent-encoded.
fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// `/admin/objects/{class}/{name}{rest}`.
fn object_path(class: &str, name: &str, rest: &str) -> String {
    format!("/admin/objects/{}/{}{rest}", enc(class), enc(name))
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
        let resp = self.send(method, path, body, headers).await?;
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(ClientError::Http)?
            .to_bytes();
        serde_json::from_slice(&bytes).map_err(ClientError::BadAnswer)
    }

    /// Sends one request; a success status gives the response with its body
    /// unread, an error status becomes [`ClientError::Refused`].
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
        headers: &[(&str, String)],
    ) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
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
        if status.is_success() {
            return Ok(resp);
        }
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(ClientError::Http)?
            .to_bytes();
        let message = match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Ok(v) => v["error"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string()),
            Err(_) => String::from_utf8_lossy(&bytes).trim().to_string(),
        };
        Err(ClientError::Refused { status, message })
    }

    /// `GET path`, its body written to `out` as it arrives; returns the bytes
    /// written and the length the host announced (if it did).
    async fn download(
        &self,
        path: &str,
        out: &mut (dyn std::io::Write + Send),
    ) -> Result<(u64, Option<u64>), ClientError> {
        let resp = self.send(Method::GET, path, Vec::new(), &[]).await?;
        let announced = resp
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let mut body = resp.into_body();
        let mut written = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(ClientError::Http)?;
            if let Ok(data) = frame.into_data() {
                out.write_all(&data).map_err(ClientError::Write)?;
                written += data.len() as u64;
            }
        }
        Ok((written, announced))
    }

    /// `GET /admin/objects`: one page.
    pub async fn objects(
        &self,
        class: Option<&str>,
        state: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<serde_json::Value, ClientError> {
        let mut path = format!("/admin/objects?state={state}&limit={limit}");
        if let Some(c) = class {
            path.push_str(&format!("&class={}", enc(c)));
        }
        if let Some(a) = after {
            path.push_str(&format!("&after={}", enc(a)));
        }
        self.request(Method::GET, &path, Vec::new(), &[]).await
    }

    /// `GET /admin/objects/{class}/{name}`: one object (`key`: only that key,
    /// in full).
    pub async fn inspect(
        &self,
        class: &str,
        name: &str,
        key: Option<&str>,
    ) -> Result<serde_json::Value, ClientError> {
        let mut path = object_path(class, name, "");
        if let Some(k) = key {
            path.push_str(&format!("?key={}", enc(k)));
        }
        self.request(Method::GET, &path, Vec::new(), &[]).await
    }

    /// `GET /admin/objects/{class}/{name}/export` into `out`; returns bytes.
    pub async fn export(
        &self,
        class: &str,
        name: &str,
        out: &mut (dyn std::io::Write + Send),
    ) -> Result<u64, ClientError> {
        let path = object_path(class, name, "/export");
        Ok(self.download(&path, out).await?.0)
    }

    /// `POST /admin/objects/{class}/{name}/import` with a file of JSON lines.
    pub async fn import(
        &self,
        class: &str,
        name: &str,
        file: &Path,
        overwrite: bool,
    ) -> Result<serde_json::Value, ClientError> {
        let bytes = std::fs::read(file).map_err(|source| ClientError::Read {
            path: file.display().to_string(),
            source,
        })?;
        let mut path = object_path(class, name, "/import");
        if overwrite {
            path.push_str("?overwrite=1");
        }
        self.request(Method::POST, &path, bytes, &[]).await
    }

    /// `POST /admin/objects/{class}/{name}/evict`.
    pub async fn evict(&self, class: &str, name: &str) -> Result<serde_json::Value, ClientError> {
        let path = object_path(class, name, "/evict");
        self.request(Method::POST, &path, Vec::new(), &[]).await
    }

    /// `DELETE /admin/objects/{class}/{name}`, logged as done by `by`.
    pub async fn delete(
        &self,
        class: &str,
        name: &str,
        by: &str,
    ) -> Result<serde_json::Value, ClientError> {
        let path = object_path(class, name, "");
        let by = [("x-roomhost-deleted-by", by.to_string())];
        self.request(Method::DELETE, &path, Vec::new(), &by).await
    }

    /// `GET /admin/backup` into `file`: written to a temporary file beside
    /// it, checked (complete, and a redb database that opens), then renamed
    /// into place. Returns its size.
    pub async fn backup(&self, file: &Path) -> Result<u64, ClientError> {
        let dir = match file.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let io = |source| ClientError::Write(source);
        let mut tmp = tempfile::Builder::new()
            .prefix(".roomhost-backup-")
            .tempfile_in(dir)
            .map_err(io)?;
        let mut out = SyncedEvery::new(tmp.as_file_mut(), SYNC_EVERY);
        let (written, announced) = self.download("/admin/backup", &mut out).await?;
        if announced.is_some_and(|n| n != written) {
            return Err(ClientError::Incomplete {
                written,
                announced: announced.unwrap_or(0),
            });
        }
        tmp.as_file().sync_all().map_err(io)?;
        // Read-only: a writable open would write (and sync) the file again.
        let check = redb::ReadOnlyDatabase::open(tmp.path())
            .map_err(|e| ClientError::NotADatabase(Box::new(e)))?;
        drop(check);
        tmp.persist(file).map_err(|e| io(e.error))?;
        Ok(written)
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

/// How much of a backup the CLI writes between two `fdatasync`s.
const SYNC_EVERY: u64 = 16 << 20;

/// A file that is synced to disk every `every` bytes written. A backup is
/// often written to the disk the host serves from: one sync of a whole
/// gigabyte at the end would make the host's own commits (each one an
/// fsync) queue behind it for as long as the disk takes to write it; small
/// syncs along the way leave them a turn every few milliseconds.
struct SyncedEvery<'a> {
    file: &'a mut std::fs::File,
    every: u64,
    unsynced: u64,
}

impl<'a> SyncedEvery<'a> {
    fn new(file: &'a mut std::fs::File, every: u64) -> SyncedEvery<'a> {
        SyncedEvery {
            file,
            every,
            unsynced: 0,
        }
    }
}

impl std::io::Write for SyncedEvery<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.unsynced += n as u64;
        if self.unsynced >= self.every {
            self.file.sync_data()?;
            self.unsynced = 0;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}
