//! The clock check: is the host's clock synchronised? Audit times, token expiry and one-time
//! codes all trust it, so `serve` looks at start and every hour, logs a warning and records a
//! `clock.unsynchronised` event (once per crossing) while it is not, and `mailroom status`
//! shows it.
//!
//! The kernel keeps the NTP state its time service (chrony, ntpd, systemd-timesyncd) sets;
//! [`KernelClock`] reads it with `adjtimex(2)` and `modes = 0`, which changes nothing.
//! Unsynchronised means the call answers `TIME_ERROR` or the status has `STA_UNSYNC`. This is
//! the one place in the workspace with `unsafe` (the libc call); it sets no clock and talks
//! to no time server. [`ClockProbe`] is the seam the tests use: a fake in the unit tests, and
//! the documented test hook [`TEST_HOOK`] for the binary's own tests.

use std::time::Duration;

use anyhow::Result;
use tracing::{info, warn};

/// The test hook: with `MAILROOM_TEST_CLOCK=unsynchronised` in its environment, the binary
/// reports the clock as unsynchronised whatever the kernel says. It can only raise a false
/// alarm, never hide a real one; any other value is ignored.
pub const TEST_HOOK: &str = "MAILROOM_TEST_CLOCK";

/// How often `serve` looks after the look at start.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(3600);

/// What a probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClockStatus {
    /// A time service disciplines the clock.
    Synchronised {
        /// The kernel's maximum error estimate.
        max_error: Duration,
    },
    /// Nothing disciplines the clock, or the kernel says its time is in error.
    Unsynchronised {
        /// What the kernel reported, in words.
        reason: String,
    },
    /// The status could not be read (the call failed).
    Unknown {
        /// Why.
        error: String,
    },
}

impl ClockStatus {
    /// One word for tables and JSON: `synchronised`, `unsynchronised` or `unknown`.
    pub fn label(&self) -> &'static str {
        match self {
            ClockStatus::Synchronised { .. } => "synchronised",
            ClockStatus::Unsynchronised { .. } => "unsynchronised",
            ClockStatus::Unknown { .. } => "unknown",
        }
    }

    /// The detail beside the label.
    pub fn detail(&self) -> String {
        match self {
            ClockStatus::Synchronised { max_error } => {
                format!("maximum error {} ms", max_error.as_millis())
            }
            ClockStatus::Unsynchronised { reason } => reason.clone(),
            ClockStatus::Unknown { error } => error.clone(),
        }
    }
}

/// Reads the clock's synchronisation status.
pub trait ClockProbe: Send + Sync {
    /// The status now.
    fn status(&self) -> ClockStatus;
}

/// The probe the binary uses: the kernel's, or the test hook's fixed answer when
/// [`TEST_HOOK`] says `unsynchronised`.
pub fn probe() -> Box<dyn ClockProbe> {
    match std::env::var(TEST_HOOK) {
        Ok(value) if value == "unsynchronised" => Box::new(TestHookClock),
        _ => Box::new(KernelClock),
    }
}

/// The kernel's NTP status through `adjtimex(2)`, read-only.
#[derive(Debug, Clone, Copy)]
pub struct KernelClock;

impl ClockProbe for KernelClock {
    fn status(&self) -> ClockStatus {
        match adjtimex_read() {
            Ok(reading) => judge(reading),
            Err(err) => ClockStatus::Unknown {
                error: format!("cannot read the kernel's clock status (adjtimex): {err}"),
            },
        }
    }
}

/// The answer of the test hook.
struct TestHookClock;

impl ClockProbe for TestHookClock {
    fn status(&self) -> ClockStatus {
        ClockStatus::Unsynchronised {
            reason: format!("reported by the test hook {TEST_HOOK}"),
        }
    }
}

/// What `adjtimex` answered: its return value and the fields we judge.
#[derive(Debug, Clone, Copy)]
struct Reading {
    state: libc::c_int,
    status: libc::c_int,
    max_error_micros: libc::c_long,
}

/// Calls `adjtimex` with `modes = 0`: a read of the kernel's state that changes nothing and
/// needs no privilege.
#[allow(unsafe_code)]
fn adjtimex_read() -> std::io::Result<Reading> {
    // SAFETY: `timex` is a plain C struct of integers (and padding), so all zeroes is a valid
    // value; zero `modes` asks the kernel to set nothing.
    let mut timex: libc::timex = unsafe { std::mem::zeroed() };
    timex.modes = 0;
    // SAFETY: `timex` is a valid, exclusively borrowed struct for the whole call, and the
    // kernel only writes into it.
    let state = unsafe { libc::adjtimex(&mut timex) };
    if state == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(Reading {
        state,
        status: timex.status,
        max_error_micros: timex.maxerror,
    })
}

/// The verdict on one reading.
fn judge(reading: Reading) -> ClockStatus {
    if reading.state == libc::TIME_ERROR {
        return ClockStatus::Unsynchronised {
            reason: "the kernel reports TIME_ERROR: the clock is not synchronised to a time source"
                .to_owned(),
        };
    }
    if reading.status & libc::STA_UNSYNC != 0 {
        return ClockStatus::Unsynchronised {
            reason: "the kernel's clock status has STA_UNSYNC: no time service (chrony, ntpd, systemd-timesyncd) disciplines it"
                .to_owned(),
        };
    }
    let micros = u64::try_from(reading.max_error_micros).unwrap_or(0);
    ClockStatus::Synchronised {
        max_error: Duration::from_micros(micros),
    }
}

