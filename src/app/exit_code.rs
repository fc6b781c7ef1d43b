//! The exit code of `micro-vmm --app` (docs/app.md): the payload's own exit code when it
//! finished, otherwise 200 + the stop reason's Android value.

use crate::lifecycle::StopReason;

use super::service::PayloadOutcome;

/// Exit codes for runs whose payload did not finish: `REASON_BASE + StopReason::value()`.
pub const REASON_BASE: i32 = 200;

/// The exit code for a run that ended without the payload finishing.
pub fn for_reason(reason: StopReason) -> i32 {
    REASON_BASE + reason.value()
}

/// The exit code of a run: the payload's exit status (0-255) when it finished, else
/// [`for_reason`].
pub fn for_run(reason: StopReason, outcome: &PayloadOutcome) -> i32 {
    match outcome.finished {
        Some(code) => code & 0xff,
        None => for_reason(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_code_wins_else_the_reason() {
        let finished = |c| PayloadOutcome {
            started: true,
            finished: Some(c),
            ..Default::default()
        };
        assert_eq!(for_run(StopReason::Shutdown, &finished(0)), 0);
        assert_eq!(for_run(StopReason::Shutdown, &finished(42)), 42);
        assert_eq!(for_run(StopReason::Shutdown, &finished(128 + 11)), 139);
        assert_eq!(for_run(StopReason::Shutdown, &finished(256 + 3)), 3);
        let none = PayloadOutcome::default();
        assert_eq!(for_run(StopReason::Killed, &none), 201);
        assert_eq!(for_run(StopReason::Shutdown, &none), 203);
        assert_eq!(
            for_run(StopReason::MicrodroidPayloadVerificationFailed, &none),
            213
        );
        assert_eq!(
            for_run(StopReason::MicrodroidInvalidPayloadConfig, &none),
            214
        );
        assert_eq!(for_run(StopReason::Hangup, &none), 216);
    }
}
