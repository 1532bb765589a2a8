//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz), behind the `fuzzing` feature:
//! the parsers of bytes from the wire, which are private to their modules, run on arbitrary
//! input, with the properties each must keep asserted here, beside the code they describe.
//!
//! Not an API: nothing outside `fuzz/` calls it, and it changes no behaviour (the feature only
//! adds this module). It owns no parser; each function drives the real one.

use bytes::{Bytes, BytesMut};
use russh_sftp::protocol::Packet;

use mailroom_core::{AccountName, Area, VirtualPath};

use crate::scp;
use crate::sftp::{self, Frame, MAX_PACKET, ReadRequest, WriteRequest};

/// The SFTP reader on a byte stream: framing ([`sftp::next_frame`], fed the stream whole and
/// again in small pieces, which must cut the same packets), then every packet through the
/// parsers the processor uses (`ReadRequest`, `WriteRequest`, russh-sftp's `Packet`).
///
/// Checks: framing never yields an empty or oversized packet, the buffer never grows past
/// one packet's room whatever a length prefix claims, and where our hand-written read and
/// write parsers and russh-sftp's both accept a packet they read the same fields.
pub fn sftp_stream(data: &[u8]) {
    let whole = frames(data, data.len().max(1));
    let pieces = frames(data, 7);
    assert_eq!(whole, pieces, "framing depends on how the bytes arrive");
    for packet in whole.iter().filter_map(|frame| match frame {
        Frame::Packet(packet) => Some(packet),
        _ => None,
    }) {
        sftp_packet(packet);
    }
}

/// One packet (its length prefix taken off) through every parser the processor may use.
pub fn sftp_packet(raw: &[u8]) {
    let _ = sftp::request_id(raw);
    let read = ReadRequest::parse(raw);
    let write = WriteRequest::parse(raw);
    if let Some(read) = &read {
        assert_eq!(raw.first(), Some(&sftp::SSH_FXP_READ));
        assert!(read.handle.len() <= raw.len());
    }
    if let Some(write) = &write {
        assert_eq!(raw.first(), Some(&sftp::SSH_FXP_WRITE));
        // The data is borrowed from the packet, never copied or grown.
        let start = raw.as_ptr() as usize;
        let data = write.data.as_ptr() as usize;
        assert!(data >= start && data + write.data.len() <= start + raw.len());
        // Encoding the parsed request gives back the bytes it was read from.
        let mut again = vec![sftp::SSH_FXP_WRITE];
        again.extend_from_slice(&write.id.to_be_bytes());
        again.extend_from_slice(&(write.handle.len() as u32).to_be_bytes());
        again.extend_from_slice(write.handle.as_bytes());
        again.extend_from_slice(&write.offset.to_be_bytes());
        again.extend_from_slice(&(write.data.len() as u32).to_be_bytes());
        again.extend_from_slice(write.data);
        assert_eq!(&raw[..again.len()], again.as_slice());
    }
    // russh-sftp's decoder, on its own copy (it consumes the buffer). It decodes a string
    // that is not UTF-8 lossily (U+FFFD), where ours refuse the packet: only there may the two
    // differ.
    let mut bytes = Bytes::copy_from_slice(raw);
    match Packet::try_from(&mut bytes) {
        Ok(Packet::Write(theirs)) => match write {
            Some(ours) => assert_eq!(
                (ours.id, ours.handle, ours.offset, ours.data),
                (
                    theirs.id,
                    theirs.handle.as_str(),
                    theirs.offset,
                    &theirs.data[..]
                )
            ),
            None => assert!(
                theirs.handle.contains('\u{FFFD}'),
                "russh-sftp reads a write we refuse"
            ),
        },
        Ok(Packet::Read(theirs)) => match read {
            Some(ours) => assert_eq!(
                (ours.id, ours.handle, ours.offset, ours.len),
                (theirs.id, theirs.handle.as_str(), theirs.offset, theirs.len)
            ),
            None => assert!(
                theirs.handle.contains('\u{FFFD}'),
                "russh-sftp reads a read we refuse"
            ),
        },
        Ok(_) | Err(_) => {}
    }
}

/// Frames `data` as the reader does when it arrives in pieces of `piece` bytes: every frame
/// up to the first out-of-bounds length (which closes the channel), checking the buffer's
/// room after each piece.
fn frames(data: &[u8], piece: usize) -> Vec<Frame> {
    let mut buffer = BytesMut::new();
    let mut out = Vec::new();
    for chunk in data.chunks(piece) {
        buffer.extend_from_slice(chunk);
        loop {
            let frame = sftp::next_frame(&mut buffer);
            // A length prefix reserves at most one packet's room (and `BytesMut` may round
            // up to twice what it is asked for), however large the length it claims.
            assert!(
                buffer.capacity() <= 2 * (4 + MAX_PACKET).max(buffer.len()) + piece,
                "a length from the wire grew the buffer to {}",
                buffer.capacity()
            );
            match frame {
                Frame::Packet(packet) => {
                    assert!(!packet.is_empty() && packet.len() <= MAX_PACKET);
                    out.push(Frame::Packet(packet));
                }
                Frame::Incomplete => break,
                Frame::OutOfBounds(len) => {
                    assert!(len == 0 || len > MAX_PACKET);
                    out.push(Frame::OutOfBounds(len));
                    return out;
                }
            }
        }
    }
    out
}

/// The SCP parsers: the exec command line (`scp -t …`, `scp -f …`) on the whole input, then
/// every line as a `C<mode> <size> <name>` file record.
///
/// Checks: a parsed command has a mode and a path, and the same command written back with
/// every path single-quoted parses to the same command; a parsed record written back parses
/// to the same size and name, and the name lands in the target folder under exactly that
/// name or is refused.
pub fn scp_header(data: &[u8]) {
    if let Some(command) = scp::parse_command(data) {
        assert!(!command.paths.is_empty());
        let mut again = String::from("scp ");
        again.push_str(if command.sink { "-t" } else { "-f" });
        if command.preserve {
            again.push_str(" -p");
        }
        if command.recursive {
            again.push_str(" -r");
        }
        again.push_str(" --");
        for path in &command.paths {
            again.push_str(" '");
            again.push_str(&path.replace('\'', "'\\''"));
            again.push('\'');
        }
        assert_eq!(
            scp::parse_command(again.as_bytes()).as_ref(),
            Some(&command),
            "{again:?}"
        );
    }
    let Ok(recipient) = AccountName::parse("bob") else {
        return;
    };
    let folder = VirtualPath::Folder(Area::Outbox, recipient);
    for line in data.split(|&byte| byte == b'\n') {
        let Some((size, name)) = scp::parse_record(line) else {
            continue;
        };
        let again = format!("C0644 {size} {name}");
        assert_eq!(
            scp::parse_record(again.as_bytes()),
            Some((size, name.clone()))
        );
        if let Ok(path) = scp::destination(&folder, &name) {
            assert_eq!(path.to_string(), format!("/outbox/bob/{name}"));
        }
    }
}
