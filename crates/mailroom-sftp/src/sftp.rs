//! The SFTP subsystem: protocol version 3 (draft-ietf-secsh-filexfer-02) plus the OpenSSH
//! extensions `limits@openssh.com` and `posix-rename@openssh.com`, mapped onto the Hub.
//!
//! Three tasks per channel, so that a large reply waiting for window never stops the
//! channel's incoming queue from draining (the hang russh-sftp's sequential loop shows with
//! 255 KiB reads):
//! - the reader drains the channel all the time and cuts the byte stream into packets;
//! - the processor answers packets in order, one at a time (so writes to one handle stay in
//!   order and stream into the blob hash);
//! - the writer sends replies as the window allows.
//!
//! A client may have at most `max_requests_in_flight` requests unanswered: past that it is
//! not a client but a flood, and the channel is closed. Packet types come from russh-sftp;
//! the loop, the limits and the mapping are ours.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{Buf, Bytes, BytesMut};
use russh::ChannelMsg;
use russh::server::Msg;
use russh_sftp::protocol::{
    self as sftp, Attrs, ExtendedReply, File, FileAttributes, Handle, Name, OpenFlags, Packet,
    StatusCode, Version,
};
use tokio::sync::mpsc;

use mailroom_core::{self as core, ClientSession, CoreError, ErrorKind, Hub, VirtualPath};

use mailroom_net::Activity;

/// Largest SFTP packet accepted from a client, length field excluded.
pub(crate) const MAX_PACKET: usize = 256 * 1024 + 4096;
/// Largest read or write payload we announce in `limits@openssh.com` (OpenSSH's own value).
const MAX_IO: u64 = 261_120;
/// Handles one session may hold open at once.
const MAX_HANDLES: usize = 64;
/// Directory entries sent per READDIR reply.
const DIR_CHUNK: usize = 128;
/// How long the entries of a listing answer stats of its files (see [`Listed`]).
const LISTING_FRESH: std::time::Duration = std::time::Duration::from_secs(30);

/// The inbox or outbox folder this session listed last, by entry name. A client stats what it
/// just listed (OpenSSH's glob stats every match, then `get` stats each file once more before
/// opening it): within [`LISTING_FRESH`] of the listing, and while this session changed
/// nothing, such a stat is answered from the listing instead of the store, as file systems
/// cache attributes. A delivery's name, size and time never change, so the only thing that
/// can be stale is that it still exists; opening it asks the Hub, which finds that out.
/// Receipts (`/sent`) are not kept: their text changes with the delivery's state.
struct Listed {
    folder: VirtualPath,
    entries: HashMap<String, core::Entry>,
    at: std::time::Instant,
}

/// Runs SFTP on an accepted channel until the client closes it, then ends the channel with
/// exit status 0, EOF and close.
pub(crate) async fn run(
    channel: russh::Channel<Msg>,
    hub: Arc<Hub>,
    session: ClientSession,
    max_in_flight: usize,
    activity: Activity,
) {
    let (mut read_half, write_half) = channel.split();
    let in_flight = Arc::new(AtomicUsize::new(0));
    let (request_tx, request_rx) = mpsc::unbounded_channel::<Bytes>();
    let (reply_tx, mut reply_rx) = mpsc::unbounded_channel::<Reply>();
    let out = Out {
        channel: Arc::new(tokio::sync::Mutex::new(write_half)),
        queued: Arc::new(AtomicUsize::new(0)),
        in_flight: in_flight.clone(),
        activity: activity.clone(),
    };

    let processor = tokio::spawn(process(
        hub,
        session.clone(),
        request_rx,
        reply_tx,
        out.clone(),
        activity,
    ));

    let writer_out = out.clone();
    let writer = tokio::spawn(async move {
        while let Some(reply) = reply_rx.recv().await {
            let sent = writer_out.send(reply).await;
            writer_out.queued.fetch_sub(1, Ordering::AcqRel);
            if sent.is_err() {
                break;
            }
        }
    });

    // The reader: drain the channel, frame packets, hand them to the processor.
    let mut buffer = BytesMut::new();
    'read: while let Some(msg) = read_half.wait().await {
        match msg {
            ChannelMsg::Data { data } => {
                buffer.extend_from_slice(&data);
                loop {
                    let packet = match next_frame(&mut buffer) {
                        Frame::Packet(packet) => packet,
                        Frame::Incomplete => break,
                        Frame::OutOfBounds(len) => {
                            tracing::warn!(account = %session.account, len, "sftp packet length out of bounds; closing");
                            break 'read;
                        }
                    };
                    if in_flight.fetch_add(1, Ordering::AcqRel) >= max_in_flight {
                        tracing::warn!(account = %session.account, "too many sftp requests in flight; closing");
                        break 'read;
                    }
                    if request_tx.send(packet).is_err() {
                        break 'read;
                    }
                }
            }
            ChannelMsg::Eof | ChannelMsg::Close => break,
            _ => {}
        }
    }
    drop(request_tx);
    // The processor finishes what was asked, cleans up open handles and drops its sender,
    // which lets the writer flush and end.
    let _ = processor.await;
    let _ = writer.await;
    let write_half = out.channel.lock().await;
    let _ = write_half.exit_status(0).await;
    let _ = write_half.eof().await;
    let _ = write_half.close().await;
}

