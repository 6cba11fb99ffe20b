//! Where the gateway may be: on this machine (loopback) by default; another host only with an
//! explicit opt-in *and* TLS (`wss://`), because `connect` carries the shared token and the
//! signed device proof, which must never cross a network in clear text.
//!
//! This build has no TLS: awc is compiled without a TLS backend (`default-features = false`), so
//! `wss://` cannot be spoken, and the scheme and the remote opt-in are not public options (they
//! could only produce an error); only loopback hosts over `ws://` are accepted. The checks run at
//! [`GatewaySupervisor::start`](crate::GatewaySupervisor::start) and
//! [`GatewayHandle::spawn`](crate::GatewayHandle::spawn) (a typed error before anything starts)
//! and again before every socket is opened (defence in depth).

use std::net::IpAddr;

use gatewarden_core::config::InvalidValue;

use crate::supervisor::SupervisorOptions;

/// How the gateway's WebSocket is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum GatewayScheme {
    /// `ws://`: plain text. Only for loopback hosts.
    #[default]
    Ws,
    /// `wss://`: TLS. Required for any other host; not built into this version (see the module
    /// docs), so it is refused with [`EndpointError::TlsNotBuiltIn`]. Kept (and tested) for
    /// the build that brings TLS.
    #[cfg_attr(not(test), allow(dead_code))]
    Wss,
}

/// Why a gateway host is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// The host is empty.
    #[error("the gateway host is empty")]
    EmptyHost,
    /// A host that is not loopback, without the explicit opt-in.
    #[error(
        "gateway host `{host}` is not a loopback address; a gateway on another machine needs \
         wss://, which this build does not include"
    )]
    RemoteNotAllowed {
        /// The host.
        host: String,
    },
    /// A host that is not loopback, opted in but over plain `ws://`.
    #[error(
        "gateway host `{host}` is not a loopback address and would be reached over plain ws://, \
         which sends the token in clear text; use wss://"
    )]
    RemoteWithoutTls {
        /// The host.
        host: String,
    },
    /// `wss://` was asked for, but this build has no TLS backend.
    #[error(
        "wss:// to gateway host `{host}` needs TLS, which this build of gatewarden does not \
         include (its WebSocket client has no TLS backend); only loopback gateways over ws:// \
         are supported"
    )]
    TlsNotBuiltIn {
        /// The host.
        host: String,
    },
}

/// True for `localhost`, 127.0.0.0/8, `::1` and IPv4-mapped loopback (brackets allowed). Any
/// other name is not loopback, even one that resolves to 127.0.0.1: names can be re-pointed.
pub fn is_loopback_host(host: &str) -> bool {
    let bare = host
        .strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'))
        .unwrap_or(host);
    if bare.eq_ignore_ascii_case("localhost") || bare.eq_ignore_ascii_case("localhost.") {
        return true;
    }
    bare.parse::<IpAddr>()
        .is_ok_and(|address| address.to_canonical().is_loopback())
}

/// May the supervisor connect to `host` over `scheme`? `allow_remote` is the explicit opt-in for
/// a host that is not loopback.
pub(crate) fn check_gateway_endpoint(
    host: &str,
    scheme: GatewayScheme,
    allow_remote: bool,
) -> Result<(), EndpointError> {
    if host.is_empty() {
        return Err(EndpointError::EmptyHost);
    }
    let host_owned = || host.to_string();
    let loopback = is_loopback_host(host);
    match (loopback, allow_remote, scheme) {
        (false, false, _) => Err(EndpointError::RemoteNotAllowed { host: host_owned() }),
        (false, true, GatewayScheme::Ws) => {
            Err(EndpointError::RemoteWithoutTls { host: host_owned() })
        }
        (_, _, GatewayScheme::Wss) => Err(EndpointError::TlsNotBuiltIn { host: host_owned() }),
        (true, _, GatewayScheme::Ws) => Ok(()),
    }
}

/// Why [`SupervisorOptions`] were refused before anything started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OptionsError {
    /// The gateway host may not be reached (A3).
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    /// Q3: a config value that cannot work, naming its key.
    #[error("invalid config value {0}")]
    Config(#[from] InvalidValue),
}

impl SupervisorOptions {
    /// Check what can be checked before anything starts: the gateway host (A3) and every config
    /// value (Q3, [`gatewarden_core::config::SupervisorConfig::validate`]).
    /// [`GatewaySupervisor::start`](crate::GatewaySupervisor::start) and
    /// [`GatewayHandle::spawn`](crate::GatewayHandle::spawn) always call it.
    pub fn validate(&self) -> Result<(), OptionsError> {
        check_gateway_endpoint(&self.host, self.scheme, self.allow_remote_host)?;
        self.core.validate()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a3_loopback_hosts_are_recognised() {
        for host in [
            "127.0.0.1",
            "127.8.9.10",
            "::1",
            "[::1]",
            "::ffff:127.0.0.1",
            "localhost",
            "LocalHost",
        ] {
            assert!(is_loopback_host(host), "{host}");
            assert_eq!(
                check_gateway_endpoint(host, GatewayScheme::Ws, false),
                Ok(())
            );
        }
        for host in [
            "0.0.0.0",
            "::",
            "10.0.0.5",
            "192.0.2.1",
            "gateway.example",
            "localhost.example",
            "127.0.0.1.example",
            "[::1",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn a3_a_remote_host_needs_the_opt_in_and_tls() {
        let host = "192.0.2.1";
        assert_eq!(
            check_gateway_endpoint(host, GatewayScheme::Ws, false),
            Err(EndpointError::RemoteNotAllowed { host: host.into() })
        );
        assert_eq!(
            check_gateway_endpoint(host, GatewayScheme::Wss, false),
            Err(EndpointError::RemoteNotAllowed { host: host.into() })
        );
        assert_eq!(
            check_gateway_endpoint(host, GatewayScheme::Ws, true),
            Err(EndpointError::RemoteWithoutTls { host: host.into() })
        );
        // Opted in and asking for TLS: the right request, but this build cannot speak TLS.
        let error = check_gateway_endpoint(host, GatewayScheme::Wss, true).unwrap_err();
        assert_eq!(error, EndpointError::TlsNotBuiltIn { host: host.into() });
        assert!(error.to_string().contains("does not include"), "{error}");
        assert_eq!(
            check_gateway_endpoint("127.0.0.1", GatewayScheme::Wss, false),
            Err(EndpointError::TlsNotBuiltIn {
                host: "127.0.0.1".into()
            })
        );
        assert_eq!(
            check_gateway_endpoint("", GatewayScheme::Ws, true),
            Err(EndpointError::EmptyHost)
        );
    }
}
