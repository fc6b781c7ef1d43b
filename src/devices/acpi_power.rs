//! The hardware-reduced ACPI power registers the FADT points to: the sleep control and status
//! registers (S5 = power off) and the reset register.

use super::bus::BusDevice;
use super::{GuestEvent, GuestEventSink, ResetCause};
use crate::log_limit::LogLimit;

/// FADT SLEEP_CONTROL_REG (one byte of I/O space).
pub const SLEEP_CONTROL_PORT: u16 = 0x600;
/// FADT SLEEP_STATUS_REG, right after it.
pub const SLEEP_STATUS_PORT: u16 = 0x601;
/// FADT RESET_REG: the PC's reset control register.
pub const RESET_PORT: u16 = 0xcf9;
/// FADT RESET_VALUE: "hard reset" (CPU reset + system reset bits).
pub const RESET_VALUE: u8 = 0x06;
/// `_S5_` sleep type, as the DSDT advertises it.
pub const SLP_TYP_S5: u8 = 5;

const SLP_EN: u8 = 1 << 5;
const SLP_TYP_SHIFT: u8 = 2;
const SLP_TYP_MASK: u8 = 0x7;
/// Reset control register bit 2: do the reset.
const RST_CPU: u8 = 1 << 2;

static OTHER_SLEEP: LogLimit = LogLimit::new();

/// Sleep control (offset 0) and sleep status (offset 1).
pub struct SleepRegisters {
    events: GuestEventSink,
}

impl SleepRegisters {
    pub fn new(events: GuestEventSink) -> Self {
        SleepRegisters { events }
    }
}

impl BusDevice for SleepRegisters {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        // No wake events are ever pending.
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let (0, [value]) = (offset, data) else { return };
        if value & SLP_EN == 0 {
            return;
        }
        match (value >> SLP_TYP_SHIFT) & SLP_TYP_MASK {
            t if t == SLP_TYP_S5 => (self.events)(GuestEvent::PowerOff),
            t => {
                if let Some(n) = OTHER_SLEEP.hit() {
                    log::warn!("guest asked for unsupported sleep type {t} ({n}x); ignored");
                }
            }
        }
    }
}

/// The reset control register.
pub struct ResetRegister {
    events: GuestEventSink,
}

impl ResetRegister {
    pub fn new(events: GuestEventSink) -> Self {
        ResetRegister { events }
    }
}

impl BusDevice for ResetRegister {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        if let [value] = data
            && value & RST_CPU != 0
        {
            (self.events)(GuestEvent::Reset(ResetCause::AcpiResetRegister));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn recorder() -> (GuestEventSink, Arc<Mutex<Vec<GuestEvent>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        (Arc::new(move |e| s.lock().unwrap().push(e)), seen)
    }

    #[test]
    fn s5_with_slp_en_powers_off() {
        let (sink, seen) = recorder();
        let mut dev = SleepRegisters::new(sink);
        dev.write(0, &[SLP_TYP_S5 << 2]); // no SLP_EN
        dev.write(0, &[(3 << 2) | SLP_EN]); // S3: unsupported
        dev.write(1, &[0x34]); // status register
        dev.write(0, &[0x34, 0]); // wrong width
        assert!(seen.lock().unwrap().is_empty());
        dev.write(0, &[0x34]);
        assert_eq!(*seen.lock().unwrap(), vec![GuestEvent::PowerOff]);
    }

    #[test]
    fn reset_register() {
        let (sink, seen) = recorder();
        let mut dev = ResetRegister::new(sink);
        dev.write(0, &[0x02]);
        assert!(seen.lock().unwrap().is_empty());
        dev.write(0, &[RESET_VALUE]);
        assert_eq!(
            *seen.lock().unwrap(),
            vec![GuestEvent::Reset(ResetCause::AcpiResetRegister)]
        );
    }
}
