//! The one path normaliser: every client path from every protocol becomes a [`VirtualPath`]
//! here and nowhere else.
//!
//! The tree a client sees is fixed and shallow (docs/design.md, "The tree a client sees"):
//! `/`, `/inbox|outbox|sent`, `/<area>/<account-or-group>`, `/<area>/<name>/<file>`. A path is
//! resolved against `/` (SFTP has no working directory beyond the home, which is `/`),
//! `.` and empty components are dropped, `..` climbs one level and is refused above the root,
//! and each component is then parsed by the strict name rules of [`crate::names`]. Nothing
//! here touches a file system: the tree is virtual, so a symlink or a host path cannot exist.

use std::fmt;

use crate::error::{CoreError, ErrorKind, Result};
use crate::names::{AccountName, FileName};

/// Longest path accepted from a client, in bytes.
pub const MAX_PATH: usize = 1024;

/// The three areas under the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Area {
    /// `/inbox`: deliveries addressed to me, by sender.
    Inbox,
    /// `/outbox`: write to send; lists what I sent that is not yet picked up.
    Outbox,
    /// `/sent`: read-only receipts of everything I sent.
    Sent,
}

impl Area {
    /// Every area, in the order listings show them.
    pub const ALL: [Area; 3] = [Area::Inbox, Area::Outbox, Area::Sent];

    /// The folder name of the area.
    pub fn as_str(self) -> &'static str {
        match self {
            Area::Inbox => "inbox",
            Area::Outbox => "outbox",
            Area::Sent => "sent",
        }
    }

    fn parse(component: &str) -> Result<Area> {
        match component {
            "inbox" => Ok(Area::Inbox),
            "outbox" => Ok(Area::Outbox),
            "sent" => Ok(Area::Sent),
            _ => Err(CoreError::not_found(
                "no such folder: the tree holds /inbox, /outbox and /sent",
            )),
        }
    }
}

/// A normalised, checked path in the virtual tree.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum VirtualPath {
    /// `/`
    Root,
    /// `/inbox`, `/outbox` or `/sent`.
    Area(Area),
    /// `/<area>/<name>`: a sender (inbox) or a recipient or group (outbox, sent).
    Folder(Area, AccountName),
    /// `/<area>/<name>/<file>`.
    File(Area, AccountName, FileName),
}

impl VirtualPath {
    /// Parses and normalises a client path. Relative paths are taken from `/`.
    pub fn parse(input: &str) -> Result<VirtualPath> {
        if input.len() > MAX_PATH {
            return Err(CoreError::invalid(format!(
                "path is {} bytes long; the limit is {MAX_PATH}",
                input.len()
            )));
        }
        if input.contains('\0') {
            return Err(CoreError::invalid("path contains a NUL byte"));
        }
        let mut parts: Vec<&str> = Vec::new();
        for component in input.split('/') {
            match component {
                "" | "." => {}
                ".." => {
                    if parts.pop().is_none() {
                        return Err(CoreError::new(
                            ErrorKind::PermissionDenied,
                            "path climbs above the root with '..'",
                        ));
                    }
                }
                other => parts.push(other),
            }
        }
        Self::from_components(&parts)
    }

    /// Parses raw bytes from the wire: anything that is not UTF-8 is refused.
    pub fn parse_bytes(input: &[u8]) -> Result<VirtualPath> {
        if input.len() > MAX_PATH {
            return Err(CoreError::invalid(format!(
                "path is {} bytes long; the limit is {MAX_PATH}",
                input.len()
            )));
        }
        let text = std::str::from_utf8(input)
            .map_err(|_| CoreError::invalid("path is not valid UTF-8"))?;
        Self::parse(text)
    }

