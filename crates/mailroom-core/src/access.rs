//! Who may log in and what an account may do: the factors an account must present, the
//! networks it may come from, its TOTP enrolment, its rights on the tree and its limits, and
//! the bans the defender places.
//!
//! Plain data and the pure checks on it; the Hub applies them, the stores keep them.

use std::fmt;
use std::net::IpAddr;

pub(crate) use ipnet::IpNet;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::error::{CoreError, ErrorKind, Result};
use crate::names::AccountName;
use crate::ports::InboxUsage;
use crate::secret::Secret;

/// One way of proving who you are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Factor {
    /// An SSH public key (signature checked by the protocol layer).
    PublicKey,
    /// The account's password (Argon2id).
    Password,
    /// A time-based one-time code (RFC 6238) or a recovery code.
    Totp,
    /// An X.509 client certificate from the client CA whose subject names the account.
    Certificate,
}

impl Factor {
    /// Every factor, in the order they are listed.
    pub const ALL: [Factor; 4] = [
        Factor::PublicKey,
        Factor::Password,
        Factor::Totp,
        Factor::Certificate,
    ];

    /// Stable label, as in `--require publickey,password,totp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Factor::PublicKey => "publickey",
            Factor::Password => "password",
            Factor::Totp => "totp",
            Factor::Certificate => "certificate",
        }
    }

    /// Parses the label written by [`Factor::as_str`].
    pub fn parse(input: &str) -> Result<Self> {
        Factor::ALL
            .into_iter()
            .find(|f| f.as_str() == input.trim())
            .ok_or_else(|| {
                CoreError::invalid(format!(
                    "unknown factor {:?}: use publickey, password, totp or certificate",
                    input.chars().take(40).collect::<String>()
                ))
            })
    }
}

impl fmt::Display for Factor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The factors an account must present at login, all of them. Empty means the default: any
/// one of a password or a public key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FactorSet(Vec<Factor>);

impl FactorSet {
    /// A set of these factors (sorted, without repeats).
    pub fn new(factors: impl IntoIterator<Item = Factor>) -> Self {
        let mut factors: Vec<Factor> = factors.into_iter().collect();
        factors.sort();
        factors.dedup();
        FactorSet(factors)
    }

    /// Parses a comma-separated list such as `publickey,password,totp`; `any` or an empty
    /// string is the default set.
    pub fn parse(input: &str) -> Result<Self> {
        let input = input.trim();
        if input.is_empty() || input == "any" {
            return Ok(FactorSet::default());
        }
        let factors = input
            .split(',')
            .map(Factor::parse)
            .collect::<Result<Vec<_>>>()?;
        let set = FactorSet::new(factors);
        if set.0 == [Factor::Totp] {
            return Err(CoreError::invalid(
                "totp alone is not enough: require it together with a password, a key or a certificate",
            ));
        }
        Ok(set)
    }

    /// The required factors; empty for the default.
    pub fn factors(&self) -> &[Factor] {
        &self.0
    }

    /// The required factors' names (`password`, `publickey`, …); empty for the default.
    pub fn labels(&self) -> Vec<&'static str> {
        self.0.iter().map(|f| f.as_str()).collect()
    }

    /// Whether this is the default (a password or a key).
    pub fn is_default(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `factor` is one this set could use.
    pub fn uses(&self, factor: Factor) -> bool {
        if self.0.is_empty() {
            matches!(factor, Factor::Password | Factor::PublicKey)
        } else {
            self.0.contains(&factor)
        }
    }

    /// Whether the factors passed so far complete the set.
    pub fn satisfied_by(&self, passed: &[Factor]) -> bool {
        if self.0.is_empty() {
            passed
                .iter()
                .any(|f| matches!(f, Factor::Password | Factor::PublicKey))
        } else {
            self.0.iter().all(|f| passed.contains(f))
        }
    }

    /// The factors still missing after `passed` (for the default set: password and publickey
    /// while neither has passed).
    pub fn remaining(&self, passed: &[Factor]) -> Vec<Factor> {
        if self.satisfied_by(passed) {
            return Vec::new();
        }
        if self.0.is_empty() {
            return vec![Factor::PublicKey, Factor::Password];
        }
        self.0
            .iter()
            .copied()
            .filter(|f| !passed.contains(f))
            .collect()
    }
}

