//! The web pages against a real server on port 0 over real TLS (the data folder's own PKI),
//! driven by reqwest playing a browser: cookies kept by hand, no redirects followed, `Origin`
//! sent on every POST as browsers do. Every refusal checks the answer and that nothing
//! changed (deliveries and blobs, accounts).

// Tests may unwrap (CONTRIBUTING.md): a failed unwrap is a failed check.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::collections::BTreeMap;
use std::time::Duration;

use mailroom_core::{AuthConfig, DeliveryState, EventKind, Factor, FactorSet, Outcome, Protocol};
use mailroom_test_support::{TestClient, TestHub};
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use reqwest::{Client, StatusCode};
use sha2::{Digest, Sha256};

async fn start() -> TestHub {
    TestHub::start_https_with(
        mailroom_https::Config::default(),
        AuthConfig::default(),
        mailroom_web::router,
    )
    .await
}

/// One answer: status, headers, body.
struct Page {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Page {
    fn location(&self) -> &str {
        self.headers
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The first CSRF value of the page's forms (or its meta tag).
    fn csrf(&self) -> String {
        for marker in ["name=\"csrf\" value=\"", "name=\"csrf-token\" content=\""] {
            if let Some(start) = self.body.find(marker) {
                let rest = &self.body[start + marker.len()..];
                return rest[..rest.find('"').unwrap()].to_owned();
            }
        }
        panic!("no CSRF token in the page:\n{}", self.body);
    }

    fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }
}

/// A browser: a TLS client trusting the test CA and a cookie jar.
struct Browser {
    http: Client,
    base: String,
    cookies: BTreeMap<String, String>,
}

impl Browser {
    fn new(hub: &TestHub) -> Browser {
        let pem = std::fs::read(&hub.https().ca).unwrap();
        let http = Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()])
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        Browser {
            http,
            base: hub.https().base.clone(),
            cookies: BTreeMap::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn finish(&mut self, request: reqwest::RequestBuilder) -> Page {
        let request = if self.cookies.is_empty() {
            request
        } else {
            request.header("cookie", self.cookie_header())
        };
        let response = request.send().await.unwrap();
        let page = Page {
            status: response.status(),
            headers: response.headers().clone(),
            body: response.text().await.unwrap(),
        };
        for cookie in page.set_cookies() {
            let pair = cookie.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            if value.is_empty() || cookie.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
        page
    }

    async fn get(&mut self, path: &str) -> Page {
        let request = self.http.get(format!("{}{path}", self.base));
        self.finish(request).await
    }

    /// A form POST from this site's page, as a browser sends it.
    async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let origin = self.base.clone();
        self.post_from(path, fields, Some(&origin)).await
    }

    async fn post_from(
        &mut self,
        path: &str,
        fields: &[(&str, &str)],
        origin: Option<&str>,
    ) -> Page {
        let body = serde_urlencoded::to_string(fields).unwrap();
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        self.finish(request).await
    }

    /// Signs in through the form; the page it lands on.
    async fn login(&mut self, who: &TestClient) -> Page {
        self.login_with(&who.name, &who.password, "").await
    }

    async fn login_with(&mut self, name: &str, password: &str, code: &str) -> Page {
        let form = self.get("/login").await;
        assert_eq!(form.status, StatusCode::OK);
        let nonce = form.csrf();
        self.post(
            "/login",
            &[
                ("username", name),
                ("password", password),
                ("code", code),
                ("csrf", &nonce),
            ],
        )
        .await
    }

    /// Sends `content` through the bridge to the API's resumable uploads.
    async fn send(&mut self, to: &str, name: &str, content: &[u8]) -> serde_json::Value {
        let csrf = self.get("/send").await.csrf();
        let sha = hex(&Sha256::digest(content));
        let create = self
            .http
            .post(format!("{}/app/api/v1/uploads", self.base))
            .header("x-csrf-token", &csrf)
            .header("origin", &self.base)
            .json(&serde_json::json!({"recipients": [to], "name": name, "size": content.len(), "sha256": sha}));
        let created = self.finish(create).await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
        let upload: serde_json::Value = serde_json::from_str(&created.body).unwrap();
        let id = upload["id"].as_str().unwrap().to_owned();
        let patch = self
            .http
            .patch(format!("{}/app/api/v1/uploads/{id}", self.base))
            .header("x-csrf-token", &csrf)
            .header("upload-offset", "0")
            .header("content-type", "application/offset+octet-stream")
            .body(content.to_vec());
        let patched = self.finish(patch).await;
        assert_eq!(patched.status, StatusCode::NO_CONTENT, "{}", patched.body);
        let finish = self
            .http
            .post(format!("{}/app/api/v1/uploads/{id}/finish", self.base))
            .header("x-csrf-token", &csrf)
            .json(&serde_json::json!({"sha256": sha}));
        let finished = self.finish(finish).await;
        assert_eq!(finished.status, StatusCode::CREATED, "{}", finished.body);
        serde_json::from_str(&finished.body).unwrap()
    }
}

/// Form fields and the `Origin` of one forged request.
type Attempt<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn assert_page_headers(page: &Page) {
    let h = &page.headers;
    let csp = h["content-security-policy"].to_str().unwrap();
    for part in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
        "form-action 'self'",
    ] {
        assert!(csp.contains(part), "CSP {csp} lacks {part}");
    }
    assert!(!csp.contains("unsafe-inline"));
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["x-frame-options"], "DENY");
    assert!(
        h["strict-transport-security"]
            .to_str()
            .unwrap()
            .contains("max-age=")
    );
}

/// bob sends `name` to alice; the delivery's id.
async fn delivered(hub: &TestHub, alice: &TestClient, bob: &TestClient, name: &str) -> String {
    hub.allow(&bob.name, &alice.name).await;
    let mut browser = Browser::new(hub);
    browser.login(bob).await;
    let answer = browser
        .send(&alice.name, name, b"quarterly numbers\n")
        .await;
    answer["deliveries"][0]["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn sign_in_sets_strict_cookies_and_sign_out_revokes_the_tokens() {
    let hub = start().await;
    let alice = hub.client("alice").await;
    let mut browser = Browser::new(&hub);

    let anonymous = browser.get("/inbox").await;
    assert_eq!(anonymous.status, StatusCode::SEE_OTHER);
    assert_eq!(anonymous.location(), "/login");

    let login = browser.get("/login").await;
    assert_page_headers(&login);
    assert!(
        login
            .body
            .contains("<label for=\"password\">Password</label>")
    );
    let signed_in = browser.login(&alice).await;
    assert_eq!(
        signed_in.status,
        StatusCode::SEE_OTHER,
        "{}",
        signed_in.body
    );
    assert_eq!(signed_in.location(), "/");
    let cookies = signed_in.set_cookies();
    let session = cookies
        .iter()
        .find(|c| c.starts_with("__Host-mailroom="))
        .expect("session cookie");
    for flag in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(session.contains(flag), "{session} lacks {flag}");
    }
    let max_age: i64 = session
        .split("Max-Age=")
        .nth(1)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!((1..=900).contains(&max_age), "short-lived: {max_age}");
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with("__Host-mailroom-refresh=") && c.contains("HttpOnly"))
    );
    let logins = hub.events(EventKind::Login, Outcome::Ok).await;
    assert!(
        logins
            .iter()
            .any(|e| e.actor == "alice" && e.protocol == Protocol::Https)
    );

    let inbox = browser.get("/inbox").await;
    assert_eq!(inbox.status, StatusCode::OK);
    assert_page_headers(&inbox);
    assert!(inbox.body.contains("Your inbox is empty"));
    assert!(
        inbox
            .body
            .contains("give the sender your account name, <strong>alice</strong>"),
        "the empty inbox says what to do"
    );
    assert!(!inbox.body.contains("<script>"), "no inline script");
    assert!(!inbox.body.contains("style="), "no inline style");

    let stolen = browser.cookies.clone();
    let csrf = inbox.csrf();
    let out = browser.post("/logout", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_eq!(out.location(), "/login?done=signed-out");
    assert!(!browser.cookies.contains_key("__Host-mailroom"));
    // The cookies copied before the sign-out no longer open anything: the tokens are gone.
    browser.cookies = stolen;
    let after = browser.get("/inbox").await;
    assert_eq!(after.status, StatusCode::SEE_OTHER);
    assert_eq!(after.location(), "/login");
    hub.stop().await;
}

