//! Where a client-supplied URL (a ping client's notification endpoint) may
//! lead: only to public addresses, unless
//! `ciba.allow_private_notification_endpoints` is on. Otherwise a client
//! registration could make the proxy POST to its own loopback, the cloud
//! metadata service (169.254.169.254) or the private network behind it.
//!
//! Two checks, one rule ([`non_public`]):
//! - at startup, [`check_url`] refuses IP-literal hosts that are not
//!   public, and `localhost` names. The `url` crate has already turned the
//!   odd IPv4 spellings (`2130706433`, `0x7f.0.0.1`, `0177.0.0.1`, `127.1`,
//!   full-width digits) into an address, so they are checked as addresses;
//! - when the ping is sent, [`PublicOnly`] resolves the host name, refuses
//!   it if any address is not public, and hands the connector exactly the
//!   addresses it checked, so a second lookup cannot answer differently
//!   (DNS rebinding).
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

/// A URL or host that leads somewhere pings may not go.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{host} is {what}; notification endpoints must be public (or set ciba.allow_private_notification_endpoints = true)")]
pub struct NotPublic {
    pub host: String,
    /// What the address is ("loopback", "private", ...), with the address
    /// when a name resolved to it.
    pub what: String,
}

/// Why `ip` is not a public unicast address, or `None` when it is.
pub fn non_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => non_public_v4(v4),
        IpAddr::V6(v6) => non_public_v6(v6),
    }
}

fn non_public_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        _ if ip.is_unspecified() => "unspecified",
        (0, _, _) => "in 0.0.0.0/8 (this network)",
        (127, _, _) => "loopback",
        (10, _, _) => "private",
        (172, 16..=31, _) => "private",
        (192, 168, _) => "private",
        (169, 254, _) => "link-local",
        (100, 64..=127, _) => "shared address space (CGNAT, 100.64.0.0/10)",
        (192, 0, 0) => "reserved for protocol assignments",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "reserved for documentation",
        (198, 18..=19, _) => "reserved for benchmarking",
        _ if ip.is_broadcast() => "broadcast",
        (224..=239, _, _) => "multicast",
        (240..=255, _, _) => "reserved",
        _ => return None,
    })
}

fn non_public_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let segments = ip.segments();
    let embedded_v4 = || {
        let [.., a, b, c, d] = ip.octets();
        Ipv4Addr::new(a, b, c, d)
    };
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    // ::ffff:a.b.c.d reaches the IPv4 address itself.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return non_public_v4(v4);
    }
    Some(match segments {
        // ::a.b.c.d, deprecated; no public service lives there.
        [0, 0, 0, 0, 0, 0, _, _] => "IPv4-compatible (deprecated)",
        // NAT64 (RFC 6052) reaches the embedded IPv4 address.
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => return non_public_v4(embedded_v4()),
        [0x64, 0xff9b, 1, ..] => "local-use NAT64 (private)",
        // 6to4 (RFC 3056) embeds an IPv4 address in bits 16..48.
        [0x2002, hi, lo, ..] => {
            let [a, b] = hi.to_be_bytes();
            let [c, d] = lo.to_be_bytes();
            return non_public_v4(Ipv4Addr::new(a, b, c, d));
        }
        [0x2001, 0, ..] => "Teredo",
        [0x2001, 0xdb8, ..] => "reserved for documentation",
        [0x100, 0, 0, 0, ..] => "reserved (discard prefix)",
        [s, ..] if s & 0xfe00 == 0xfc00 => "private (unique local)",
        [s, ..] if s & 0xffc0 == 0xfe80 => "link-local",
        [s, ..] if s & 0xffc0 == 0xfec0 => "site-local (deprecated)",
        [s, ..] if s & 0xff00 == 0xff00 => "multicast",
        _ => return None,
    })
}

/// Whether `ip` is a public unicast address.
pub fn is_public(ip: IpAddr) -> bool {
    non_public(ip).is_none()
}

