//! The one shape of each object, written out in full: a change to a field's name, type or
//! presence fails here before it reaches the API, the web UI or the CLI's `--json`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use mailroom_core::{
    AccessPolicy, Account, AccountKind, AccountName, AuthorizedKey, Ban, BanSubject, BlobId,
    ChainHead, ChainReport, Checkpoint, CheckpointStatus, Delivery, DeliveryId, DeliveryState,
    Event, EventKind, FactorSet, FileName, Group, Limits, NodeId, Notices, NotifyMode, Outcome,
    Protocol, Rights, Route, RouteEffect, Secret, SessionInfo, TotpEnrolment, parse_networks,
};
use mailroom_core::{E2eKey, RecipientE2eKeys};
use serde_json::{Value, json};
use time::macros::datetime;
use utoipa::PartialSchema;

use super::*;

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOCkXmD9wMs5AuUB9tetdUfxG0Yqxz2bFBbSrIBwG1uY alice@laptop";

/// An age X25519 recipient (the example of age's own documentation).
const E2E: &str = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";

/// Its fingerprint, written out (`printf %s RECIPIENT | sha256sum`, the first 16 digits) so
/// that a change of the fingerprint's definition fails here.
const E2E_FINGERPRINT: &str = "cf7e568231315068";

fn name(text: &str) -> AccountName {
    AccountName::parse(text).unwrap()
}

fn to_json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap()
}

fn alice() -> Account {
    Account {
        name: name("alice"),
        kind: AccountKind::Client,
        disabled: false,
        password_hash: Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_owned()),
        keys: vec![AuthorizedKey::parse(KEY).unwrap()],
        e2e_keys: vec![E2eKey::new(E2E, "laptop", datetime!(2030-01-31 12:30:00.5 UTC)).unwrap()],
        created: datetime!(2030-01-31 13:00:00 +01:00),
        access: AccessPolicy {
            factors: FactorSet::parse("totp,password").unwrap(),
            networks: parse_networks("10.0.0.0/8, 192.0.2.7").unwrap(),
            certificate_subject: None,
            rights: Rights::parse("send,receive").unwrap(),
            limits: Limits {
                name_allow: vec!["*.pdf".to_owned()],
                name_deny: Vec::new(),
                max_file_size: Some(1024),
                quota_bytes: None,
                quota_files: Some(10),
                retention_days: Some(30),
                max_sessions: None,
            },
            notices: Notices {
                email: Some("alice@example.test".to_owned()),
                mode: NotifyMode::Instant,
                receipts: true,
            },
        },
        totp: Some(TotpEnrolment {
            secret: Secret::new("JBSWY3DPEHPK3PXP".to_owned()),
            last_step: None,
            recovery: vec!["a".repeat(64), "b".repeat(64)],
        }),
        token_epoch: 3,
    }
}

#[test]
fn an_account_has_one_shape_and_no_secret() {
    let key = AuthorizedKey::parse(KEY).unwrap();
    let json = to_json(&AccountView::from(&alice()));
    assert_eq!(
        json,
        json!({
            "name": "alice",
            "kind": "client",
            "disabled": false,
            "has_password": true,
            "created": "2030-01-31T12:00:00Z",
            "require": ["password", "totp"],
            "networks": ["10.0.0.0/8", "192.0.2.7/32"],
            "certificate_subject": null,
            "rights": {"send": true, "receive": true, "delete": false, "recall": false},
            "limits": {
                "max_file_size": 1024,
                "quota_bytes": null,
                "quota_files": 10,
                "retention_days": 30,
                "max_sessions": null,
                "allow_names": ["*.pdf"],
                "deny_names": [],
            },
            "keys": [{
                "algorithm": "ssh-ed25519",
                "fingerprint": key.fingerprint(),
                "comment": "alice@laptop",
                "line": KEY,
            }],
            "e2e_keys": [{
                "recipient": E2E,
                "fingerprint": E2E_FINGERPRINT,
                "comment": "laptop",
                "added": "2030-01-31T12:30:00.5Z",
            }],
            "totp": {"enrolled": true, "recovery_codes_left": 2},
            "notices": {"email": "alice@example.test", "notify": "instant", "receipts": true},
        })
    );
    let text = json.to_string();
    for secret in ["argon2", "JBSWY3DPEHPK3PXP", &"a".repeat(64), "token_epoch"] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
}