#[tokio::test]
async fn a_failed_sign_in_reads_the_same_for_any_cause_and_sets_no_session() {
    let hub = start().await;
    let alice = hub.client("alice").await;
    let mut browser = Browser::new(&hub);
    let wrong = browser.login_with("alice", "not-the-password", "").await;
    let unknown = browser.login_with("nobody", "whatever-password", "").await;
    for page in [&wrong, &unknown] {
        assert_eq!(page.status, StatusCode::UNAUTHORIZED);
        assert!(page.body.contains("Sign-in failed."), "{}", page.body);
        assert!(
            !page
                .set_cookies()
                .iter()
                .any(|c| c.starts_with("__Host-mailroom="))
        );
    }
    assert!(!browser.cookies.contains_key("__Host-mailroom"));
    let refused = hub.events(EventKind::Login, Outcome::Refused).await;
    assert!(
        refused
            .iter()
            .any(|e| e.object.contains("alice") || e.actor == "alice")
    );
    // A sign-in form posted without its nonce (a login CSRF) is refused before any check.
    let before = hub.events(EventKind::Login, Outcome::Refused).await.len();
    let mut fresh = Browser::new(&hub);
    let forged = fresh
        .post(
            "/login",
            &[
                ("username", "alice"),
                ("password", alice.password.as_str()),
                ("csrf", "00"),
            ],
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert!(!fresh.cookies.contains_key("__Host-mailroom"));
    assert_eq!(
        hub.events(EventKind::Login, Outcome::Refused).await.len(),
        before
    );
    hub.stop().await;
}

#[tokio::test]
async fn state_changes_without_the_csrf_token_or_from_another_origin_are_refused() {
    let hub = start().await;
    let alice = hub.client("alice").await;
    let bob = hub.client("bob").await;
    let id = delivered(&hub, &alice, &bob, "report.pdf").await;
    let mut browser = Browser::new(&hub);
    browser.login(&alice).await;
    let inbox = browser.get("/inbox").await;
    assert!(inbox.body.contains("report.pdf"));
    let csrf = inbox.csrf();
    let before = hub.snapshot().await;
    let path = format!("/inbox/{id}/ack");
    let origin = browser.base.clone();
    let attempts: [Attempt; 4] = [
        (&[], Some(&origin)),
        (&[("csrf", "deadbeef")], Some(&origin)),
        (&[("csrf", csrf.as_str())], Some("https://evil.example")),
        (&[("csrf", csrf.as_str())], Some("null")),
    ];
    for (fields, from) in attempts {
        let page = browser.post_from(&path, fields, from).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{fields:?} {from:?}");
        assert!(page.body.contains("nothing was changed"));
        assert_eq!(page.headers["x-mailroom-refusal"], "csrf");
    }
    // Another session's token does not do either.
    let mut other = Browser::new(&hub);
    other.login(&bob).await;
    let bobs = other.get("/sent").await.csrf();
    let page = browser.post(&path, &[("csrf", &bobs)]).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    // The upload bridge wants the token in its header.
    let bare = browser
        .http
        .post(format!("{}/app/api/v1/uploads", browser.base))
        .json(&serde_json::json!({"recipients": ["bob"], "name": "x.txt", "size": 1}));
    let page = browser.finish(bare).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert_eq!(hub.snapshot().await, before, "nothing changed");
    assert_eq!(hub.staged_bytes(), 0);

    let done = browser.post(&path, &[("csrf", &csrf)]).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER);
    let state = hub.deliveries().await[0].state;
    assert_eq!(state, DeliveryState::Acknowledged);
    hub.stop().await;
}