/// RFC 6761 §6.3: `localhost` and every name under it are loopback.
fn is_localhost_name(domain: &str) -> bool {
    let name = domain.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

/// The startup check: the URL's host is not an IP literal outside the
/// public ranges, nor a `localhost` name. Other names are checked when
/// they are resolved ([`PublicOnly`]).
pub fn check_url(url: &Url) -> Result<(), NotPublic> {
    let refuse = |host: String, what: &str| {
        Err(NotPublic {
            host,
            what: what.to_owned(),
        })
    };
    match url.host() {
        None => refuse(url.to_string(), "a URL without a host"),
        Some(Host::Ipv4(ip)) => check_ip(&ip.to_string(), ip.into()),
        Some(Host::Ipv6(ip)) => check_ip(&ip.to_string(), ip.into()),
        Some(Host::Domain(domain)) if is_localhost_name(domain) => {
            refuse(domain.to_owned(), "loopback (a localhost name)")
        }
        // A host the WHATWG parser left as a name (only outside http and
        // https) may still be an address to the connector.
        Some(Host::Domain(domain)) => match domain.parse::<IpAddr>() {
            Ok(ip) => check_ip(domain, ip),
            Err(_) => Ok(()),
        },
    }
}

fn check_ip(host: &str, ip: IpAddr) -> Result<(), NotPublic> {
    match non_public(ip) {
        Some(what) => Err(NotPublic {
            host: host.to_owned(),
            what: what.to_owned(),
        }),
        None => Ok(()),
    }
}

/// The check at ping time: `host` resolved to `addrs`; every one must be
/// public (one private address among public ones is still a way in).
pub fn check_resolved(host: &str, addrs: &[IpAddr]) -> Result<(), NotPublic> {
    if is_localhost_name(host) {
        return Err(NotPublic {
            host: host.to_owned(),
            what: "loopback (a localhost name)".into(),
        });
    }
    for ip in addrs {
        if let Some(what) = non_public(*ip) {
            return Err(NotPublic {
                host: host.to_owned(),
                what: format!("{what} ({ip})"),
            });
        }
    }
    if addrs.is_empty() {
        return Err(NotPublic {
            host: host.to_owned(),
            what: "unresolvable".into(),
        });
    }
    Ok(())
}

/// A DNS resolver for reqwest that answers only with checked, public
/// addresses; the connector connects to exactly those.
#[derive(Debug, Default)]
pub struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let ips: Vec<IpAddr> = found.iter().map(SocketAddr::ip).collect();
            check_resolved(&host, &ips)?;
            let addrs: Addrs = Box::new(found.into_iter());
            Ok(addrs)
        })
    }
}