#[test]
fn recipients_keys_are_labelled_by_account() {
    let keys = RecipientE2eKeys {
        account: name("bob"),
        keys: vec![E2eKey::new(E2E, "", datetime!(2030-01-31 12:00 UTC)).unwrap()],
    };
    let none = RecipientE2eKeys {
        account: name("carol"),
        keys: Vec::new(),
    };
    let json = to_json(&[&keys, &none].map(RecipientKeysView::from));
    assert_eq!(
        json,
        json!([
            {"account": "bob", "keys": [{
                "recipient": E2E,
                "fingerprint": E2E_FINGERPRINT,
                "comment": "",
                "added": "2030-01-31T12:00:00Z",
            }]},
            {"account": "carol", "keys": []},
        ])
    );
}

#[test]
fn the_default_factor_set_is_an_empty_list() {
    let mut account = alice();
    account.access.factors = FactorSet::default();
    account.password_hash = None;
    account.totp = None;
    let json = to_json(&AccountView::from(&account));
    assert_eq!(json["require"], json!([]));
    assert_eq!(json["has_password"], false);
    assert_eq!(
        json["totp"],
        json!({"enrolled": false, "recovery_codes_left": 0})
    );
}

#[test]
fn limits_read_are_limits_sent_back() {
    let limits = LimitsView::from(&alice().access.limits);
    let back: LimitsView = serde_json::from_value(to_json(&limits)).unwrap();
    assert_eq!(back, limits);
    // In a request, a field left out is no limit; an unknown field is refused.
    let partial: LimitsView = serde_json::from_value(json!({"quota_files": 5})).unwrap();
    assert_eq!(partial.quota_files, Some(5));
    assert_eq!(partial.max_file_size, None);
    assert!(serde_json::from_value::<LimitsView>(json!({"quota": 5})).is_err());
}

#[test]
fn groups_and_routes() {
    let group = Group {
        name: name("team"),
        members: vec![name("bob"), name("carol")],
    };
    assert_eq!(
        to_json(&GroupView::from(&group)),
        json!({"name": "team", "members": ["bob", "carol"]})
    );
    let route = Route {
        from: name("alice"),
        to: name("team"),
        effect: RouteEffect::Allow,
        require_e2e: true,
    };
    let view = RouteView::from(&route);
    assert_eq!(
        to_json(&view),
        json!({"from": "alice", "to": "team", "effect": "allow", "require_e2e": true})
    );
    let back: RouteView = serde_json::from_value(to_json(&view)).unwrap();
    assert_eq!(back, view);
    // As a request body, the flag may be left out: no requirement.
    let plain: RouteView =
        serde_json::from_value(json!({"from": "alice", "to": "team", "effect": "deny"})).unwrap();
    assert!(!plain.require_e2e);
}

fn event() -> Event {
    Event {
        id: "0190f3a2-7b1c-7def-8abc-0123456789ab".parse().unwrap(),
        time: datetime!(2030-01-31 12:00:00.25 UTC),
        kind: EventKind::Login,
        actor: "alice".to_owned(),
        source: None,
        protocol: Protocol::Sftp,
        object: "alice".to_owned(),
        outcome: Outcome::Refused,
        detail: "password: wrong password".to_owned(),
    }
}

#[test]
fn an_event_writes_every_field_and_null_for_no_source() {
    assert_eq!(
        to_json(&EventView::from(&event())),
        json!({
            "id": "0190f3a2-7b1c-7def-8abc-0123456789ab",
            "time": "2030-01-31T12:00:00.25Z",
            "kind": "login",
            "actor": "alice",
            "source": null,
            "protocol": "sftp",
            "object": "alice",
            "outcome": "refused",
            "detail": "password: wrong password",
        })
    );
}

