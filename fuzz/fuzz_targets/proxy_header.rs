//! Fuzz target: the PROXY protocol header reader of the listeners
//! (`mailroom_net::proxy::read_header`, versions 1 and 2), on the bytes a load balancer, or
//! anyone who can reach a listener configured to expect one, sends first.
//!
//! Beyond "never panics" it checks the promises of the reader: it reads no byte past the
//! header (given only the bytes it took it answers the same), takes at most the protocol's
//! (v1) or our (v2) limit, a v1 header it accepts ends at its first CRLF and a v2 header is
//! exactly the length it announces, and a relayed IPv6 address is canonical.

#![no_main]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use libfuzzer_sys::fuzz_target;
use mailroom_net::proxy::{self, ProxyHeader, ProxyHeaderError};

fuzz_target!(|data: &[u8]| {
    let (result, taken) = read(data);
    assert!(taken <= proxy::V1_MAX_BYTES.max(proxy::V2_MAX_BYTES));
    let _ = result.as_ref().map_err(ToString::to_string);
    let Ok(header) = result else {
        return;
    };
    let bytes = &data[..taken];
    if bytes.starts_with(b"PROXY ") {
        assert!(taken <= proxy::V1_MAX_BYTES);
        assert!(bytes.ends_with(b"\r\n"));
        assert_eq!(bytes.iter().filter(|&&b| b == b'\n').count(), 1);
    } else {
        assert!(taken >= 16);
        assert_eq!(
            taken,
            16 + usize::from(u16::from_be_bytes([bytes[14], bytes[15]]))
        );
    }
    if let ProxyHeader::Relayed(address) = header {
        assert_eq!(address.ip().to_canonical(), address.ip());
    }
    // Nothing past the header was needed.
    let (again, taken_again) = read(bytes);
    assert_eq!(again.ok(), Some(header));
    assert_eq!(taken_again, taken);
});

/// Runs the reader on `data` as a stream; a slice never makes it wait, so one poll finishes
/// it. Returns its answer and how many bytes it took.
fn read(data: &[u8]) -> (Result<ProxyHeader, ProxyHeaderError>, usize) {
    let mut stream = data;
    let result = {
        let mut future = pin!(proxy::read_header(&mut stream));
        match future
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
        {
            Poll::Ready(result) => result,
            Poll::Pending => panic!("the reader waited on a slice"),
        }
    };
    (result, data.len() - stream.len())
}
