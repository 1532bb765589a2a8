//! The checks of the lists and the negotiation matrix: client lists × hub lists → the agreed
//! method or the refusal text.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

fn methods(keywords: &[&str]) -> Vec<Method> {
    keywords.iter().map(|k| k.parse().unwrap()).collect()
}

fn lists(supported: &[&str], default: &[&str]) -> MethodLists {
    MethodLists {
        supported: methods(supported),
        default: methods(default),
        ..MethodLists::default()
    }
}

fn with(category: Category, lists: MethodLists) -> Result<Ace, AceError> {
    let pick = |c: Category| {
        if c == category {
            lists.clone()
        } else {
            default_lists(c)
        }
    };
    Ace::new(
        &pick(Category::Authentication),
        &pick(Category::Compression),
        &pick(Category::Encryption),
    )
}

#[test]
fn the_defaults_keep_the_front_ends_as_they_were() {
    let ace = Ace::default();
    let ssh = ace.ssh().unwrap();
    assert_eq!(
        ssh.kex,
        [
            "mlkem768x25519-sha256",
            "curve25519-sha256",
            "curve25519-sha256@libssh.org"
        ]
    );
    assert_eq!(
        ssh.ciphers,
        [
            "chacha20-poly1305@openssh.com",
            "aes256-gcm@openssh.com",
            "aes128-gcm@openssh.com",
            "aes256-ctr",
            "aes128-ctr"
        ]
    );
    assert_eq!(
        ssh.macs,
        [
            "hmac-sha2-512-etm@openssh.com",
            "hmac-sha2-256-etm@openssh.com",
            "hmac-sha2-512",
            "hmac-sha2-256"
        ]
    );
    assert_eq!(ssh.compression, ["none", "zlib@openssh.com"]);
    let tls = ace.tls(Link::Https).unwrap();
    assert_eq!(tls.versions, [TlsVersion::V13, TlsVersion::V12]);
    assert_eq!(tls.suites, method::TLS_SUITES);
}

#[test]
fn unknown_and_weak_methods_are_refused_by_name() {
    let err = with(
        Category::Encryption,
        lists(&["tls", "ssh-cipher:aes128-cbc"], &["tls"]),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "[ace.encryption] supported: ssh-cipher:aes128-cbc is weaker than the hub's floor (CBC mode); remove it"
    );
    let err = with(Category::Compression, lists(&["none", "brotli"], &["none"])).unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("[ace.compression] supported: brotli is not a known compression method (known: none, zstd, gzip, ssh:zlib@openssh.com"),
        "{text}"
    );
    let err = with(Category::Encryption, lists(&["tls", "tls:1.1"], &["tls"])).unwrap_err();
    assert!(
        err.to_string()
            .contains("tls:1.1 is weaker than the hub's floor (TLS before 1.2)")
    );
    let err = with(Category::Compression, lists(&["none"], &["zstd"])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "[ace.compression] default: zstd is not in supported"
    );
    let mut auth = lists(&["password"], &["password"]);
    auth.needs_authentication = methods(&["password"]);
    let err = with(Category::Authentication, auth).unwrap_err();
    assert!(
        err.to_string().contains("only supported and default"),
        "{err}"
    );
    let mut compression = default_lists(Category::Compression);
    compression
        .needs_authentication
        .push("none".parse().unwrap());
    let err = with(Category::Compression, compression).unwrap_err();
    assert!(err.to_string().contains("none is always allowed"), "{err}");
}

#[test]
fn a_front_end_left_without_a_method_is_refused() {
    let mut encryption = default_lists(Category::Encryption);
    encryption.supported.retain(|m| m.name() != "ssh-cipher");
    let ace = with(Category::Encryption, encryption).unwrap();
    let err = ace.ssh().unwrap_err();
    assert_eq!(
        err.to_string(),
        "ssh: no cipher (ssh-cipher:…) left: add one to [ace.encryption] supported"
    );
    // Only AEAD ciphers: no MAC is needed.
    let mut encryption = default_lists(Category::Encryption);
    encryption.supported.retain(|m| {
        m.name() != "ssh-mac" && m.sub() != Some("aes256-ctr") && m.sub() != Some("aes128-ctr")
    });
    let ssh = with(Category::Encryption, encryption)
        .unwrap()
        .ssh()
        .unwrap();
    assert!(ssh.macs.is_empty());
    // TLS 1.2 without a 1.2 suite.
    let mut encryption = default_lists(Category::Encryption);
    encryption
        .supported
        .retain(|m| m.name() != "tls-suite" || m.sub().unwrap().starts_with("TLS13_"));
    let err = with(Category::Encryption, encryption)
        .unwrap()
        .tls(Link::Ftps)
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("ftps: no cipher suite left for TLS 1.2"),
        "{err}"
    );
    // TLS 1.3 only is fine.
    let mut encryption = default_lists(Category::Encryption);
    encryption.supported.retain(|m| {
        m.to_string() != "tls:1.2"
            && (m.name() != "tls-suite" || m.sub().unwrap().starts_with("TLS13_"))
    });
    let tls = with(Category::Encryption, encryption)
        .unwrap()
        .tls(Link::Https)
        .unwrap();
    assert_eq!(tls.versions, [TlsVersion::V13]);
    assert_eq!(tls.suites.len(), 3);
}

