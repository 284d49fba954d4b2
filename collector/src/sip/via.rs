//! The Via header (RFC 3261 §20.42, §18.2.1 `received`; RFC 3581 `rport`; RFC 5118 §4.5
//! for bracketed IPv6 `received`).
use std::net::IpAddr;

use super::error::UriError;
use super::error::ValueError;
use super::lex::{at, is_lws, parse_port, skip_lws, sub, sub_str, tail, token_end};
use super::params::Params;
use super::uri::{parse_ip_lenient, split_hostport, Host};

/// The transport of a Via sent-protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport<'a> {
    /// UDP
    Udp,
    /// TCP
    Tcp,
    /// TLS over TCP
    Tls,
    /// SCTP (RFC 4168)
    Sctp,
    /// TLS over SCTP (RFC 4168)
    TlsSctp,
    /// WebSocket (RFC 7118)
    Ws,
    /// Secure WebSocket (RFC 7118)
    Wss,
    /// Any other transport token, as written (RFC 4475 §3.1.1.10).
    Other(&'a str),
}

impl<'a> Transport<'a> {
    fn from_token(t: &'a str) -> Transport<'a> {
        const KNOWN: [(&str, Transport<'static>); 7] = [
            ("UDP", Transport::Udp),
            ("TCP", Transport::Tcp),
            ("TLS", Transport::Tls),
            ("SCTP", Transport::Sctp),
            ("TLS-SCTP", Transport::TlsSctp),
            ("WS", Transport::Ws),
            ("WSS", Transport::Wss),
        ];
        KNOWN
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(t))
            .map_or(Transport::Other(t), |&(_, tr)| tr)
    }
}

/// One Via value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Via<'a> {
    protocol: &'a str,
    version: &'a str,
    transport: Transport<'a>,
    host: Host<'a>,
    port: Option<u16>,
    params: Params<'a>,
    branch: Option<&'a str>,
    received: Option<IpAddr>,
    rport: Option<Option<u16>>,
}

impl<'a> Via<'a> {
    /// Parses one `sent-protocol LWS sent-by *(SEMI via-params)` element; LWS is allowed
    /// around the slashes and the colon (RFC 4475 §3.1.1.1).
    pub fn parse(v: &'a [u8]) -> Result<Via<'a>, ValueError> {
        let s = std::str::from_utf8(v).map_err(|_| ValueError::NotUtf8)?;
        let b = s.as_bytes();
        let mut i = skip_lws(b, 0);
        let mut parts = [""; 3];
        for (n, part) in parts.iter_mut().enumerate() {
            if n > 0 {
                i = skip_lws(b, i);
                if at(b, i) != b'/' {
                    return Err(ValueError::BadProtocol);
                }
                i = skip_lws(b, i + 1);
            }
            let e = token_end(b, i);
            if e == i {
                return Err(ValueError::BadProtocol);
            }
            *part = sub_str(s, i, e);
            i = e;
        }
        let [protocol, version, transport] = parts;
        let j = skip_lws(b, i);
        if j == i {
            return Err(ValueError::BadProtocol);
        }
        i = j;
        let mut port = None;
        let host;
        if at(b, i) == b'[' {
            let host_end = memchr::memchr(b']', tail(b, i))
                .map(|p| i + p + 1)
                .ok_or(ValueError::BadHost)?;
            host = Host::parse(sub_str(s, i, host_end)).ok_or(ValueError::BadHost)?;
            i = host_end;
        } else {
            let mut e = i;
            while b
                .get(e)
                .is_some_and(|&c| !is_lws(c) && !matches!(c, b';' | b','))
            {
                e += 1;
            }
            let run = sub_str(s, i, e);
            if run.bytes().filter(|&c| c == b':').count() > 1 {
                // A bare IPv6 address, possibly with port (see `split_hostport`).
                let (h, p) = split_hostport(run).map_err(|err| match err {
                    UriError::BadPort => ValueError::BadPort,
                    _ => ValueError::BadHost,
                })?;
                host = h;
                port = p;
            } else {
                // The port, if any, follows below (LWS may surround the colon).
                e = memchr::memchr(b':', run.as_bytes()).map_or(e, |c| i + c);
                host = Host::parse(sub_str(s, i, e)).ok_or(ValueError::BadHost)?;
            }
            i = e;
        }
        // RFC 3261 `COLON` allows whitespace around the colon before the port.
        let k = skip_lws(b, i);
        if port.is_none() && at(b, k) == b':' {
            let ps = skip_lws(b, k + 1);
            let mut pe = ps;
            while b.get(pe).is_some_and(u8::is_ascii_digit) {
                pe += 1;
            }
            port = Some(parse_port(sub(b, ps, pe)).ok_or(ValueError::BadPort)?);
            i = pe;
        }
        // The first occurrence of each parameter counts, as with `Params::get`.
        let mut branch = None;
        let mut received = None;
        let mut rport = None;
        let params = Params::parse_visit(s.get(i..).unwrap_or(""), |p| {
            if p.name.eq_ignore_ascii_case("branch") {
                branch = branch.or(Some(p.value));
            } else if p.name.eq_ignore_ascii_case("received") && received.is_none() {
                let ip = p.value.and_then(parse_ip_lenient);
                received = Some(Some(ip.ok_or(ValueError::BadAddress)?));
            } else if p.name.eq_ignore_ascii_case("rport") && rport.is_none() {
                rport = Some(match p.value {
                    Some(v) => Some(parse_port(v.as_bytes()).ok_or(ValueError::BadPort)?),
                    None => None,
                });
            }
            Ok(())
        })?;
        let branch = branch.flatten();
        let received = received.flatten();
        Ok(Via {
            protocol,
            version,
            transport: Transport::from_token(transport),
            host,
            port,
            params,
            branch,
            received,
            rport,
        })
    }

    /// The protocol name (normally `SIP`).
    pub fn protocol(&self) -> &'a str {
        self.protocol
    }

