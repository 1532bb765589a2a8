//! Fuzz target: the core's parsers of client names, `VirtualPath::parse_bytes` (every path
//! from every protocol) and `FileName::parse` (every file name), with `AccountName::parse`,
//! which both lean on.
//!
//! Beyond "never panics, never hangs" it checks that what parses is canonical: a path renders
//! to text that parses back to the same path (as bytes and as text, the two doors agree), a
//! file name is kept exactly as sent and fits its limit, and a collision-suffixed name
//! (`FileName::with_suffix`, what the Hub stores when a name is taken) is itself a valid name.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mailroom_core::{AccountName, FileName, MAX_FILE_NAME, MAX_PATH, VirtualPath};

fuzz_target!(|data: &[u8]| {
    let parsed = VirtualPath::parse_bytes(data);
    if let Ok(text) = std::str::from_utf8(data) {
        // The text door and the byte door decide alike.
        let by_text = VirtualPath::parse(text);
        match (&parsed, &by_text) {
            (Ok(a), Ok(b)) => assert_eq!(a, b),
            (Err(a), Err(b)) => assert_eq!(a.kind(), b.kind()),
            _ => panic!("parse and parse_bytes disagree on {text:?}"),
        }
        check_file_name(text);
        if let Ok(name) = AccountName::parse(text) {
            assert_eq!(name.as_str(), text);
            assert_eq!(AccountName::parse(&name.to_string()).ok(), Some(name));
        }
    } else {
        assert!(parsed.is_err(), "bytes that are not UTF-8 parsed as a path");
    }
    if let Ok(path) = parsed {
        assert!(data.len() <= MAX_PATH);
        let rendered = path.to_string();
        assert!(rendered.starts_with('/'));
        let again = VirtualPath::parse(&rendered)
            .unwrap_or_else(|err| panic!("{rendered:?} does not parse back: {err}"));
        assert_eq!(again, path, "{rendered:?} parses back to another path");
        assert_eq!(again.to_string(), rendered);
        // One level up is still a path, and the root is the top.
        let parent = path.parent();
        assert_eq!(VirtualPath::parse(&parent.to_string()).ok(), Some(parent));
    }
});

fn check_file_name(text: &str) {
    let Ok(name) = FileName::parse(text) else {
        return;
    };
    // Kept exactly as sent: never rewritten, never normalised behind the client's back.
    assert_eq!(name.as_str(), text);
    assert!(text.len() <= MAX_FILE_NAME);
    assert!(!text.contains('/'));
    // A file name is one component: under a folder it makes a file path with that name.
    let path = VirtualPath::parse(&format!("/outbox/bob/{text}")).map(|p| p.to_string());
    assert_eq!(path.ok(), Some(format!("/outbox/bob/{text}")));
    for n in [2, 10, u32::MAX] {
        let suffixed = name.with_suffix(n);
        assert!(suffixed.as_str().len() <= MAX_FILE_NAME, "{suffixed:?}");
        assert_eq!(
            FileName::parse(suffixed.as_str()).ok().as_ref(),
            Some(&suffixed),
            "with_suffix({n}) of {text:?} is not a valid name"
        );
    }
}