#[test]
fn bans_say_whether_they_are_in_force() {
    let ban = Ban {
        subject: BanSubject::parse("account:alice").unwrap(),
        until: datetime!(2030-01-31 13:00 UTC),
        level: 2,
        reason: "too many refused logins".to_owned(),
        created: datetime!(2030-01-31 12:00 UTC),
    };
    let expect = |active: bool| {
        json!({
            "subject": "account:alice",
            "active": active,
            "until": "2030-01-31T13:00:00Z",
            "level": 2,
            "reason": "too many refused logins",
            "created": "2030-01-31T12:00:00Z",
        })
    };
    assert_eq!(
        to_json(&BanView::new(&ban, datetime!(2030-01-31 12:30 UTC))),
        expect(true)
    );
    assert_eq!(
        to_json(&BanView::from((&ban, datetime!(2030-01-31 13:00 UTC)))),
        expect(false)
    );
}

#[test]
fn sessions_and_deliveries() {
    let node = NodeId::parse("0b6c3c2e-51a4-4c4e-9f0e-2d1f5d0f3a11").unwrap();
    let session = SessionInfo {
        node: Some(node),
        id: 7,
        account: name("alice"),
        source: Some("192.0.2.7:50000".to_owned()),
        protocol: Protocol::Https,
        started: datetime!(2030-01-31 12:00 UTC),
        token_epoch: 0,
    };
    assert_eq!(
        to_json(&SessionView::from(&session)),
        json!({
            "id": "0b6c3c2e-51a4-4c4e-9f0e-2d1f5d0f3a11:7",
            "node": "0b6c3c2e-51a4-4c4e-9f0e-2d1f5d0f3a11",
            "account": "alice",
            "source": "192.0.2.7:50000",
            "protocol": "https",
            "started": "2030-01-31T12:00:00Z",
        })
    );
    // A session of a process that is no node: its number alone.
    let alone = SessionInfo {
        node: None,
        source: None,
        ..session
    };
    assert_eq!(
        to_json(&SessionView::from(&alone)),
        json!({
            "id": "7",
            "node": null,
            "account": "alice",
            "source": null,
            "protocol": "https",
            "started": "2030-01-31T12:00:00Z",
        })
    );
    let id = DeliveryId::new();
    let delivery = Delivery {
        id,
        batch_id: id,
        sender: name("alice"),
        recipient: name("bob"),
        target: name("team"),
        name: FileName::parse("report.pdf").unwrap(),
        size: 3,
        sha256: "ab".repeat(32),
        blob_id: BlobId::new(),
        state: DeliveryState::PickedUp,
        created: datetime!(2030-01-31 12:00 UTC),
        updated: datetime!(2030-01-31 12:05 UTC),
        e2e: true,
    };
    assert_eq!(
        to_json(&DeliveryView::from(&delivery)),
        json!({
            "id": id.to_string(),
            "sender": "alice",
            "recipient": "bob",
            "target": "team",
            "name": "report.pdf",
            "size": 3,
            "sha256": "ab".repeat(32),
            "state": "picked-up",
            "created": "2030-01-31T12:00:00Z",
            "updated": "2030-01-31T12:05:00Z",
            "e2e": true,
        })
    );
}

#[test]
fn the_chain_verdict_is_structured() {
    let head = ChainHead {
        seq: 7,
        hash: "cd".repeat(32),
        time: datetime!(2030-01-31 12:00 UTC),
        events: 7,
    };
    let checkpoint = Checkpoint::parse(&format!("7:{}", "cd".repeat(32))).unwrap();
    let report = ChainReport {
        legacy: 1,
        checked: 7,
        head: Some(head),
        broken: None,
        checkpoint: Some((checkpoint.clone(), CheckpointStatus::Found)),
    };
    assert_eq!(
        to_json(&VerifyView::from(&report)),
        json!({
            "intact": true,
            "checked": 7,
            "legacy_events": 1,
            "head": {
                "seq": 7,
                "hash": "cd".repeat(32),
                "events": 7,
                "time": "2030-01-31T12:00:00Z",
                "checkpoint": format!("7:{}", "cd".repeat(32)),
            },
            "broken": null,
            "checkpoints": [{"checkpoint": checkpoint.to_string(), "status": "found"}],
        })
    );
    // A checkpoint not found makes the verdict false although no event is broken.
    let mismatch = VerifyView::new(&report, &[(checkpoint, CheckpointStatus::Mismatch)]);
    assert!(!mismatch.intact);
    assert_eq!(mismatch.checkpoints[0].status, "mismatch");
}