/// What the bytes read so far hold next (draft-ietf-secsh-filexfer-02, section 3: each
/// packet is a `uint32` length, then that many bytes).
#[derive(Debug, PartialEq)]
pub(crate) enum Frame {
    /// A whole packet, its length prefix taken off.
    Packet(Bytes),
    /// Not yet a whole packet: read more.
    Incomplete,
    /// The length prefix is 0 or over [`MAX_PACKET`]: the channel is closed.
    OutOfBounds(usize),
}

/// Cuts the next packet off the front of `buffer`. The length from the wire is checked
/// against [`MAX_PACKET`] before any room is reserved for it, so a lying prefix can make the
/// buffer at most one packet's size.
pub(crate) fn next_frame(buffer: &mut BytesMut) -> Frame {
    let Some(prefix) = buffer.first_chunk::<4>() else {
        return Frame::Incomplete;
    };
    let len = u32::from_be_bytes(*prefix) as usize;
    if len == 0 || len > MAX_PACKET {
        return Frame::OutOfBounds(len);
    }
    if buffer.len() < 4 + len {
        // Room for the whole packet at once, rather than growing the buffer (and copying what
        // it holds) several times as the rest arrives.
        buffer.reserve(4 + len - buffer.len());
        return Frame::Incomplete;
    }
    buffer.advance(4);
    Frame::Packet(buffer.split_to(len).freeze())
}

/// Where replies go out. A small reply with nothing queued before it is sent by the processor
/// itself, saving a hand-off to the writer task; a large one (a read's data) is queued for the
/// writer, so the processor goes on with the next request while it waits for window, and so
/// is every reply after it until the queue is empty again: replies always leave in order.
#[derive(Clone)]
struct Out {
    channel: Arc<tokio::sync::Mutex<russh::ChannelWriteHalf<Msg>>>,
    /// Replies handed to the writer and not yet sent.
    queued: Arc<AtomicUsize>,
    in_flight: Arc<AtomicUsize>,
    activity: Activity,
}

/// Largest reply the processor sends itself.
const DIRECT_REPLY: usize = 16 * 1024;

impl Out {
    /// Sends one reply on the channel and accounts for it.
    async fn send(&self, reply: Reply) -> Result<(), ()> {
        let sent = self.channel.lock().await.data_bytes(reply.bytes).await;
        if sent.is_err() {
            return Err(());
        }
        // A transfer ends for shutdown purposes only once its last answer (the close's OK) is
        // queued ahead of any disconnect.
        if reply.finished_transfers > 0 {
            self.activity.add(-(reply.finished_transfers as isize));
        }
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        Ok(())
    }
}

/// An encoded reply, and how many transfers it ends.
struct Reply {
    bytes: Bytes,
    finished_transfers: usize,
}

/// An open SFTP handle.
enum OpenHandle {
    Read(core::ReadHandle),
    Write {
        upload: core::Upload,
        /// The first write error; the close reports it and delivers nothing.
        failed: Option<CoreError>,
    },
    Dir {
        path: VirtualPath,
        /// Read at the first READDIR.
        entries: Option<Vec<core::Entry>>,
        position: usize,
    },
}

/// Per-session state of the processor.
struct Processor {
    hub: Arc<Hub>,
    session: ClientSession,
    handles: HashMap<String, OpenHandle>,
    next_handle: u64,
    activity: Activity,
    /// Open file handles last reported to `activity`.
    reported: usize,
    /// The last listing, for the stats that follow it.
    listed: Option<Listed>,
}

