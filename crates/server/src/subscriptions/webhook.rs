//! The outbound HTTP/1.1 client for webhook deliveries.
//!
//! It resolves names itself and connects only to addresses that pass [`allowed_addr`], so a
//! name that resolves (or rebinds) to a private address is refused before any byte is sent.
//! At most `concurrency` requests are in flight; redirects are returned, never followed;
//! idle connections are kept briefly for reuse by the next delivery to the same origin.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_TYPE, HOST, HeaderName, HeaderValue, USER_AGENT};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{self, pki_types::ServerName};

use super::ssrf::{Scheme, TargetHost, WebhookTarget, allowed_addr};

/// How much of a reply body is kept; the rest is not read (the connection is then dropped).
pub const MAX_REPLY_BODY: usize = 64 * 1024;
/// An idle connection older than this is not reused (servers close idle ones, often at 5-60 s).
const IDLE_TTL: Duration = Duration::from_secs(30);
/// Idle connections kept per origin.
const IDLE_PER_ORIGIN: usize = 8;
/// Origins with idle connections past which expired entries are swept.
const POOL_SWEEP_AT: usize = 256;

#[derive(Clone, Debug)]
pub struct WebhookClientConfig {
    /// The whole request: resolve, connect, TLS, send, reply headers and body. Starts once the
    /// request has a slot in the pool.
    pub timeout: Duration,
    /// Each TCP connection attempt.
    pub connect_timeout: Duration,
    /// Requests in flight at most; the rest wait for a slot.
    pub concurrency: usize,
    /// The loopback development exception (`subscriptions.allow_localhost_webhooks`).
    pub allow_localhost: bool,
}

/// A receiver's reply: any status, including 3xx and 5xx (judging it is the caller's job).
#[derive(Clone, Debug)]
pub struct WebhookReply {
    pub status: u16,
    /// At most [`MAX_REPLY_BODY`] bytes.
    pub body: Bytes,
}

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The target's name resolved only to addresses that may not be called (or it is one).
    #[error("refused: {0}")]
    Refused(String),
    #[error("DNS lookup failed: {0}")]
    Dns(String),
    #[error("connect failed: {0}")]
    Connect(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("TLS failed: {0}")]
    Tls(String),
    #[error("HTTP failed: {0}")]
    Http(String),
}

pub struct WebhookClient {
    cfg: WebhookClientConfig,
    slots: Semaphore,
    tls: TlsConnector,
    idle: Mutex<HashMap<Origin, Vec<Idle>>>,
}

/// Connections are shared only between requests to the same scheme, host name and port.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Origin {
    scheme: Scheme,
    host: TargetHost,
    port: u16,
}

/// A kept-alive connection and when it went idle.
type Idle = (SendRequest<Full<Bytes>>, Instant);

fn fresh((sender, since): &Idle) -> bool {
    since.elapsed() < IDLE_TTL && !sender.is_closed()
}

