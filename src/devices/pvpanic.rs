//! pvpanic at I/O port 0x505 (ACPI `QEMU0001`, bound by Linux's pvpanic-mmio driver): the guest
//! writes "panicked" here from its panic notifier.

use super::bus::BusDevice;
use super::{GuestEvent, GuestEventSink};

pub const PVPANIC_PORT: u16 = 0x505;
/// Event bits (also the capability bits read back).
pub const PVPANIC_PANICKED: u8 = 1 << 0;
pub const PVPANIC_CRASH_LOADED: u8 = 1 << 1;

pub struct PvPanic {
    events: GuestEventSink,
}

impl PvPanic {
    pub fn new(events: GuestEventSink) -> Self {
        PvPanic { events }
    }
}

impl BusDevice for PvPanic {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
        if let Some(b) = data.first_mut() {
            *b = PVPANIC_PANICKED | PVPANIC_CRASH_LOADED;
        }
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        let Some(&value) = data.first() else { return };
        if value & PVPANIC_PANICKED != 0 {
            (self.events)(GuestEvent::Panic);
        } else if value & PVPANIC_CRASH_LOADED != 0 {
            // A kdump kernel takes over; the VM goes on.
            log::info!("guest reported a crash with a crash kernel loaded");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn panicked_bit_reports_a_panic() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let mut dev = PvPanic::new(Arc::new(move |e| s.lock().unwrap().push(e)));
        let mut caps = [0u8];
        dev.read(0, &mut caps);
        assert_eq!(caps[0], 3);
        dev.write(0, &[PVPANIC_CRASH_LOADED]);
        dev.write(0, &[]);
        assert!(seen.lock().unwrap().is_empty());
        dev.write(0, &[PVPANIC_PANICKED]);
        assert_eq!(*seen.lock().unwrap(), vec![GuestEvent::Panic]);
    }
}