#[tokio::test]
async fn admin_pages_refuse_clients_and_mailbox_pages_refuse_admins() {
    let hub = start().await;
    let alice = hub.client("alice").await;
    let root = hub.admin_account("root").await;
    let mut client = Browser::new(&hub);
    client.login(&alice).await;
    let csrf = client.get("/inbox").await.csrf();
    let page = client.get("/admin/accounts").await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(page.body.contains("For administrators only"));
    let accounts = hub.hub.accounts().await.unwrap().len();
    let page = client
        .post(
            "/admin/accounts",
            &[
                ("csrf", &csrf),
                ("name", "mallory"),
                ("kind", "admin"),
                ("password", "Pass-word-1234"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert_eq!(
        hub.hub.accounts().await.unwrap().len(),
        accounts,
        "no account made"
    );

    let mut admin = Browser::new(&hub);
    let landed = admin.login(&root).await;
    assert_eq!(landed.status, StatusCode::SEE_OTHER, "{}", landed.body);
    assert_eq!(admin.get("/").await.location(), "/admin/accounts");
    for path in ["/inbox", "/send", "/sent", "/keys", "/security"] {
        let page = admin.get(path).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{path}");
        assert!(page.body.contains("Administrators own no mailbox"));
    }
    let csrf = admin.get("/admin/accounts").await.csrf();
    let upload = admin
        .http
        .post(format!("{}/app/api/v1/uploads", admin.base))
        .header("x-csrf-token", &csrf)
        .json(&serde_json::json!({"recipients": ["alice"], "name": "x.txt", "size": 1}));
    let page = admin.finish(upload).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN, "admins own no mailbox");
    hub.stop().await;
}

#[tokio::test]
async fn another_accounts_delivery_is_not_found_and_unchanged() {
    let hub = start().await;
    let alice = hub.client("alice").await;
    let bob = hub.client("bob").await;
    let carol = hub.client("carol").await;
    let id = delivered(&hub, &alice, &bob, "secret.txt").await;
    let before = hub.snapshot().await;
    let mut browser = Browser::new(&hub);
    browser.login(&carol).await;
    let csrf = browser.get("/inbox").await.csrf();
    let download = browser.get(&format!("/inbox/{id}/download")).await;
    assert_eq!(download.status, StatusCode::NOT_FOUND);
    assert!(!download.body.contains("quarterly"));
    let ack = browser
        .post(&format!("/inbox/{id}/ack"), &[("csrf", &csrf)])
        .await;
    assert_eq!(ack.status, StatusCode::NOT_FOUND);
    assert!(ack.body.contains("flash-error"));
    let recall = browser
        .post(&format!("/sent/{id}/recall"), &[("csrf", &csrf)])
        .await;
    assert_eq!(recall.status, StatusCode::NOT_FOUND);
    let hostile = browser.get("/inbox/..%2F..%2Fetc/download").await;
    assert_eq!(hostile.status, StatusCode::NOT_FOUND);
    assert_eq!(hub.snapshot().await, before, "nothing changed");
    assert_eq!(hub.deliveries().await[0].state, DeliveryState::Delivered);

    // The recipient downloads it (picked up) and the sender's receipt says so.
    let mut owner = Browser::new(&hub);
    owner.login(&alice).await;
    let file = owner.get(&format!("/inbox/{id}/download")).await;
    assert_eq!(file.status, StatusCode::OK);
    assert_eq!(file.body, "quarterly numbers\n");
    assert!(
        file.headers["content-disposition"]
            .to_str()
            .unwrap()
            .contains("secret.txt")
    );
    let mut sender = Browser::new(&hub);
    sender.login(&bob).await;
    let sent = sender.get("/sent").await;
    assert!(sent.body.contains("Picked up"), "{}", sent.body);
    hub.stop().await;
}

#[tokio::test]
async fn admin_manages_accounts_and_disabling_ends_the_users_session() {
    let hub = start().await;
    let alice = hub.client("alice").await;
    let root = hub.admin_account("root").await;
    let mut user = Browser::new(&hub);
    user.login(&alice).await;
    assert_eq!(user.get("/inbox").await.status, StatusCode::OK);

    let mut admin = Browser::new(&hub);
    admin.login(&root).await;
    let csrf = admin.get("/admin/accounts").await.csrf();
    let created = admin
        .post(
            "/admin/accounts",
            &[
                ("csrf", &csrf),
                ("name", "dave"),
                ("kind", "client"),
                ("password", "Lantern-42-harbour"),
            ],
        )
        .await;
    assert_eq!(created.status, StatusCode::SEE_OTHER, "{}", created.body);
    assert_eq!(created.location(), "/admin/accounts/dave?done=created");
    assert!(
        admin
            .get("/admin/accounts/dave?done=created")
            .await
            .body
            .contains("Account created.")
    );
    // A bad field changes nothing and says why.
    let before = hub.account("dave").await;
    let bad = admin
        .post(
            "/admin/accounts/dave/access",
            &[
                ("csrf", &csrf),
                ("require", "password"),
                ("networks", "not-a-network"),
                ("rights", "all"),
            ],
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.body);
    assert!(bad.body.contains("flash-error"));
    assert_eq!(hub.account("dave").await.access, before.access);
    let good = admin
        .post(
            "/admin/accounts/dave/access",
            &[
                ("csrf", &csrf),
                ("require", "publickey,password"),
                ("networks", "127.0.0.0/8"),
                ("rights", "all"),
                ("max_file_size", "10M"),
            ],
        )
        .await;
    assert_eq!(good.status, StatusCode::SEE_OTHER, "{}", good.body);
    let dave = hub.account("dave").await;
    assert_eq!(
        dave.access.factors,
        FactorSet::parse("publickey,password").unwrap()
    );
    assert_eq!(dave.access.limits.max_file_size, Some(10 << 20));
    // The page fills the access form from the account (mailroom-api's shape) as it takes it.
    let page = admin.get("/admin/accounts/dave").await.body;
    assert!(
        page.contains(r#"name="require" value="publickey,password""#),
        "{page}"
    );
    assert!(
        page.contains(r#"name="rights" value="send,receive,delete,recall""#),
        "{page}"
    );
    assert!(
        page.contains(r#"name="max_file_size" value="10485760""#),
        "{page}"
    );
    // Notices: refused without an address (nothing changes), kept with one, shown again.
    let access = &[
        ("csrf", csrf.as_str()),
        ("require", "publickey,password"),
        ("networks", "127.0.0.0/8"),
        ("rights", "all"),
        ("max_file_size", "10M"),
    ];
    let before = hub.account("dave").await;
    let no_address = admin
        .post(
            "/admin/accounts/dave/access",
            &[access.as_slice(), &[("notify", "instant")]].concat(),
        )
        .await;
    assert_eq!(no_address.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        no_address.body.contains("no e-mail address"),
        "{}",
        no_address.body
    );
    assert_eq!(hub.account("dave").await.access, before.access);
    let noticed = admin
        .post(
            "/admin/accounts/dave/access",
            &[
                access.as_slice(),
                &[
                    ("email", "dave@example.test"),
                    ("notify", "digest"),
                    ("receipts", "on"),
                ],
            ]
            .concat(),
        )
        .await;
    assert_eq!(noticed.status, StatusCode::SEE_OTHER, "{}", noticed.body);
    let notices = hub.account("dave").await.access.notices;
    assert_eq!(notices.email.as_deref(), Some("dave@example.test"));
    assert_eq!(notices.mode, mailroom_core::NotifyMode::Digest);
    assert!(notices.receipts);
    let page = admin.get("/admin/accounts/dave").await.body;
    assert!(page.contains(r#"value="dave@example.test""#), "{page}");
    assert!(
        page.contains(r#"<option value="digest" selected>"#),
        "{page}"
    );
    assert!(
        page.contains(r#"name="receipts" value="on" checked"#),
        "{page}"
    );

    let disabled = admin
        .post(
            "/admin/accounts/alice/state",
            &[("csrf", &csrf), ("disabled", "true")],
        )
        .await;
    assert_eq!(disabled.status, StatusCode::SEE_OTHER);
    assert!(hub.account("alice").await.disabled);
    let gone = user.get("/inbox").await;
    assert_eq!(
        gone.status,
        StatusCode::SEE_OTHER,
        "the disable revoked alice's session"
    );
    assert_eq!(gone.location(), "/login");

    let audit = admin.get("/admin/audit?kind=admin").await;
    assert_eq!(audit.status, StatusCode::OK);
    assert!(audit.body.contains("Hash chain intact."), "{}", audit.body);
    assert!(audit.body.contains("account dave"));
    let bad_filter = admin.get("/admin/audit?since=yesterday").await;
    assert_eq!(bad_filter.status, StatusCode::UNPROCESSABLE_ENTITY);
    hub.stop().await;
}

#[tokio::test]
async fn totp_enrolment_then_sign_in_with_the_code() {
    let hub = start().await;
    let alice = hub.client("alice").await;
    let mut browser = Browser::new(&hub);
    browser.login(&alice).await;
    let csrf = browser.get("/security").await.csrf();
    let setup = browser.post("/security/totp", &[("csrf", &csrf)]).await;
    assert_eq!(setup.status, StatusCode::OK, "{}", setup.body);
    assert!(setup.body.contains("<svg"), "a QR code drawn on the server");
    assert_eq!(setup.headers["cache-control"], "no-store");
    let marker = "id=\"totp-secret\">";
    let start = setup.body.find(marker).unwrap() + marker.len();
    let secret = setup.body[start..start + setup.body[start..].find('<').unwrap()].to_owned();
    assert!(hub.account("alice").await.totp.is_some());
    hub.set_access("alice", |a| {
        a.factors = FactorSet::new(vec![Factor::Password, Factor::Totp])
    })
    .await;

    let mut fresh = Browser::new(&hub);
    let asked = fresh.login(&alice).await;
    assert_eq!(asked.status, StatusCode::UNAUTHORIZED);
    assert!(
        asked.body.contains("also needs the 6-digit code"),
        "{}",
        asked.body
    );
    let wrong = fresh.login_with("alice", &alice.password, "000000").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.body.contains("Sign-in failed."));
    let now = u64::try_from(hub.hub.now().unix_timestamp()).unwrap();
    let code = mailroom_core::totp_code(&secret, now).unwrap();
    let good = fresh.login_with("alice", &alice.password, &code).await;
    assert_eq!(good.status, StatusCode::SEE_OTHER, "{}", good.body);
    assert_eq!(fresh.get("/inbox").await.status, StatusCode::OK);
    hub.stop().await;
}

#[tokio::test]
async fn admin_retries_and_drops_jobs_from_the_jobs_page() {
    use mailroom_core::JobState;
    let hub = start().await;
    let root = hub.admin_account("root").await;
    let mut admin = Browser::new(&hub);
    admin.login(&root).await;
    let empty = admin.get("/admin/jobs").await;
    assert_eq!(empty.status, StatusCode::OK);
    assert!(empty.body.contains("No jobs"), "{}", empty.body);

    // A dead job, as the worker leaves one, with what a hostile receiver might answer.
    let job = hub
        .dead_job(
            "https://hooks.example.test/<x>",
            "the receiver answered <b>500</b>",
        )
        .await;
    let page = admin.get("/admin/jobs?state=dead").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains(&job.id.to_string()));
    assert!(page.body.contains("dead 1"), "{}", page.body);
    // What a receiver wrote is shown as text, never as markup.
    assert!(
        page.body.contains("&#60;b&#62;500&#60;/b&#62;"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("<b>500</b>"));
    let csrf = page.csrf();

    // A bad state filter is refused with a page, and nothing changes.
    let bad = admin.get("/admin/jobs?state=lost").await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.body);
    // Without the CSRF token nothing happens.
    let forged = admin
        .post(&format!("/admin/jobs/{}/retry", job.id), &[])
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert_eq!(hub.hub.job(job.id).await.unwrap().0.state, JobState::Dead);

    let retried = admin
        .post(&format!("/admin/jobs/{}/retry", job.id), &[("csrf", &csrf)])
        .await;
    assert_eq!(retried.location(), "/admin/jobs?done=job-retried");
    assert_eq!(hub.hub.job(job.id).await.unwrap().0.state, JobState::Queued);
    let dropped = admin
        .post(&format!("/admin/jobs/{}/drop", job.id), &[("csrf", &csrf)])
        .await;
    assert_eq!(dropped.location(), "/admin/jobs?done=job-dropped");
    assert_eq!(
        hub.hub.job(job.id).await.unwrap().0.state,
        JobState::Dropped
    );
    // Dropping twice is refused on the page; the job stays dropped.
    let again = admin
        .post(&format!("/admin/jobs/{}/drop", job.id), &[("csrf", &csrf)])
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.body);
    assert_eq!(
        hub.hub.job(job.id).await.unwrap().0.state,
        JobState::Dropped
    );
    hub.stop().await;
}

/// The status of `GET /api/v1/{path}` with `bearer` (an API key or an access token), and its
/// body.
async fn api_get(browser: &Browser, path: &str, bearer: &str) -> (StatusCode, String) {
    let response = browser
        .http
        .get(format!("{}/api/v1/{path}", browser.base))
        .bearer_auth(bearer)
        .send()
        .await
        .unwrap();
    (response.status(), response.text().await.unwrap())
}

/// An access token of `who` from the API's own login.
async fn api_token(browser: &Browser, who: &TestClient) -> String {
    let response = browser
        .http
        .post(format!("{}/api/v1/token", browser.base))
        .json(&serde_json::json!({"username": who.name, "password": who.password}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: serde_json::Value = response.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

/// The text of the element with `id` (up to its first tag).
fn text_of(body: &str, id: &str) -> String {
    let marker = format!("id=\"{id}\">");
    let start = body
        .find(&marker)
        .unwrap_or_else(|| panic!("no #{id}:\n{body}"))
        + marker.len();
    body[start..start + body[start..].find('<').unwrap()].to_owned()
}

/// The ids of an account's API keys, as the Hub has them.
async fn api_key_ids(hub: &TestHub, name: &str) -> Vec<String> {
    let name = mailroom_core::AccountName::parse(name).unwrap();
    let keys = hub.hub.api_keys(&name).await.unwrap();
    keys.into_iter().map(|k| k.id).collect()
}

#[tokio::test]
async fn an_api_key_made_on_the_keys_page_works_its_secret_shown_once_until_revoked() {
    let hub = start().await;
    let alice = hub.client("alice").await;
    let bob = hub.client("bob").await;
    let root = hub.admin_account("root").await;
    let mut browser = Browser::new(&hub);
    browser.login(&alice).await;
    let empty = browser.get("/keys").await;
    assert_eq!(empty.status, StatusCode::OK);
    assert_page_headers(&empty);
    assert!(
        empty.body.contains("You have no API keys."),
        "{}",
        empty.body
    );
    assert!(empty.body.contains(r#"href="/keys" aria-current="page""#));
    let csrf = empty.csrf();

    // Refusals show the Hub's sentence and make no key.
    let refusals: [(&[(&str, &str)], &str); 4] = [
        (
            &[("label", "  "), ("scope_send", "on")],
            "label has 1 to 64 characters",
        ),
        (&[("label", "cron")], "needs at least one scope"),
        (
            &[
                ("label", "cron"),
                ("scope_receive", "on"),
                ("expires_in_days", "0"),
            ],
            "expires in 1 to 3650 days",
        ),
        (
            &[
                ("label", "cron"),
                ("scope_receive", "on"),
                ("expires_in_days", "soon"),
            ],
            "expires in 1 to 3650 days",
        ),
    ];
    for (fields, message) in refusals {
        let fields = [[("csrf", csrf.as_str())].as_slice(), fields].concat();
        let page = browser.post("/keys/api", &fields).await;
        assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY, "{fields:?}");
        assert!(page.body.contains("flash-error"), "{}", page.body);
        assert!(page.body.contains(message), "{message}: {}", page.body);
        assert!(!page.body.contains("api-key-secret"));
    }
    // Without the page's token, nothing is made either.
    let forged = browser
        .post("/keys/api", &[("label", "forged"), ("scope_receive", "on")])
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert_eq!(forged.headers["x-mailroom-refusal"], "csrf");
    assert!(api_key_ids(&hub, "alice").await.is_empty(), "no key made");

    let made = browser
        .post(
            "/keys/api",
            &[
                ("csrf", &csrf),
                ("label", "backup <b>agent</b>"),
                ("scope_receive", "on"),
                ("scope_send", "on"),
                ("expires_in_days", "30"),
            ],
        )
        .await;
    assert_eq!(made.status, StatusCode::OK, "{}", made.body);
    assert_eq!(made.headers["cache-control"], "no-store");
    assert!(made.body.contains("shown only once"), "{}", made.body);
    assert!(made.body.contains("It is not shown again"));
    let secret = text_of(&made.body, "api-key-secret");
    assert!(secret.starts_with("mrk_"), "{secret}");
    // The label is text, never markup.
    assert!(made.body.contains("backup &#60;b&#62;agent&#60;/b&#62;"));
    assert!(!made.body.contains("<b>agent</b>"));
    let ids = api_key_ids(&hub, "alice").await;
    assert_eq!(ids.len(), 1);
    let id = ids[0].clone();
    assert!(secret.contains(&id));

    // The secret is a bearer credential of the API on the same hub.
    let (status, body) = api_get(&browser, "inbox", &secret).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // The list shows the key, and never its secret again.
    let list = browser.get("/keys").await;
    assert_eq!(list.status, StatusCode::OK);
    assert!(list.body.contains(&id), "{}", list.body);
    assert!(list.body.contains("send, receive"));
    assert!(list.body.contains("backup &#60;b&#62;agent&#60;/b&#62;"));
    assert!(
        !list.body.contains(&secret),
        "the secret is shown once only"
    );
    assert!(!list.body.contains("api-key-secret"));
    assert!(!list.body.contains(&secret[secret.len() - 64..]));

    // Another account's key is no key of alice's: refused, and it still works.
    let bobs_name = mailroom_core::AccountName::parse(&bob.name).unwrap();
    let (bobs, bobs_secret) = hub
        .hub
        .create_api_key(
            &TestHub::admin(),
            &bobs_name,
            "bob's cron",
            mailroom_core::KeyScopes::ALL,
            None,
        )
        .await
        .unwrap();
    let bobs_secret = bobs_secret.expose().clone();
    let refused = browser
        .post(&format!("/keys/api/{}/revoke", bobs.id), &[("csrf", &csrf)])
        .await;
    assert_eq!(refused.status, StatusCode::NOT_FOUND, "{}", refused.body);
    assert!(refused.body.contains("flash-error"));
    assert!(
        refused.body.contains("Alice has no API key"),
        "{}",
        refused.body
    );
    assert!(
        !refused.body.contains("bob&#39;s cron"),
        "nothing of bob's key"
    );
    assert_eq!(
        api_key_ids(&hub, "bob").await,
        std::slice::from_ref(&bobs.id)
    );
    assert_eq!(
        api_get(&browser, "inbox", &bobs_secret).await.0,
        StatusCode::OK
    );

    // A revocation without the token changes nothing; with it, the key stops at once.
    let forged = browser.post(&format!("/keys/api/{id}/revoke"), &[]).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert_eq!(api_get(&browser, "inbox", &secret).await.0, StatusCode::OK);
    let revoked = browser
        .post(&format!("/keys/api/{id}/revoke"), &[("csrf", &csrf)])
        .await;
    assert_eq!(revoked.status, StatusCode::SEE_OTHER, "{}", revoked.body);
    assert_eq!(revoked.location(), "/keys?done=api-key-revoked");
    assert_eq!(
        api_get(&browser, "inbox", &secret).await.0,
        StatusCode::UNAUTHORIZED
    );
    let after = browser.get("/keys?done=api-key-revoked").await;
    assert!(after.body.contains("API key revoked"));
    assert!(after.body.contains("You have no API keys."));
    assert!(api_key_ids(&hub, "alice").await.is_empty());

    // The admin sees bob's key on his account page (never a secret) and revokes it.
    let mut admin = Browser::new(&hub);
    admin.login(&root).await;
    let page = admin.get("/admin/accounts/bob").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains(&bobs.id), "{}", page.body);
    assert!(page.body.contains("bob&#39;s cron"), "{}", page.body);
    assert!(!page.body.contains(&bobs_secret));
    let admin_csrf = page.csrf();
    let forged = admin
        .post(
            &format!("/admin/accounts/bob/api-keys/{}/revoke", bobs.id),
            &[],
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert_eq!(
        api_get(&admin, "inbox", &bobs_secret).await.0,
        StatusCode::OK
    );
    let revoked = admin
        .post(
            &format!("/admin/accounts/bob/api-keys/{}/revoke", bobs.id),
            &[("csrf", &admin_csrf)],
        )
        .await;
    assert_eq!(revoked.status, StatusCode::SEE_OTHER, "{}", revoked.body);
    assert_eq!(
        revoked.location(),
        "/admin/accounts/bob?done=api-key-revoked"
    );
    assert_eq!(
        api_get(&admin, "inbox", &bobs_secret).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert!(api_key_ids(&hub, "bob").await.is_empty());
    // Revoking it again is refused on the page.
    let again = admin
        .post(
            &format!("/admin/accounts/bob/api-keys/{}/revoke", bobs.id),
            &[("csrf", &admin_csrf)],
        )
        .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    assert!(again.body.contains("flash-error"));
    let audit = hub.events(EventKind::Admin, Outcome::Ok).await;
    assert!(
        audit
            .iter()
            .any(|e| e.detail == format!("revoke api key {id}"))
    );
    hub.stop().await;
}

#[tokio::test]
async fn e2e_keys_added_on_the_keys_page_are_the_apis_and_refusals_change_nothing() {
    let hub = start().await;
    let alice = hub.client("alice").await;
    let root = hub.admin_account("root").await;
    let recipient = age::x25519::Identity::generate().to_public().to_string();
    let mut browser = Browser::new(&hub);
    browser.login(&alice).await;
    let empty = browser.get("/keys").await;
    // The empty state says what to do.
    assert!(
        empty
            .body
            .contains("You have no end-to-end encryption keys")
            && empty.body.contains("age-keygen"),
        "{}",
        empty.body
    );
    let csrf = empty.csrf();

    // Without the page's token nothing is added.
    let forged = browser
        .post(
            "/keys/e2e",
            &[("recipient", &recipient), ("comment", "laptop")],
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert!(hub.account("alice").await.e2e_keys.is_empty());

    let added = browser
        .post(
            "/keys/e2e",
            &[
                ("csrf", &csrf),
                ("recipient", &recipient),
                ("comment", "laptop <i>home</i>"),
            ],
        )
        .await;
    assert_eq!(added.status, StatusCode::SEE_OTHER, "{}", added.body);
    assert_eq!(added.location(), "/keys?done=e2e-key-added");
    let keys = hub.account("alice").await.e2e_keys;
    assert_eq!(keys.len(), 1);
    let fingerprint = keys[0].fingerprint();
    let list = browser.get("/keys?done=e2e-key-added").await;
    assert!(list.body.contains("Encryption key added"), "{}", list.body);
    assert!(list.body.contains(&fingerprint));
    assert!(list.body.contains(&recipient));
    assert!(list.body.contains("laptop &#60;i&#62;home&#60;/i&#62;"));
    assert!(!list.body.contains("<i>home</i>"));

    // The API shows the same key.
    let token = api_token(&browser, &alice).await;
    let (status, body) = api_get(&browser, "e2e-keys", &token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(listed[0]["recipient"], recipient.as_str());
    assert_eq!(listed[0]["fingerprint"], fingerprint.as_str());
    assert_eq!(listed[0]["comment"], "laptop <i>home</i>");

    // Refusals: the Hub's sentence, no change, and a malformed recipient is not echoed.
    let before = hub.account("alice").await.e2e_keys;
    let malformed = "age1thisisnotarecipient";
    let refusals = [
        (
            malformed,
            StatusCode::UNPROCESSABLE_ENTITY,
            "Not an age X25519 recipient",
        ),
        (
            recipient.as_str(),
            StatusCode::CONFLICT,
            "Alice already has the e2e key",
        ),
    ];
    for (candidate, status, message) in refusals {
        let page = browser
            .post(
                "/keys/e2e",
                &[("csrf", &csrf), ("recipient", candidate), ("comment", "x")],
            )
            .await;
        assert_eq!(page.status, status, "{candidate}: {}", page.body);
        assert!(page.body.contains("flash-error"));
        assert!(page.body.contains(message), "{message}: {}", page.body);
        assert_eq!(hub.account("alice").await.e2e_keys, before);
        if candidate == malformed {
            assert!(!page.body.contains(malformed), "not echoed");
        }
    }
    let control = browser
        .post(
            "/keys/e2e",
            &[
                ("csrf", &csrf),
                (
                    "recipient",
                    &age::x25519::Identity::generate().to_public().to_string(),
                ),
                ("comment", "line\nbreak"),
            ],
        )
        .await;
    assert_eq!(control.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        control.body.contains("control character"),
        "{}",
        control.body
    );
    assert_eq!(hub.account("alice").await.e2e_keys, before);

    // The admin's account page lists it.
    let mut admin = Browser::new(&hub);
    admin.login(&root).await;
    let page = admin.get("/admin/accounts/alice").await;
    assert!(page.body.contains(&fingerprint), "{}", page.body);
    assert!(page.body.contains(&recipient));
    // An admin account has neither kind of key: its page shows no such section.
    let own = admin.get("/admin/accounts/root").await;
    assert_eq!(own.status, StatusCode::OK);
    assert!(!own.body.contains("e2e-title") && !own.body.contains("api-keys-title"));

    // Removal: refused without the token, then done; an unknown fingerprint is refused.
    let path = format!("/keys/e2e/{fingerprint}/remove");
    let forged = browser.post(&path, &[]).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert_eq!(hub.account("alice").await.e2e_keys, before);
    let removed = browser.post(&path, &[("csrf", &csrf)]).await;
    assert_eq!(removed.status, StatusCode::SEE_OTHER, "{}", removed.body);
    assert_eq!(removed.location(), "/keys?done=e2e-key-removed");
    assert!(hub.account("alice").await.e2e_keys.is_empty());
    let (_, body) = api_get(&browser, "e2e-keys", &token).await;
    assert_eq!(body.trim(), "[]");
    let again = browser.post(&path, &[("csrf", &csrf)]).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    assert!(again.body.contains("no such e2e key"), "{}", again.body);

    // An admin removes a key of the account from its page.
    let second = age::x25519::Identity::generate().to_public().to_string();
    let added = browser
        .post(
            "/keys/e2e",
            &[("csrf", &csrf), ("recipient", &second), ("comment", "")],
        )
        .await;
    assert_eq!(added.status, StatusCode::SEE_OTHER, "{}", added.body);
    let fingerprint = hub.account("alice").await.e2e_keys[0].fingerprint();
    let page = admin.get("/admin/accounts/alice").await;
    let removed = admin
        .post(
            &format!("/admin/accounts/alice/e2e-keys/{fingerprint}/remove"),
            &[("csrf", &page.csrf())],
        )
        .await;
    assert_eq!(removed.status, StatusCode::SEE_OTHER, "{}", removed.body);
    assert_eq!(
        removed.location(),
        "/admin/accounts/alice?done=e2e-key-removed"
    );
    assert!(hub.account("alice").await.e2e_keys.is_empty());

    // A key beyond the most an account may hold is refused, and nothing changes.
    let name = mailroom_core::AccountName::parse("alice").unwrap();
    let held = hub.account("alice").await.e2e_keys.len();
    for _ in held..mailroom_core::MAX_E2E_KEYS {
        let recipient = age::x25519::Identity::generate().to_public().to_string();
        hub.hub
            .add_e2e_key(&TestHub::admin(), &name, &recipient, "")
            .await
            .unwrap();
    }
    let full = hub.account("alice").await.e2e_keys;
    let extra = age::x25519::Identity::generate().to_public().to_string();
    let refused = browser
        .post(
            "/keys/e2e",
            &[("csrf", &csrf), ("recipient", &extra), ("comment", "")],
        )
        .await;
    assert_eq!(refused.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        refused.body.contains("the most an account may hold"),
        "{}",
        refused.body
    );
    assert_eq!(hub.account("alice").await.e2e_keys, full);
    hub.stop().await;
}

#[tokio::test]
async fn an_end_to_end_file_shows_as_encrypted_and_downloads_as_its_ciphertext() {
    let hub = start().await;
    let alice = hub.client("alice").await;
    let bob = hub.client("bob").await;
    hub.allow("bob", "alice").await;
    let key = age::x25519::Identity::generate().to_public().to_string();
    hub.hub
        .add_e2e_key(&TestHub::admin(), &name("alice"), &key, "laptop")
        .await
        .unwrap();
    // What bob's agent uploads: an age file (its header, then bytes no one here can read).
    let mut sealed = b"age-encryption.org/v1\n".to_vec();
    sealed.extend((0..4000u32).map(|i| b'a' + (i % 26) as u8));
    let session = mailroom_core::ClientSession {
        account: name("bob"),
        source: Some("127.0.0.1".to_owned()),
        protocol: Protocol::Https,
    };
    let mut upload = hub
        .hub
        .begin_send(
            &session,
            &[name("alice")],
            &mailroom_core::FileName::parse("plan.pdf").unwrap(),
            mailroom_core::Content::EndToEnd,
        )
        .await
        .unwrap();
    upload.write_at(0, &sealed).await.unwrap();
    let id = hub.hub.finish_upload(upload).await.unwrap()[0]
        .id
        .to_string();

    let mut browser = Browser::new(&hub);
    browser.login(&alice).await;
    let inbox = browser.get("/inbox").await;
    assert!(inbox.body.contains("plan.pdf"));
    assert!(inbox.body.contains("badge-e2e"), "{}", inbox.body);
    assert!(inbox.body.contains("Download encrypted"));
    let file = browser.get(&format!("/inbox/{id}/download")).await;
    assert_eq!(file.status, StatusCode::OK);
    assert_eq!(file.body.as_bytes(), sealed, "the ciphertext, as stored");
    assert_eq!(file.headers["content-type"], "application/vnd.age");
    assert!(
        file.headers["content-disposition"]
            .to_str()
            .unwrap()
            .ends_with("plan.pdf.age"),
        "{:?}",
        file.headers["content-disposition"]
    );
    // A plain file beside it is neither.
    let plain = delivered(&hub, &alice, &bob, "notes.txt").await;
    let file = browser.get(&format!("/inbox/{plain}/download")).await;
    assert_eq!(file.headers["content-type"], "application/octet-stream");
    let inbox = browser.get("/inbox").await;
    assert_eq!(inbox.body.matches("badge-e2e").count(), 1);
    // The sender's receipts mark it too.
    let mut sender = Browser::new(&hub);
    sender.login(&bob).await;
    let sent = sender.get("/sent").await;
    assert_eq!(sent.body.matches("badge-e2e").count(), 1, "{}", sent.body);
    hub.stop().await;
}

fn name(text: &str) -> mailroom_core::AccountName {
    mailroom_core::AccountName::parse(text).unwrap()
}

// ----- the account's own settings ------------------------------------------------------------

const OTHER_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl laptop";

/// What a refusal of the account page must leave alone: both accounts as stored (password
/// hash, keys, TOTP, token generation), deliveries and blobs.
async fn accounts_and_files(hub: &TestHub) -> (String, mailroom_test_support::Snapshot) {
    (
        format!(
            "{:?} {:?}",
            hub.account("alice").await,
            hub.account("bob").await
        ),
        hub.snapshot().await,
    )
}

/// Posts a form of the account page that must be refused with `status` and a notice
/// containing `says`, and checks that nothing changed.
async fn refused_form(
    hub: &TestHub,
    browser: &mut Browser,
    path: &str,
    fields: &[(&str, &str)],
    status: StatusCode,
    says: &str,
) -> Page {
    let before = accounts_and_files(hub).await;
    let page = browser.post(path, fields).await;
    assert_eq!(page.status, status, "{path}: {}", page.body);
    assert!(
        page.body.contains(says),
        "{path} lacks {says:?}:\n{}",
        page.body
    );
    assert_eq!(
        accounts_and_files(hub).await,
        before,
        "{path} {status} changed something"
    );
    page
}

/// The `admin` events about `who`'s account.
async fn admin_details(hub: &TestHub, who: &str) -> Vec<String> {
    hub.events(EventKind::Admin, Outcome::Ok)
        .await
        .into_iter()
        .filter(|e| e.object == format!("account {who}"))
        .map(|e| e.detail)
        .collect()
}

#[tokio::test]
async fn the_account_page_changes_only_ones_own_keys_and_refusals_change_nothing() {
    let hub = start().await;
    let alice = hub.client("alice").await;
    hub.client("bob").await;
    let mut browser = Browser::new(&hub);
    browser.login(&alice).await;
    let page = browser.get("/account").await;
    assert_eq!(page.status, StatusCode::OK);
    assert_page_headers(&page);
    let own = hub.account("alice").await.keys[0].fingerprint();
    assert!(page.body.contains(&own), "alice's key is listed");
    assert!(
        page.body.contains("id=\"usage-files\">0 (no limit)"),
        "{}",
        page.body
    );
    let csrf = page.csrf();

    // A malformed key is refused; the draft comes back escaped.
    let hostile = "ssh-ed25519 <script>alert(1)</script>";
    let refused = refused_form(
        &hub,
        &mut browser,
        "/account/ssh-keys",
        &[("csrf", &csrf), ("key", hostile)],
        StatusCode::UNPROCESSABLE_ENTITY,
        "base64",
    )
    .await;
    assert!(!refused.body.contains("<script>alert"), "escaped");
    assert!(refused.body.contains("alert(1)"), "the draft comes back");
    // Bob's key is not alice's to remove.
    let bobs = hub.account("bob").await.keys[0].fingerprint();
    refused_form(
        &hub,
        &mut browser,
        "/account/ssh-keys/remove",
        &[("csrf", &csrf), ("fingerprint", &bobs)],
        StatusCode::NOT_FOUND,
        "no SSH key with that fingerprint",
    )
    .await;
    // Without the CSRF token nothing happens at all.
    refused_form(
        &hub,
        &mut browser,
        "/account/ssh-keys",
        &[("key", OTHER_KEY)],
        StatusCode::FORBIDDEN,
        "",
    )
    .await;

    let added = browser
        .post("/account/ssh-keys", &[("csrf", &csrf), ("key", OTHER_KEY)])
        .await;
    assert_eq!(added.status, StatusCode::SEE_OTHER, "{}", added.body);
    assert_eq!(added.location(), "/account?done=key-added");
    let keys = hub.account("alice").await.keys;
    assert_eq!(keys.len(), 2);
    let new = keys[1].fingerprint();
    refused_form(
        &hub,
        &mut browser,
        "/account/ssh-keys",
        &[("csrf", &csrf), ("key", OTHER_KEY)],
        StatusCode::CONFLICT,
        "already has the key",
    )
    .await;
    let removed = browser
        .post(
            "/account/ssh-keys/remove",
            &[("csrf", &csrf), ("fingerprint", &new)],
        )
        .await;
    assert_eq!(removed.location(), "/account?done=key-removed");
    assert_eq!(hub.account("alice").await.keys.len(), 1);
    assert_eq!(hub.account("bob").await.keys.len(), 1);
    let details = admin_details(&hub, "alice").await;
    assert!(
        details.contains(&format!("add own key {new}")),
        "{details:?}"
    );
    assert!(
        details.contains(&format!("remove own key {new}")),
        "{details:?}"
    );
    hub.stop().await;
}

#[tokio::test]
async fn a_password_changes_given_the_current_one_and_signs_out_everywhere() {
    let hub = start().await;
    let alice = hub.client("alice").await;
    hub.client("bob").await;
    let mut browser = Browser::new(&hub);
    browser.login(&alice).await;
    let csrf = browser.get("/account").await.csrf();
    let new = "Another-long-passphrase-77";

    refused_form(
        &hub,
        &mut browser,
        "/account/password",
        &[
            ("csrf", &csrf),
            ("current", "Wrong-password-12345"),
            ("new", new),
            ("confirm", new),
        ],
        StatusCode::FORBIDDEN,
        "The current password is not right",
    )
    .await;
    refused_form(
        &hub,
        &mut browser,
        "/account/password",
        &[
            ("csrf", &csrf),
            ("current", &alice.password),
            ("new", new),
            ("confirm", "Another-long-passphrase-78"),
        ],
        StatusCode::UNPROCESSABLE_ENTITY,
        "The two new passwords differ",
    )
    .await;
    refused_form(
        &hub,
        &mut browser,
        "/account/password",
        &[
            ("csrf", &csrf),
            ("current", &alice.password),
            ("new", "short"),
            ("confirm", "short"),
        ],
        StatusCode::UNPROCESSABLE_ENTITY,
        "",
    )
    .await;

    let changed = browser
        .post(
            "/account/password",
            &[
                ("csrf", &csrf),
                ("current", &alice.password),
                ("new", new),
                ("confirm", new),
            ],
        )
        .await;
    assert_eq!(changed.status, StatusCode::SEE_OTHER, "{}", changed.body);
    assert_eq!(changed.location(), "/login?done=password-changed");
    assert_eq!(browser.get("/inbox").await.location(), "/login");
    let notice = browser.get("/login?done=password-changed").await;
    assert!(notice.body.contains("Sign in with the new password"));
    let again = browser.login_with("alice", new, "").await;
    assert_eq!(again.status, StatusCode::SEE_OTHER, "{}", again.body);
    assert!(
        admin_details(&hub, "alice")
            .await
            .contains(&"change own password".to_owned())
    );
    hub.stop().await;
}

#[tokio::test]
async fn signing_out_the_other_sessions_keeps_this_browser_signed_in() {
    let hub = start().await;
    let alice = hub.client("alice").await;
    let mut here = Browser::new(&hub);
    here.login(&alice).await;
    let mut there = Browser::new(&hub);
    there.login(&alice).await;
    let page = here.get("/account").await;
    assert_eq!(page.body.matches("<tr class=\"current\">").count(), 1);
    assert_eq!(
        page.body.matches("<td>https</td>").count(),
        2,
        "{}",
        page.body
    );
    // Times to the second, no fractions, UTC in the title.
    let marker = "<time datetime=\"";
    let start = page.body.find(marker).unwrap() + marker.len();
    let machine = &page.body[start..start + page.body[start..].find('"').unwrap()];
    assert_eq!(machine.len(), 20, "{machine}");
    assert!(
        machine.ends_with('Z') && !machine.contains('.'),
        "{machine}"
    );
    assert!(page.body.contains("\" title=\"20"), "{}", page.body);

    let signed_out = here
        .post(
            "/account/sessions/sign-out-others",
            &[("csrf", &page.csrf())],
        )
        .await;
    assert_eq!(signed_out.location(), "/account?done=signed-out-others");
    assert!(
        signed_out
            .set_cookies()
            .iter()
            .any(|c| c.starts_with("__Host-mailroom=") && !c.contains("Max-Age=0")),
        "this browser gets its fresh token"
    );
    assert_eq!(there.get("/inbox").await.location(), "/login");
    let page = here.get("/account?done=signed-out-others").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Your other sessions are signed out"));
    assert_eq!(
        page.body.matches("<td>https</td>").count(),
        1,
        "{}",
        page.body
    );
    hub.stop().await;
}

#[tokio::test]
async fn a_totp_reenrolment_in_the_browser_needs_a_code() {
    let hub = start().await;
    let alice = hub.client("alice").await;
    hub.client("bob").await;
    let mut browser = Browser::new(&hub);
    browser.login(&alice).await;
    let csrf = browser.get("/security").await.csrf();
    let first = browser.post("/security/totp", &[("csrf", &csrf)]).await;
    assert_eq!(first.status, StatusCode::OK);
    let page = browser.get("/security").await;
    assert!(page.body.contains("Current code or recovery code"));
    refused_form(
        &hub,
        &mut browser,
        "/security/totp",
        &[("csrf", &csrf)],
        StatusCode::FORBIDDEN,
        "one of your recovery codes",
    )
    .await;
    refused_form(
        &hub,
        &mut browser,
        "/security/totp",
        &[("csrf", &csrf), ("code", "000000")],
        StatusCode::FORBIDDEN,
        "one of your recovery codes",
    )
    .await;
    let marker = "<li><code>";
    let start = first.body.find(marker).unwrap() + marker.len();
    let recovery = &first.body[start..start + first.body[start..].find('<').unwrap()];
    let before = hub.account("alice").await.totp.unwrap();
    let second = browser
        .post("/security/totp", &[("csrf", &csrf), ("code", recovery)])
        .await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.body);
    assert!(second.body.contains("id=\"totp-setup\""));
    assert_ne!(
        hub.account("alice").await.totp.unwrap().secret.expose(),
        before.secret.expose()
    );
    hub.stop().await;
}

#[tokio::test]
async fn unknown_paths_get_a_page_and_the_api_keeps_its_problems() {
    let hub = start().await;
    let alice = hub.client("alice").await;
    let mut browser = Browser::new(&hub);
    for path in [
        "/no-such-page",
        "/inbox/x/y/z",
        "/assets/nope.js",
        "/%3Cscript%3E",
    ] {
        let page = browser.get(path).await;
        assert_eq!(page.status, StatusCode::NOT_FOUND, "{path}");
        assert!(
            page.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html"),
            "{path}"
        );
        assert!(page.body.contains("Page not found"), "{path}");
        assert!(
            !page.body.contains("<script>"),
            "nothing of the path echoed"
        );
        assert_page_headers(&page);
    }
    // A download the API refuses is a page too, with the Hub's sentence.
    let before = hub.snapshot().await;
    let refused = browser
        .get("/inbox/0123456789abcdef0123456789abcdef/download")
        .await;
    assert_eq!(refused.location(), "/login", "without a session: sign in");
    browser.login(&alice).await;
    let refused = browser
        .get("/inbox/0123456789abcdef0123456789abcdef/download")
        .await;
    assert_eq!(refused.status, StatusCode::NOT_FOUND, "{}", refused.body);
    assert!(
        refused.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(
        refused.body.contains("Download refused"),
        "{}",
        refused.body
    );
    assert_eq!(hub.snapshot().await, before, "nothing changed");
    let signed_in = browser.get("/no-such-page").await;
    assert!(
        signed_in.body.contains("Sign out"),
        "the page keeps its navigation"
    );
    // A page asked with a method it does not take.
    let csrf = browser.get("/inbox").await.csrf();
    let wrong = browser.post("/inbox", &[("csrf", &csrf)]).await;
    assert_eq!(wrong.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(wrong.body.contains("Not possible here"), "{}", wrong.body);
    // Under /api/ a problem document, whatever the method and without a CSRF token.
    for request in [
        browser
            .http
            .get(format!("{}/api/v1/nothing-here", browser.base)),
        browser
            .http
            .post(format!("{}/api/v1/nothing/here", browser.base))
            .bearer_auth("whatever"),
    ] {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
    }
    hub.stop().await;
}

/// The rows of a listing page: the file names in the order shown.
fn row_names(body: &str) -> Vec<String> {
    body.split("<span class=\"file-name\">")
        .skip(1)
        .map(|rest| rest.split('<').next().unwrap().to_owned())
        .collect()
}

/// The href of the link with `rel` (`next`, `prev`), as a browser reads it.
fn rel_href(body: &str, rel: &str) -> Option<String> {
    let at = body.find(&format!("rel=\"{rel}\""))?;
    let start = body[..at].rfind("href=\"")? + "href=\"".len();
    let end = start + body[start..].find('"')?;
    Some(unescape(&body[start..end]))
}

/// An attribute's or a cell's text as a browser reads it (the escapes askama writes).
fn unescape(text: &str) -> String {
    text.replace("&#60;", "<")
        .replace("&#62;", ">")
        .replace("&#34;", "\"")
        .replace("&#39;", "'")
        .replace("&#38;", "&")
        .replace("&amp;", "&")
}

#[tokio::test]
async fn inbox_and_sent_pages_page_sort_and_filter_with_links_alone() {
    let hub = start().await;
    let alice = hub.client("alice").await;
    let bob = hub.client("bob").await;
    hub.allow(&alice.name, &bob.name).await;
    let mut sender = Browser::new(&hub);
    sender.login(&alice).await;
    for (name, size) in [
        ("a-report.txt", 3),
        ("b.txt", 9),
        ("c-REPORT.txt", 1),
        ("d.txt", 5),
        ("e.txt", 7),
    ] {
        sender.send(&bob.name, name, &vec![b'x'; size]).await;
    }
    let mut browser = Browser::new(&hub);
    browser.login(&bob).await;

    // Newest first, two a page; the links walk the pages and back.
    let first = browser.get("/inbox?per_page=2").await;
    assert_eq!(first.status, StatusCode::OK);
    assert_page_headers(&first);
    assert!(!first.body.contains("<script>"), "no inline script");
    assert!(!first.body.contains("style="), "no inline style");
    assert_eq!(row_names(&first.body), ["e.txt", "d.txt"]);
    assert!(first.body.contains("aria-sort=\"descending\""));
    assert_eq!(rel_href(&first.body, "prev"), None);
    let next = rel_href(&first.body, "next").unwrap();
    assert_eq!(next, "/inbox?page=2&per_page=2&sort=date&order=desc");
    let second = browser.get(&next).await;
    assert_eq!(row_names(&second.body), ["c-REPORT.txt", "b.txt"]);
    let third = browser.get(&rel_href(&second.body, "next").unwrap()).await;
    assert_eq!(row_names(&third.body), ["a-report.txt"]);
    assert_eq!(rel_href(&third.body, "next"), None);
    let back = browser.get(&rel_href(&third.body, "prev").unwrap()).await;
    assert_eq!(row_names(&back.body), row_names(&second.body));

    // A column's link sorts by it; the same link again turns the order round.
    let by_size = browser.get("/inbox?sort=size&order=asc").await;
    assert_eq!(
        row_names(&by_size.body),
        ["c-REPORT.txt", "a-report.txt", "d.txt", "e.txt", "b.txt"]
    );
    assert!(
        unescape(&by_size.body).contains("href=\"/inbox?page=1&per_page=50&sort=size&order=desc\"")
    );
    // The form's filter: any case, and what is typed comes back escaped.
    let reports = browser.get("/inbox?q=Report&sort=name&order=asc").await;
    assert_eq!(row_names(&reports.body), ["a-report.txt", "c-REPORT.txt"]);
    assert!(reports.body.contains("value=\"Report\""));
    let hostile = browser.get("/inbox?q=%22%3E%3Cb%3E").await;
    assert_eq!(hostile.status, StatusCode::OK);
    assert!(!hostile.body.contains("\"><b>"), "the filter is escaped");
    assert!(
        hostile.body.contains("id=\"no-match\""),
        "a filter that matches nothing is no empty inbox"
    );
    assert!(!hostile.body.contains("Your inbox is empty"));

    // The sender's sent items, by recipient then name, filtered.
    let sent = sender
        .get("/sent?q=.TXT&sort=name&order=desc&per_page=3")
        .await;
    assert_eq!(row_names(&sent.body), ["e.txt", "d.txt", "c-REPORT.txt"]);
    assert!(rel_href(&sent.body, "next").unwrap().contains("q=.TXT"));

    // A wrong value is a page that says what it takes, and nothing changes.
    let before = hub.snapshot().await;
    for (path, sentence) in [
        (
            "/inbox?per_page=501",
            "Per_page must be a whole number from 1 to 500.",
        ),
        (
            "/inbox?sort=recipient",
            "Sort must be one of date, name, size, sender.",
        ),
        ("/sent?order=sideways", "Order must be asc or desc."),
        ("/sent?page=0", "Page must be a whole number from 1"),
    ] {
        let page = if path.starts_with("/sent") {
            sender.get(path).await
        } else {
            browser.get(path).await
        };
        assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY, "{path}");
        assert!(page.body.contains("flash-error"), "{path}");
        assert!(page.body.contains(sentence), "{path}: {}", page.body);
    }
    assert_eq!(hub.snapshot().await, before, "nothing changed");
    hub.stop().await;
}

#[tokio::test]
async fn the_ticked_files_of_the_inbox_download_as_one_zip_and_are_acknowledged_together() {
    let hub = start().await;
    let alice = hub.client("alice").await;
    let bob = hub.client("bob").await;
    let carol = hub.client("carol").await;
    hub.allow("bob", "alice").await;
    hub.allow("bob", "carol").await;
    let mut sender = Browser::new(&hub);
    sender.login(&bob).await;
    let mut ids = Vec::new();
    for name in ["one.txt", "two.txt", "three.txt"] {
        let answer = sender
            .send(&alice.name, name, format!("{name} body\n").as_bytes())
            .await;
        ids.push(answer["deliveries"][0]["id"].as_str().unwrap().to_owned());
    }
    let carols = sender.send(&carol.name, "carol.txt", b"carol's\n").await["deliveries"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let mut browser = Browser::new(&hub);
    browser.login(&alice).await;
    let inbox = browser.get("/inbox").await;
    for id in &ids {
        assert!(
            inbox.body.contains(&format!(
                "<input type=\"checkbox\" name=\"id\" value=\"{id}\" form=\"selection\""
            )),
            "a checkbox per row: {}",
            inbox.body
        );
    }
    assert!(inbox.body.contains("formaction=\"/inbox/zip\""));
    assert!(inbox.body.contains("Acknowledge selected"));
    let csrf = inbox.csrf();

    // The first and the last as one ZIP: each entry named as the file, with its SHA-256 in
    // the archive's comment.
    let zip = browser
        .post(
            "/inbox/zip",
            &[("csrf", &csrf), ("id", &ids[0]), ("id", &ids[2])],
        )
        .await;
    assert_eq!(zip.status, StatusCode::OK);
    assert_eq!(zip.headers["content-type"], "application/zip");
    assert!(zip.body.starts_with("PK"));
    for name in ["one.txt", "three.txt"] {
        let sha = hex(&Sha256::digest(format!("{name} body\n").as_bytes()));
        assert!(zip.body.contains(&format!("{sha}  {name}\n")), "{name}");
    }
    assert!(!zip.body.contains("two.txt"));

    // Refused, and nothing changed: nothing ticked, another's delivery among them, no token.
    let before = hub.snapshot().await;
    let acked = || async {
        hub.events(EventKind::DeliveryAcknowledged, Outcome::Ok)
            .await
            .len()
    };
    let acked_before = acked().await;
    for (path, fields, status, said) in [
        (
            "/inbox/acknowledge",
            vec![("csrf", csrf.as_str())],
            StatusCode::UNPROCESSABLE_ENTITY,
            "No file is selected",
        ),
        (
            "/inbox/zip",
            vec![("csrf", csrf.as_str())],
            StatusCode::UNPROCESSABLE_ENTITY,
            "No file is selected",
        ),
        (
            "/inbox/acknowledge",
            vec![("csrf", &csrf), ("id", &ids[0]), ("id", &carols)],
            StatusCode::NOT_FOUND,
            "flash-error",
        ),
        (
            "/inbox/zip",
            vec![("csrf", &csrf), ("id", &ids[1]), ("id", &carols)],
            StatusCode::NOT_FOUND,
            "flash-error",
        ),
        (
            "/inbox/acknowledge",
            vec![("csrf", "forged"), ("id", &ids[0])],
            StatusCode::FORBIDDEN,
            "nothing was changed",
        ),
    ] {
        let page = browser.post(path, &fields).await;
        assert_eq!(page.status, status, "{path} {fields:?}");
        assert!(page.body.contains(said), "{path}: {}", page.body);
        assert_eq!(hub.snapshot().await, before, "{path} changed something");
        assert_eq!(acked().await, acked_before);
    }

    // The same two, acknowledged in one action; the other stays.
    let done = browser
        .post(
            "/inbox/acknowledge",
            &[("csrf", &csrf), ("id", &ids[0]), ("id", &ids[2])],
        )
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER);
    assert_eq!(done.location(), "/inbox?done=acknowledged-selected");
    let after = browser.get(done.location()).await;
    assert!(after.body.contains("the selected files are gone"));
    assert!(after.body.contains("two.txt"));
    assert!(!after.body.contains("one.txt") && !after.body.contains("three.txt"));
    assert_eq!(acked().await, acked_before + 2);
    hub.stop().await;
}

/// The text of every cell that opens with `marker` (askama's escapes undone).
fn cells(body: &str, marker: &str) -> Vec<String> {
    body.split(marker)
        .skip(1)
        .map(|rest| unescape(&rest[..rest.find("</td>").unwrap()]))
        .collect()
}

#[tokio::test]
async fn the_audit_trail_is_paged_from_the_newest_with_its_filter_kept() {
    let hub = start().await;
    let root = hub.admin_account("root").await;
    for i in 0..5 {
        hub.client(&format!("user{i}")).await;
    }
    let expected: Vec<String> = hub
        .events(EventKind::Admin, Outcome::Ok)
        .await
        .iter()
        .rev()
        .map(|e| e.detail.clone())
        .collect();
    assert!(expected.len() >= 5, "{expected:?}");
    let mut admin = Browser::new(&hub);
    admin.login(&root).await;

    // Two a page, following "Older events" to the end: every admin event once, newest first,
    // each link keeping the filter.
    let mut seen = Vec::new();
    let mut path = "/admin/audit?kind=admin&limit=2".to_owned();
    let mut pages = 0;
    loop {
        let page = admin.get(&path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}");
        pages += 1;
        assert!(
            page.body
                .contains(&format!("on page {pages}, newest first")),
            "{}",
            page.body
        );
        let details = cells(&page.body, "<td class=\"detail\">");
        assert!((1..=2).contains(&details.len()), "{path}: {details:?}");
        seen.extend(details);
        if pages > 1 {
            let newer = rel_href(&page.body, "prev").unwrap();
            assert!(newer.ends_with(&format!("page={}", pages - 1)), "{newer}");
        } else {
            assert_eq!(rel_href(&page.body, "prev"), None);
        }
        let Some(older) = rel_href(&page.body, "next") else {
            break;
        };
        assert!(
            older.starts_with("/admin/audit?kind=admin&limit=2&page="),
            "{older}"
        );
        path = older;
    }
    assert_eq!(seen, expected);
    assert_eq!(pages, expected.len().div_ceil(2));

    // Past the end: an empty page, no older link. A page that is no page: 422, said so.
    let past = admin.get("/admin/audit?kind=admin&limit=2&page=99").await;
    assert_eq!(past.status, StatusCode::OK);
    assert!(past.body.contains("No events match"));
    assert_eq!(rel_href(&past.body, "next"), None);
    for (query, said) in [
        ("page=0", "not a number"),
        ("page=first", "not a number"),
        ("limit=10000&page=4294967295", "beyond any audit trail"),
    ] {
        let page = admin.get(&format!("/admin/audit?{query}")).await;
        assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY, "{query}");
        assert!(page.body.contains(said), "{query}: {}", page.body);
    }
    hub.stop().await;
}
