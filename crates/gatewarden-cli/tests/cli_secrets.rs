//! A3 through the `gatewarden` binary: with a token in the environment and `RUST_LOG=trace`, the
//! token is in none of the run's log output, the client commands' output (`status`, `status
//! --json`, `rpc`, `restart`, errors), the HTTP endpoint (`/healthz`, `/readyz`, `/metrics`),
//! `config print`, or the gateway's argv; the gateway does get it (it authenticates us).

mod support;

use support::{Instance, Options};

const TOKEN: &str = "tok-a3-cli-83b1f0c4e6-secret";

#[test]
fn a3_token_never_in_cli_output_http_logs_or_argv() {
    let instance = Instance::start(Options {
        env: vec![
            ("GATEWARDEN_TOKEN".into(), TOKEN.into()),
            ("RUST_LOG".into(), "trace".into()),
        ],
        http: true,
        ..Options::default()
    });
    let status = instance.wait_running();
    let pid = status["pid"].as_u64().expect("gateway pid");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("gateway cmdline");
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("gateway environment");
    assert!(
        String::from_utf8_lossy(&environ).contains(TOKEN),
        "the gateway never got the token, so this test proves nothing"
    );

    let mut outputs = vec![format!("gateway argv: {cmdline}")];
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["rpc", "echo", r#"{"a":1}"#],
        &["rpc", "no.such.method"],
        &["restart"],
        &["status", "--json"],
    ] {
        let output = instance.cli(args);
        outputs.push(format!(
            "{args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    assert!(
        outputs.iter().any(|text| text.contains("unknown method")),
        "the failing rpc was not seen: {outputs:?}"
    );
    instance.wait_running();
    for path in ["/healthz", "/readyz", "/metrics"] {
        let (code, body) = instance.http_get(path);
        outputs.push(format!("{path} {code}: {body}"));
    }
    let printed = support::command(instance.dir.path())
        .env("GATEWARDEN_TOKEN", TOKEN)
        .args(["config", "print"])
        .output()
        .expect("config print");
    outputs.push(String::from_utf8_lossy(&printed.stdout).into_owned());

    let stopped = instance.cli(&["stop", "--exit"]);
    assert!(stopped.status.success(), "{}", instance.logs());
    let logs = instance.logs();
    // TRACE reached the log, so the check below looked at everything the run logs.
    assert!(logs.contains("TRACE") || logs.contains("DEBUG"), "{logs}");
    assert!(logs.contains("connected to the gateway"), "{logs}");
    outputs.push(logs);
    for text in &outputs {
        assert!(!text.contains(TOKEN), "the token leaked: {text}");
    }
}