async fn process(
    hub: Arc<Hub>,
    session: ClientSession,
    mut requests: mpsc::UnboundedReceiver<Bytes>,
    replies: mpsc::UnboundedSender<Reply>,
    out: Out,
    activity: Activity,
) {
    let mut processor = Processor {
        hub,
        session,
        handles: HashMap::new(),
        next_handle: 0,
        activity,
        reported: 0,
        listed: None,
    };
    while let Some(mut raw) = requests.recv().await {
        let id = request_id(&raw);
        let reply: Result<Bytes, Packet> = if raw.first() == Some(&SSH_FXP_READ) {
            // Reads are answered with the file's bytes read straight into the framed DATA
            // reply (russh-sftp's encoder would copy them once more).
            match ReadRequest::parse(&raw) {
                Some(read) => processor.read_framed(read).await,
                None => Err(status(id, StatusCode::BadMessage, "malformed read request")),
            }
        } else if raw.first() == Some(&SSH_FXP_WRITE) {
            // Writes carry the file's bytes: parsed here so the data stays a slice of the
            // packet until the blob writer copies it once (russh-sftp's parser copies it
            // into a Vec first).
            Err(match WriteRequest::parse(&raw) {
                Some(write) => processor
                    .write(write.id, write.handle, write.offset, write.data)
                    .await
                    .unwrap_or_else(|err| error_status(write.id, &err)),
                None => status(id, StatusCode::BadMessage, "malformed write request"),
            })
        } else {
            Err(match Packet::try_from(&mut raw) {
                Ok(packet) => processor.handle(packet).await,
                // A packet russh-sftp cannot decode. (It decodes a name that is not UTF-8
                // lossily, to U+FFFD, which the core refuses in every name: such a request
                // fails at its path, not here.)
                Err(_) => status(
                    id,
                    StatusCode::BadMessage,
                    "malformed request (names must be valid UTF-8)",
                ),
            })
        };
        let bytes = match reply {
            Ok(framed) => framed,
            Err(packet) => match Bytes::try_from(packet) {
                Ok(bytes) => bytes,
                Err(err) => {
                    tracing::error!(error = %err, "encoding an sftp reply failed");
                    match Bytes::try_from(status(id, StatusCode::Failure, "internal error")) {
                        Ok(bytes) => bytes,
                        Err(_) => break,
                    }
                }
            },
        };
        let finished_transfers = processor.report_activity();
        let reply = Reply {
            bytes,
            finished_transfers,
        };
        if reply.bytes.len() <= DIRECT_REPLY && out.queued.load(Ordering::Acquire) == 0 {
            if out.send(reply).await.is_err() {
                break;
            }
            continue;
        }
        out.queued.fetch_add(1, Ordering::AcqRel);
        if replies.send(reply).is_err() {
            break;
        }
    }
    processor.cleanup().await;
    let finished = processor.report_activity();
    processor.activity.add(-(finished as isize));
}

/// The packet types of `SSH_FXP_READ`, `SSH_FXP_WRITE` and `SSH_FXP_DATA`
/// (draft-ietf-secsh-filexfer-02, section 3).
pub(crate) const SSH_FXP_READ: u8 = 5;
pub(crate) const SSH_FXP_WRITE: u8 = 6;
const SSH_FXP_DATA: u8 = 103;

/// The bytes of a DATA reply before its data: `uint32 length, byte type, uint32 id,
/// uint32 data length`.
const DATA_HEADER: usize = 13;

/// An `SSH_FXP_READ` request, borrowed from its packet: `byte type, uint32 id, string handle,
/// uint64 offset, uint32 len`.
#[derive(Debug, PartialEq)]
pub(crate) struct ReadRequest<'a> {
    pub(crate) id: u32,
    pub(crate) handle: &'a str,
    pub(crate) offset: u64,
    pub(crate) len: u32,
}

impl<'a> ReadRequest<'a> {
    /// Parses a raw packet (its length prefix already taken off). `None` when it is not a
    /// read, is cut short, or its handle is not UTF-8 (ours always are).
    pub(crate) fn parse(raw: &'a [u8]) -> Option<ReadRequest<'a>> {
        let (&kind, rest) = raw.split_first()?;
        if kind != SSH_FXP_READ {
            return None;
        }
        let (id, rest) = take_u32(rest)?;
        let (handle, rest) = take_string(rest)?;
        let (offset, rest) = rest.split_first_chunk::<8>()?;
        let (len, _) = take_u32(rest)?;
        Some(ReadRequest {
            id,
            handle: std::str::from_utf8(handle).ok()?,
            offset: u64::from_be_bytes(*offset),
            len,
        })
    }
}

/// Frames `buffer`, whose first [`DATA_HEADER`] bytes are room left for it, as the DATA
/// reply to request `id`; `None` if it is too long for a packet (never: reads are capped).
fn frame_data(id: u32, mut buffer: Vec<u8>) -> Option<Bytes> {
    let data = u32::try_from(buffer.len().checked_sub(DATA_HEADER)?).ok()?;
    let length = data.checked_add(9)?;
    let header = buffer.get_mut(..DATA_HEADER)?;
    header[..4].copy_from_slice(&length.to_be_bytes());
    header[4] = SSH_FXP_DATA;
    header[5..9].copy_from_slice(&id.to_be_bytes());
    header[9..13].copy_from_slice(&data.to_be_bytes());
    Some(Bytes::from(buffer))
}

/// An `SSH_FXP_WRITE` request, borrowed from its packet: `byte type, uint32 id,
/// string handle, uint64 offset, string data`.
#[derive(Debug, PartialEq)]
pub(crate) struct WriteRequest<'a> {
    pub(crate) id: u32,
    pub(crate) handle: &'a str,
    pub(crate) offset: u64,
    pub(crate) data: &'a [u8],
}

