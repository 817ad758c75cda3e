//! Error answers: a status, a short plain-text explanation, and any protocol headers the
//! status carries (`Stream-Closed` on a closed-stream 409, `Producer-*` on fencing errors).

use super::body;
use super::body::ResponseBody;
use super::metrics::Reason;
use super::streams::offset::format_offset;
use http::header::{self, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use riffle_engine::EngineError;

/// An error answer. The Durable Streams face renders it as plain text; the `/v0` face as its
/// JSON envelope, with `code` (derived from the status unless set) and `detail`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub code: Option<&'static str>,
    /// Boxed: every handler's `Result` carries this type, and most errors have no detail.
    pub detail: Option<Box<serde_json::Value>>,
    /// Why a 401/403/429 refused the request (`missing`, `forbidden_scope`, a limit's key):
    /// the metrics' label, carried to `App::handle` as a response extension.
    pub reason: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            headers: Vec::new(),
            code: None,
            detail: None,
            reason: None,
        }
    }

    /// The same error with the reason the metrics count it under.
    pub fn reason(mut self, reason: &'static str) -> Self {
        self.reason = Some(reason);
        self
    }

    /// The same error with a machine-readable code (`/v0`'s `error.code`).
    pub fn code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    pub fn detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = Some(Box::new(detail));
        self
    }

    /// 405, naming the methods `allow`ed here (also in `Allow`).
    pub fn method_not_allowed(allow: &'static str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method not allowed here: use {allow}"),
        )
        .code("method_not_allowed")
        .with_header("allow", allow)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn with_header(mut self, name: &'static str, value: impl ToString) -> Self {
        if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
            self.headers.push((HeaderName::from_static(name), v));
        }
        self
    }

    pub fn into_response(self) -> Response<ResponseBody> {
        let mut msg = self.message;
        msg.push('\n');
        let mut resp = Response::new(body::full(msg));
        *resp.status_mut() = self.status;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        for (k, v) in self.headers {
            h.insert(k, v);
        }
        if let Some(r) = self.reason {
            resp.extensions_mut().insert(Reason(r));
        }
        resp
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        use EngineError as E;
        let msg = e.to_string();
        let status = match &e {
            E::NotFound | E::ForkSourceNotFound => StatusCode::NOT_FOUND,
            E::Gone => StatusCode::GONE,
            E::ConfigMismatch(_)
            | E::ForkSourceGone
            | E::ForkContentTypeMismatch { .. }
            | E::ForkOfEphemeral
            | E::Closed { .. }
            | E::ContentTypeMismatch { .. }
            | E::SeqRegression { .. }
            | E::SeqGap { .. } => StatusCode::CONFLICT,
            E::ForkOffsetBeyondTail { .. }
            | E::ForkSubOffsetOvershoot { .. }
            | E::EpochSeqNotZero
            | E::EmptyAppend
            | E::ForkTooDeep { .. }
            | E::ProducerIdTooLong { .. }
            | E::StreamSeqTooLong { .. }
            | E::OffsetBeyondTail { .. }
            | E::OffsetInsideMessage { .. } => StatusCode::BAD_REQUEST,
            E::StaleEpoch { .. } => StatusCode::FORBIDDEN,
            E::StreamFull { .. } | E::RecordTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            E::TopicIncompatible(_)
            | E::TopicNotEmpty
            | E::RouterCycle(_)
            | E::RouterFanIn(_)
            | E::NotAQueue => StatusCode::CONFLICT,
            E::RouterNotFound => StatusCode::NOT_FOUND,
            E::RouterSelf => StatusCode::BAD_REQUEST,
            E::TopicFull => StatusCode::UNPROCESSABLE_ENTITY,
            E::MemoryFull { .. } => StatusCode::INSUFFICIENT_STORAGE,
            E::LimitReached { .. } => StatusCode::TOO_MANY_REQUESTS,
            E::DurabilityUnavailable(_) => StatusCode::BAD_REQUEST,
            E::Storage { no_space: true, .. } => StatusCode::INSUFFICIENT_STORAGE,
            E::Storage { .. } => StatusCode::SERVICE_UNAVAILABLE,
            E::Damaged(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let err = ApiError::new(status, msg);
        match e {
            E::Closed { next } => err
                .with_header("stream-closed", "true")
                .with_header("stream-next-offset", format_offset(next)),
            E::StaleEpoch { current } => err.with_header("producer-epoch", current),
            E::LimitReached { limit, .. } => err.reason(limit).with_header("retry-after", 1),
            E::SeqGap { expected, received } => err
                .with_header("producer-expected-seq", expected)
                .with_header("producer-received-seq", received),
            _ => err,
        }
    }
}