    /// The protocol version (normally `2.0`).
    pub fn version(&self) -> &'a str {
        self.version
    }

    /// The transport.
    pub fn transport(&self) -> Transport<'a> {
        self.transport
    }

    /// The sent-by host.
    pub fn host(&self) -> Host<'a> {
        self.host
    }

    /// The sent-by port, if written.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// All Via parameters.
    pub fn params(&self) -> Params<'a> {
        self.params
    }

    /// The `branch` parameter (transaction id; RFC 3261 ones start with `z9hG4bK`).
    pub fn branch(&self) -> Option<&'a str> {
        self.branch
    }

    /// The `received` parameter: the source address the next hop saw.
    pub fn received(&self) -> Option<IpAddr> {
        self.received
    }

    /// The `rport` parameter (RFC 3581): `Some(None)` when requested without value,
    /// `Some(Some(port))` when filled in by the next hop.
    pub fn rport(&self) -> Option<Option<u16>> {
        self.rport
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn simple_via() {
        let v = Via::parse(b"SIP/2.0/UDP pc33.atlanta.example.com:5066;branch=z9hG4bK776asdhds;received=192.0.2.1;rport=5070").unwrap();
        assert_eq!(v.protocol(), "SIP");
        assert_eq!(v.version(), "2.0");
        assert_eq!(v.transport(), Transport::Udp);
        assert_eq!(v.host(), Host::Name("pc33.atlanta.example.com"));
        assert_eq!(v.port(), Some(5066));
        assert_eq!(v.branch(), Some("z9hG4bK776asdhds"));
        assert_eq!(v.received(), Some("192.0.2.1".parse().unwrap()));
        assert_eq!(v.rport(), Some(Some(5070)));
    }

    #[test]
    fn tortuous_whitespace() {
        // RFC 4475 §3.1.1.1 (wsinv).
        let v = Via::parse(b"SIP  /   2.0\r\n /UDP\r\n    192.0.2.2;branch=390skdjuw").unwrap();
        assert_eq!(v.transport(), Transport::Udp);
        assert_eq!(v.host(), Host::V4("192.0.2.2".parse().unwrap()));
        assert_eq!(v.branch(), Some("390skdjuw"));
        let v = Via::parse(
            b"SIP  / 2.0  / TCP     spindle.example.com   ;\r\n  branch  =   z9hG4bK9ikj8",
        )
        .unwrap();
        assert_eq!(v.transport(), Transport::Tcp);
        assert_eq!(v.host(), Host::Name("spindle.example.com"));
        assert_eq!(v.branch(), Some("z9hG4bK9ikj8"));
        let v = Via::parse(b"SIP/2.0/UDP host : 5060 ;rport").unwrap();
        assert_eq!(v.port(), Some(5060));
        assert_eq!(v.rport(), Some(None));
    }

    #[test]
    fn ipv6_sent_by_and_received() {
        // RFC 5118 §4.5: bracketed received must be tolerated.
        let v = Via::parse(
            b"SIP/2.0/UDP [2001:db8::9:1];received=[2001:db8::9:255];branch=z9hG4bKas3-111",
        )
        .unwrap();
        assert_eq!(v.host(), Host::V6("2001:db8::9:1".parse().unwrap()));
        assert_eq!(v.received(), Some("2001:db8::9:255".parse().unwrap()));
        let v = Via::parse(b"SIP/2.0/UDP [2001:db8::9:1]:6050;received=2001:db8::9:255").unwrap();
        assert_eq!(v.port(), Some(6050));
        assert_eq!(v.received(), Some("2001:db8::9:255".parse().unwrap()));
    }

    #[test]
    fn malformed_vias() {
        assert_eq!(
            Via::parse(b"SIP/2.0/UDP 192.0.2.15;;"),
            Err(ValueError::EmptyParamName)
        );
        assert_eq!(Via::parse(b""), Err(ValueError::BadProtocol));
        assert_eq!(Via::parse(b"SIP/2.0 host"), Err(ValueError::BadProtocol));
        assert_eq!(Via::parse(b"SIP/2.0/UDP"), Err(ValueError::BadProtocol));
        assert_eq!(
            Via::parse(b"SIP/2.0/UDP host:99999"),
            Err(ValueError::BadPort)
        );
        assert_eq!(
            Via::parse(b"SIP/2.0/UDP host;received=nohost"),
            Err(ValueError::BadAddress)
        );
        assert_eq!(
            Via::parse(b"SIP/2.0/UDP host;rport=x"),
            Err(ValueError::BadPort)
        );
        assert_eq!(
            Via::parse(b"SIP/2.0/UNKNOWN t4.example.com")
                .unwrap()
                .transport(),
            Transport::Other("UNKNOWN")
        );
    }
}