impl<'a> WriteRequest<'a> {
    /// Parses a raw packet (its length prefix already taken off). `None` when it is not a
    /// write, is cut short, or its handle is not UTF-8 (ours always are). Every length is
    /// checked against the bytes present; bytes after the data are ignored.
    pub(crate) fn parse(raw: &'a [u8]) -> Option<WriteRequest<'a>> {
        let (&kind, rest) = raw.split_first()?;
        if kind != SSH_FXP_WRITE {
            return None;
        }
        let (id, rest) = take_u32(rest)?;
        let (handle, rest) = take_string(rest)?;
        let (offset, rest) = rest.split_first_chunk::<8>()?;
        let (data, _) = take_string(rest)?;
        Some(WriteRequest {
            id,
            handle: std::str::from_utf8(handle).ok()?,
            offset: u64::from_be_bytes(*offset),
            data,
        })
    }
}

/// A big-endian `uint32` and what follows it.
fn take_u32(raw: &[u8]) -> Option<(u32, &[u8])> {
    let (value, rest) = raw.split_first_chunk::<4>()?;
    Some((u32::from_be_bytes(*value), rest))
}

/// An SSH `string` (a `uint32` length, then that many bytes) and what follows it.
fn take_string(raw: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = take_u32(raw)?;
    let len = usize::try_from(len).ok()?;
    if len > rest.len() {
        return None;
    }
    Some(rest.split_at(len))
}

/// The request id of a raw packet (type byte, then id), or 0 when it is too short.
pub(crate) fn request_id(raw: &[u8]) -> u32 {
    match raw.get(1..5) {
        Some(b) => u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        None => 0,
    }
}

impl Processor {
    /// Tells the connection how many files this channel has open, so shutdown waits for
    /// transfers and not for idle sessions. New transfers count at once; the number that
    /// ended is returned, to be uncounted once their reply is written.
    fn report_activity(&mut self) -> usize {
        let open = self
            .handles
            .values()
            .filter(|h| !matches!(h, OpenHandle::Dir { .. }))
            .count();
        let finished = self.reported.saturating_sub(open);
        if open > self.reported {
            self.activity.add((open - self.reported) as isize);
        }
        self.reported = open;
        finished
    }

    async fn handle(&mut self, packet: Packet) -> Packet {
        let id = packet.get_request_id();
        let result = match packet {
            Packet::Init(_) => return self.version(),
            Packet::RealPath(p) => self.realpath(p.id, &p.path),
            Packet::Stat(p) => self.stat(p.id, &p.path).await,
            Packet::Lstat(p) => self.stat(p.id, &p.path).await,
            Packet::Fstat(p) => self.fstat(p.id, &p.handle),
            Packet::OpenDir(p) => self.opendir(p.id, &p.path),
            Packet::ReadDir(p) => self.readdir(p.id, &p.handle).await,
            Packet::Open(p) => self.open(p.id, &p.filename, p.pflags).await,
            // Reads never get here: `process` answers them itself (`read_framed`).
            Packet::Read(p) => Err(CoreError::internal(format!(
                "read request {} reached the generic path",
                p.id
            ))),
            Packet::Close(p) => self.close(p.id, &p.handle).await,
            Packet::Remove(p) => self.remove(p.id, &p.filename).await,
            Packet::RmDir(p) => self.remove(p.id, &p.path).await,
            Packet::Rename(p) => self.rename(p.id, &p.oldpath, &p.newpath).await,
            Packet::MkDir(p) => self
                .parse(&p.path)
                .and_then(|path| self.hub.make_dir(&path))
                .map(|()| ok(p.id)),
            Packet::Symlink(p) => self
                .parse(&p.linkpath)
                .and_then(|path| self.hub.make_link(&path))
                .map(|()| ok(p.id)),
            Packet::ReadLink(p) => Err(CoreError::not_found(format!(
                "{}: not a link (the tree has no links)",
                p.path.chars().take(200).collect::<String>()
            ))),
            Packet::SetStat(p) => self.setstat(p.id, &p.attrs),
            Packet::FSetStat(p) => self.setstat(p.id, &p.attrs),
            Packet::Extended(p) => self.extended(p.id, &p.request, &p.data).await,
            _ => {
                return status(id, StatusCode::BadMessage, "not a request");
            }
        };
        match result {
            Ok(packet) => packet,
            Err(err) => error_status(id, &err),
        }
    }

    fn version(&self) -> Packet {
        let mut version = Version::new();
        version
            .extensions
            .insert("limits@openssh.com".to_owned(), "1".to_owned());
        version
            .extensions
            .insert("posix-rename@openssh.com".to_owned(), "1".to_owned());
        Packet::Version(version)
    }

    fn parse(&self, path: &str) -> Result<VirtualPath, CoreError> {
        VirtualPath::parse(path)
    }

