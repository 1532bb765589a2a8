//! How entries of the virtual tree look in FTP listings: `LIST` in the `ls -l` form every
//! client parses, `NLST` names, and the machine-readable facts of `MLSD`/`MLST` (RFC 3659 §7).

use mailroom_core::Entry;
use time::OffsetDateTime;
use time::macros::format_description;

/// The facts `MLST`/`MLSD` offer (`FEAT` lists them; all are always sent).
pub(crate) const MLST_FACTS: &str = "type*;size*;modify*;perm*;";

/// One `LIST` line: `drwxr-xr-x 1 mailroom mailroom 0 Nov 23 18:56 name`; the year replaces
/// the time for entries older than six months, as `ls` does.
pub(crate) fn list_line(entry: &Entry, now: OffsetDateTime) -> String {
    let mode = match (entry.is_dir, entry.writable) {
        (true, true) => "drwxr-xr-x",
        (true, false) => "dr-xr-xr-x",
        (false, true) => "-rw-r--r--",
        (false, false) => "-r--r--r--",
    };
    let recent = (now - entry.modified).whole_days().abs() < 183;
    let when = if recent {
        entry.modified.format(format_description!(
            "[month repr:short] [day] [hour]:[minute]"
        ))
    } else {
        entry
            .modified
            .format(format_description!("[month repr:short] [day]  [year]"))
    }
    .unwrap_or_default();
    format!(
        "{mode} 1 mailroom mailroom {:>12} {when} {}\r\n",
        entry.size, entry.name
    )
}

/// The facts of one entry for `MLSD`/`MLST`: `type=file;size=5;modify=…;perm=r; name`.
pub(crate) fn facts(entry: &Entry, name: &str) -> String {
    let modify = entry
        .modified
        .format(format_description!(
            "[year][month][day][hour][minute][second]"
        ))
        .unwrap_or_default();
    let (kind, perm) = match (entry.is_dir, entry.writable) {
        (true, true) => ("dir", "elc"),
        (true, false) => ("dir", "el"),
        (false, true) => ("file", "rd"),
        (false, false) => ("file", "r"),
    };
    format!(
        "type={kind};size={};modify={modify};perm={perm}; {name}",
        entry.size
    )
}

/// `MDTM`'s answer: the modification time in UTC, `YYYYMMDDHHMMSS`.
pub(crate) fn mdtm(entry: &Entry) -> String {
    entry
        .modified
        .to_offset(time::UtcOffset::UTC)
        .format(format_description!(
            "[year][month][day][hour][minute][second]"
        ))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn entry(is_dir: bool, writable: bool) -> Entry {
        Entry {
            name: "report.pdf".into(),
            is_dir,
            size: if is_dir { 0 } else { 1234 },
            modified: datetime!(2026-11-23 18:56:07 UTC),
            writable,
        }
    }

    #[test]
    fn list_lines_look_like_ls() {
        let now = datetime!(2026-11-24 00:00 UTC);
        assert_eq!(
            list_line(&entry(false, false), now),
            "-r--r--r-- 1 mailroom mailroom         1234 Nov 23 18:56 report.pdf\r\n"
        );
        let later = datetime!(2027-11-24 00:00 UTC);
        assert!(list_line(&entry(true, true), later).starts_with("drwxr-xr-x "));
        assert!(list_line(&entry(true, true), later).contains("Nov 23  2026 report.pdf"));
    }

    #[test]
    fn facts_follow_rfc_3659() {
        assert_eq!(
            facts(&entry(false, true), "report.pdf"),
            "type=file;size=1234;modify=20261123185607;perm=rd; report.pdf"
        );
        assert!(facts(&entry(true, false), "x").starts_with("type=dir;size=0;"));
        assert_eq!(mdtm(&entry(false, false)), "20261123185607");
    }
}