impl fmt::Display for FactorSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("password or publickey");
        }
        f.write_str(&self.labels().join("+"))
    }
}

/// Parses a comma-separated list of networks (`10.0.0.0/8,192.0.2.7`); a bare address is a
/// network of one.
pub fn parse_networks(input: &str) -> Result<Vec<IpNet>> {
    input
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(parse_network)
        .collect()
}

/// Parses one network in CIDR form, or a bare address.
pub fn parse_network(input: &str) -> Result<IpNet> {
    let input = input.trim();
    if let Ok(net) = input.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    input.parse::<IpAddr>().map(IpNet::from).map_err(|_| {
        CoreError::invalid(format!(
            "{:?} is not a network: use CIDR like 10.0.0.0/8 or a single address",
            input.chars().take(60).collect::<String>()
        ))
    })
}

/// Whether `address` lies in one of `networks`. IPv4-mapped IPv6 addresses count as IPv4.
pub fn in_networks(networks: &[IpNet], address: IpAddr) -> bool {
    let address = canonical(address);
    networks.iter().any(|net| net.contains(&address))
}

/// An address with IPv4-mapped IPv6 (`::ffff:a.b.c.d`) turned back into IPv4.
pub(crate) fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// An account's TOTP enrolment.
#[derive(Clone, PartialEq, Eq)]
pub struct TotpEnrolment {
    /// The shared secret, base32 (RFC 4648, no padding) as authenticator apps read it.
    pub secret: Secret<String>,
    /// The time step of the last code accepted; a code of this step or an earlier one is
    /// refused, so a code works once.
    pub last_step: Option<u64>,
    /// SHA-256 (hex) of each unused recovery code.
    pub recovery: Vec<String>,
}

impl fmt::Debug for TotpEnrolment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TotpEnrolment")
            .field("secret", &self.secret)
            .field("last_step", &self.last_step)
            .field("recovery", &self.recovery.len())
            .finish()
    }
}

/// The SHA-256 under which a recovery code is kept. Codes are random (80 bits), so a plain
/// hash is enough; spaces, dashes and case do not matter.
pub fn recovery_code_hash(code: &str) -> String {
    let normalised: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    hex::encode(Sha256::digest(normalised.as_bytes()))
}

/// What an account may do in the tree. All on by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rights {
    /// May write to `/outbox`.
    pub send: bool,
    /// May be sent files (a sender addressing it is refused otherwise).
    pub receive: bool,
    /// May delete (acknowledge) files in its inbox.
    pub delete: bool,
    /// May recall files it sent.
    pub recall: bool,
}

impl Default for Rights {
    fn default() -> Self {
        Rights {
            send: true,
            receive: true,
            delete: true,
            recall: true,
        }
    }
}

impl Rights {
    /// Parses a comma-separated list of the rights granted (`send,receive`); `all` grants
    /// every right, `none` none.
    pub fn parse(input: &str) -> Result<Self> {
        let input = input.trim();
        match input {
            "all" => return Ok(Rights::default()),
            "none" | "" => {
                return Ok(Rights {
                    send: false,
                    receive: false,
                    delete: false,
                    recall: false,
                });
            }
            _ => {}
        }
        let mut rights = Rights {
            send: false,
            receive: false,
            delete: false,
            recall: false,
        };
        for item in input.split(',').map(str::trim) {
            match item {
                "send" => rights.send = true,
                "receive" => rights.receive = true,
                "delete" => rights.delete = true,
                "recall" => rights.recall = true,
                other => {
                    return Err(CoreError::invalid(format!(
                        "unknown right {:?}: use send, receive, delete, recall, all or none",
                        other.chars().take(40).collect::<String>()
                    )));
                }
            }
        }
        Ok(rights)
    }
}

impl fmt::Display for Rights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut granted = Vec::new();
        for (on, label) in [
            (self.send, "send"),
            (self.receive, "receive"),
            (self.delete, "delete"),
            (self.recall, "recall"),
        ] {
            if on {
                granted.push(label);
            }
        }
        if granted.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&granted.join(","))
        }
    }
}

