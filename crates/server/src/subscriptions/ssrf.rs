//! Which webhook URLs and addresses the server may call (spec 6.2 / 12.8): https to public
//! addresses only, plus plain http or https to `localhost` / 127.0.0.0/8 / ::1 when the
//! operator enabled the loopback development exception. Names are checked again at delivery
//! time, address by address, by [`allowed_addr`] (DNS rebinding).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The URL scheme of a checked webhook target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    Http,
    Https,
}

/// The host of a checked webhook target.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TargetHost {
    /// A DNS name (lowercase, IDNA-encoded, no trailing dot); resolved at delivery time.
    Domain(String),
    Ip(IpAddr),
}

/// A webhook URL that passed [`check_url`]: everything the delivery client needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookTarget {
    url: String,
    scheme: Scheme,
    host: TargetHost,
    port: u16,
    authority: String,
    path_and_query: String,
}

impl WebhookTarget {
    /// The normalised URL (no fragment), for logs and the subscription record.
    pub fn as_str(&self) -> &str {
        &self.url
    }
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }
    pub fn host(&self) -> &TargetHost {
        &self.host
    }
    /// The port, the scheme's default filled in.
    pub fn port(&self) -> u16 {
        self.port
    }
    /// The `Host` header value: host, IPv6 in brackets, and the port when not the default.
    pub fn authority(&self) -> &str {
        &self.authority
    }
    /// The request target: path plus `?query` if any (never empty, at least `/`).
    pub fn path_and_query(&self) -> &str {
        &self.path_and_query
    }
}

impl fmt::Display for WebhookTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

