//! What an operator gives to reach an S3 bucket ([`S3Options`]), checking its URL, and
//! building the `object_store` client from it and the environment.
//!
//! The secret never leaves this module in text: [`S3Options`]' `Debug` masks it, and an error
//! message built here is scrubbed of it. It does not talk to the bucket (`open` in `mod.rs`
//! does).

use std::fmt;
use std::io;

use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::{BackoffConfig, ClientConfigKey, RetryConfig};

/// How to reach the bucket of an [`crate::S3BlobStore`].
///
/// Every field left unset comes from the environment as the AWS tools read it
/// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT`,
/// `AWS_ALLOW_HTTP`, …); a field that is set wins over the environment.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct S3Options {
    /// `s3://bucket` or `s3://bucket/prefix`: the bucket, and the folder of it the store owns
    /// (letters, digits, `.`, `_` and `-`, in segments separated by `/`).
    pub url: String,
    /// The service's address for S3-compatible storage (`https://s3.example.net:9000`);
    /// requests then name the bucket in the path (path-style). Unset: AWS itself.
    pub endpoint: Option<String>,
    /// The region (`eu-central-1`); unset and not in the environment, `us-east-1`.
    pub region: Option<String>,
    /// The access key id.
    pub access_key_id: Option<String>,
    /// The secret access key; never printed.
    pub secret_access_key: Option<String>,
    /// Allows an `http://` endpoint (no TLS): only for a service on loopback or in tests.
    pub allow_http: bool,
}

impl fmt::Debug for S3Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Options")
            .field("url", &self.url)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "***"),
            )
            .field("allow_http", &self.allow_http)
            .finish()
    }
}

/// The bucket and the prefix an `s3://` URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Location {
    /// The bucket.
    pub(crate) bucket: String,
    /// The folder in the bucket, without slashes at either end; empty for the whole bucket.
    pub(crate) prefix: String,
}

/// The longest prefix accepted, leaving room under S3's 1024-byte keys for
/// `/objects/<aa>/<id>`.
const MAX_PREFIX_LEN: usize = 512;

/// The longest one request may take, body included: a part of [`crate::PART_SIZE`] at
/// about 600 kbit/s.
const REQUEST_TIMEOUT: &str = "120s";

/// How often a failed request is tried again, and for how long at most: enough to ride out
/// a brief outage or a throttled burst, short enough that a wrong endpoint fails `open` in
/// seconds rather than minutes.
fn retry_config() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig::default(),
        max_retries: 5,
        retry_timeout: std::time::Duration::from_secs(60),
    }
}

impl Location {
    /// Parses `s3://bucket[/prefix][/]`; the error says what is wrong without repeating the
    /// URL (which might hold something that was not meant to be printed).
    pub(crate) fn parse(url: &str) -> io::Result<Location> {
        let Some(rest) = url.strip_prefix("s3://") else {
            return Err(invalid("the S3 URL must start with s3://"));
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if !is_bucket_name(bucket) {
            return Err(invalid(
                "the S3 URL must name a bucket after s3:// (3 to 63 lower-case letters, digits, \
                 dots and hyphens, beginning and ending with a letter or digit)",
            ));
        }
        let prefix = prefix.strip_suffix('/').unwrap_or(prefix);
        if !prefix.is_empty() && !is_prefix(prefix) {
            return Err(invalid(
                "the S3 URL's prefix must be segments of letters, digits, '.', '_' and '-' \
                 separated by single '/' (no '.' or '..' segment, at most 512 characters)",
            ));
        }
        Ok(Location {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
        })
    }
}

/// The S3 client for `location` with `options` over the environment. Path-style requests
/// whenever an endpoint is known (S3-compatible services rarely have per-bucket host names).
pub(crate) fn client(options: &S3Options, location: &Location) -> io::Result<AmazonS3> {
    let mut builder = AmazonS3Builder::from_env().with_bucket_name(&location.bucket);
    if let Some(endpoint) = &options.endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    if let Some(region) = &options.region {
        builder = builder.with_region(region);
    }
    if let Some(key_id) = &options.access_key_id {
        builder = builder.with_access_key_id(key_id);
    }
    if let Some(secret) = &options.secret_access_key {
        builder = builder.with_secret_access_key(secret);
    }
    if options.allow_http {
        builder = builder.with_allow_http(true);
    }
    if builder
        .get_config_value(&AmazonS3ConfigKey::Endpoint)
        .is_some()
    {
        builder = builder.with_virtual_hosted_style_request(false);
    }
    // The client's default of 30 s for a whole request would fail every part of an upload
    // over a link slower than about 2 Mbit/s; `AWS_TIMEOUT` still wins.
    if std::env::var_os("AWS_TIMEOUT").is_none() {
        builder = builder.with_config(
            AmazonS3ConfigKey::Client(ClientConfigKey::Timeout),
            REQUEST_TIMEOUT,
        );
    }
    builder
        .with_retry(retry_config())
        .build()
        .map_err(|err| invalid(&scrub(&format!("S3 settings: {err}"), options)))
}

/// `text` with the secret of `options` masked, should a message ever repeat it.
pub(crate) fn scrub(text: &str, options: &S3Options) -> String {
    match options.secret_access_key.as_deref() {
        Some(secret) if !secret.is_empty() => text.replace(secret, "***"),
        _ => text.to_owned(),
    }
}

/// An error for a setting the operator must fix.
fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message.to_owned())
}