impl WebhookClient {
    pub fn new(cfg: WebhookClientConfig) -> Result<Self, String> {
        if cfg.concurrency == 0 {
            return Err("webhook concurrency must be at least 1".into());
        }
        if cfg.timeout.is_zero() || cfg.connect_timeout.is_zero() {
            return Err("webhook timeouts must be above zero".into());
        }
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        // Explicit provider: the process-wide default is not installed anywhere.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("webhook TLS setup: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(WebhookClient {
            slots: Semaphore::new(cfg.concurrency),
            cfg,
            tls: TlsConnector::from(Arc::new(tls)),
            idle: Mutex::new(HashMap::new()),
        })
    }

    /// POSTs `body` to `target` with `headers` (`Content-Type` defaults to `application/json`).
    pub async fn post(
        &self,
        target: &WebhookTarget,
        headers: &[(&'static str, String)],
        body: Bytes,
    ) -> Result<WebhookReply, DeliveryError> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| DeliveryError::Http("webhook client shut down".into()))?;
        match tokio::time::timeout(self.cfg.timeout, self.send(target, headers, body)).await {
            Ok(result) => result,
            Err(_) => Err(DeliveryError::Timeout(self.cfg.timeout)),
        }
    }

    async fn send(
        &self,
        target: &WebhookTarget,
        headers: &[(&'static str, String)],
        body: Bytes,
    ) -> Result<WebhookReply, DeliveryError> {
        let origin = Origin {
            scheme: target.scheme(),
            host: target.host().clone(),
            port: target.port(),
        };
        let mut req = request(target, headers, body)?;
        // A pooled connection the server has just closed hands the request back unsent;
        // then it goes out on another one, or a fresh one.
        let (sender, resp) = loop {
            let Some(mut sender) = self.take_idle(&origin) else {
                let mut sender = self.connect(target).await?;
                let resp = sender
                    .send_request(req)
                    .await
                    .map_err(|e| DeliveryError::Http(e.to_string()))?;
                break (sender, resp);
            };
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(resp) => break (sender, resp),
                Err(mut e) => match e.take_message() {
                    Some(back) => req = back,
                    None => return Err(DeliveryError::Http(e.into_error().to_string())),
                },
            }
        };
        let status = resp.status().as_u16();
        let reusable = !resp
            .headers()
            .get(http::header::CONNECTION)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        let mut incoming = resp.into_body();
        let mut buf = BytesMut::new();
        let mut complete = true;
        while let Some(frame) = incoming.frame().await {
            let frame = frame.map_err(|e| DeliveryError::Http(e.to_string()))?;
            if let Ok(data) = frame.into_data() {
                let room = MAX_REPLY_BODY - buf.len();
                if data.len() > room {
                    buf.extend_from_slice(&data[..room]);
                    complete = false;
                    break;
                }
                buf.extend_from_slice(&data);
            }
        }
        if complete && reusable {
            self.put_idle(origin, sender);
        }
        Ok(WebhookReply {
            status,
            body: buf.freeze(),
        })
    }

    /// A new connection to a checked address of `target`, TLS for https.
    async fn connect(
        &self,
        target: &WebhookTarget,
    ) -> Result<SendRequest<Full<Bytes>>, DeliveryError> {
        let tcp = 'found: {
            let mut last = String::new();
            for addr in self.resolve(target).await? {
                let wait = self.cfg.connect_timeout;
                match tokio::time::timeout(wait, TcpStream::connect(addr)).await {
                    Ok(Ok(tcp)) => break 'found tcp,
                    Ok(Err(e)) => last = format!("{addr}: {e}"),
                    Err(_) => last = format!("{addr}: no answer in {wait:?}"),
                }
            }
            return Err(DeliveryError::Connect(last));
        };
        // Small requests, one round trip each: no Nagle delay.
        let _ = tcp.set_nodelay(true);
        match target.scheme() {
            Scheme::Http => handshake(tcp).await,
            Scheme::Https => {
                let name = match target.host() {
                    TargetHost::Domain(d) => ServerName::try_from(d.clone())
                        .map_err(|e| DeliveryError::Tls(format!("server name {d}: {e}")))?,
                    TargetHost::Ip(ip) => ServerName::IpAddress((*ip).into()),
                };
                let tls = self
                    .tls
                    .connect(name, tcp)
                    .await
                    .map_err(|e| DeliveryError::Tls(e.to_string()))?;
                handshake(tls).await
            }
        }
    }

    /// The addresses the request may go to: the literal address, or whatever the name
    /// resolves to less the addresses [`allowed_addr`] refuses.
    async fn resolve(&self, target: &WebhookTarget) -> Result<Vec<SocketAddr>, DeliveryError> {
        let allow = self.cfg.allow_localhost;
        let name = match target.host() {
            TargetHost::Ip(ip) if allowed_addr(*ip, allow) => {
                return Ok(vec![SocketAddr::new(*ip, target.port())]);
            }
            TargetHost::Ip(ip) => return Err(DeliveryError::Refused(format!("address {ip}"))),
            TargetHost::Domain(name) => name,
        };
        let found: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), target.port()))
            .await
            .map_err(|e| DeliveryError::Dns(format!("{name}: {e}")))?
            .collect();
        if found.is_empty() {
            return Err(DeliveryError::Dns(format!("{name}: no addresses")));
        }
        let (ok, refused): (Vec<_>, Vec<_>) =
            found.into_iter().partition(|a| allowed_addr(a.ip(), allow));
        if ok.is_empty() {
            let refused: Vec<_> = refused.iter().map(SocketAddr::ip).collect();
            let why = format!("{name} resolves only to disallowed addresses {refused:?}");
            return Err(DeliveryError::Refused(why));
        }
        Ok(ok)
    }

    fn take_idle(&self, origin: &Origin) -> Option<SendRequest<Full<Bytes>>> {
        let mut idle = self.idle.lock();
        let list = idle.get_mut(origin)?;
        // Most recently used first: the least likely to have been closed by the server.
        let found = std::iter::from_fn(|| list.pop())
            .find(fresh)
            .map(|(s, _)| s);
        if list.is_empty() {
            idle.remove(origin);
        }
        found
    }

    fn put_idle(&self, origin: Origin, sender: SendRequest<Full<Bytes>>) {
        let mut idle = self.idle.lock();
        if idle.len() >= POOL_SWEEP_AT {
            idle.retain(|_, list| {
                list.retain(fresh);
                !list.is_empty()
            });
        }
        let list = idle.entry(origin).or_default();
        list.retain(fresh);
        if list.len() < IDLE_PER_ORIGIN {
            list.push((sender, Instant::now()));
        }
    }
}