    fn from_components(parts: &[&str]) -> Result<VirtualPath> {
        match parts {
            [] => Ok(VirtualPath::Root),
            [area] => Ok(VirtualPath::Area(Area::parse(area)?)),
            [area, name] => Ok(VirtualPath::Folder(
                Area::parse(area)?,
                AccountName::parse(name)?,
            )),
            [area, name, file] => Ok(VirtualPath::File(
                Area::parse(area)?,
                AccountName::parse(name)?,
                FileName::parse(file)?,
            )),
            _ => Err(CoreError::not_found(
                "no such folder: the tree is /<inbox|outbox|sent>/<name>/<file>",
            )),
        }
    }

    /// The path one level up; the root is its own parent.
    pub fn parent(&self) -> VirtualPath {
        match self {
            VirtualPath::Root | VirtualPath::Area(_) => VirtualPath::Root,
            VirtualPath::Folder(area, _) => VirtualPath::Area(*area),
            VirtualPath::File(area, name, _) => VirtualPath::Folder(*area, name.clone()),
        }
    }

    /// Whether the path names a folder (everything but a file).
    pub fn is_dir(&self) -> bool {
        !matches!(self, VirtualPath::File(..))
    }

    /// Refuses a file where a folder is needed: files have no children to list.
    pub fn require_folder(&self) -> Result<()> {
        if self.is_dir() {
            Ok(())
        } else {
            Err(CoreError::new(
                ErrorKind::NotFound,
                "not a folder: this is a file",
            ))
        }
    }
}

impl fmt::Display for VirtualPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VirtualPath::Root => f.write_str("/"),
            VirtualPath::Area(area) => write!(f, "/{}", area.as_str()),
            VirtualPath::Folder(area, name) => write!(f, "/{}/{name}", area.as_str()),
            VirtualPath::File(area, name, file) => {
                write!(f, "/{}/{name}/{file}", area.as_str())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expect: std::result::Result<&str, ErrorKind>) {
        let got = VirtualPath::parse(input)
            .map(|p| p.to_string())
            .map_err(|e| e.kind());
        assert_eq!(got.as_deref().map_err(|k| *k), expect, "{input:?}");
    }

    #[test]
    fn normalises() {
        check("", Ok("/"));
        check("/", Ok("/"));
        check(".", Ok("/"));
        check("//inbox//", Ok("/inbox"));
        check("outbox/bob", Ok("/outbox/bob"));
        check("/outbox/bob/./a.txt", Ok("/outbox/bob/a.txt"));
        check("/outbox/carol/../bob/a.txt", Ok("/outbox/bob/a.txt"));
        check("/inbox/..", Ok("/"));
        check("/sent/bob/r.pdf@0011aabb", Ok("/sent/bob/r.pdf@0011aabb"));
    }

    #[test]
    fn refuses_hostile_paths() {
        check("..", Err(ErrorKind::PermissionDenied));
        check("/../etc/passwd", Err(ErrorKind::PermissionDenied));
        check("/inbox/../../x", Err(ErrorKind::PermissionDenied));
        check("/inbox/bob/a\0b", Err(ErrorKind::InvalidName));
        check("/etc/passwd", Err(ErrorKind::NotFound));
        check("/outbox/bob/a/b", Err(ErrorKind::NotFound));
        check("/outbox/Bob/x", Err(ErrorKind::InvalidName));
        check("/outbox/bob/a\u{202E}b", Err(ErrorKind::InvalidName));
        check("/outbox/bob/a\nb", Err(ErrorKind::InvalidName));
        check(
            &format!("/outbox/bob/{}", "x".repeat(256)),
            Err(ErrorKind::InvalidName),
        );
        check(
            &format!("/{}", "./".repeat(600)),
            Err(ErrorKind::InvalidName),
        );
        assert_eq!(
            VirtualPath::parse_bytes(b"/outbox/bob/\xff\xfe").map_err(|e| e.kind()),
            Err(ErrorKind::InvalidName)
        );
    }

    #[test]
    fn parents() {
        let p = VirtualPath::parse("/outbox/bob/a.txt").unwrap();
        assert_eq!(p.parent().to_string(), "/outbox/bob");
        assert_eq!(p.parent().parent().to_string(), "/outbox");
        assert_eq!(p.parent().parent().parent(), VirtualPath::Root);
    }
}
