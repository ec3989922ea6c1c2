//! DNS-rebinding protection, the transport's MUST: every MCP request's `Origin` is checked before
//! anything else happens, and while the gateway listens on loopback so is its `Host`. A page on
//! another site that makes a browser talk to the gateway sends its own `Origin`; a rebound name
//! arrives as a foreign `Host`. Either gets 403 and nothing is forwarded.
//!
//! Allowed: no `Origin` (not a browser), or an origin whose host is `localhost`, a loopback
//! address, the listener's own address or the configured `public_url`'s host, or an origin listed
//! in `allowed_origins` (scheme, host and port). On loopback, a `Host` must be one of the same
//! names.

use super::Error;
use http::{HeaderMap, Uri, header};
use std::net::{IpAddr, SocketAddr};

/// What the gateway accepts as its own.
#[derive(Debug, Clone)]
pub struct Origins {
    listener: SocketAddr,
    public_host: Option<String>,
    allowed: Vec<String>,
}

/// `scheme://host[:port]`, lower-case, default ports dropped; `None` if it is not an http(s) origin.
fn normalize(origin: &str) -> Option<String> {
    let uri: Uri = origin.parse().ok()?;
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let host = uri.host()?.to_ascii_lowercase();
    Some(match uri.port_u16() {
        Some(p) if p != default_port => format!("{scheme}://{host}:{p}"),
        _ => format!("{scheme}://{host}"),
    })
}

/// The host part of a `Host` header value (`name`, `name:port`, `[v6]:port`), as written.
fn host_of(authority: &str) -> &str {
    let a = authority.trim();
    if let Some(rest) = a.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default();
    }
    match a.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => a,
    }
}

impl Origins {
    /// The rules for a listener on `listener`, with the operator's `public_url` and extra origins.
    /// Fails naming the value that is not an http(s) URL.
    pub fn new(
        listener: SocketAddr,
        public_url: Option<&str>,
        allowed_origins: &[String],
    ) -> Result<Origins, String> {
        let public_host = match public_url {
            Some(url) => {
                let uri: Uri = url
                    .parse()
                    .map_err(|e| format!("public_url {url:?}: {e}"))?;
                match (uri.scheme_str(), uri.host()) {
                    (Some("http" | "https"), Some(h)) => Some(host_of(h).to_ascii_lowercase()),
                    _ => return Err(format!("public_url {url:?}: not an http(s) URL")),
                }
            }
            None => None,
        };
        let allowed = allowed_origins
            .iter()
            .map(|o| {
                normalize(o)
                    .ok_or_else(|| format!("allowed_origins: {o:?} is not an http(s) origin"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Origins {
            listener,
            public_host,
            allowed,
        })
    }

    /// True for a host name (any case) that is this gateway's.
    fn own_host(&self, host: &str) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let localhost = "localhost";
        let n = host.len();
        if host.eq_ignore_ascii_case(localhost)
            || (n > localhost.len() + 1
                && host.is_char_boundary(n - localhost.len() - 1)
                && host[n - localhost.len() - 1..].eq_ignore_ascii_case(".localhost"))
        {
            return true;
        }
        if let Ok(ip) = host.parse::<IpAddr>() {
            return ip.is_loopback()
                || (!self.listener.ip().is_unspecified() && ip == self.listener.ip());
        }
        self.public_host
            .as_deref()
            .is_some_and(|p| p.eq_ignore_ascii_case(host))
    }

    /// Checks `Origin` and, on a loopback listener, `Host`.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), Error> {
        let mut origins = headers.get_all(header::ORIGIN).iter();
        if let Some(value) = origins.next() {
            let text = value.to_str().unwrap_or_default();
            let ok = origins.next().is_none()
                && normalize(text).is_some_and(|o| {
                    self.allowed.contains(&o)
                        || text
                            .parse::<Uri>()
                            .ok()
                            .and_then(|u| u.host().map(|h| self.own_host(host_of(h))))
                            .unwrap_or(false)
                });
            if !ok {
                return Err(Error::ForbiddenOrigin(clip(text)));
            }
        }
        if self.listener.ip().is_loopback()
            && let Some(value) = headers.get(header::HOST)
        {
            let text = value.to_str().unwrap_or_default();
            if !self.own_host(host_of(text)) {
                return Err(Error::ForbiddenHost(clip(text)));
            }
        }
        Ok(())
    }
}

/// A client-supplied value, bounded for an error message.
fn clip(s: &str) -> String {
    s.chars().take(128).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn own_and_configured_origins_pass_foreign_ones_do_not() {
        let o = Origins::new(
            "127.0.0.1:8080".parse().unwrap(),
            Some("https://mcp.example.com/"),
            &["https://app.example.org:8443".into()],
        )
        .unwrap();
        for ok in [
            vec![],
            vec![("host", "127.0.0.1:8080")],
            vec![
                ("origin", "http://localhost:3000"),
                ("host", "localhost:8080"),
            ],
            vec![("origin", "http://127.0.0.1:8080")],
            vec![("origin", "http://[::1]:8080"), ("host", "[::1]:8080")],
            vec![
                ("origin", "https://mcp.example.com"),
                ("host", "mcp.example.com"),
            ],
            vec![("origin", "https://APP.example.org:8443")],
        ] {
            assert!(o.check(&headers(&ok)).is_ok(), "{ok:?}");
        }
        for bad in [
            vec![("origin", "http://evil.example.com")],
            vec![("origin", "null")],
            vec![("origin", "https://app.example.org")],
            vec![
                ("origin", "http://localhost"),
                ("origin", "http://evil.com"),
            ],
            vec![("origin", "http://127.0.0.1.evil.com")],
            vec![("host", "evil.example.com:8080")],
            vec![
                ("origin", "http://localhost:8080"),
                ("host", "rebound.example.com"),
            ],
        ] {
            let err = o.check(&headers(&bad)).unwrap_err();
            assert!(
                matches!(err, Error::ForbiddenOrigin(_) | Error::ForbiddenHost(_)),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn host_is_only_checked_on_loopback() {
        let o = Origins::new("0.0.0.0:8080".parse().unwrap(), None, &[]).unwrap();
        assert!(o.check(&headers(&[("host", "gw.internal:8080")])).is_ok());
        assert!(
            o.check(&headers(&[("origin", "http://gw.internal:8080")]))
                .is_err(),
            "an origin must still be the gateway's own"
        );
        assert!(Origins::new("0.0.0.0:1".parse().unwrap(), Some("ftp://x"), &[]).is_err());
        assert!(Origins::new("0.0.0.0:1".parse().unwrap(), None, &["nope".into()]).is_err());
    }
}
