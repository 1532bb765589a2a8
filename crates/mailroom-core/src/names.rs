//! Names that come from outside: account and group names, and file names.
//!
//! Each is a newtype built only by its `parse`, so an API that takes one can rely on it. The
//! rules are strict on purpose: a name that a human cannot tell apart from another (Unicode
//! look-alikes built from invisible or direction-changing characters, or a different
//! normalisation form) is refused rather than stored.

use std::fmt;

use unicode_normalization::{UnicodeNormalization, is_nfc};

use crate::error::{CoreError, Result};

/// Longest account or group name, in bytes.
pub const MAX_ACCOUNT_NAME: usize = 64;
/// Longest file name, in bytes of UTF-8 (the common file-system limit).
pub const MAX_FILE_NAME: usize = 255;

/// The name of an account or a group: `[a-z0-9][a-z0-9._-]*`, at most 64 bytes.
///
/// Accounts and groups share one namespace because both appear as `/outbox/<name>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AccountName(String);

impl AccountName {
    /// Parses a name, refusing anything outside the rule with a sentence that says why.
    pub fn parse(input: &str) -> Result<Self> {
        if input.is_empty() {
            return Err(CoreError::invalid("a name cannot be empty"));
        }
        if input.len() > MAX_ACCOUNT_NAME {
            return Err(CoreError::invalid(format!(
                "a name is at most {MAX_ACCOUNT_NAME} characters"
            )));
        }
        let mut chars = input.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        let rest_ok = chars.all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '_' || c == '-'
        });
        if !first_ok || !rest_ok || input.ends_with('.') {
            return Err(CoreError::invalid(format!(
                "{:?} is not a valid name: use lower-case letters, digits, '.', '_' and '-', starting with a letter or digit",
                truncate_for_message(input)
            )));
        }
        Ok(AccountName(input.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AccountName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A file name inside a mailbox: one path component, NFC-normalised UTF-8, at most 255 bytes,
/// with no control, invisible or direction-changing characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileName(String);

impl FileName {
    /// Parses one path component as a file name.
    pub fn parse(input: &str) -> Result<Self> {
        if input.is_empty() {
            return Err(CoreError::invalid("a file name cannot be empty"));
        }
        if input == "." || input == ".." {
            return Err(CoreError::invalid(format!("{input:?} is not a file name")));
        }
        if input.len() > MAX_FILE_NAME {
            return Err(CoreError::invalid(format!(
                "file name is {} bytes long; the limit is {MAX_FILE_NAME}",
                input.len()
            )));
        }
        if input.contains('\u{FFFD}') {
            // Protocol decoders turn bytes that are not UTF-8 into U+FFFD; such a name was
            // not what the client sent, so it is refused rather than stored altered.
            return Err(CoreError::invalid(
                "file name is not valid UTF-8 (or contains U+FFFD)",
            ));
        }
        if let Some(c) = input.chars().find(|&c| forbidden_char(c)) {
            return Err(CoreError::invalid(format!(
                "file name contains the forbidden character U+{:04X}",
                c as u32
            )));
        }
        if input.starts_with(char::is_whitespace) || input.ends_with(char::is_whitespace) {
            return Err(CoreError::invalid(
                "file name cannot start or end with white space",
            ));
        }
        if !is_nfc(input) {
            // Two names that render alike must not be two files: we keep one canonical form
            // and refuse the other rather than silently rewrite what the client asked for.
            let nfc: String = input.nfc().collect();
            return Err(CoreError::invalid(format!(
                "file name is not in Unicode NFC form; send it as {:?}",
                truncate_for_message(&nfc)
            )));
        }
        Ok(FileName(input.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name with a collision suffix: `report.pdf` and 2 give `report~2.pdf`.
    ///
    /// The suffix goes before the last extension so the file keeps its type; a name that
    /// would grow past the limit is shortened in its stem. An extension so long that the
    /// suffix cannot fit beside it is not kept apart: the suffix then ends the name.
    pub fn with_suffix(&self, n: u32) -> FileName {
        let suffix = format!("~{n}");
        let (stem, ext) = match self.0.rfind('.') {
            Some(dot) if dot > 0 && self.0.len() - dot + suffix.len() <= MAX_FILE_NAME => {
                self.0.split_at(dot)
            }
            _ => (self.0.as_str(), ""),
        };
        let mut stem = stem.to_owned();
        while stem.len() + suffix.len() + ext.len() > MAX_FILE_NAME {
            stem.pop();
        }
        FileName(format!("{stem}{suffix}{ext}"))
    }
}

impl fmt::Display for FileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Characters never allowed in a file name: path separators, controls, and invisible or
/// direction-changing format characters used to disguise names.
fn forbidden_char(c: char) -> bool {
    matches!(c, '/' | '\\' | '\0')
        || c.is_control()
        || matches!(c as u32,
            0x00AD            // soft hyphen
            | 0x034F          // combining grapheme joiner
            | 0x061C          // Arabic letter mark
            | 0x115F | 0x1160 // Hangul fillers
            | 0x17B4 | 0x17B5
            | 0x180B..=0x180E // Mongolian selectors and vowel separator
            | 0x200B..=0x200F // zero-width space/joiners, LRM, RLM
            | 0x2028..=0x202E // line/paragraph separators, bidi embeddings and overrides
            | 0x2060..=0x206F // word joiner, invisible operators, bidi isolates
            | 0x3164          // Hangul filler
            | 0xFE00..=0xFE0F // variation selectors
            | 0xFEFF          // byte-order mark
            | 0xFFA0
            | 0xFFF9..=0xFFFB
            | 0xE0000..=0xE0FFF // tags and supplementary variation selectors
        )
}

/// Cuts a hostile string down before it is echoed in a message.
fn truncate_for_message(input: &str) -> String {
    input.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_account(input: &str, ok: bool) {
        assert_eq!(AccountName::parse(input).is_ok(), ok, "{input:?}");
    }

    fn check_file(input: &str, ok: bool) {
        assert_eq!(FileName::parse(input).is_ok(), ok, "{input:?}");
    }

    #[test]
    fn account_names() {
        check_account("alice", true);
        check_account("a1.b_c-d", true);
        check_account("0day", true);
        check_account("", false);
        check_account("Alice", false);
        check_account("-x", false);
        check_account("x.", false);
        check_account("a b", false);
        check_account("a/b", false);
        check_account("élan", false);
        check_account(&"a".repeat(64), true);
        check_account(&"a".repeat(65), false);
    }

    #[test]
    fn file_names() {
        check_file("report.pdf", true);
        check_file("naïve café.txt", true);
        check_file(".hidden", true);
        check_file("", false);
        check_file(".", false);
        check_file("..", false);
        check_file("a/b", false);
        check_file("a\\b", false);
        check_file("a\0b", false);
        check_file("a\nb", false);
        check_file("a\u{7f}", false);
        check_file("evil\u{202E}fdp.exe", false);
        check_file("zero\u{200B}width", false);
        check_file("bom\u{FEFF}", false);
        check_file("lossy\u{FFFD}.txt", false);
        check_file(" lead", false);
        check_file("trail ", false);
        check_file("cafe\u{301}.txt", false); // NFD form of café
        check_file(&"x".repeat(255), true);
        check_file(&"x".repeat(256), false);
    }

    #[test]
    fn suffixes_keep_the_extension() {
        let name = FileName::parse("report.pdf").unwrap();
        assert_eq!(name.with_suffix(2).as_str(), "report~2.pdf");
        let name = FileName::parse("README").unwrap();
        assert_eq!(name.with_suffix(3).as_str(), "README~3");
        let name = FileName::parse(".bashrc").unwrap();
        assert_eq!(name.with_suffix(2).as_str(), ".bashrc~2");
        let long = FileName::parse(&format!("{}.txt", "y".repeat(251))).unwrap();
        let suffixed = long.with_suffix(12);
        assert!(suffixed.as_str().len() <= MAX_FILE_NAME);
        assert!(suffixed.as_str().ends_with("~12.txt"));
    }

    /// Found by fuzzing (fuzz/fuzz_targets/core_names.rs): a name whose extension leaves no
    /// room for the suffix emptied its stem and then looped for ever, which a client could
    /// cause by sending such a name twice (the Hub suffixes the second one).
    #[test]
    fn a_suffix_fits_beside_an_extension_of_any_length() {
        for text in [
            format!("a.{}", "x".repeat(253)),
            format!("+\u{345}.{}", "e".repeat(250)),
            format!("ab.{}", "x".repeat(240)),
            format!(".{}", "x".repeat(254)),
        ] {
            let name = FileName::parse(&text).unwrap();
            for n in [2, 10, 12345, u32::MAX] {
                let suffixed = name.with_suffix(n);
                assert!(suffixed.as_str().len() <= MAX_FILE_NAME, "{suffixed}");
                assert!(suffixed.as_str().contains(&format!("~{n}")), "{suffixed}");
                assert_eq!(FileName::parse(suffixed.as_str()).unwrap(), suffixed);
            }
        }
        // Where the suffix fits beside the extension, the extension is still kept.
        let name = FileName::parse(&format!("ab.{}", "x".repeat(240))).unwrap();
        assert!(name.with_suffix(2).as_str().starts_with("ab~2."));
    }
}