/// An account's limits. `None` means no limit of that kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// File-name globs (`*`, `?`, case-insensitive) an upload's name must match one of;
    /// empty allows every name.
    pub name_allow: Vec<String>,
    /// File-name globs no upload's name may match; deny wins over allow.
    pub name_deny: Vec<String>,
    /// Largest file this account may send, in bytes.
    pub max_file_size: Option<u64>,
    /// Most bytes waiting in this account's inbox (live deliveries).
    pub quota_bytes: Option<u64>,
    /// Most files waiting in this account's inbox (live deliveries).
    pub quota_files: Option<u64>,
    /// Days a delivery to this account stays before it expires.
    pub retention_days: Option<u32>,
    /// Most sessions this account may have open at once.
    pub max_sessions: Option<u32>,
}

/// The share of a quota, in percent, at which operators are warned (`quota.warning`).
pub(crate) const QUOTA_WARNING_PERCENT: u64 = 90;

/// Whether adding one file of `size` bytes to an inbox holding `bytes` in `files` takes it
/// across [`QUOTA_WARNING_PERCENT`] of one of its quotas; the sentence that says so. Crossing
/// only: an inbox already past the mark warns no more until it has gone below it again.
pub(crate) fn quota_warning(limits: &Limits, bytes: u64, files: u64, size: u64) -> Option<String> {
    let mark = |quota: u64| {
        u64::try_from(u128::from(quota) * u128::from(QUOTA_WARNING_PERCENT) / 100).unwrap_or(quota)
    };
    let crosses = |used: u64, added: u64, quota: u64| {
        let mark = mark(quota);
        used < mark && used.saturating_add(added) >= mark
    };
    if let Some(quota) = limits.quota_bytes
        && crosses(bytes, size, quota)
    {
        return Some(format!(
            "at {QUOTA_WARNING_PERCENT} % of its byte quota: {} of {}",
            format_size(bytes.saturating_add(size)),
            format_size(quota)
        ));
    }
    if let Some(quota) = limits.quota_files
        && crosses(files, 1, quota)
    {
        return Some(format!(
            "at {QUOTA_WARNING_PERCENT} % of its file quota: {} of {quota} files",
            files.saturating_add(1)
        ));
    }
    None
}

/// How an account may log in and what it may do: everything beyond its name, kind and
/// credentials.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessPolicy {
    /// The factors a login must present.
    pub factors: FactorSet,
    /// Source networks the account may log in from; empty allows any.
    pub networks: Vec<IpNet>,
    /// The subject common name a client certificate must carry to prove this account (the
    /// account name when `None`).
    pub certificate_subject: Option<String>,
    /// What the account may do.
    pub rights: Rights,
    /// Its limits.
    pub limits: Limits,
    /// How it hears of files: "you have files" mails and receipts.
    pub notices: Notices,
}

/// How an account hears of files by e-mail (sent only while `[smtp]` names a server).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Notices {
    /// Where its mails go; required for any of them.
    pub email: Option<String>,
    /// When it is told of new files in its inbox.
    pub mode: NotifyMode,
    /// Whether it is told when a file it sent is picked up or acknowledged.
    pub receipts: bool,
}

/// When an account is told of new files in its inbox.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum NotifyMode {
    /// Never.
    #[default]
    Off,
    /// One mail per file, as it is delivered.
    Instant,
    /// One mail per digest period listing the files waiting.
    Digest,
}

impl NotifyMode {
    /// Stable label.
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyMode::Off => "off",
            NotifyMode::Instant => "instant",
            NotifyMode::Digest => "digest",
        }
    }

    /// Parses the label written by [`NotifyMode::as_str`].
    pub fn parse(input: &str) -> Result<NotifyMode> {
        match input.trim() {
            "off" => Ok(NotifyMode::Off),
            "instant" => Ok(NotifyMode::Instant),
            "digest" => Ok(NotifyMode::Digest),
            other => Err(CoreError::invalid(format!(
                "unknown notification mode {other:?} (instant, digest or off)"
            ))),
        }
    }
}

