//! Fuzz target: what an SFTP client sends on its channel, through the SSH front end's reader
//! (framing by the length prefix) and every packet parser the processor uses: the hand-written
//! `SSH_FXP_READ` and `SSH_FXP_WRITE` parsers (`WriteRequest` borrows a write's data from the
//! packet) and russh-sftp's decoder for the rest.
//!
//! The properties are asserted beside the code, in `mailroom_sftp::fuzzing::sftp_stream`:
//! framing is the same however the bytes arrive, a length prefix never grows the buffer past
//! one packet, a parsed write re-encodes to its bytes, and where both parsers accept a read or
//! write they agree.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mailroom_sftp::fuzzing::sftp_stream(data);
});