    fn realpath(&self, id: u32, path: &str) -> Result<Packet, CoreError> {
        let path = self.parse(path)?;
        Ok(Packet::Name(Name {
            id,
            files: vec![File::dummy(path.to_string())],
        }))
    }

    async fn stat(&self, id: u32, path: &str) -> Result<Packet, CoreError> {
        let path = self.parse(path)?;
        if let Some(entry) = self.listed_entry(&path) {
            return Ok(Packet::Attrs(Attrs {
                id,
                attrs: attributes(entry),
            }));
        }
        let entry = self.hub.stat(&self.session, &path).await?;
        Ok(Packet::Attrs(Attrs {
            id,
            attrs: attributes(&entry),
        }))
    }

    /// The entry of an inbox or outbox file in the fresh listing of its folder, if it is one.
    fn listed_entry(&self, path: &VirtualPath) -> Option<&core::Entry> {
        let VirtualPath::File(area @ (core::Area::Inbox | core::Area::Outbox), folder, name) = path
        else {
            return None;
        };
        let listed = self.listed.as_ref()?;
        let same_folder = matches!(
            &listed.folder,
            VirtualPath::Folder(listed_area, listed_folder)
                if listed_area == area && listed_folder == folder
        );
        if !same_folder || listed.at.elapsed() > LISTING_FRESH {
            return None;
        }
        listed.entries.get(name.as_str())
    }

    fn fstat(&self, id: u32, handle: &str) -> Result<Packet, CoreError> {
        let attrs = match self.handles.get(handle) {
            Some(OpenHandle::Read(read)) => file_attributes(read.size(), false),
            Some(OpenHandle::Write { upload, .. }) => file_attributes(upload.size(), true),
            Some(OpenHandle::Dir { .. }) => {
                let mut attrs = FileAttributes::empty();
                attrs.permissions = Some(0o40755);
                attrs
            }
            None => return Err(bad_handle()),
        };
        Ok(Packet::Attrs(Attrs { id, attrs }))
    }

    /// Opens a folder. Its entries are read at the first READDIR, as a file system reads a
    /// folder when it is read rather than when it is opened: a client polling its inbox sees
    /// the folder as it is when it asks for the entries, one round trip fresher. A file is
    /// refused here, at once.
    fn opendir(&mut self, id: u32, path: &str) -> Result<Packet, CoreError> {
        let path = self.parse(path)?;
        path.require_folder()?;
        self.insert(
            id,
            OpenHandle::Dir {
                path,
                entries: None,
                position: 0,
            },
        )
    }

    async fn readdir(&mut self, id: u32, handle: &str) -> Result<Packet, CoreError> {
        let Some(OpenHandle::Dir { path, entries, .. }) = self.handles.get(handle) else {
            return Err(bad_handle());
        };
        if entries.is_none() {
            let path = path.clone();
            let listing = self.hub.list(&self.session, &path).await?;
            self.listed = matches!(
                path,
                VirtualPath::Folder(core::Area::Inbox | core::Area::Outbox, _)
            )
            .then(|| Listed {
                folder: path,
                entries: listing
                    .iter()
                    .filter(|e| !e.is_dir)
                    .map(|e| (e.name.clone(), e.clone()))
                    .collect(),
                at: std::time::Instant::now(),
            });
            if let Some(OpenHandle::Dir { entries, .. }) = self.handles.get_mut(handle) {
                *entries = Some(listing);
            }
        }
        let Some(OpenHandle::Dir {
            entries: Some(entries),
            position,
            ..
        }) = self.handles.get_mut(handle)
        else {
            return Err(bad_handle());
        };
        if *position >= entries.len() {
            return Ok(status(id, StatusCode::Eof, "end of folder"));
        }
        let end = (*position + DIR_CHUNK).min(entries.len());
        let files = entries[*position..end]
            .iter()
            .map(|entry| File::new(entry.name.clone(), attributes(entry)))
            .collect();
        *position = end;
        Ok(Packet::Name(Name { id, files }))
    }

    async fn open(
        &mut self,
        id: u32,
        filename: &str,
        flags: OpenFlags,
    ) -> Result<Packet, CoreError> {
        let path = self.parse(filename)?;
        let writing = flags.intersects(
            OpenFlags::WRITE | OpenFlags::APPEND | OpenFlags::CREATE | OpenFlags::TRUNCATE,
        );
        if self.handles.len() >= MAX_HANDLES {
            return Err(CoreError::new(
                ErrorKind::QuotaExceeded,
                format!("too many open files: at most {MAX_HANDLES} per session"),
            ));
        }
        let handle = if writing {
            // Whatever this session changes, later stats ask the Hub again.
            self.listed = None;
            let upload = self.hub.begin_upload(&self.session, &path).await?;
            OpenHandle::Write {
                upload,
                failed: None,
            }
        } else {
            OpenHandle::Read(self.hub.open_read(&self.session, &path).await?)
        };
        self.insert(id, handle)
    }

