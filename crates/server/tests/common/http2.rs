//! An HTTP/2 client (cleartext, prior knowledge) for the black-box tests.

/// A response read over HTTP/2.
#[derive(Debug)]
pub struct H2Response {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
}

impl H2Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// One HTTP/2 connection to a server (h2c prior knowledge), with control over each request
/// stream, which `reqwest` without its `http2` feature cannot give: tests reset streams.
#[derive(Clone)]
pub struct H2 {
    send: h2::client::SendRequest<bytes::Bytes>,
    authority: String,
    /// Becomes true when the connection has ended (the server closed it, or it failed).
    ended: tokio::sync::watch::Receiver<bool>,
}

impl H2 {
    /// Connect and complete the HTTP/2 handshake; the connection is driven by a spawned task
    /// that ends when the server goes away.
    pub async fn connect(port: u16) -> Result<Self, String> {
        Self::connect_with(port, h2::client::Builder::new()).await
    }

    /// [`H2::connect`] with the client's settings (say, a stream window that stays shut).
    pub async fn connect_with(port: u16, settings: h2::client::Builder) -> Result<Self, String> {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let (send, conn) = settings
            .handshake(tcp)
            .await
            .map_err(|e| format!("h2 handshake: {e}"))?;
        let (ended_tx, ended) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let _ = conn.await;
            let _ = ended_tx.send(true);
        });
        Ok(Self {
            send,
            authority: format!("127.0.0.1:{port}"),
            ended,
        })
    }

    /// Wait until the connection has ended.
    pub async fn ended(&self) {
        let mut ended = self.ended.clone();
        let _ = ended.wait_for(|e| *e).await;
    }

    /// Whether the connection has ended.
    pub fn has_ended(&self) -> bool {
        *self.ended.borrow()
    }

    /// Open a request stream and send `body` whole (ending the stream). Returns the response
    /// future and the stream's sending half, so a caller can reset it.
    pub async fn start(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(h2::client::ResponseFuture, h2::SendStream<bytes::Bytes>), h2::Error> {
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.authority));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(()).expect("a valid request");
        let mut send = self.send.clone().ready().await?;
        let (resp, mut stream) = send.send_request(req, body.is_empty())?;
        if !body.is_empty() {
            stream.send_data(bytes::Bytes::copy_from_slice(body), true)?;
        }
        Ok((resp, stream))
    }

    /// A whole request and its whole response.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<H2Response, h2::Error> {
        let (resp, _stream) = self.start(method, path, headers, body).await?;
        let resp = resp.await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let mut recv = resp.into_body();
        let mut body = Vec::new();
        while let Some(chunk) = recv.data().await {
            let chunk = chunk?;
            let _ = recv.flow_control().release_capacity(chunk.len());
            body.extend_from_slice(&chunk);
        }
        Ok(H2Response {
            status,
            headers,
            body,
        })
    }
}