#[test]
fn zlib_before_login_is_offered_only_when_allowed_before_login() {
    let mut compression = default_lists(Category::Compression);
    compression.supported.push("ssh:zlib".parse().unwrap());
    compression
        .needs_authentication
        .push("ssh:zlib".parse().unwrap());
    let ace = with(Category::Compression, compression.clone()).unwrap();
    assert_eq!(ace.ssh().unwrap().compression, ["none", "zlib@openssh.com"]);
    compression.needs_authentication.pop();
    let ace = with(Category::Compression, compression).unwrap();
    assert_eq!(
        ace.ssh().unwrap().compression,
        ["none", "zlib@openssh.com", "zlib"]
    );
}

/// The negotiation matrix: (hub supported, hub default, hub service default, client offers,
/// service link) → the agreed method or the refusal.
#[test]
fn negotiation_matrix() {
    type Case<'a> = (
        &'a [&'a str],
        &'a [&'a str],
        &'a [&'a str],
        &'a [&'a str],
        bool,
        Result<&'a str, &'a str>,
    );
    let cases: &[Case] = &[
        // The client names nothing: the default.
        (
            &["none", "zstd", "gzip"],
            &["none"],
            &[],
            &[],
            false,
            Ok("none"),
        ),
        // The client offers the default among others: the default wins.
        (
            &["none", "zstd", "gzip"],
            &["none"],
            &[],
            &["zstd", "none"],
            false,
            Ok("none"),
        ),
        // The client cannot do the default: its first supported choice.
        (
            &["none", "zstd", "gzip"],
            &["none"],
            &[],
            &["brotli", "gzip", "zstd"],
            false,
            Ok("gzip"),
        ),
        // A service link names nothing: the service default.
        (
            &["none", "zstd", "gzip"],
            &["none"],
            &["zstd"],
            &[],
            true,
            Ok("zstd"),
        ),
        // A service link offering the service default gets it.
        (
            &["none", "zstd", "gzip"],
            &["none"],
            &["zstd"],
            &["none", "zstd"],
            true,
            Ok("zstd"),
        ),
        // No service default configured: the default.
        (&["none", "zstd"], &["none"], &[], &[], true, Ok("none")),
        // No agreement: both lists in the refusal.
        (
            &["none", "zstd"],
            &["none"],
            &[],
            &["brotli", "lz4"],
            false,
            Err(
                "no common compression method on agent: the client offered [brotli, lz4], the hub supports [none, zstd]",
            ),
        ),
        // "none" is a method like any other: a hub without it refuses a client that wants it.
        (
            &["zstd"],
            &["zstd"],
            &[],
            &["none"],
            false,
            Err(
                "no common compression method on agent: the client offered [none], the hub supports [zstd]",
            ),
        ),
        // SSH-only methods are not the agent's.
        (
            &["none", "ssh:zlib@openssh.com"],
            &["none"],
            &[],
            &["ssh:zlib@openssh.com"],
            false,
            Err(
                "no common compression method on agent: the client offered [ssh:zlib@openssh.com], the hub supports [none]",
            ),
        ),
    ];
    for (supported, default, service_default, offered, service, expected) in cases {
        let mut compression = lists(supported, default);
        compression.service_default = methods(service_default);
        let ace = with(Category::Compression, compression).unwrap();
        let got = ace
            .negotiate(
                Link::Agent,
                Category::Compression,
                &methods(offered),
                *service,
            )
            .map(|m| m.to_string())
            .map_err(|e| e.to_string());
        assert_eq!(
            got.as_deref().map_err(String::as_str),
            *expected,
            "supported {supported:?} default {default:?} service {service_default:?} offered {offered:?}"
        );
    }
}

