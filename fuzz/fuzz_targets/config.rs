//! Fuzz target: the config loader of the `mailroom` binary (`mailroom.toml`, with one
//! `MAILROOM_<SECTION>_<KEY>` override after a NUL byte).
//!
//! The properties are asserted beside the code, in `mailroom::fuzzing::config_text`: a refusal
//! points inside the text, and a loaded configuration written back as TOML loads again to the
//! same configuration.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mailroom::fuzzing::config_text(data);
});
