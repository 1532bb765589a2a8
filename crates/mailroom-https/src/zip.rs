//! A ZIP archive written front to back in one pass, for [`crate::batch`]: entries STOREd (no
//! compression), each one's CRC-32 and sizes in a data descriptor after its bytes, and ZIP64
//! fields wherever a size, an offset or the count does not fit the classic ones. Nothing is
//! seeked or held back but the central directory's few bytes per entry, so the archive can
//! be the body of a response while it is made.
//!
//! The format is PKWARE's APPNOTE.TXT 6.3.10: local file header (4.3.7), data descriptor
//! (4.3.9), central directory header (4.3.12), ZIP64 end of central directory record and
//! locator (4.3.14, 4.3.15), end of central directory record (4.3.16), ZIP64 extended
//! information extra field (4.5.3). Each entry's size is known before its bytes are written
//! (it is the delivery's), so an entry gets a ZIP64 extra field in its local header, and with
//! it a descriptor of 8-byte sizes, exactly when it needs one; a reader that unpacks from the
//! stream alone can tell which descriptor follows. The local header's CRC-32 and sizes are
//! zero, as 4.4.4 asks when bit 3 is set. Names are UTF-8 (bit 11).
//!
//! What it does not do: compress, encrypt, or check names (the caller makes them safe).

use tokio::io::{AsyncWrite, AsyncWriteExt};

const LOCAL_HEADER: u32 = 0x0403_4b50;
const DATA_DESCRIPTOR: u32 = 0x0807_4b50;
const CENTRAL_HEADER: u32 = 0x0201_4b50;
const ZIP64_END: u32 = 0x0606_4b50;
const ZIP64_LOCATOR: u32 = 0x0706_4b50;
const END: u32 = 0x0605_4b50;
const ZIP64_EXTRA: u16 = 0x0001;
/// Bit 3: CRC-32 and sizes follow the data; bit 11: the name is UTF-8.
const FLAGS: u16 = 0x0808;
/// The version needed to extract: 2.0 for a STOREd entry with a descriptor, 4.5 with ZIP64.
const VERSION_PLAIN: u16 = 20;
const VERSION_ZIP64: u16 = 45;
/// Made by: Unix (3, so the external attributes are a mode), specification 4.5.
const MADE_BY: u16 = (3 << 8) | 45;
/// A regular file, `rw-r--r--`, in the high half of the external attributes.
const FILE_MODE: u32 = 0o100_644 << 16;
/// A classic 32-bit field holds values below this; this value itself says "see ZIP64".
const MAX_32: u64 = 0xFFFF_FFFF;
/// A classic 16-bit count holds values below this.
const MAX_16: u64 = 0xFFFF;

/// A ZIP archive being written into `W`.
pub struct ZipWriter<W> {
    out: W,
    /// Bytes written so far: the next header's offset.
    offset: u64,
    /// What the central directory says of each finished entry.
    done: Vec<Finished>,
    /// The entry whose bytes are being written.
    open: Option<Open>,
    /// Sizes and offsets from this value on go to ZIP64 fields: [`MAX_32`], lower in tests
    /// so that small archives take the ZIP64 paths.
    zip64_from: u64,
}

/// The entry being written.
struct Open {
    name: Vec<u8>,
    size: u64,
    offset: u64,
    time: u16,
    date: u16,
    crc: crc32fast::Hasher,
    written: u64,
}

/// A finished entry, for its central directory header.
struct Finished {
    name: Vec<u8>,
    size: u64,
    offset: u64,
    time: u16,
    date: u16,
    crc: u32,
}

impl<W: AsyncWrite + Unpin> ZipWriter<W> {
    /// An empty archive written into `out`.
    pub fn new(out: W) -> ZipWriter<W> {
        ZipWriter::with_zip64_from(out, MAX_32)
    }

    fn with_zip64_from(out: W, zip64_from: u64) -> ZipWriter<W> {
        ZipWriter {
            out,
            offset: 0,
            done: Vec::new(),
            open: None,
            zip64_from,
        }
    }

