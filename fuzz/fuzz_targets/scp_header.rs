//! Fuzz target: legacy SCP's parsers in the SSH front end: the exec command line
//! (`scp -t …`, `scp -f …`, split like a shell without being one) and the `C<mode> <size>
//! <name>` record that announces each uploaded file.
//!
//! The properties are asserted beside the code, in `mailroom_sftp::fuzzing::scp_header`: a
//! parsed command written back with quoted paths parses the same, a parsed record written back
//! parses to the same size and name, and that name is the file's name in the target folder.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mailroom_sftp::fuzzing::scp_header(data);
});