#[test]
fn times_are_utc() {
    assert_eq!(
        rfc3339(datetime!(2030-01-31 13:00:00 +01:00)),
        "2030-01-31T12:00:00Z"
    );
}

/// The properties of a schema and the ones it requires.
fn schema_of<T: PartialSchema>() -> (Value, Vec<String>) {
    let schema = to_json(&T::schema());
    let required = schema["required"]
        .as_array()
        .map(|r| r.iter().map(|v| v.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default();
    (schema["properties"].clone(), required)
}

#[test]
fn schemas_require_every_field_of_an_answer() {
    fn check<T: PartialSchema + serde::Serialize>(value: &T) {
        let (properties, required) = schema_of::<T>();
        let json = to_json(value);
        let fields: Vec<&String> = json.as_object().unwrap().keys().collect();
        let documented: Vec<&String> = properties.as_object().unwrap().keys().collect();
        assert_eq!(fields.len(), documented.len(), "{json} vs {properties}");
        for field in fields {
            assert!(required.contains(field), "{field} is not required");
            assert!(
                properties[field]["description"].is_string(),
                "{field} has no description"
            );
        }
    }
    check(&AccountView::from(&alice()));
    check(&EventView::from(&event()));
    check(&RightsView::from(&Rights::default()));
    check(&TotpView::from(None));
    check(&E2eKeyView::from(&alice().e2e_keys[0]));
    check(&RecipientKeysView::from(&RecipientE2eKeys {
        account: name("bob"),
        keys: Vec::new(),
    }));
    check(&UsageView::from(&mailroom_core::OwnUsage {
        limits: alice().access.limits,
        inbox: mailroom_core::InboxUsage {
            bytes: 12,
            files: 1,
        },
    }));
    check(&OwnSessionView::from(&mailroom_core::OwnSession {
        info: mailroom_core::SessionInfo {
            node: None,
            id: 7,
            account: name("alice"),
            source: Some("192.0.2.1:5000".to_owned()),
            protocol: mailroom_core::Protocol::Https,
            started: datetime!(2030-01-31 12:00 UTC),
            token_epoch: 0,
        },
        current: true,
    }));
    // Times are marked as such.
    let (properties, _) = schema_of::<AccountView>();
    assert_eq!(properties["created"]["format"], "date-time");
    let (properties, _) = schema_of::<EventView>();
    assert_eq!(properties["time"]["format"], "date-time");
}

#[test]
fn an_api_key_shows_everything_but_its_secret_and_its_secret_once() {
    let key = mailroom_core::ApiKeyInfo {
        id: "0123456789abcdef0123456789abcdef".to_owned(),
        account: name("alice"),
        label: "backup agent".to_owned(),
        scopes: mailroom_core::KeyScopes::parse("receive").unwrap(),
        created: datetime!(2030-01-31 12:00 UTC),
        expires: Some(datetime!(2030-04-30 12:00 UTC)),
        last_used: None,
    };
    let view = ApiKeyView::from(&key);
    assert_eq!(
        to_json(&view),
        json!({
            "id": "0123456789abcdef0123456789abcdef",
            "account": "alice",
            "label": "backup agent",
            "scopes": ["receive"],
            "created": "2030-01-31T12:00:00Z",
            "expires": "2030-04-30T12:00:00Z",
            "last_used": null,
        })
    );
    let secret = Secret::new(format!("mrk_{}_{}", key.id, "ab".repeat(32)));
    let made = to_json(&NewApiKeyView::new(&key, &secret));
    assert_eq!(made["secret"], json!(secret.expose()));
    assert_eq!(made["key"], to_json(&view));
    // Every field always written, described and required, times marked as such.
    let (properties, required) = schema_of::<ApiKeyView>();
    let fields = to_json(&view);
    for field in fields.as_object().unwrap().keys() {
        assert!(required.contains(field), "{field} is not required");
        assert!(properties[field]["description"].is_string(), "{field}");
    }
    assert_eq!(properties["created"]["format"], "date-time");
}