/// Parses and checks a webhook URL. The error is a message for the client
/// (`400 WEBHOOK_URL_REJECTED`).
pub fn check_url(raw: &str, allow_localhost: bool) -> Result<WebhookTarget, String> {
    let mut url =
        url::Url::parse(raw).map_err(|e| format!("webhook URL is not a valid URL: {e}"))?;
    let scheme = match url.scheme() {
        "https" => Scheme::Https,
        "http" => Scheme::Http,
        other => {
            return Err(format!(
                "webhook URL scheme {other:?} is not allowed; use https"
            ));
        }
    };
    if !url.username().is_empty() || url.password().is_some() {
        return Err("webhook URL must not contain credentials (user:pass@)".into());
    }
    // Never sent over the wire, and not part of what the subscription calls.
    url.set_fragment(None);
    let host = match url.host() {
        None => return Err("webhook URL has no host".into()),
        Some(url::Host::Ipv4(ip)) => TargetHost::Ip(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => TargetHost::Ip(IpAddr::V6(ip)),
        Some(url::Host::Domain(name)) => {
            let name = name.strip_suffix('.').unwrap_or(name);
            if name.is_empty() {
                return Err("webhook URL has no host".into());
            }
            TargetHost::Domain(name.to_ascii_lowercase())
        }
    };
    let loopback = match &host {
        TargetHost::Domain(name) if name == "localhost" => true,
        // Other names under .localhost resolve to loopback too (RFC 6761), but the
        // development exception names only `localhost` itself.
        TargetHost::Domain(name) if name.ends_with(".localhost") => {
            return Err(format!(
                "webhook host {name} is a loopback name; not allowed"
            ));
        }
        TargetHost::Domain(_) => false,
        TargetHost::Ip(ip) if allowed_addr(*ip, false) => false,
        TargetHost::Ip(ip) if allow_localhost && allowed_addr(*ip, true) => true,
        TargetHost::Ip(ip) => {
            return Err(format!(
                "webhook address {ip} is private, loopback, link-local or otherwise not publicly \
                 routable; not allowed{}",
                if is_loopback(*ip) {
                    " (loopback is allowed only with subscriptions.allow_localhost_webhooks)"
                } else {
                    ""
                }
            ));
        }
    };
    if loopback && !allow_localhost {
        return Err("webhook URL points at localhost, allowed only with \
                    subscriptions.allow_localhost_webhooks"
            .into());
    }
    if scheme == Scheme::Http && !loopback {
        return Err(
            "webhook URL must use https (plain http only for localhost development)".into(),
        );
    }
    let Some(port) = url.port_or_known_default() else {
        return Err("webhook URL has no port".into());
    };
    if port == 0 {
        return Err("webhook URL port 0 is not allowed".into());
    }
    let host_str = match &host {
        TargetHost::Domain(name) => name.clone(),
        TargetHost::Ip(IpAddr::V4(ip)) => ip.to_string(),
        TargetHost::Ip(IpAddr::V6(ip)) => format!("[{ip}]"),
    };
    // `url` drops the scheme's default port, so an explicit port here is a non-default one.
    let authority = match url.port() {
        Some(p) => format!("{host_str}:{p}"),
        None => host_str,
    };
    let mut path_and_query = url.path().to_string();
    if path_and_query.is_empty() {
        path_and_query.push('/');
    }
    if let Some(q) = url.query() {
        path_and_query.push('?');
        path_and_query.push_str(q);
    }
    Ok(WebhookTarget {
        url: url.to_string(),
        scheme,
        host,
        port,
        authority,
        path_and_query,
    })
}

/// Whether the delivery client may connect to `ip`: publicly routable addresses always,
/// loopback (127.0.0.0/8, ::1 and its IPv4-mapped forms) only with the development exception.
pub fn allowed_addr(ip: IpAddr, allow_localhost: bool) -> bool {
    match ip {
        IpAddr::V4(v4) => v4_allowed(v4, allow_localhost),
        IpAddr::V6(v6) => v6_allowed(v6, allow_localhost),
    }
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

fn v4_allowed(ip: Ipv4Addr, allow_localhost: bool) -> bool {
    let [a, b, c, _] = ip.octets();
    if a == 127 {
        return allow_localhost;
    }
    let denied = a == 0 // "this network", including the unspecified address
        || a == 10 // RFC 1918
        || (a == 172 && (16..=31).contains(&b)) // RFC 1918
        || (a == 192 && b == 168) // RFC 1918
        || (a == 169 && b == 254) // link-local, cloud metadata (169.254.169.254)
        || (a == 100 && (64..=127).contains(&b)) // CGNAT 100.64/10 (some clouds' metadata)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2) // documentation
        || (a == 198 && b == 51 && c == 100) // documentation
        || (a == 203 && b == 0 && c == 113) // documentation
        || (a == 198 && (18..=19).contains(&b)) // benchmarking
        || a >= 224; // multicast, reserved 240/4, broadcast
    !denied
}

fn v6_allowed(ip: Ipv6Addr, allow_localhost: bool) -> bool {
    if ip.is_loopback() {
        return allow_localhost;
    }
    let seg = ip.segments();
    // Forms that carry an IPv4 address are judged by that address: IPv4-mapped
    // (::ffff:a.b.c.d), NAT64 (64:ff9b::/96) and 6to4 (2002::/16). Only the mapped form is
    // this host's loopback; the translated ones never are, so they get no exception.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_allowed(v4, allow_localhost);
    }
    if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return v4_allowed(embedded_v4(seg[6], seg[7]), false);
    }
    if seg[0] == 0x2002 {
        return v4_allowed(embedded_v4(seg[1], seg[2]), false);
    }
    let denied = seg[..6] == [0; 6] // unspecified, deprecated IPv4-compatible ::/96
        || (seg[0] == 0x64 && seg[1] == 0xff9b && seg[2] == 1) // local-use NAT64 64:ff9b:1::/48
        || seg[..4] == [0x100, 0, 0, 0] // discard-only 100::/64
        || (seg[0] == 0x2001 && seg[1] == 0) // Teredo (hides an IPv4 address)
        || (seg[0] == 0x2001 && seg[1] == 0xdb8) // documentation
        || (seg[0] & 0xfe00) == 0xfc00 // unique local fc00::/7 (incl. fd00:ec2::254 metadata)
        || (seg[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (seg[0] & 0xffc0) == 0xfec0 // deprecated site-local fec0::/10
        || (seg[0] & 0xff00) == 0xff00; // multicast
    !denied
}

fn embedded_v4(hi: u16, lo: u16) -> Ipv4Addr {
    let [a, b] = hi.to_be_bytes();
    let [c, d] = lo.to_be_bytes();
    Ipv4Addr::new(a, b, c, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_accepted_or_rejected_by_the_rules() {
        // (url, allowed without the flag, allowed with the flag)
        let cases: &[(&str, bool, bool)] = &[
            ("https://hooks.example.com/riffle?x=1", true, true),
            ("https://93.184.216.34/hook", true, true),
            ("https://[2606:4700::1111]/hook", true, true),
            ("http://hooks.example.com/hook", false, false),
            ("http://93.184.216.34/hook", false, false),
            ("http://localhost:8080/hook", false, true),
            ("https://localhost/hook", false, true),
            ("http://LOCALHOST./hook", false, true),
            ("http://127.0.0.1:9000/", false, true),
            ("http://127.0.0.5/hook", false, true),
            ("http://2130706433/", false, true), // 127.0.0.1 as one number
            ("http://[::1]:9000/", false, true),
            ("http://[::ffff:127.0.0.1]/", false, true),
            ("http://app.localhost/", false, false),
            ("https://10.0.0.1/hook", false, false),
            ("http://10.0.0.1/hook", false, false),
            ("https://172.16.0.1/", false, false),
            ("https://172.31.255.255/", false, false),
            ("https://192.168.1.1/", false, false),
            ("https://0x0a.0.0.1/", false, false), // 10.0.0.1 in hex
            ("http://169.254.169.254/latest/meta-data/", false, false),
            ("https://169.254.169.254/", false, false),
            ("https://169.254.1.1/", false, false),
            ("https://100.64.0.1/", false, false),
            ("https://100.127.255.255/", false, false),
            ("https://0.0.0.0/", false, false),
            ("https://224.0.0.1/", false, false),
            ("https://255.255.255.255/", false, false),
            ("https://[::]/", false, false),
            ("https://[fd00::1]/", false, false),
            ("https://[fc00::1]/", false, false),
            ("https://[fd00:ec2::254]/", false, false),
            ("https://[fe80::1]/", false, false),
            ("https://[ff02::1]/", false, false),
            ("https://[::ffff:10.0.0.1]/", false, false),
            ("https://[::ffff:169.254.169.254]/", false, false),
            ("https://[64:ff9b::a00:1]/", false, false), // NAT64 of 10.0.0.1
            ("https://[2002:a00:1::1]/", false, false),  // 6to4 of 10.0.0.1
            ("https://user:pass@hooks.example.com/", false, false),
            ("https://user@hooks.example.com/", false, false),
            ("http://user:pass@localhost/", false, false),
            ("ftp://hooks.example.com/", false, false),
            ("file:///etc/passwd", false, false),
            ("hooks.example.com/hook", false, false),
            ("https://hooks.example.com:0/", false, false),
            ("not a url", false, false),
        ];
        for &(url, plain, dev) in cases {
            assert_eq!(
                check_url(url, false).is_ok(),
                plain,
                "{url} without the flag"
            );
            assert_eq!(check_url(url, true).is_ok(), dev, "{url} with the flag");
        }
    }

    #[test]
    fn a_checked_target_has_what_the_client_needs() {
        let t = check_url("https://Hooks.Example.com/a/b?c=d#frag", false).unwrap();
        assert_eq!(t.scheme(), Scheme::Https);
        assert_eq!(t.host(), &TargetHost::Domain("hooks.example.com".into()));
        assert_eq!(t.port(), 443);
        assert_eq!(t.authority(), "hooks.example.com");
        assert_eq!(t.path_and_query(), "/a/b?c=d");
        assert_eq!(t.as_str(), "https://hooks.example.com/a/b?c=d");

        let t = check_url("http://[::1]:8080", true).unwrap();
        assert_eq!(t.scheme(), Scheme::Http);
        assert_eq!(t.host(), &TargetHost::Ip("::1".parse().unwrap()));
        assert_eq!(t.port(), 8080);
        assert_eq!(t.authority(), "[::1]:8080");
        assert_eq!(t.path_and_query(), "/");

        let t = check_url("https://hooks.example.com:443/x", false).unwrap();
        assert_eq!(t.authority(), "hooks.example.com");
        let t = check_url("https://hooks.example.com:8443/x", false).unwrap();
        assert_eq!((t.port(), t.authority()), (8443, "hooks.example.com:8443"));
    }

    #[test]
    fn resolved_addresses_are_judged_like_literal_hosts() {
        let cases: &[(&str, bool, bool)] = &[
            ("93.184.216.34", true, true),
            ("8.8.8.8", true, true),
            ("2606:4700::1111", true, true),
            ("127.0.0.1", false, true),
            ("127.255.0.9", false, true),
            ("::1", false, true),
            ("::ffff:127.0.0.1", false, true),
            ("10.1.2.3", false, false),
            ("172.20.0.1", false, false),
            ("192.168.0.10", false, false),
            ("169.254.169.254", false, false),
            ("100.64.0.1", false, false),
            ("0.0.0.0", false, false),
            ("255.255.255.255", false, false),
            ("239.1.1.1", false, false),
            ("::", false, false),
            ("fd00:ec2::254", false, false),
            ("fe80::1", false, false),
            ("::ffff:192.168.1.1", false, false),
            ("::ffff:8.8.8.8", true, true),
            ("64:ff9b::808:808", true, true),  // NAT64 of 8.8.8.8
            ("64:ff9b::7f00:1", false, false), // NAT64 of 127.0.0.1: not this host's loopback
        ];
        for &(ip, plain, dev) in cases {
            let addr: IpAddr = ip.parse().unwrap();
            assert_eq!(allowed_addr(addr, false), plain, "{ip} without the flag");
            assert_eq!(allowed_addr(addr, true), dev, "{ip} with the flag");
        }
    }
}