    /// Answers a read: the DATA reply, framed around the bytes as they were read; or the
    /// status to send instead (end of file, a bad handle, an error).
    async fn read_framed(&mut self, read: ReadRequest<'_>) -> Result<Bytes, Packet> {
        let id = read.id;
        let Some(OpenHandle::Read(handle)) = self.handles.get(read.handle) else {
            return Err(error_status(id, &bad_handle()));
        };
        let len = u64::from(read.len).min(MAX_IO) as usize;
        let buffer = handle
            .read_at_after(read.offset, len, DATA_HEADER)
            .await
            .map_err(|err| error_status(id, &err))?;
        if buffer.len() <= DATA_HEADER {
            return Err(status(id, StatusCode::Eof, "end of file"));
        }
        frame_data(id, buffer).ok_or_else(|| status(id, StatusCode::Failure, "reply too long"))
    }

    async fn write(
        &mut self,
        id: u32,
        handle: &str,
        offset: u64,
        data: &[u8],
    ) -> Result<Packet, CoreError> {
        let Some(OpenHandle::Write { upload, failed }) = self.handles.get_mut(handle) else {
            return Err(bad_handle());
        };
        if let Some(err) = failed {
            return Err(err.clone());
        }
        if let Err(err) = upload.write_at(offset, data).await {
            *failed = Some(err.clone());
            return Err(err);
        }
        Ok(ok(id))
    }

    async fn close(&mut self, id: u32, handle: &str) -> Result<Packet, CoreError> {
        match self.handles.remove(handle) {
            None => Err(bad_handle()),
            Some(OpenHandle::Dir { .. }) => Ok(ok(id)),
            Some(OpenHandle::Read(read)) => {
                self.hub.close_read(&self.session, read).await?;
                Ok(ok(id))
            }
            Some(OpenHandle::Write {
                upload,
                failed: Some(err),
            }) => {
                self.hub
                    .abort_upload(upload, &format!("write failed: {}", err.message()))
                    .await;
                Err(err)
            }
            Some(OpenHandle::Write {
                upload,
                failed: None,
            }) => {
                self.listed = None;
                // The reply goes out only after the delivery is durable and committed.
                self.hub.finish_upload(upload).await?;
                Ok(ok(id))
            }
        }
    }

    async fn remove(&mut self, id: u32, path: &str) -> Result<Packet, CoreError> {
        self.listed = None;
        let path = self.parse(path)?;
        self.hub.remove(&self.session, &path).await?;
        Ok(ok(id))
    }

    async fn rename(&mut self, id: u32, from: &str, to: &str) -> Result<Packet, CoreError> {
        self.listed = None;
        let from = self.parse(from)?;
        let to = self.parse(to)?;
        self.hub.rename(&self.session, &from, &to).await?;
        Ok(ok(id))
    }

    fn setstat(&self, id: u32, attrs: &FileAttributes) -> Result<Packet, CoreError> {
        // Times and modes are the hub's to set; accepting them keeps clients (scp, rsync-like
        // tools) quiet. Changing a size would change content, so that is refused.
        if attrs.size.is_some() {
            return Err(CoreError::denied(
                "a file's size cannot be changed: delete it and send it again",
            ));
        }
        Ok(ok(id))
    }

    async fn extended(&mut self, id: u32, request: &str, data: &[u8]) -> Result<Packet, CoreError> {
        match request {
            "limits@openssh.com" => {
                let mut reply = Vec::with_capacity(32);
                for value in [MAX_PACKET as u64 - 4096, MAX_IO, MAX_IO, MAX_HANDLES as u64] {
                    reply.extend_from_slice(&value.to_be_bytes());
                }
                Ok(Packet::ExtendedReply(ExtendedReply { id, data: reply }))
            }
            "posix-rename@openssh.com" => {
                let mut cursor = data;
                let from = ssh_string(&mut cursor)?;
                let to = ssh_string(&mut cursor)?;
                self.rename(id, &from, &to).await
            }
            "hardlink@openssh.com" => Err(CoreError::denied(
                "links are not supported: the tree has no links",
            )),
            other => Ok(status(
                id,
                StatusCode::OpUnsupported,
                &format!(
                    "extension {} is not supported",
                    other.chars().take(64).collect::<String>()
                ),
            )),
        }
    }

    fn insert(&mut self, id: u32, handle: OpenHandle) -> Result<Packet, CoreError> {
        self.next_handle += 1;
        let name = format!("h{}", self.next_handle);
        self.handles.insert(name.clone(), handle);
        Ok(Packet::Handle(Handle { id, handle: name }))
    }

