//! Schemathesis (PyPI) against the running server's own `/api/v1/openapi.json`: it generates
//! requests from the document, with a valid client token and then a valid admin token, and
//! checks every answer against it (no server errors, documented statuses, content types and
//! bodies). `.ci/run` installs it into `.venv-test`; without it the test is skipped loudly, and fails under `CI`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::path::PathBuf;

use mailroom_core::AuthConfig;
use mailroom_test_support::{TestHub, run, text};
use serde_json::{Value, json};

/// The schemathesis executable: `MAILROOM_TEST_SCHEMATHESIS`, else `.venv-test/bin/schemathesis`
/// at the workspace root.
fn schemathesis() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("MAILROOM_TEST_SCHEMATHESIS") {
        return Some(PathBuf::from(path));
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv-test/bin/schemathesis");
    venv.exists().then_some(venv)
}

async fn token(hub: &TestHub, user: &str, password: &str, scope: &str) -> String {
    let pem = std::fs::read(&hub.https().ca).unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()])
        .build()
        .unwrap();
    let response: Value = client
        .post(format!("{}/api/v1/token", hub.https().base))
        .json(&json!({"username": user, "password": password, "scope": scope}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    response["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn schemathesis_finds_nothing() {
    let Some(schemathesis) = schemathesis() else {
        mailroom_test_support::skip(
            "schemathesis is not installed (.ci/run installs it into .venv-test)",
        );
        return;
    };
    // Generated logins must not ban the test's own address, nor hit the login rate limit.
    let mut auth = AuthConfig::default();
    auth.defender.safe = vec!["127.0.0.0/8".parse().unwrap()];
    // Schemathesis opens many connections from one address and leaves them idle: over the
    // per-address limit, a new one would be dropped at accept (which it reports as a TLS EOF).
    let config = mailroom_https::Config {
        login_attempts_per_minute: 100_000,
        max_connections_per_address: 4096,
        max_connections: 4096,
        ..mailroom_https::Config::default()
    };
    let hub = TestHub::start_https(config, auth).await;
    let alice = hub.client("alice").await;
    hub.client("bob").await;
    hub.allow("alice", "bob").await;
    let root = hub.admin_account("root").await;
    let client_token = token(&hub, &alice.name, &alice.password, "client").await;
    let admin_token = token(&hub, &root.name, &root.password, "admin").await;
    for (label, token) in [("client", client_token), ("admin", admin_token)] {
        let mut command = tokio::process::Command::new(&schemathesis);
        command
            .arg("run")
            .arg(format!("{}/api/v1/openapi.json", hub.https().base))
            .arg("--tls-verify")
            .arg(&hub.https().ca)
            .args(["--header", &format!("Authorization: Bearer {token}")])
            .args(["--max-examples", "25", "--workers", "1", "--no-color"])
            // File names, account names, rights and route policy have rules a JSON schema cannot
            // state; a schema-valid request they refuse is a 4xx by design, not a finding.
            .args(["--exclude-checks", "positive_data_acceptance"])
            // Logging out, kicking its own session or signing out the others (which replaces
            // the token in use) would end the token under test.
            .args(["--exclude-path", "/api/v1/logout"])
            .args(["--exclude-path", "/api/v1/admin/sessions/{id}"])
            .args(["--exclude-path", "/api/v1/me/sessions/sign-out-others"])
            .env("SCHEMATHESIS_HOOKS", "")
            // Its cache (.schemathesis/) goes to the hub's temp folder, not the source tree.
            .current_dir(hub.dir.path())
            .kill_on_drop(true);
        let output = run(command).await;
        assert!(
            output.status.success(),
            "schemathesis with a {label} token found problems:\n{}",
            text(&output)
        );
    }
}
