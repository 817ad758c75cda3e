//! The Durable Streams protocol face (`/v1/stream/...`). A stream's key is its full request
//! path in canonical form (see [`super::path`]), as in the reference servers, so
//! `Stream-Forked-From` takes the same path.

mod headers;
pub(crate) mod names;
pub mod offset;
mod params;
pub(crate) mod payload;
pub mod poll;
mod read;
mod sse;
pub mod tail;
mod write;

use super::body::{RequestBody, ResponseBody};
use super::{ApiError, App};
use http::request::Parts;
use http::{Method, Response, StatusCode, header};

/// Longest stream path accepted.
const MAX_PATH: usize = 1024;

/// Serve a request for the stream `name` (the canonical request path).
pub async fn handle(
    app: &App,
    name: &str,
    req: &Parts,
    body: RequestBody,
) -> Result<Response<ResponseBody>, ApiError> {
    if name.len() > MAX_PATH {
        return Err(ApiError::bad_request(format!(
            "stream path is longer than {MAX_PATH} bytes"
        )));
    }
    match req.method {
        Method::PUT => write::create(app, name, req, body).await,
        Method::POST => write::append(app, name, req, body).await,
        Method::DELETE => write::delete(app, name).await,
        Method::GET => read::get(app, name, req).await,
        Method::HEAD => read::head(app, name),
        _ => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed: use GET, HEAD, PUT, POST, DELETE or OPTIONS",
        )
        .with_header("allow", "GET, HEAD, PUT, POST, DELETE, OPTIONS")),
    }
}

/// A response builder with the stream's content type.
fn with_content_type(status: StatusCode, content_type: &str) -> http::response::Builder {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
}
