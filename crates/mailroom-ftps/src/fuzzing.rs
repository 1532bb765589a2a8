//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz), behind the `fuzzing` feature:
//! the FTP command line parser and the parsers of its arguments, which are private to their
//! modules, run on arbitrary input, with the properties each must keep asserted here.
//!
//! Not an API: nothing outside `fuzz/` calls it, and it changes no behaviour (the feature only
//! adds this module). It owns no parser; it drives the real ones.

use mailroom_core::{AccountName, Area, VirtualPath};

use crate::control::{self, MAX_LINE};
use crate::session;

/// A control connection's bytes, cut into lines as `Control::read` cuts them (at most
/// [`MAX_LINE`] bytes, up to and with the `\n`; a longer line or a missing end stops), each
/// line through the command parser and its argument through the argument parsers.
///
/// Checks: a verb is empty or one to four upper-case ASCII letters; the argument is the end
/// of the line as sent, never more; a path argument resolves from any folder or is refused,
/// and what resolves renders and parses back; `PORT` and `EPRT` addresses written back parse
/// to the same address; and a reply built from the argument's text is lines that each end in
/// CRLF with no other CR or LF, so a client's text can never forge a reply line.
pub fn ftp_command(data: &[u8]) {
    let mut rest = data;
    while !rest.is_empty() {
        let window = &rest[..rest.len().min(MAX_LINE)];
        let Some(end) = window.iter().position(|&byte| byte == b'\n') else {
            // Too long, or the peer closed mid-line: the connection ends either way.
            return;
        };
        let (line, after) = rest.split_at(end + 1);
        command_line(line);
        rest = after;
    }
}

fn command_line(line: &[u8]) {
    let command = control::parse(line);
    assert!(command.verb.len() <= 4);
    assert!(command.verb.bytes().all(|b| b.is_ascii_uppercase()));
    assert!(command.arg.len() < line.len());
    let body = line.strip_suffix(b"\n").unwrap_or(line);
    let body = body.strip_suffix(b"\r").unwrap_or(body);
    assert!(
        body.ends_with(&command.arg),
        "the argument is not what was sent"
    );
    let text = command.text();

    let outbox = AccountName::parse("bob").map(|bob| VirtualPath::Folder(Area::Outbox, bob));
    for cwd in [Ok(VirtualPath::Root), outbox].into_iter().flatten() {
        if let Ok(path) = session::resolve_path(&cwd, &command.arg) {
            let rendered = path.to_string();
            assert_eq!(VirtualPath::parse(&rendered).ok().as_ref(), Some(&path));
        }
    }

    if let Some(address) = session::parse_port(&text) {
        let std::net::IpAddr::V4(ip) = address.ip() else {
            panic!("PORT gave an IPv6 address");
        };
        let [a, b, c, d] = ip.octets();
        let port = address.port();
        let again = format!("{a},{b},{c},{d},{},{}", port >> 8, port & 0xff);
        assert_eq!(session::parse_port(&again), Some(address));
    }
    if let Some(address) = session::parse_eprt(&text) {
        let family = if address.is_ipv4() { 1 } else { 2 };
        let again = format!("|{family}|{}|{}|", address.ip(), address.port());
        assert_eq!(session::parse_eprt(&again), Some(address));
    }

    let reply = control::format_reply(550, &String::from_utf8_lossy(&command.arg));
    let lines: Vec<&str> = reply.split_inclusive("\r\n").collect();
    assert_eq!(lines.concat(), reply);
    for (i, line) in lines.iter().enumerate() {
        let content = line
            .strip_suffix("\r\n")
            .unwrap_or_else(|| panic!("a reply line without CRLF: {line:?}"));
        assert!(!content.contains(['\r', '\n']), "{content:?}");
        if i + 1 == lines.len() {
            assert!(content.starts_with("550 "), "{content:?}");
        } else if i == 0 {
            assert!(content.starts_with("550-"), "{content:?}");
        } else {
            assert!(content.starts_with(' '), "{content:?}");
        }
    }
}