    /// Begins an entry named `name` of exactly `size` bytes, last changed at `modified`
    /// (written as MS-DOS local time, which we take as UTC). Write its bytes with
    /// [`ZipWriter::write`], then [`ZipWriter::end_entry`].
    pub async fn begin_entry(
        &mut self,
        name: &str,
        size: u64,
        modified: time::OffsetDateTime,
    ) -> std::io::Result<()> {
        if self.open.is_some() {
            return Err(invalid("an entry is still open"));
        }
        if name.is_empty() || name.len() as u64 >= MAX_16 {
            return Err(invalid("an entry's name is 1 to 65534 bytes"));
        }
        let (time, date) = dos_time(modified);
        let zip64 = size >= self.zip64_from;
        let mut header = Vec::with_capacity(30 + name.len() + 20);
        put32(&mut header, LOCAL_HEADER);
        put16(
            &mut header,
            if zip64 { VERSION_ZIP64 } else { VERSION_PLAIN },
        );
        put16(&mut header, FLAGS);
        put16(&mut header, 0); // STOREd
        put16(&mut header, time);
        put16(&mut header, date);
        put32(&mut header, 0); // CRC-32: in the descriptor
        let sizes = if zip64 { u32::MAX } else { 0 };
        put32(&mut header, sizes);
        put32(&mut header, sizes);
        put16(&mut header, name.len() as u16);
        put16(&mut header, if zip64 { 20 } else { 0 });
        header.extend_from_slice(name.as_bytes());
        if zip64 {
            // Both sizes, zero here as the classic ones are (4.4.4); their presence says
            // that the descriptor's sizes are 8 bytes each.
            put16(&mut header, ZIP64_EXTRA);
            put16(&mut header, 16);
            put64(&mut header, 0);
            put64(&mut header, 0);
        }
        let offset = self.offset;
        self.emit(&header).await?;
        self.open = Some(Open {
            name: name.as_bytes().to_vec(),
            size,
            offset,
            time,
            date,
            crc: crc32fast::Hasher::new(),
            written: 0,
        });
        Ok(())
    }