/// S3's rules for bucket names (the strict ones of new buckets).
fn is_bucket_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let edge_ok = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    (3..=63).contains(&bytes.len())
        && edge_ok(bytes.first())
        && edge_ok(bytes.last())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'.' || *b == b'-')
        && !name.contains("..")
}

/// Whether `prefix` is safe segments joined by single slashes.
fn is_prefix(prefix: &str) -> bool {
    prefix.len() <= MAX_PREFIX_LEN
        && prefix.split('/').all(|segment| {
            !segment.is_empty()
                && segment != "."
                && segment != ".."
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap (CONTRIBUTING.md).
mod tests {
    use super::*;

    fn check(url: &str, expect: Option<(&str, &str)>) {
        let parsed = Location::parse(url).ok();
        let parsed = parsed
            .as_ref()
            .map(|location| (location.bucket.as_str(), location.prefix.as_str()));
        assert_eq!(parsed, expect, "{url}");
    }

    #[test]
    fn parses_bucket_and_prefix() {
        check("s3://mailroom-test", Some(("mailroom-test", "")));
        check("s3://mailroom-test/", Some(("mailroom-test", "")));
        check("s3://b.example/hub-1", Some(("b.example", "hub-1")));
        check("s3://bkt/a/b_c/D.e/", Some(("bkt", "a/b_c/D.e")));
        for bad in [
            "",
            "mailroom",
            "http://bucket/x",
            "S3://bucket",
            "s3://",
            "s3://ab",
            "s3://Bucket",
            "s3://-bucket",
            "s3://bucket-",
            "s3://bu..cket",
            "s3://bu_cket",
            "s3://key:secret@bucket",
            "s3://bucket//x",
            "s3://bucket/a//b",
            "s3://bucket/../x",
            "s3://bucket/a/./b",
            "s3://bucket/a b",
            "s3://bucket/a?b",
            "s3://bucket/a%2fb",
            "s3://bucket/ä",
        ] {
            check(bad, None);
        }
        let long = format!("s3://bucket/{}", "a".repeat(MAX_PREFIX_LEN + 1));
        check(&long, None);
    }

    #[test]
    fn errors_do_not_repeat_the_url() {
        let err = Location::parse("s3://key:hunter2@bucket/x").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn debug_and_scrub_hide_the_secret() {
        let options = S3Options {
            url: "s3://bucket".into(),
            access_key_id: Some("AKIDEXAMPLE".into()),
            secret_access_key: Some("wJalrXUtnFEMI".into()),
            ..S3Options::default()
        };
        let debug = format!("{options:?}");
        assert!(debug.contains("AKIDEXAMPLE") && !debug.contains("wJalrXUtnFEMI"));
        assert_eq!(scrub("a wJalrXUtnFEMI b", &options), "a *** b");
    }
}
