//! The error handlers return.

use std::fmt;

use crate::Response;

/// What a handler returns when it cannot do what it was asked: an HTTP
/// status and a message.
///
/// Any error type converts into it with `?` (status 500, its message and
/// sources joined with `: `), so storage, socket, call and JSON errors need no
/// mapping; [`Error::bad_request`], [`Error::not_found`] and [`Error::new`]
/// make errors the client should see.
///
/// What happens to it depends on the handler:
/// - `on_request`: it becomes the response, with its headers. A 4xx
///   error's message is the body; a 5xx error is logged and the client gets
///   `internal error` (nothing internal leaks) unless it was
///   [`Error::expose`]d.
/// - `on_socket_message`, `on_socket_close`: it is logged (to tell the client,
///   send it a frame yourself).
/// - `on_alarm`: it is logged and the delivery fails like a trap, so the host
///   retries it with backoff.
/// - `on_call`: the caller gets `CallError::Rejected(message)`.
/// - `init`: it is logged and traps.
///
/// Writes made before an `Err` are kept, except in `on_alarm` and `init`.
pub struct Error {
    status: u16,
    message: String,
    /// Send the message even for a 5xx.
    exposed: bool,
    /// Extra response headers (e.g. `allow` for a 405).
    headers: Vec<(String, String)>,
    /// The error it came from, if any (see [`Error::downcast_ref`]).
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

/// A handler's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error with an HTTP status (4xx: the client's fault; 5xx: ours).
    pub fn new(status: u16, message: impl Into<String>) -> Error {
        Error {
            status,
            message: message.into(),
            exposed: false,
            headers: Vec::new(),
            source: None,
        }
    }

    /// This error with another status (e.g. a storage error as `507`).
    pub fn with_status(mut self, status: u16) -> Error {
        self.status = status;
        self
    }

    /// This error with a response header (`allow` for a 405, ...).
    pub fn with_header(mut self, name: &str, value: &str) -> Error {
        self.headers
            .push((name.to_ascii_lowercase(), value.to_string()));
        self
    }

    /// Sends the message to the client even for a 5xx (which otherwise
    /// answers `internal error`).
    pub fn expose(mut self) -> Error {
        self.exposed = true;
        self
    }

    /// The error this one came from, if it was of type `T`: e.g.
    /// `e.downcast_ref::<StorageError>()` to tell a full quota from a bad
    /// key after `storage::put(..)?`.
    pub fn downcast_ref<T: std::error::Error + 'static>(&self) -> Option<&T> {
        self.source.as_deref()?.downcast_ref::<T>()
    }

    /// `400 Bad Request`.
    pub fn bad_request(message: impl Into<String>) -> Error {
        Error::new(400, message)
    }

    /// `404 Not Found`.
    pub fn not_found(message: impl Into<String>) -> Error {
        Error::new(404, message)
    }

    /// `500`: a failure of the object, logged rather than shown.
    pub fn internal(message: impl Into<String>) -> Error {
        Error::new(500, message)
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The response `on_request` answers for this error (logging a 5xx).
    pub fn into_response(self) -> Response {
        let mut response = if self.status >= 500 && !self.exposed {
            crate::log::error(format!("request failed: {}", self.message));
            Response::text(self.status, "internal error")
        } else {
            Response::text(self.status, self.message)
        };
        response.headers.extend(self.headers);
        response
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for Error {
    fn from(e: E) -> Error {
        let mut message = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        Error {
            source: Some(Box::new(e)),
            ..Error::internal(message)
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Error({}: {:?})", self.status, self.message)
    }
}