impl fmt::Display for NotifyMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Checks an e-mail address as the hub takes it: `local@domain`, at most 254 characters, no
/// spaces, control characters, display name or angle brackets. Returns it trimmed.
pub fn parse_email(input: &str) -> Result<String> {
    let text = input.trim();
    let well_formed = text.len() <= 254
        && !text
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "<>\"(),;:[]\\".contains(c))
        && text.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && !domain.is_empty()
                && domain.contains('.')
                && !domain.contains('@')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        });
    if well_formed {
        Ok(text.to_owned())
    } else {
        Err(CoreError::invalid(format!(
            "{text:?} is not an e-mail address (local@domain)"
        )))
    }
}

/// Whether a glob (`*` any run, `?` one character; case-insensitive) matches a name.
pub fn glob_matches(glob: &str, name: &str) -> bool {
    let pattern: Vec<char> = glob.to_lowercase().chars().collect();
    let text: Vec<char> = name.to_lowercase().chars().collect();
    // Iterative wildcard match with one backtrack point: linear in practice, no recursion.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

/// Checks a glob list given by an administrator.
pub fn parse_globs(input: &str) -> Result<Vec<String>> {
    input
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|glob| {
            if glob.len() > 255 || glob.contains('/') || glob.chars().any(char::is_control) {
                Err(CoreError::invalid(format!(
                    "{:?} is not a file-name glob",
                    glob.chars().take(60).collect::<String>()
                )))
            } else {
                Ok(glob.to_owned())
            }
        })
        .collect()
}

/// Parses a byte size: plain bytes (`1048576`) or a number with a binary unit, `K`, `M`, `G`
/// or `T` (also written `KiB`, `MiB`, …; case-insensitive): `512K`, `10M`, `1G`, `1.5G`.
pub fn parse_size(input: &str) -> Result<u64> {
    let trimmed = input.trim();
    let bad = || {
        CoreError::invalid(format!(
            "{:?} is not a size: use bytes or a number with K, M, G or T (e.g. 10M)",
            trimmed.chars().take(40).collect::<String>()
        ))
    };
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        "t" | "tib" => 40,
        _ => return Err(bad()),
    };
    if number.is_empty() {
        return Err(bad());
    }
    if let Ok(whole) = number.parse::<u64>() {
        return whole.checked_mul(1u64 << shift).ok_or_else(bad);
    }
    // A fraction (`1.5G`) needs a unit to be a whole number of bytes.
    let value: f64 = number.parse().map_err(|_| bad())?;
    let bytes = value * (1u64 << shift) as f64;
    if shift == 0 || !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes.round() as u64)
}

/// A byte count for people: `512 bytes`, `1.0 KiB`, `10.0 MiB`, `1.5 GiB`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return if bytes == 1 {
            "1 byte".to_owned()
        } else {
            format!("{bytes} bytes")
        };
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

impl Limits {
    /// Why `name` may not be sent by this account, or `None` when the file-name rules allow
    /// it. Deny wins over allow.
    pub fn name_refusal(&self, name: &str) -> Option<String> {
        if let Some(glob) = self.name_deny.iter().find(|g| glob_matches(g, name)) {
            return Some(format!("the name {name} matches the denied pattern {glob}"));
        }
        if !self.name_allow.is_empty() && !self.name_allow.iter().any(|g| glob_matches(g, name)) {
            return Some(format!(
                "the name {name} matches none of the allowed patterns {}",
                self.name_allow.join(", ")
            ));
        }
        None
    }
}

/// One recipient's inbox as the quota sees it: its limits and what waits in it.
#[derive(Debug, Clone, Copy)]
pub struct Mailbox<'a> {
    /// The recipient.
    pub account: &'a AccountName,
    /// Its limits (`quota_bytes`, `quota_files`).
    pub limits: &'a Limits,
    /// Its live deliveries.
    pub usage: InboxUsage,
}