fn request(
    target: &WebhookTarget,
    headers: &[(&'static str, String)],
    body: Bytes,
) -> Result<http::Request<Full<Bytes>>, DeliveryError> {
    let bad = |what: String| DeliveryError::Http(format!("bad request header {what}"));
    let mut req = http::Request::post(target.path_and_query())
        .body(Full::new(body))
        .map_err(|e| DeliveryError::Http(e.to_string()))?;
    let h = req.headers_mut();
    let host = HeaderValue::from_str(target.authority()).map_err(|e| bad(e.to_string()))?;
    h.insert(HOST, host);
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(
        USER_AGENT,
        HeaderValue::from_static(concat!("riffle/", env!("CARGO_PKG_VERSION"))),
    );
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad(name.to_string()))?;
        let value = HeaderValue::from_str(value).map_err(|_| bad(name.to_string()))?;
        h.insert(name, value);
    }
    Ok(req)
}

async fn handshake<T>(io: T) -> Result<SendRequest<Full<Bytes>>, DeliveryError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| DeliveryError::Http(e.to_string()))?;
    // Ends when the sender is dropped (or a reply is abandoned): the connection closes then.
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subscriptions::ssrf::check_url;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    /// What the test receiver saw.
    #[derive(Default)]
    struct Seen {
        connections: AtomicUsize,
        in_flight: AtomicUsize,
        max_in_flight: AtomicUsize,
        requests: Mutex<Vec<(http::request::Parts, Bytes)>>,
    }

    /// A plain-HTTP receiver on 127.0.0.1 (hyper's server, keep-alive on) that answers
    /// `status` and `reply` after `delay_ms`.
    async fn serve(status: u16, reply: &[u8], delay_ms: u64) -> (Arc<Seen>, SocketAddr) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (seen, reply) = (Arc::new(Seen::default()), Bytes::copy_from_slice(reply));
        let shared = seen.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                shared.connections.fetch_add(1, SeqCst);
                let (seen, reply) = (shared.clone(), reply.clone());
                let svc = hyper::service::service_fn(move |req: http::Request<_>| {
                    let (seen, reply) = (seen.clone(), reply.clone());
                    async move {
                        let now = seen.in_flight.fetch_add(1, SeqCst) + 1;
                        seen.max_in_flight.fetch_max(now, SeqCst);
                        let (parts, body) = req.into_parts();
                        let body: hyper::body::Incoming = body;
                        let body = body.collect().await?.to_bytes();
                        seen.requests.lock().push((parts, body));
                        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                        seen.in_flight.fetch_sub(1, SeqCst);
                        let mut resp = http::Response::new(Full::new(reply));
                        *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
                        Ok::<_, hyper::Error>(resp)
                    }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc);
                tokio::spawn(conn);
            }
        });
        (seen, addr)
    }

    fn config(allow_localhost: bool, timeout_ms: u64, concurrency: usize) -> WebhookClientConfig {
        WebhookClientConfig {
            timeout: Duration::from_millis(timeout_ms),
            connect_timeout: Duration::from_secs(1),
            concurrency,
            allow_localhost,
        }
    }

    fn client(allow_localhost: bool, timeout_ms: u64, concurrency: usize) -> WebhookClient {
        WebhookClient::new(config(allow_localhost, timeout_ms, concurrency)).unwrap()
    }

    fn target(url: String) -> WebhookTarget {
        check_url(&url, true).unwrap()
    }

    #[tokio::test]
    async fn a_post_arrives_with_its_body_and_headers() {
        let (seen, addr) = serve(200, b"ok", 0).await;
        let (c, t) = (
            client(true, 5000, 4),
            target(format!("http://{addr}/hook?a=1")),
        );
        let headers = [("Webhook-Signature", "t=1,kid=ds_x,ed25519=AA".to_string())];
        let body = Bytes::from_static(br#"{"stream":"s"}"#);
        let reply = c.post(&t, &headers, body.clone()).await.unwrap();
        assert_eq!((reply.status, &reply.body[..]), (200, &b"ok"[..]));
        // A second delivery reuses the kept-alive connection.
        c.post(&t, &headers, body.clone()).await.unwrap();
        assert_eq!(seen.connections.load(SeqCst), 1);

        let requests = seen.requests.lock();
        let (parts, got) = &requests[0];
        assert_eq!((&parts.method, got), (&http::Method::POST, &body));
        assert_eq!(parts.uri.to_string(), "/hook?a=1");
        let h = &parts.headers;
        assert_eq!(h["content-type"], "application/json");
        assert_eq!(h["webhook-signature"], "t=1,kid=ds_x,ed25519=AA");
        assert_eq!(h["host"], addr.to_string().as_str());
        assert_eq!(h["content-length"], body.len().to_string().as_str());
    }

    #[tokio::test]
    async fn an_error_status_is_a_reply_and_big_bodies_are_cut() {
        let (_seen, addr) = serve(500, &[b'x'; 100_000], 0).await;
        let t = target(format!("http://{addr}/"));
        let reply = client(true, 5000, 1)
            .post(&t, &[], Bytes::new())
            .await
            .unwrap();
        assert_eq!((reply.status, reply.body.len()), (500, MAX_REPLY_BODY));
    }

    #[tokio::test]
    async fn a_receiver_that_never_answers_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let t = target(format!("http://{}/", listener.local_addr().unwrap()));
        let hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((tcp, _)) = listener.accept().await {
                held.push(tcp);
            }
        });
        let start = Instant::now();
        let err = client(true, 300, 1).post(&t, &[], Bytes::new()).await;
        assert!(matches!(err, Err(DeliveryError::Timeout(_))), "{err:?}");
        let took = start.elapsed();
        assert!(took < Duration::from_secs(2), "{took:?}");
        hold.abort();
    }

    #[tokio::test]
    async fn loopback_is_refused_without_the_exception_before_connecting() {
        let (seen, addr) = serve(200, b"", 0).await;
        let c = client(false, 5000, 1);
        let by_ip = c
            .post(&target(format!("http://{addr}/")), &[], Bytes::new())
            .await;
        assert!(matches!(by_ip, Err(DeliveryError::Refused(_))), "{by_ip:?}");
        // A name is refused once resolved: every address it has is loopback.
        let by_name = target(format!("http://localhost:{}/", addr.port()));
        let by_name = c.post(&by_name, &[], Bytes::new()).await;
        assert!(
            matches!(by_name, Err(DeliveryError::Refused(_))),
            "{by_name:?}"
        );
        assert_eq!(seen.connections.load(SeqCst), 0);
    }

    #[tokio::test]
    async fn no_more_than_the_concurrency_cap_is_in_flight() {
        let (seen, addr) = serve(204, b"", 250).await;
        let c = Arc::new(client(true, 5000, 2));
        let posts: Vec<_> = (0..5)
            .map(|i| {
                let (c, t) = (c.clone(), target(format!("http://{addr}/{i}")));
                tokio::spawn(async move { c.post(&t, &[], Bytes::new()).await })
            })
            .collect();
        for p in posts {
            assert_eq!(p.await.unwrap().unwrap().status, 204);
        }
        assert_eq!(seen.requests.lock().len(), 5);
        assert_eq!(seen.max_in_flight.load(SeqCst), 2);
    }

    #[tokio::test]
    async fn https_runs_tls_and_fails_against_a_plain_http_receiver() {
        let (_seen, addr) = serve(200, b"", 0).await;
        let t = target(format!("https://{addr}/"));
        let err = client(true, 5000, 1).post(&t, &[], Bytes::new()).await;
        assert!(matches!(err, Err(DeliveryError::Tls(_))), "{err:?}");
    }

    #[test]
    fn bad_settings_are_refused() {
        assert!(WebhookClient::new(config(false, 100, 0)).is_err());
        assert!(WebhookClient::new(config(false, 0, 1)).is_err());
        let no_connect_time = WebhookClientConfig {
            connect_timeout: Duration::ZERO,
            ..config(false, 100, 1)
        };
        assert!(WebhookClient::new(no_connect_time).is_err());
        assert!(WebhookClient::new(config(false, 100, 1)).is_ok());
    }
}