/// The [`NotPublic`] somewhere in an error's causes (a request refused by
/// [`PublicOnly`]).
pub fn refusal_in<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a NotPublic> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(refused) = e.downcast_ref::<NotPublic>() {
            return Some(refused);
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn non_public_ipv4_ranges_are_named() {
        for (ip, what) in [
            ("127.0.0.1", "loopback"),
            ("127.255.0.9", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "this network"),
            ("255.255.255.255", "broadcast"),
            ("100.64.0.1", "CGNAT"),
            ("100.127.255.254", "CGNAT"),
            ("224.0.0.1", "multicast"),
            ("240.0.0.1", "reserved"),
            ("192.0.2.1", "documentation"),
            ("198.18.0.1", "benchmarking"),
        ] {
            let found = non_public(ip.parse().unwrap());
            assert!(found.is_some_and(|w| w.contains(what)), "{ip}: {found:?}");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "172.15.255.255",
            "172.32.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "169.253.0.1",
            "192.169.0.1",
            "2606:4700:4700::1111",
            "2001:4860:4860::8888",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn non_public_ipv6_ranges_are_named() {
        for (ip, what) in [
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fc00::1", "unique local"),
            ("fd12:3456::1", "unique local"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("fec0::1", "site-local"),
            ("ff02::1", "multicast"),
            ("2001:db8::1", "documentation"),
            ("2001::1", "Teredo"),
            ("::127.0.0.1", "IPv4-compatible"),
            // Addresses that carry a non-public IPv4 address.
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "link-local"),
            ("::ffff:10.0.0.1", "private"),
            ("64:ff9b::a9fe:a9fe", "link-local"),
            ("2002:7f00:1::", "loopback"),
        ] {
            let found = non_public(ip.parse().unwrap());
            assert!(found.is_some_and(|w| w.contains(what)), "{ip}: {found:?}");
        }
    }

    #[test]
    fn odd_ipv4_spellings_are_addresses_and_refused() {
        // The url crate (WHATWG) parses every one of these to 127.0.0.1.
        for spelling in [
            "http://2130706433/",
            "http://0x7f.0.0.1/",
            "http://0177.0.0.1/",
            "http://0x7f000001/",
            "http://017700000001/",
            "http://127.1/",
            "http://127.0.0.1./",
            "http://%31%32%37.0.0.1/",
            "https://\u{ff11}\u{ff12}\u{ff17}.\u{ff10}.\u{ff10}.\u{ff11}/",
            "https://[::ffff:7f00:1]/",
        ] {
            let e = check_url(&url(spelling)).unwrap_err();
            assert!(e.what.contains("loopback"), "{spelling}: {e}");
        }
        assert!(check_url(&url("http://0/"))
            .unwrap_err()
            .what
            .contains("unspecified"));
        assert!(check_url(&url("http://0xa9fea9fe/latest/meta-data"))
            .unwrap_err()
            .what
            .contains("link-local"));
    }

    #[test]
    fn localhost_names_are_refused_at_startup() {
        for name in [
            "http://localhost:8080/cb",
            "http://LOCALHOST./cb",
            "https://api.localhost/cb",
            "https://\u{24db}ocalhost/cb",
        ] {
            let e = check_url(&url(name)).unwrap_err();
            assert!(
                e.to_string()
                    .contains("allow_private_notification_endpoints"),
                "{e}"
            );
        }
    }

    #[test]
    fn public_names_and_addresses_pass_at_startup() {
        for ok in [
            "https://client.example.com/cb",
            "https://8.8.8.8/cb",
            "https://[2606:4700:4700::1111]/cb",
            "https://0x7f.0.0.1.example/cb",
            "https://localhost.example.com/cb",
        ] {
            assert_eq!(check_url(&url(ok)), Ok(()), "{ok}");
        }
    }

    #[test]
    fn a_name_is_refused_if_any_address_it_resolves_to_is_not_public() {
        let public: IpAddr = "93.184.215.14".parse().unwrap();
        let loopback: IpAddr = "127.0.0.1".parse().unwrap();
        let metadata: IpAddr = "169.254.169.254".parse().unwrap();
        assert_eq!(check_resolved("client.example", &[public]), Ok(()));
        let e = check_resolved("rebind.example", &[loopback]).unwrap_err();
        assert!(e.what.contains("loopback (127.0.0.1)"), "{e}");
        let e = check_resolved("mixed.example", &[public, metadata]).unwrap_err();
        assert!(e.what.contains("link-local"), "{e}");
        assert!(check_resolved("nothing.example", &[]).is_err());
        let mapped: IpAddr = "::ffff:192.168.0.1".parse().unwrap();
        assert!(check_resolved("v6.example", &[mapped]).is_err());
    }

    async fn resolve(name: &str) -> Result<Vec<IpAddr>, NotPublic> {
        match PublicOnly.resolve(name.parse().unwrap()).await {
            Ok(addrs) => Ok(addrs.map(|a| a.ip()).collect()),
            Err(e) => Err(refusal_in(e.as_ref()).expect("a NotPublic").clone()),
        }
    }

    #[tokio::test]
    async fn a_client_with_the_resolver_never_connects_and_says_why() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let http = reqwest::Client::builder()
            .dns_resolver(std::sync::Arc::new(PublicOnly))
            .build()
            .unwrap();
        let error = http
            .get(format!("http://localhost:{port}/"))
            .send()
            .await
            .unwrap_err();
        let refused = refusal_in(&error).expect("the refusal among the causes");
        assert_eq!(refused.host, "localhost");
    }

    #[tokio::test]
    async fn the_resolver_refuses_what_resolves_to_loopback() {
        // Neither needs DNS: an address resolves to itself, and
        // `localhost` comes from the hosts file (and is refused by name).
        let e = resolve("127.0.0.1").await.unwrap_err();
        assert!(e.what.contains("loopback (127.0.0.1)"), "{e}");
        let e = resolve("localhost").await.unwrap_err();
        assert!(e.what.contains("loopback"), "{e}");
        assert_eq!(
            resolve("8.8.8.8").await.unwrap(),
            vec!["8.8.8.8".parse::<IpAddr>().unwrap()]
        );
    }
}
