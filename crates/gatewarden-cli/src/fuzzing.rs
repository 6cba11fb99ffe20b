//! Entry points of the CLI's fuzz targets (`tests/fuzz`) and of the corpus replay test, so both
//! run the same code on the same bytes.
//!
//! Each function takes arbitrary bytes and checks the parser's promises with `assert!`; any other
//! panic is a bug too.

use std::ffi::OsString;

use crate::cli::RunArgs;
use crate::config::{self, Settings};
use crate::control::{self, ControlRequest, ControlResponse};
use crate::launch::{TokenOrigin, TokenSummary};

/// The configuration layers: the bytes before the first NUL are the config file's text; each line
/// after it is one `KEY=VALUE` environment override (`GATEWARDEN_` is put in front of `KEY`).
pub fn config(data: &[u8]) {
    let (file, environment) = match data.iter().position(|&byte| byte == 0) {
        Some(nul) => (&data[..nul], &data[nul + 1..]),
        None => (data, &[][..]),
    };
    let Ok(file) = std::str::from_utf8(file) else {
        return;
    };
    let environment: Vec<(OsString, OsString)> = String::from_utf8_lossy(environment)
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (format!("GATEWARDEN_{key}").into(), value.into()))
        .collect();
    let Ok(settings) = config::resolve_from_text(file, &RunArgs::default(), environment) else {
        return;
    };
    check_settings(&settings);
}

fn check_settings(settings: &Settings) {
    if let Some(address) = settings.http {
        assert!(
            address.ip().is_loopback() || settings.cli.http_allow_remote,
            "the HTTP endpoint on {address} without http_allow_remote"
        );
    }
    // `config print` must work for every configuration that resolves, and print TOML.
    let token = TokenSummary {
        origin: TokenOrigin::None,
    };
    let rendered = match config::render(settings, &token) {
        Ok(rendered) => rendered,
        Err(error) => panic!("config print failed on a resolved configuration: {error:#}"),
    };
    if let Err(error) = rendered.parse::<toml::Table>() {
        panic!("config print wrote text that is not TOML: {error}\n{rendered}");
    }
}

/// The control protocol: the bytes are one request line as the server reads it (a trailing
/// newline removed), and also one response line as the client reads it.
pub fn control(data: &[u8]) {
    let line = data.strip_suffix(b"\n").unwrap_or(data);
    match control::parse_request(line) {
        Ok(request) => {
            let encoded = serde_json::to_vec(&request).expect("a request always encodes");
            let decoded =
                control::parse_request(&encoded).expect("an encoded request always parses");
            assert_same_request(&request, &decoded);
        }
        Err(error) => {
            // The server answers this error on the socket: it must encode.
            let response = ControlResponse::Error(error);
            serde_json::to_vec(&response).expect("an error response always encodes");
        }
    }
    if let Ok(response) = serde_json::from_slice::<ControlResponse>(data.trim_ascii_end()) {
        serde_json::to_vec(&response).expect("a decoded response always encodes");
    }
}

/// Same command and arguments; params are compared by kind only (a float's last digit may
/// change in a JSON round trip).
fn assert_same_request(left: &ControlRequest, right: &ControlRequest) {
    match (left, right) {
        (
            ControlRequest::Rpc {
                method,
                params,
                timeout_ms,
            },
            ControlRequest::Rpc {
                method: method_again,
                params: params_again,
                timeout_ms: timeout_again,
            },
        ) => {
            assert_eq!(method, method_again);
            assert_eq!(timeout_ms, timeout_again);
            assert_eq!(params.is_some(), params_again.is_some());
        }
        _ => assert_eq!(left, right),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_points_accept_empty_and_garbage_input() {
        for data in [
            &b""[..],
            b"\x00",
            b"port = 1\n\x00HEARTBEAT__INTERVAL_MS=5",
            b"{\"cmd\":\"rpc\",\"method\":\"echo\",\"params\":[1.5]}\n",
            b"\xff\xfe",
        ] {
            config(data);
            control(data);
        }
    }
}
