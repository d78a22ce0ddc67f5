//! The client address: the socket peer, unless the peer is a configured trusted proxy; then
//! the rightmost `X-Forwarded-For` hop that is not itself a trusted proxy. A direct client
//! cannot choose its address with headers.

use std::net::IpAddr;

use axum::http::HeaderMap;

use crate::config::Cidr;

/// Resolves the client address for a request from `peer`.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[Cidr]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let hops: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .map(|hop| hop.parse::<IpAddr>().ok())
        .collect::<Option<Vec<_>>>()
        // A malformed header from a trusted proxy: do not guess, use the proxy itself.
        .unwrap_or_default();
    hops.into_iter()
        .rev()
        .find(|hop| !is_trusted(*hop))
        .unwrap_or(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| c.parse().expect("cidr")).collect()
    }

    fn xff(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", value.parse().expect("header"));
        h
    }

    #[test]
    fn a_direct_client_cannot_spoof() {
        let peer: IpAddr = "198.51.100.7".parse().expect("ip");
        assert_eq!(
            client_ip(peer, &xff("1.2.3.4"), &cidrs(&["10.0.0.0/8"])),
            peer
        );
        assert_eq!(client_ip(peer, &xff("1.2.3.4"), &[]), peer);
    }

    #[test]
    fn behind_trusted_proxies_the_rightmost_untrusted_hop_wins() {
        let proxy: IpAddr = "10.0.0.2".parse().expect("ip");
        let trusted = cidrs(&["10.0.0.0/8", "192.168.1.1"]);
        // The client may prepend anything; only hops added by trusted proxies count.
        let got = client_ip(proxy, &xff("6.6.6.6, 203.0.113.9, 192.168.1.1"), &trusted);
        assert_eq!(got, "203.0.113.9".parse::<IpAddr>().expect("ip"));
        assert_eq!(
            client_ip(proxy, &HeaderMap::new(), &trusted),
            proxy,
            "no header: the proxy"
        );
        assert_eq!(
            client_ip(proxy, &xff("not-an-ip"), &trusted),
            proxy,
            "malformed: the proxy"
        );
    }

    #[test]
    fn cidr_matching() {
        let c: Cidr = "2001:db8::/32".parse().expect("cidr");
        assert!(c.contains("2001:db8:1::5".parse().expect("ip")));
        assert!(!c.contains("2001:db9::5".parse().expect("ip")));
        let v4: Cidr = "127.0.0.0/8".parse().expect("cidr");
        assert!(v4.contains("::ffff:127.0.0.9".parse().expect("ip")));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!(
            "0.0.0.0/0"
                .parse::<Cidr>()
                .expect("cidr")
                .contains("8.8.8.8".parse().expect("ip"))
        );
    }
}