    /// Writes bytes of the open entry; more than the size it was begun with is an error.
    pub async fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        let Some(open) = self.open.as_mut() else {
            return Err(invalid("no entry is open"));
        };
        if open.written + data.len() as u64 > open.size {
            return Err(invalid("more bytes than the entry's size"));
        }
        open.crc.update(data);
        open.written += data.len() as u64;
        self.emit(data).await
    }

    /// Ends the open entry with its data descriptor; fewer bytes than its size is an error.
    pub async fn end_entry(&mut self) -> std::io::Result<()> {
        let Some(open) = self.open.take() else {
            return Err(invalid("no entry is open"));
        };
        if open.written != open.size {
            return Err(invalid("fewer bytes than the entry's size"));
        }
        let crc = open.crc.finalize();
        let mut descriptor = Vec::with_capacity(24);
        put32(&mut descriptor, DATA_DESCRIPTOR);
        put32(&mut descriptor, crc);
        if open.size >= self.zip64_from {
            put64(&mut descriptor, open.size);
            put64(&mut descriptor, open.size);
        } else {
            put32(&mut descriptor, open.size as u32);
            put32(&mut descriptor, open.size as u32);
        }
        self.emit(&descriptor).await?;
        self.done.push(Finished {
            name: open.name,
            size: open.size,
            offset: open.offset,
            time: open.time,
            date: open.date,
            crc,
        });
        Ok(())
    }

    /// Writes the central directory and the end records with `comment` (at most 65535
    /// bytes), flushes, and hands back the writer.
    pub async fn finish(mut self, comment: &str) -> std::io::Result<W> {
        if self.open.is_some() {
            return Err(invalid("an entry is still open"));
        }
        if comment.len() as u64 > MAX_16 {
            return Err(invalid("the archive comment is at most 65535 bytes"));
        }
        let start = self.offset;
        let entries = std::mem::take(&mut self.done);
        for entry in &entries {
            let header = self.central_header(entry);
            self.emit(&header).await?;
        }
        let count = entries.len() as u64;
        let size = self.offset - start;
        let mut end = Vec::with_capacity(98 + comment.len());
        if count >= MAX_16.min(self.zip64_from)
            || start >= self.zip64_from
            || size >= self.zip64_from
        {
            let record = self.offset;
            put32(&mut end, ZIP64_END);
            put64(&mut end, 44); // the size of the rest of this record
            put16(&mut end, MADE_BY);
            put16(&mut end, VERSION_ZIP64);
            put32(&mut end, 0); // this disk
            put32(&mut end, 0); // the disk where the central directory starts
            put64(&mut end, count);
            put64(&mut end, count);
            put64(&mut end, size);
            put64(&mut end, start);
            put32(&mut end, ZIP64_LOCATOR);
            put32(&mut end, 0); // the disk of the ZIP64 end record
            put64(&mut end, record);
            put32(&mut end, 1); // disks in all
        }
        put32(&mut end, END);
        put16(&mut end, 0);
        put16(&mut end, 0);
        let count16 = if count >= MAX_16.min(self.zip64_from) {
            u16::MAX
        } else {
            count as u16
        };
        put16(&mut end, count16);
        put16(&mut end, count16);
        put32(&mut end, self.narrow(size));
        put32(&mut end, self.narrow(start));
        put16(&mut end, comment.len() as u16);
        end.extend_from_slice(comment.as_bytes());
        self.emit(&end).await?;
        self.out.flush().await?;
        Ok(self.out)
    }

    /// An entry's central directory header, with a ZIP64 extra field holding what does not
    /// fit (4.5.3: the sizes, then the offset, each only when its classic field says so).
    fn central_header(&self, entry: &Finished) -> Vec<u8> {
        let mut extra = Vec::new();
        if entry.size >= self.zip64_from {
            put64(&mut extra, entry.size);
            put64(&mut extra, entry.size);
        }
        if entry.offset >= self.zip64_from {
            put64(&mut extra, entry.offset);
        }
        let zip64 = !extra.is_empty();
        let mut header = Vec::with_capacity(46 + entry.name.len() + 4 + extra.len());
        put32(&mut header, CENTRAL_HEADER);
        put16(&mut header, MADE_BY);
        put16(
            &mut header,
            if zip64 { VERSION_ZIP64 } else { VERSION_PLAIN },
        );
        put16(&mut header, FLAGS);
        put16(&mut header, 0); // STOREd
        put16(&mut header, entry.time);
        put16(&mut header, entry.date);
        put32(&mut header, entry.crc);
        put32(&mut header, self.narrow(entry.size));
        put32(&mut header, self.narrow(entry.size));
        put16(&mut header, entry.name.len() as u16);
        put16(&mut header, if zip64 { 4 + extra.len() as u16 } else { 0 });
        put16(&mut header, 0); // no entry comment
        put16(&mut header, 0); // disk
        put16(&mut header, 0); // internal attributes
        put32(&mut header, FILE_MODE);
        put32(&mut header, self.narrow(entry.offset));
        header.extend_from_slice(&entry.name);
        if zip64 {
            put16(&mut header, ZIP64_EXTRA);
            put16(&mut header, extra.len() as u16);
            header.extend_from_slice(&extra);
        }
        header
    }

    /// A value for a classic 32-bit field: itself, or the mark that it is in ZIP64 fields.
    fn narrow(&self, value: u64) -> u32 {
        if value >= self.zip64_from {
            u32::MAX
        } else {
            value as u32
        }
    }

    async fn emit(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.out.write_all(bytes).await?;
        self.offset += bytes.len() as u64;
        Ok(())
    }
}

/// A moment as MS-DOS time and date fields, within the years they hold (1980 to 2107).
fn dos_time(moment: time::OffsetDateTime) -> (u16, u16) {
    let year = moment.year().clamp(1980, 2107);
    let time = (u16::from(moment.hour()) << 11)
        | (u16::from(moment.minute()) << 5)
        | (u16::from(moment.second()) / 2);
    let date = (((year - 1980) as u16) << 9)
        | (u16::from(u8::from(moment.month())) << 5)
        | u16::from(moment.day());
    (time, date)
}

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, what)
}