impl Mailbox<'_> {
    /// Whether one more file of `size` bytes fits; the refusal names the account and the
    /// limit. A mailbox at or over a quota is full, even for an empty file.
    pub fn admit(&self, size: u64) -> Result<()> {
        let name = self.account;
        if let Some(files) = self.limits.quota_files
            && self.usage.files >= files
        {
            return Err(quota(format!(
                "{name}'s mailbox is full: {} of {files} files waiting",
                self.usage.files
            )));
        }
        if let Some(bytes) = self.limits.quota_bytes {
            if self.usage.bytes >= bytes {
                return Err(quota(format!(
                    "{name}'s mailbox is full: {} of {} used",
                    format_size(self.usage.bytes),
                    format_size(bytes)
                )));
            }
            if self.usage.bytes.saturating_add(size) > bytes {
                return Err(self.overflow(bytes));
            }
        }
        Ok(())
    }

    fn overflow(&self, quota_bytes: u64) -> CoreError {
        quota(format!(
            "the file does not fit in {}'s mailbox: {} of {} used",
            self.account,
            format_size(self.usage.bytes),
            format_size(quota_bytes)
        ))
    }
}

/// The most bytes one upload may write, and the refusal a write past it gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ByteLimit {
    /// The largest size the file may reach.
    pub bytes: u64,
    /// The error of a write that would pass it (kind QuotaExceeded).
    pub error: CoreError,
}

/// Decides the byte limit of an upload when it opens: the smallest of the sender's largest
/// file and each recipient's free quota. A full recipient mailbox (bytes or files) refuses
/// the upload at once. `None` means no limit applies.
pub(crate) fn upload_limit(
    sender: &AccountName,
    sender_limits: &Limits,
    mailboxes: &[Mailbox<'_>],
) -> Result<Option<ByteLimit>> {
    let mut limit = sender_limits.max_file_size.map(|bytes| ByteLimit {
        bytes,
        error: quota(format!(
            "the file is larger than {sender}'s limit of {} per file",
            format_size(bytes)
        )),
    });
    for mailbox in mailboxes {
        mailbox.admit(0)?;
        let Some(quota_bytes) = mailbox.limits.quota_bytes else {
            continue;
        };
        // Invariant: `admit(0)` refused a mailbox whose usage reached its quota.
        let free = quota_bytes.saturating_sub(mailbox.usage.bytes);
        if limit.as_ref().is_none_or(|l| free < l.bytes) {
            limit = Some(ByteLimit {
                bytes: free,
                error: mailbox.overflow(quota_bytes),
            });
        }
    }
    Ok(limit)
}

fn quota(message: String) -> CoreError {
    CoreError::new(ErrorKind::QuotaExceeded, message)
}

/// What a ban applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BanSubject {
    /// Every connection from this address.
    Address(IpAddr),
    /// Every login as this account, from anywhere but the safe list.
    Account(AccountName),
}

impl BanSubject {
    /// Stable key: the address, or `account:<name>`.
    pub fn key(&self) -> String {
        match self {
            BanSubject::Address(ip) => ip.to_string(),
            BanSubject::Account(name) => format!("account:{name}"),
        }
    }

    /// Parses the key written by [`BanSubject::key`].
    pub fn parse(input: &str) -> Result<Self> {
        let input = input.trim();
        if let Some(name) = input.strip_prefix("account:") {
            return AccountName::parse(name).map(BanSubject::Account);
        }
        input
            .parse::<IpAddr>()
            .map(|ip| BanSubject::Address(canonical(ip)))
            .map_err(|_| {
                CoreError::invalid(format!(
                    "{:?} is neither an IP address nor account:<name>",
                    input.chars().take(60).collect::<String>()
                ))
            })
    }
}

impl fmt::Display for BanSubject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key())
    }
}

/// A ban: logins from an address, or as an account, are refused until `until`. Kept after it
/// ends so that the next ban of the same subject lasts longer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ban {
    /// What is banned.
    pub subject: BanSubject,
    /// When the ban ends.
    pub until: OffsetDateTime,
    /// How many times this subject has been banned (1 for the first ban).
    pub level: u32,
    /// Why, for the operator.
    pub reason: String,
    /// When this ban was placed.
    pub created: OffsetDateTime,
}

