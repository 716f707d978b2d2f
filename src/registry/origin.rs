//! Where a URL a registry hands out may lead: an upload `Location`, a next-page `Link`, a
//! bearer token realm, a redirect. One check for all of them, so that the registry's
//! credentials (a Basic header is the password itself) never reach another origin and
//! nothing is sent from https to plain http.
//!
//! * From https to http: refused (whatever the host; the blob or token would travel in clear).
//! * From a remote host to a local address: refused (a registry must not make us talk to our
//!   own machine, spec §7.3).
//! * Same origin (scheme, host and port, RFC 6454): followed with the registry's credentials.
//! * Another origin: followed without them. Token realms live on another origin by design
//!   (Docker Hub's `auth.docker.io`) and get only what the token protocol sends them; an upload
//!   `Location` elsewhere is followed like regclient and Docker do, without `Authorization`
//!   ([`Client::send`](super::client::Client::send) adds none); a listing's next page
//!   elsewhere is refused by the listing (a page there is not worth following).

use std::net::IpAddr;
use url::Url;

/// Where a followable URL leads, seen from the URL that handed it out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reach {
    SameOrigin,
    OtherOrigin,
}

/// Why a URL is not followed at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refused {
    #[error("it leads from https to plain http")]
    Downgrade,
    #[error("it leads from a remote host to a local address")]
    Local,
}

/// The one check: may `to` (handed out in an answer from `from`) be followed, and with the
/// registry's credentials (same origin) or without them (another origin)?
pub(crate) fn check(from: &Url, to: &Url) -> Result<Reach, Refused> {
    if from.scheme() == "https" && to.scheme() != "https" {
        return Err(Refused::Downgrade);
    }
    if !is_local(from) && is_local(to) {
        return Err(Refused::Local);
    }
    // `Url::origin` compares scheme, host and port with the scheme's default port filled in.
    if from.origin() == to.origin() && from.origin().is_tuple() {
        Ok(Reach::SameOrigin)
    } else {
        Ok(Reach::OtherOrigin)
    }
}

fn is_local(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => is_local_ip(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => is_local_ip(IpAddr::V6(ip)),
        None => false,
    }
}

fn is_local_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => ip.is_loopback() || ip.is_link_local() || ip.is_unspecified(),
        IpAddr::V6(ip) => {
            ip.is_loopback() || ip.is_unspecified() || (ip.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

/// Redirects followed at most (spec §7.3).
const MAX_REDIRECTS: usize = 10;

/// Spec §7.3: at most 10 redirects, never from https to http, never from a remote host to a
/// local address ([`check`]). reqwest drops `Authorization` itself when a redirect
/// leaves the host.
pub(crate) fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        if attempt.previous().len() > MAX_REDIRECTS {
            return attempt.error("too many redirects");
        }
        let verdict = match attempt.previous().last() {
            Some(from) => check(from, attempt.url()).map(|_| ()),
            None => Ok(()),
        };
        match verdict {
            Ok(()) => attempt.follow(),
            Err(why) => attempt.error(format!("refusing redirect: {why}")),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn same_origin_needs_scheme_host_and_port() {
        let same = |a: &str, b: &str| check(&u(a), &u(b));
        assert_eq!(
            same(
                "https://r.io/v2/a/blobs/uploads/",
                "https://r.io/v2/a/blobs/uploads/u1?s=x"
            ),
            Ok(Reach::SameOrigin)
        );
        // the default port spelled out is still the same origin
        assert_eq!(
            same("https://r.io/v2/", "https://r.io:443/x"),
            Ok(Reach::SameOrigin)
        );
        assert_eq!(
            same("https://r.io/v2/", "https://R.IO/x"),
            Ok(Reach::SameOrigin)
        );
        assert_eq!(
            same("https://r.io/v2/", "https://s3.io/x"),
            Ok(Reach::OtherOrigin)
        );
        assert_eq!(
            same("https://r.io/v2/", "https://r.io:5000/x"),
            Ok(Reach::OtherOrigin)
        );
        assert_eq!(
            same("https://r.io/v2/", "https://evil.r.io/x"),
            Ok(Reach::OtherOrigin)
        );
        assert_eq!(
            same("http://127.0.0.1:5000/v2/", "http://127.0.0.1:5001/v2/"),
            Ok(Reach::OtherOrigin)
        );
        assert_eq!(
            same("http://127.0.0.1:5000/", "http://localhost:5000/"),
            Ok(Reach::OtherOrigin)
        );
        // plain http to https is an upgrade, but another origin
        assert_eq!(
            same("http://r.io/", "https://r.io/"),
            Ok(Reach::OtherOrigin)
        );
    }

    #[test]
    fn downgrades_and_local_targets_are_refused() {
        let c = |a: &str, b: &str| check(&u(a), &u(b));
        assert_eq!(
            c("https://r.io/v2/", "http://r.io/x"),
            Err(Refused::Downgrade)
        );
        assert_eq!(
            c("https://r.io/v2/", "http://s3.io/x"),
            Err(Refused::Downgrade)
        );
        assert_eq!(
            c("https://r.io/v2/", "https://127.0.0.1/x"),
            Err(Refused::Local)
        );
        assert_eq!(
            c("https://r.io/", "https://[fe80::1]/"),
            Err(Refused::Local)
        );
        assert_eq!(
            c("https://r.io/", "https://localhost/"),
            Err(Refused::Local)
        );
        // a local registry may point at its own machine
        assert_eq!(
            c("http://127.0.0.1:5000/", "http://localhost/x"),
            Ok(Reach::OtherOrigin)
        );
        // a registry on a non-http URL has no origin to share
        assert_eq!(
            c("http://r.io/", "data:text/plain,x"),
            Ok(Reach::OtherOrigin)
        );
    }
}
