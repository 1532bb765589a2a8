//! The entry point of the `config` fuzz target in `fuzz/` (cargo-fuzz), behind the `fuzzing`
//! feature: the config loader ([`crate::config::parse`], what `serve` and every command run
//! on `mailroom.toml`) on arbitrary text, with the properties it must keep asserted here.
//!
//! Not an API: nothing outside `fuzz/` calls it, and it changes no behaviour. It owns no
//! parser; it drives the real one.

use std::path::Path;

use crate::config::{self, Config, ConfigError, Override};

/// Loads `data` as the text of `mailroom.toml`. A NUL byte splits the input: what comes
/// before it is the file, what comes after is one `VARIABLE=value` environment override.
///
/// Checks: text that is not UTF-8 is never loaded (the file is read as a `String`); a refusal
/// names a line and column inside the text; a loaded configuration written back as TOML
/// (the serialisation the template is made of) loads again to the same configuration.
pub fn config_text(data: &[u8]) {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let (text, overrides) = match input.split_once('\0') {
        Some((text, variable)) => {
            let (name, value) = variable.split_once('=').unwrap_or((variable, ""));
            let name = format!("MAILROOM_{}", name.trim_start_matches("MAILROOM_"));
            (
                text,
                vec![Override {
                    variable: name,
                    value: value.to_owned(),
                }],
            )
        }
        None => (input, Vec::new()),
    };
    let path = Path::new("mailroom.toml");
    match config::parse(path, text, &overrides) {
        Ok(loaded) => {
            let written = toml::to_string(&loaded)
                .unwrap_or_else(|err| panic!("a loaded configuration does not serialise: {err}"));
            let again: Config = config::parse(path, &written, &[]).unwrap_or_else(|err| {
                panic!("a loaded configuration written back does not load: {err}\n{written}")
            });
            assert_eq!(again, loaded, "written back as\n{written}");
        }
        Err(err) => {
            if let ConfigError::File { line, column, .. } = &err {
                assert!(*line >= 1 && *line <= text.lines().count() + 1, "{err}");
                assert!(*column >= 1, "{err}");
            }
            // The message is built without panicking, whatever the text held.
            let _ = err.to_string();
        }
    }
}
