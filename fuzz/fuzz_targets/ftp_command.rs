//! Fuzz target: the FTPS front end's control connection: command lines cut as the reader cuts
//! them, the verb and argument parser, path arguments resolved from a folder, `PORT` and
//! `EPRT` addresses, and replies that carry a client's text.
//!
//! The properties are asserted beside the code, in `mailroom_ftps::fuzzing::ftp_command`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mailroom_ftps::fuzzing::ftp_command(data);
});
