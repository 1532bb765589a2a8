//! The QR code of a TOTP enrolment as an SVG drawn on the server (the `qrcode` crate computes
//! the modules; this draws them as one path), so the page loads no script or image from
//! anywhere to show it. The SVG holds the otpauth URI's secret: it is sent once, with
//! `Cache-Control: no-store`, like the secret beside it.

use qrcode::{Color, EcLevel, QrCode};

/// Modules of quiet zone around the code (the standard asks for 4).
const QUIET: usize = 4;

/// An SVG of the QR code of `data`, or `None` when it does not fit in a QR code.
pub(crate) fn svg(data: &str) -> Option<String> {
    let code = QrCode::with_error_correction_level(data.as_bytes(), EcLevel::M).ok()?;
    let width = code.width();
    let colors = code.to_colors();
    let full = width + 2 * QUIET;
    let mut path = String::with_capacity(colors.len() * 8);
    for (index, color) in colors.iter().enumerate() {
        if *color == Color::Dark {
            let (x, y) = (index % width + QUIET, index / width + QUIET);
            path.push_str(&format!("M{x} {y}h1v1h-1z"));
        }
    }
    Some(format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {full} {full}\" width=\"240\" height=\"240\" \
         role=\"img\" aria-label=\"QR code for your authenticator app\" shape-rendering=\"crispEdges\">\
         <rect width=\"{full}\" height=\"{full}\" fill=\"#ffffff\"/><path fill=\"#111827\" d=\"{path}\"/></svg>"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_a_square_svg() {
        let svg = svg("otpauth://totp/Mailroom:alice?secret=JBSWY3DPEHPK3PXP&issuer=Mailroom")
            .unwrap_or_default();
        assert!(svg.starts_with("<svg"));
        assert!(
            svg.contains("M4 4h1v1h-1z"),
            "a finder pattern starts at the quiet zone"
        );
        assert!(!svg.contains("style"), "no inline style under the CSP");
    }
}