    /// The session ended: uploads never closed deliver nothing; downloads are accounted.
    async fn cleanup(&mut self) {
        for (_, handle) in self.handles.drain() {
            match handle {
                OpenHandle::Write { upload, .. } => {
                    self.hub
                        .abort_upload(upload, "connection closed before the file was closed")
                        .await;
                }
                OpenHandle::Read(read) => {
                    if let Err(err) = self.hub.close_read(&self.session, read).await {
                        tracing::warn!(error = %err, "could not account an unclosed download");
                    }
                }
                OpenHandle::Dir { .. } => {}
            }
        }
    }
}

/// Reads one SSH string (u32 length, bytes) as UTF-8.
fn ssh_string(cursor: &mut &[u8]) -> Result<String, CoreError> {
    let malformed = || CoreError::invalid("malformed extension request");
    if cursor.len() < 4 {
        return Err(malformed());
    }
    let len = u32::from_be_bytes([cursor[0], cursor[1], cursor[2], cursor[3]]) as usize;
    let bytes = cursor.get(4..4 + len).ok_or_else(malformed)?;
    let text = std::str::from_utf8(bytes)
        .map_err(|_| CoreError::invalid("names must be valid UTF-8"))?
        .to_owned();
    *cursor = &cursor[4 + len..];
    Ok(text)
}

fn attributes(entry: &core::Entry) -> FileAttributes {
    let mut attrs = if entry.is_dir {
        let mut attrs = FileAttributes::empty();
        attrs.size = Some(0);
        attrs.permissions = Some(if entry.writable { 0o40755 } else { 0o40555 });
        attrs
    } else {
        file_attributes(entry.size, entry.writable)
    };
    let mtime = u32::try_from(entry.modified.unix_timestamp()).unwrap_or(0);
    attrs.atime = Some(mtime);
    attrs.mtime = Some(mtime);
    attrs.uid = Some(0);
    attrs.gid = Some(0);
    attrs
}

fn file_attributes(size: u64, writable: bool) -> FileAttributes {
    let mut attrs = FileAttributes::empty();
    attrs.size = Some(size);
    attrs.permissions = Some(if writable { 0o100644 } else { 0o100444 });
    attrs
}

fn ok(id: u32) -> Packet {
    status(id, StatusCode::Ok, "ok")
}

fn bad_handle() -> CoreError {
    CoreError::new(ErrorKind::NotFound, "no such handle")
}

fn status(id: u32, code: StatusCode, message: &str) -> Packet {
    Packet::Status(sftp::Status {
        id,
        status_code: code,
        error_message: message.to_owned(),
        language_tag: "en".to_owned(),
    })
}

/// The one mapping from core error kinds to SFTP status codes.
fn error_status(id: u32, err: &CoreError) -> Packet {
    let code = match err.kind() {
        ErrorKind::NotFound => StatusCode::NoSuchFile,
        ErrorKind::PermissionDenied | ErrorKind::RouteDenied | ErrorKind::InvalidName => {
            StatusCode::PermissionDenied
        }
        ErrorKind::QuotaExceeded
        | ErrorKind::Conflict
        | ErrorKind::Transient
        | ErrorKind::Internal => StatusCode::Failure,
    };
    status(id, code, err.message())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A WRITE packet as a client sends it (without the length prefix).
    fn write_packet(id: u32, handle: &[u8], offset: u64, data: &[u8]) -> Vec<u8> {
        let mut raw = vec![SSH_FXP_WRITE];
        raw.extend_from_slice(&id.to_be_bytes());
        raw.extend_from_slice(&(handle.len() as u32).to_be_bytes());
        raw.extend_from_slice(handle);
        raw.extend_from_slice(&offset.to_be_bytes());
        raw.extend_from_slice(&(data.len() as u32).to_be_bytes());
        raw.extend_from_slice(data);
        raw
    }

    #[test]
    fn a_read_request_parses_as_russh_sftp_reads_it_and_its_reply_is_framed_the_same() {
        let mut raw = vec![SSH_FXP_READ];
        raw.extend_from_slice(&9_u32.to_be_bytes());
        raw.extend_from_slice(&2_u32.to_be_bytes());
        raw.extend_from_slice(b"h4");
        raw.extend_from_slice(&(5_u64 << 32).to_be_bytes());
        raw.extend_from_slice(&32768_u32.to_be_bytes());
        let read = ReadRequest::parse(&raw).unwrap();
        assert_eq!(
            read,
            ReadRequest {
                id: 9,
                handle: "h4",
                offset: 5 << 32,
                len: 32768,
            }
        );
        match Packet::try_from(&mut Bytes::from(raw.clone())).unwrap() {
            Packet::Read(p) => {
                assert_eq!(
                    (p.id, p.handle.as_str(), p.offset, p.len),
                    (9, "h4", 5 << 32, 32768)
                );
            }
            other => panic!("not a read: {other:?}"),
        }
        // Cut short anywhere, or another type: not a read.
        for end in 0..raw.len() {
            assert_eq!(ReadRequest::parse(&raw[..end]), None, "{end}");
        }
        assert_eq!(ReadRequest::parse(&write_packet(1, b"h0", 0, b"x")), None);

        // Our DATA framing is byte for byte what russh-sftp's encoder makes.
        let data = b"the file's bytes".to_vec();
        let mut buffer = vec![0_u8; DATA_HEADER];
        buffer.extend_from_slice(&data);
        let ours = frame_data(9, buffer).unwrap();
        let theirs = Bytes::try_from(Packet::Data(sftp::Data { id: 9, data })).unwrap();
        assert_eq!(ours, theirs);
        assert_eq!(frame_data(1, vec![0; 3]), None);
    }

    /// Found by fuzzing (fuzz/fuzz_targets/sftp_packet.rs): russh-sftp does not refuse a name
    /// that is not UTF-8, it decodes it lossily. What keeps such a name out is the core, which
    /// refuses U+FFFD in every name; this test pins both halves.
    #[test]
    fn a_name_that_is_not_utf8_is_decoded_lossily_and_then_refused_by_the_core() {
        for path in [&b"/inbox/al\xffce"[..], b"/outbox/bob/a\xff.txt"] {
            let mut raw = vec![17_u8, 0, 0, 0, 1];
            raw.extend_from_slice(&(path.len() as u32).to_be_bytes());
            raw.extend_from_slice(path);
            let decoded = match Packet::try_from(&mut Bytes::from(raw)).unwrap() {
                Packet::Stat(stat) => stat.path,
                other => panic!("not a stat: {other:?}"),
            };
            assert!(decoded.contains('\u{FFFD}'), "{decoded:?}");
            assert!(VirtualPath::parse(&decoded).is_err(), "{decoded:?}");
            assert!(VirtualPath::parse_bytes(path).is_err());
        }
    }

    #[test]
    fn framing_checks_a_length_before_reserving_room_for_it() {
        for len in [0, MAX_PACKET as u32 + 1, u32::MAX] {
            let mut buffer = BytesMut::from(&len.to_be_bytes()[..]);
            assert_eq!(next_frame(&mut buffer), Frame::OutOfBounds(len as usize));
            assert!(buffer.capacity() < 64, "room reserved for {len}");
        }
        let mut buffer = BytesMut::from(&[0, 0, 0, 5, 1, 2][..]);
        assert_eq!(next_frame(&mut buffer), Frame::Incomplete);
        buffer.extend_from_slice(&[3, 4, 5, 0, 0]);
        assert_eq!(
            next_frame(&mut buffer),
            Frame::Packet(Bytes::from_static(&[1, 2, 3, 4, 5]))
        );
        assert_eq!(next_frame(&mut buffer), Frame::Incomplete);
        assert_eq!(&buffer[..], &[0, 0]);
    }

    #[test]
    fn a_write_request_borrows_its_data_from_the_packet() {
        let raw = write_packet(7, b"h3", 1 << 33, b"file bytes");
        let write = WriteRequest::parse(&raw).unwrap();
        assert_eq!(
            write,
            WriteRequest {
                id: 7,
                handle: "h3",
                offset: 1 << 33,
                data: b"file bytes",
            }
        );
        assert_eq!(write.data.as_ptr(), raw[raw.len() - 10..].as_ptr());
        // The same bytes through russh-sftp's parser agree.
        let mut bytes = Bytes::from(raw.clone());
        match Packet::try_from(&mut bytes).unwrap() {
            Packet::Write(p) => {
                assert_eq!((p.id, p.handle.as_str(), p.offset), (7, "h3", 1 << 33));
                assert_eq!(p.data, b"file bytes");
            }
            other => panic!("not a write: {other:?}"),
        }
        // An empty write is a write.
        let empty = write_packet(1, b"h0", 0, b"");
        assert_eq!(WriteRequest::parse(&empty).unwrap().data, b"");
    }

    #[test]
    fn a_write_request_with_lengths_past_its_bytes_is_refused() {
        let raw = write_packet(7, b"h3", 0, b"file bytes");
        // Cut anywhere, the packet does not parse.
        for cut in 0..raw.len() {
            assert_eq!(WriteRequest::parse(&raw[..cut]), None, "cut at {cut}");
        }
        // A data length larger than what follows (even the largest) is refused.
        let mut lying = raw.clone();
        let at = raw.len() - 10 - 4;
        lying[at..at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(WriteRequest::parse(&lying), None);
        // So is a handle length past the end.
        let mut lying = raw.clone();
        lying[5..9].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(WriteRequest::parse(&lying), None);
        // A handle that is not UTF-8, and a packet of another type.
        assert_eq!(
            WriteRequest::parse(&write_packet(7, b"\xff", 0, b"x")),
            None
        );
        let mut read = raw.clone();
        read[0] = 5;
        assert_eq!(WriteRequest::parse(&read), None);
    }
}
