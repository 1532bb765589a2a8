//! A setting that is a socket address or nothing, for
//! `#[serde(with = "mailroom_net::serde_optional_address")]` on an `Option<SocketAddr>` field
//! of a [`config_section!`](crate::config_section): written as the address
//! (`"127.0.0.1:9990"`), or as `""` for none, since the file has no "unset". Used by the
//! listeners that are off until given an address (`[ftps] implicit_listen`, `[ops] listen`).
//!
//! A refusal names the text and what was expected; the configuration loader adds the key (or
//! the environment variable) it came from.

use std::net::SocketAddr;

use serde::{Deserialize, Deserializer, Serializer};

/// Writes the address, or `""` for none.
pub fn serialize<S: Serializer>(
    address: &Option<SocketAddr>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match address {
        Some(address) => serializer.collect_str(address),
        None => serializer.serialize_str(""),
    }
}

/// Reads `""` as none, else a socket address.
pub fn deserialize<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<SocketAddr>, D::Error> {
    let text = String::deserialize(deserializer)?;
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| {
        serde::de::Error::custom(format!(
            "{:?} is not an address: expected an address and port such as \"127.0.0.1:9990\", or \"\" for none",
            text.chars().take(64).collect::<String>()
        ))
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap (CONTRIBUTING.md).
mod tests {
    use serde::Serialize;

    use super::*;

    #[derive(Debug, PartialEq, Deserialize, Serialize)]
    struct Setting {
        #[serde(with = "crate::serde_optional_address")]
        listen: Option<SocketAddr>,
    }

    fn read(text: &str) -> Result<Setting, serde_json::Error> {
        serde_json::from_str(&format!("{{\"listen\": {text}}}"))
    }

    #[test]
    fn an_address_or_nothing_round_trips() {
        let some = read("\"127.0.0.1:9990\"").unwrap();
        assert_eq!(some.listen, Some(SocketAddr::from(([127, 0, 0, 1], 9990))));
        assert_eq!(
            serde_json::to_string(&some).unwrap(),
            r#"{"listen":"127.0.0.1:9990"}"#
        );
        let none = read("\"\"").unwrap();
        assert_eq!(none.listen, None);
        assert_eq!(serde_json::to_string(&none).unwrap(), r#"{"listen":""}"#);
        let v6 = read("\"[::1]:9990\"").unwrap();
        assert_eq!(v6.listen, Some("[::1]:9990".parse().unwrap()));
    }

    #[test]
    fn other_text_is_refused_with_what_was_expected() {
        for bad in ["\"9990\"", "\"127.0.0.1\"", "\"localhost:9990\""] {
            let error = read(bad).unwrap_err().to_string();
            assert!(error.contains("expected an address and port"), "{error}");
            assert!(error.contains(bad), "{error}");
        }
        assert!(read("9990").is_err());
    }
}
