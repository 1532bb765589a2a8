//! Configuration sections that describe themselves: each section of `mailroom.toml` is a
//! plain struct declared with [`config_section!`](crate::config_section), which keeps the
//! section's name, its doc comment and every field's doc comment beside the fields, as a
//! [`ConfigSection`]. The binary assembles the commented template and the environment
//! overrides from these descriptions and takes the defaults from the section's `Default`
//! (serialised); this crate knows nothing of TOML.
//!
//! It lives here because every crate that owns a section can reach it: the front ends depend
//! on this crate, and the binary's own sections use the same macro.

/// One setting of a section as the template shows it: the field's name as serde spells it
/// and the field's doc comment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SettingDoc {
    /// The key in the file (and in `MAILROOM_<SECTION>_<KEY>`): the field's name.
    pub key: &'static str,
    /// The field's doc comment, one entry per line as written after `///`.
    pub doc: &'static [&'static str],
}

/// A section of the configuration file, plain data with safe defaults. Implemented by
/// [`config_section!`](crate::config_section), never by hand, so that a field cannot be added
/// without its doc comment reaching the template.
pub trait ConfigSection: Default + serde::Serialize + serde::de::DeserializeOwned {
    /// The section's name in the file: `sftp` for `[sftp]`, `ace.compression` for a
    /// sub-table `[ace.compression]` (whose environment overrides are
    /// `MAILROOM_ACE_COMPRESSION_<KEY>`).
    const NAME: &'static str;
    /// The struct's doc comment, one entry per line: what the section is for.
    const DOC: &'static [&'static str];
    /// Every field in declaration order, with its doc comment.
    const SETTINGS: &'static [SettingDoc];
}

/// Declares a configuration section: a struct whose fields are its settings, and its
/// [`ConfigSection`] description taken from the same text.
///
/// ```
/// mailroom_net::config_section! {
///     [example]
///     /// What the section is for (the heading of `[example]` in the template).
///     #[derive(Debug, Default, serde::Deserialize, serde::Serialize)]
///     #[serde(deny_unknown_fields, default)]
///     pub struct Example {
///         /// What the setting does (its comment in the template).
///         pub enabled: bool,
///     }
/// }
/// use mailroom_net::ConfigSection as _;
/// assert_eq!(Example::NAME, "example");
/// assert_eq!(Example::SETTINGS[0].key, "enabled");
/// ```
///
/// Every field needs a `///` doc comment (a compile error otherwise); the doc comment is both
/// the field's Rust documentation and its comment in the template. Attributes other than doc
/// comments (`#[serde(...)]`) pass through unchanged.
///
/// ```compile_fail
/// mailroom_net::config_section! {
///     [example]
///     /// A section whose setting has no doc comment.
///     #[derive(Debug, Default, serde::Deserialize, serde::Serialize)]
///     pub struct Example {
///         pub enabled: bool,
///     }
/// }
/// ```
#[macro_export]
macro_rules! config_section {
    // A sub-table of a section, `[ace.compression]`: its name holds the dot.
    (
        [$section:ident . $sub:ident]
        $($rest:tt)*
    ) => {
        $crate::config_section! { @named concat!(stringify!($section), ".", stringify!($sub)); $($rest)* }
    };
    (
        [$section:ident]
        $($rest:tt)*
    ) => {
        $crate::config_section! { @named stringify!($section); $($rest)* }
    };
    (
        @named $section_name:expr;
        $(#[$($attr:tt)*])*
        $vis:vis struct $name:ident {
            $(
                $(#[$($field_attr:tt)*])*
                $field_vis:vis $field:ident : $field_type:ty
            ),+ $(,)?
        }
    ) => {
        $(#[$($attr)*])*
        $vis struct $name {
            $(
                $(#[$($field_attr)*])*
                $field_vis $field: $field_type,
            )+
        }

        impl $crate::ConfigSection for $name {
            const NAME: &'static str = $section_name;
            const DOC: &'static [&'static str] =
                $crate::__config_doc!($name; []; $([$($attr)*])*);
            const SETTINGS: &'static [$crate::SettingDoc] = &[$(
                $crate::SettingDoc {
                    key: stringify!($field),
                    doc: $crate::__config_doc!($field; []; $([$($field_attr)*])*),
                },
            )+];
        }
    };
}

/// The doc-comment lines among a list of attributes, as `&[&str]`; a compile error if there
/// are none. Used by [`config_section!`](crate::config_section).
#[doc(hidden)]
#[macro_export]
macro_rules! __config_doc {
    ($item:ident; []; ) => {
        compile_error!(concat!(
            "config_section!: `",
            stringify!($item),
            "` needs a /// doc comment: it is its comment in the configuration template"
        ))
    };
    ($item:ident; [$($line:literal),*]; ) => {
        &[$($line),*]
    };
    ($item:ident; [$($line:literal),*]; [doc = $doc:literal] $($rest:tt)*) => {
        $crate::__config_doc!($item; [$($line,)* $doc]; $($rest)*)
    };
    ($item:ident; [$($line:literal),*]; [$($other:tt)*] $($rest:tt)*) => {
        $crate::__config_doc!($item; [$($line),*]; $($rest)*)
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    config_section! {
        [probe]
        /// A section for the tests.
        ///
        /// Its second paragraph.
        #[derive(Debug, Default, PartialEq, serde::Deserialize, serde::Serialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct Probe {
            /// One line.
            pub first: bool,
            /// Two
            /// lines.
            #[serde(rename = "second")]
            pub second: u32,
        }
    }

    #[test]
    fn the_description_comes_from_the_declaration() {
        assert_eq!(Probe::NAME, "probe");
        assert_eq!(
            Probe::DOC,
            [" A section for the tests.", "", " Its second paragraph."]
        );
        assert_eq!(
            Probe::SETTINGS,
            [
                SettingDoc {
                    key: "first",
                    doc: &[" One line."],
                },
                SettingDoc {
                    key: "second",
                    doc: &[" Two", " lines."],
                },
            ]
        );
        assert_eq!(
            Probe::default(),
            Probe {
                first: false,
                second: 0
            }
        );
    }
}