/// The watch's memory between looks: whether the last crossing recorded was into
/// unsynchronised, so that an event is raised once per crossing, not at every look.
#[derive(Debug, Default)]
pub struct ClockWatch {
    unsynchronised: bool,
}

impl ClockWatch {
    /// Looks once: logs the state, and when the clock has just become unsynchronised calls
    /// `alert` with the reason (a failed alert is tried again at the next look). Returns
    /// what it saw.
    pub async fn look(
        &mut self,
        probe: &dyn ClockProbe,
        alert: impl AsyncFnOnce(String) -> Result<()>,
    ) -> ClockStatus {
        let status = probe.status();
        match &status {
            ClockStatus::Unsynchronised { reason } => {
                warn!(%reason, "the clock is not synchronised: audit times, token expiry and one-time codes may drift; start a time service");
                if !self.unsynchronised {
                    match alert(reason.clone()).await {
                        Ok(()) => self.unsynchronised = true,
                        Err(err) => {
                            warn!(
                                error = format!("{err:#}"),
                                "could not record the clock.unsynchronised event"
                            );
                        }
                    }
                }
            }
            ClockStatus::Synchronised { max_error } => {
                if self.unsynchronised {
                    info!(
                        max_error_ms = max_error.as_millis(),
                        "the clock is synchronised again"
                    );
                }
                self.unsynchronised = false;
            }
            ClockStatus::Unknown { error } => {
                warn!(%error, "cannot tell whether the clock is synchronised");
            }
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use super::*;

    /// A probe that answers a script of statuses, one per look.
    struct Scripted(Mutex<VecDeque<ClockStatus>>);

    impl ClockProbe for Scripted {
        fn status(&self) -> ClockStatus {
            self.0.lock().unwrap().pop_front().unwrap()
        }
    }

    fn synced() -> ClockStatus {
        ClockStatus::Synchronised {
            max_error: Duration::from_millis(5),
        }
    }

    fn unsynced() -> ClockStatus {
        ClockStatus::Unsynchronised {
            reason: "STA_UNSYNC".to_owned(),
        }
    }

    fn unknown() -> ClockStatus {
        ClockStatus::Unknown {
            error: "EPERM".to_owned(),
        }
    }

    /// Runs the looks of `script`; `fails` lists the looks whose alert fails. Returns the
    /// looks at which an alert was raised (failed or not).
    async fn alerts_at(script: Vec<ClockStatus>, fails: &[usize]) -> Vec<usize> {
        let looks = script.len();
        let probe = Scripted(Mutex::new(script.into()));
        let mut watch = ClockWatch::default();
        let mut raised = Vec::new();
        for look in 0..looks {
            let raised = &mut raised;
            watch
                .look(&probe, async |reason: String| {
                    assert_eq!(reason, "STA_UNSYNC");
                    raised.push(look);
                    if fails.contains(&look) {
                        anyhow::bail!("store down");
                    }
                    Ok(())
                })
                .await;
        }
        raised
    }

    #[tokio::test]
    async fn an_alert_is_raised_once_per_crossing_into_unsynchronised() {
        for (script, fails, expect) in [
            (vec![synced(), synced()], vec![], vec![]),
            (vec![unsynced(), unsynced(), unsynced()], vec![], vec![0]),
            (
                vec![synced(), unsynced(), unsynced(), synced(), unsynced()],
                vec![],
                vec![1, 4],
            ),
            // Not knowing is no crossing either way.
            (vec![unsynced(), unknown(), unsynced()], vec![], vec![0]),
            (vec![unknown(), unknown()], vec![], vec![]),
            // A failed alert is raised again at the next look, and only until one succeeds.
            (
                vec![unsynced(), unsynced(), unsynced()],
                vec![0],
                vec![0, 1],
            ),
        ] {
            assert_eq!(
                alerts_at(script.clone(), &fails).await,
                expect,
                "{script:?}"
            );
        }
    }

    #[test]
    fn the_kernel_reading_is_judged_by_time_error_and_sta_unsync() {
        let check = |state, status, expect: &str| {
            let reading = Reading {
                state,
                status,
                max_error_micros: 16_000,
            };
            assert_eq!(judge(reading).label(), expect, "{reading:?}");
        };
        check(libc::TIME_OK, 0, "synchronised");
        check(libc::TIME_INS, libc::STA_PLL, "synchronised");
        check(libc::TIME_OK, libc::STA_UNSYNC, "unsynchronised");
        check(libc::TIME_ERROR, 0, "unsynchronised");
        check(
            libc::TIME_ERROR,
            libc::STA_UNSYNC | libc::STA_PLL,
            "unsynchronised",
        );
        assert_eq!(
            judge(Reading {
                state: libc::TIME_OK,
                status: 0,
                max_error_micros: 16_000,
            }),
            ClockStatus::Synchronised {
                max_error: Duration::from_millis(16)
            }
        );
    }

    #[test]
    fn the_kernel_answers_a_read_only_adjtimex() {
        // Whatever this machine's state, the call itself must work unprivileged.
        let status = KernelClock.status();
        assert_ne!(status.label(), "unknown", "{status:?}");
    }
}
