//! WebSocket connections for the tests.

/// A WebSocket connection, as `tokio_tungstenite` gives it.
pub type WebSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Open a WebSocket at `url` (`ws://...`) presenting `token` as `Authorization: Bearer`, as
/// `/v0/ws` requires (a query token is for SSE GETs only).
pub async fn ws_with_bearer(
    url: &str,
    token: &str,
) -> Result<WebSocket, tokio_tungstenite::tungstenite::Error> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = url.into_client_request()?;
    let value = format!("Bearer {token}")
        .parse()
        .expect("a token fits a header value");
    req.headers_mut().insert("authorization", value);
    tokio_tungstenite::connect_async(req)
        .await
        .map(|(ws, _)| ws)
}