fn put16(out: &mut Vec<u8>, value: u16) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_le_bytes());
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Tests may unwrap.

    use super::*;

    /// The test files: (name, bytes).
    fn files() -> Vec<(String, Vec<u8>)> {
        vec![
            ("empty.txt".to_owned(), Vec::new()),
            ("small.bin".to_owned(), (0..100u8).collect()),
            (
                "Ünïcødé – notes.txt".to_owned(),
                b"line\n".repeat(3000).to_vec(),
            ),
        ]
    }

    async fn archive(zip64_from: u64) -> Vec<u8> {
        let moment = time::macros::datetime!(2031-02-03 04:05:06 UTC);
        let mut zip = ZipWriter::with_zip64_from(Vec::new(), zip64_from);
        for (name, data) in files() {
            zip.begin_entry(&name, data.len() as u64, moment)
                .await
                .unwrap();
            for chunk in data.chunks(1000) {
                zip.write(chunk).await.unwrap();
            }
            zip.end_entry().await.unwrap();
        }
        zip.finish("sums\n").await.unwrap()
    }

    /// Python's zipfile (and, where it is installed, Info-ZIP's `unzip -t`) reads back every
    /// name, byte, time and the comment: classic, and with every size, offset and count in
    /// ZIP64 fields.
    #[tokio::test]
    async fn readers_unpack_the_archive_classic_and_zip64() {
        let Some(python) = mailroom_test_support::python_with("zipfile") else {
            return;
        };
        for zip64_from in [MAX_32, 0] {
            let bytes = archive(zip64_from).await;
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("a.zip");
            std::fs::write(&path, &bytes).unwrap();
            let script = r#"
import sys, zipfile, hashlib
with zipfile.ZipFile(sys.argv[1]) as z:
    assert z.testzip() is None
    print(z.comment.decode())
    for info in z.infolist():
        data = z.read(info)
        print(info.filename, len(data), hashlib.sha256(data).hexdigest(), info.date_time)
"#;
            let out = std::process::Command::new(&python)
                .args(["-c", script])
                .arg(&path)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{zip64_from}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = String::from_utf8(out.stdout).unwrap();
            let mut lines = text.lines();
            assert_eq!(lines.next(), Some("sums"));
            assert_eq!(lines.next(), Some(""));
            for (name, data) in files() {
                use sha2::Digest;
                let expect = format!(
                    "{name} {} {} (2031, 2, 3, 4, 5, 6)",
                    data.len(),
                    hex::encode(sha2::Sha256::digest(&data))
                );
                assert_eq!(lines.next(), Some(expect.as_str()), "{zip64_from}");
            }
            // An extra reader where there is one; zipfile above is the check that must run.
            if let Ok(out) = std::process::Command::new("unzip")
                .arg("-t")
                .arg(&path)
                .output()
            {
                assert!(
                    out.status.success(),
                    "unzip -t: {}",
                    String::from_utf8_lossy(&out.stdout)
                );
            }
        }
    }

    #[tokio::test]
    async fn an_entry_must_get_exactly_its_size() {
        let moment = time::OffsetDateTime::UNIX_EPOCH;
        let mut zip = ZipWriter::new(Vec::new());
        zip.begin_entry("a", 2, moment).await.unwrap();
        assert!(zip.begin_entry("b", 1, moment).await.is_err());
        assert!(zip.write(b"abc").await.is_err());
        zip.write(b"a").await.unwrap();
        assert!(zip.end_entry().await.is_err(), "one byte short");
        assert!(zip.write(b"b").await.is_err(), "no entry open");
        assert!(
            ZipWriter::new(Vec::new())
                .begin_entry("", 0, moment)
                .await
                .is_err()
        );
    }

    #[test]
    fn dos_times_clamp_to_the_years_they_hold() {
        let (time, date) = dos_time(time::macros::datetime!(2031-02-03 04:05:06 UTC));
        assert_eq!(time, (4 << 11) | (5 << 5) | 3);
        assert_eq!(date, (51 << 9) | (2 << 5) | 3);
        assert_eq!(dos_time(time::OffsetDateTime::UNIX_EPOCH).1 >> 9, 0);
    }
}