impl Ban {
    /// Whether the ban is in force at `now`.
    pub fn active(&self, now: OffsetDateTime) -> bool {
        now < self.until
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factor_sets() {
        let any = FactorSet::default();
        assert!(any.satisfied_by(&[Factor::Password]));
        assert!(any.satisfied_by(&[Factor::PublicKey]));
        assert!(!any.satisfied_by(&[Factor::Totp]));
        let three = FactorSet::parse("totp, password,publickey").unwrap();
        assert_eq!(three.to_string(), "publickey+password+totp");
        assert!(!three.satisfied_by(&[Factor::Password, Factor::PublicKey]));
        assert_eq!(
            three.remaining(&[Factor::PublicKey]),
            [Factor::Password, Factor::Totp]
        );
        assert!(three.satisfied_by(&[Factor::Totp, Factor::Password, Factor::PublicKey]));
        assert!(FactorSet::parse("totp").is_err());
        assert!(FactorSet::parse("password,retina").is_err());
        assert!(FactorSet::parse("any").unwrap().is_default());
    }

    #[test]
    fn networks() {
        let nets = parse_networks("10.0.0.0/8, 192.0.2.7,2001:db8::/32").unwrap();
        assert!(in_networks(&nets, "10.1.2.3".parse().unwrap()));
        assert!(in_networks(&nets, "192.0.2.7".parse().unwrap()));
        assert!(!in_networks(&nets, "192.0.2.8".parse().unwrap()));
        assert!(in_networks(&nets, "::ffff:10.9.9.9".parse().unwrap()));
        assert!(in_networks(&nets, "2001:db8::1".parse().unwrap()));
        assert!(parse_networks("10.0.0.0/33").is_err());
        assert!(parse_networks("example.com").is_err());
    }

    #[test]
    fn globs() {
        assert!(glob_matches("*.exe", "setup.EXE"));
        assert!(glob_matches("report-????.csv", "report-2026.csv"));
        assert!(!glob_matches("report-????.csv", "report-26.csv"));
        assert!(glob_matches("*", ""));
        assert!(glob_matches("a*b*c", "aXXbYYc"));
        assert!(!glob_matches("a*b*c", "aXXbYY"));
        assert!(!glob_matches("*.exe", "exe.txt"));
        // Pathological patterns stay fast.
        let long = "a".repeat(200);
        assert!(!glob_matches("*a*a*a*a*a*a*a*a*b", &long));
        assert!(parse_globs("*.exe,../x").is_err());
    }

    #[test]
    fn rights_and_bans() {
        let r = Rights::parse("send,recall").unwrap();
        assert!(r.send && r.recall && !r.receive && !r.delete);
        assert_eq!(r.to_string(), "send,recall");
        assert_eq!(Rights::parse("all").unwrap(), Rights::default());
        assert!(Rights::parse("send,fly").is_err());
        for key in ["192.0.2.1", "2001:db8::1", "account:alice"] {
            assert_eq!(BanSubject::parse(key).unwrap().key(), key);
        }
        assert_eq!(
            BanSubject::parse("::ffff:192.0.2.1").unwrap().key(),
            "192.0.2.1"
        );
        assert!(BanSubject::parse("account:../x").is_err());
    }

    #[test]
    fn sizes_parse_and_print() {
        for (input, expect) in [
            ("0", Some(0)),
            ("1048576", Some(1 << 20)),
            ("512K", Some(512 << 10)),
            ("10M", Some(10 << 20)),
            ("10m", Some(10 << 20)),
            ("1G", Some(1 << 30)),
            ("1GiB", Some(1 << 30)),
            ("1.5G", Some(3 << 29)),
            ("2T", Some(2 << 40)),
            (" 7 B ", Some(7)),
            ("", None),
            ("M", None),
            ("10X", None),
            ("-1", None),
            ("1.5", None),
            ("99999999999T", None),
        ] {
            assert_eq!(parse_size(input).ok(), expect, "{input:?}");
        }
        assert_eq!(format_size(0), "0 bytes");
        assert_eq!(format_size(1023), "1023 bytes");
        assert_eq!(format_size(1 << 20), "1.0 MiB");
        assert_eq!(format_size(3 << 29), "1.5 GiB");
    }

    #[test]
    fn name_rules_deny_wins() {
        let limits = Limits {
            name_allow: vec!["*.csv".into(), "*.pdf".into()],
            name_deny: vec!["secret*".into()],
            ..Limits::default()
        };
        assert_eq!(limits.name_refusal("prices.CSV"), None);
        let deny = limits.name_refusal("secret.csv").unwrap();
        assert!(deny.contains("denied pattern secret*"), "{deny}");
        let allow = limits.name_refusal("setup.exe").unwrap();
        assert!(
            allow.contains("none of the allowed patterns *.csv, *.pdf"),
            "{allow}"
        );
        assert_eq!(Limits::default().name_refusal("anything"), None);
    }

    fn mailbox<'a>(
        name: &'a AccountName,
        limits: &'a Limits,
        bytes: u64,
        files: u64,
    ) -> Mailbox<'a> {
        Mailbox {
            account: name,
            limits,
            usage: InboxUsage { bytes, files },
        }
    }

    #[test]
    fn upload_limit_is_the_smallest_and_says_why() {
        let alice = AccountName::parse("alice").unwrap();
        let bob = AccountName::parse("bob").unwrap();
        let carol = AccountName::parse("carol").unwrap();
        let none = Limits::default();
        assert_eq!(upload_limit(&alice, &none, &[]).unwrap(), None);

        let sender = Limits {
            max_file_size: Some(10 << 20),
            ..Limits::default()
        };
        let quota_1m = Limits {
            quota_bytes: Some(1 << 20),
            ..Limits::default()
        };
        let quota_100m = Limits {
            quota_bytes: Some(100 << 20),
            ..Limits::default()
        };
        // The sender's own limit when no recipient is tighter.
        let limit = upload_limit(&alice, &sender, &[mailbox(&bob, &quota_100m, 0, 0)])
            .unwrap()
            .unwrap();
        assert_eq!(limit.bytes, 10 << 20);
        assert_eq!(limit.error.kind(), ErrorKind::QuotaExceeded);
        assert!(limit.error.message().contains("alice's limit of 10.0 MiB"));
        // Bob's free space (1 MiB - 256 KiB) is the smallest.
        let limit = upload_limit(
            &alice,
            &sender,
            &[
                mailbox(&carol, &quota_100m, 0, 0),
                mailbox(&bob, &quota_1m, 256 << 10, 3),
            ],
        )
        .unwrap()
        .unwrap();
        assert_eq!(limit.bytes, 768 << 10);
        assert_eq!(
            limit.error.message(),
            "the file does not fit in bob's mailbox: 256.0 KiB of 1.0 MiB used"
        );
        // A full inbox refuses at open, by bytes or by files.
        let err = upload_limit(&alice, &none, &[mailbox(&bob, &quota_1m, 1 << 20, 1)]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::QuotaExceeded);
        assert_eq!(
            err.message(),
            "bob's mailbox is full: 1.0 MiB of 1.0 MiB used"
        );
        let two_files = Limits {
            quota_files: Some(2),
            ..Limits::default()
        };
        let err = upload_limit(&alice, &none, &[mailbox(&bob, &two_files, 10, 2)]).unwrap_err();
        assert_eq!(err.message(), "bob's mailbox is full: 2 of 2 files waiting");
        assert!(
            upload_limit(&alice, &none, &[mailbox(&bob, &two_files, 10, 1)])
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn admit_rechecks_the_final_size() {
        let bob = AccountName::parse("bob").unwrap();
        let quota_1m = Limits {
            quota_bytes: Some(1 << 20),
            ..Limits::default()
        };
        let inbox = mailbox(&bob, &quota_1m, 600 << 10, 1);
        assert!(inbox.admit(424 << 10).is_ok(), "exactly full is allowed");
        let err = inbox.admit((424 << 10) + 1).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::QuotaExceeded);
        assert!(err.message().contains("bob's mailbox"), "{}", err.message());
    }

    #[test]
    fn recovery_codes_ignore_formatting() {
        assert_eq!(
            recovery_code_hash("ABCD-efgh 1234"),
            recovery_code_hash("abcdefgh1234")
        );
    }
}