#[test]
fn agreeing_on_all_three_and_writing_it_down() {
    let ace = Ace::default();
    let wanted = Wanted {
        authentication: methods(&["password"]),
        compression: methods(&["zstd", "none"]),
        encryption: methods(&["tls+e2e", "tls"]),
    };
    // The hub's defaults (none, tls) are offered too: the hub's preference wins.
    let agreed = ace.agree(Link::Agent, &wanted, false).unwrap();
    assert_eq!(
        agreed.to_string(),
        "authentication=password compression=none encryption=tls"
    );
    let wanted = Wanted {
        compression: methods(&["zstd"]),
        encryption: methods(&["tls+e2e"]),
        ..Wanted::default()
    };
    let agreed = ace.agree(Link::Agent, &wanted, false).unwrap();
    assert_eq!(agreed.body_coding(), Some(BodyCoding::Zstd));
    assert!(agreed.end_to_end());
    let back: Agreed = agreed.to_string().parse().unwrap();
    assert_eq!(back, agreed);
    for bad in [
        "",
        "authentication=password",
        "colour=red compression=none",
        "authentication=Password compression=none encryption=tls",
    ] {
        assert!(bad.parse::<Agreed>().is_err(), "{bad:?}");
    }
    // Public-key login is SSH's: an agent asking for it only is refused.
    let wanted = Wanted {
        authentication: methods(&["publickey"]),
        ..Wanted::default()
    };
    let err = ace.agree(Link::Agent, &wanted, false).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no common authentication method on agent: the client offered [publickey], the hub supports [password, totp, certificate, token]"
    );
}

#[test]
fn what_the_hub_publishes_per_link() {
    let published = Ace::default().published();
    assert_eq!(
        published.ssh.compression.supported,
        ["none", "ssh:zlib@openssh.com"]
    );
    assert_eq!(
        published.agent.compression.supported,
        ["none", "zstd", "gzip"]
    );
    assert_eq!(published.agent.compression.service_default, ["zstd"]);
    assert_eq!(published.agent.encryption.needs_authentication, ["tls+e2e"]);
    assert!(
        published
            .ftps
            .encryption
            .supported
            .iter()
            .all(|m| m.starts_with("tls"))
    );
    assert!(
        !published
            .ftps
            .encryption
            .supported
            .contains(&"tls+e2e".to_owned())
    );
    assert_eq!(
        published.ssh.authentication.supported,
        ["password", "publickey", "totp"]
    );
    let json = serde_json::to_value(&published).unwrap();
    assert_eq!(
        json["agent"]["encryption"]["default"],
        serde_json::json!(["tls"])
    );
}

#[test]
fn before_login_only_what_needs_no_login() {
    let ace = Ace::default();
    let zstd: Method = "zstd".parse().unwrap();
    let none: Method = "none".parse().unwrap();
    assert!(!ace.allowed_before_login(Link::Https, Category::Compression, &zstd));
    assert!(ace.allowed_before_login(Link::Https, Category::Compression, &none));
    assert!(ace.body_coding_supported(Link::Https, BodyCoding::Gzip));
    assert!(!ace.body_coding_supported(Link::Ftps, BodyCoding::Gzip));
}

#[test]
fn a_listener_narrows_its_tls_to_a_subset() {
    let ace = Ace::default();
    let tls = ace
        .tls_for(
            Link::Ftps,
            &methods(&["tls:1.3", "tls-suite:TLS13_AES_256_GCM_SHA384"]),
        )
        .unwrap();
    assert_eq!(tls.versions, [TlsVersion::V13]);
    assert_eq!(tls.suites, ["TLS13_AES_256_GCM_SHA384"]);
    for (list, message) in [
        (&["tls:1.2"][..], "ftps: no cipher suite left for TLS 1.2"),
        (
            &["zstd"][..],
            "ftps: [ftps] encryption: zstd is not a known TLS method",
        ),
        (
            &["tls+e2e"][..],
            "ftps: [ftps] encryption: tls+e2e is not a TLS version or suite",
        ),
        (
            &["tls:1.0"][..],
            "ftps: [ftps] encryption: tls:1.0 is weaker than the hub's floor (TLS before 1.2)",
        ),
    ] {
        let err = ace.tls_for(Link::Ftps, &methods(list)).unwrap_err();
        assert!(err.to_string().starts_with(message), "{list:?}: {err}");
    }
    let mut encryption = default_lists(Category::Encryption);
    encryption
        .supported
        .retain(|m| m.to_string() != "tls-suite:TLS13_AES_128_GCM_SHA256");
    let err = with(Category::Encryption, encryption)
        .unwrap()
        .tls_for(
            Link::Https,
            &methods(&["tls-suite:TLS13_AES_128_GCM_SHA256"]),
        )
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("is not in [ace.encryption] supported"),
        "{err}"
    );
}
