//! The i8042 keyboard controller, only as far as its CPU-reset line (0xfe to port 0x64), which
//! Linux's `reboot=k` and many bootloaders use. vm-superio provides the device.

use vm_superio::{I8042Device, Trigger};

use super::bus::BusDevice;
use super::{GuestEvent, GuestEventSink, ResetCause};

/// The controller decodes ports 0x60..=0x64.
pub const I8042_BASE: u16 = 0x60;
pub const I8042_LEN: u64 = 5;

/// Turns the i8042's reset request into a guest reset.
pub struct ResetTrigger(GuestEventSink);

impl Trigger for ResetTrigger {
    type E = std::convert::Infallible;

    fn trigger(&self) -> Result<(), Self::E> {
        (self.0)(GuestEvent::Reset(ResetCause::I8042));
        Ok(())
    }
}

pub struct I8042(I8042Device<ResetTrigger>);

impl I8042 {
    pub fn new(events: GuestEventSink) -> Self {
        I8042(I8042Device::new(ResetTrigger(events)))
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if let Some(b) = data.first_mut() {
            *b = self.0.read(offset as u8);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let [value] = data {
            let Ok(()) = self.0.write(offset as u8, *value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn only_0xfe_on_the_command_port_resets() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let mut dev = I8042::new(Arc::new(move |e| s.lock().unwrap().push(e)));
        dev.write(0, &[0xfe]);
        dev.write(4, &[0xfd]);
        dev.write(4, &[0xfe, 0]);
        assert!(seen.lock().unwrap().is_empty());
        dev.write(4, &[0xfe]);
        assert_eq!(
            *seen.lock().unwrap(),
            vec![GuestEvent::Reset(ResetCause::I8042)]
        );
        let mut d = [0xaa; 2];
        dev.read(4, &mut d);
        assert_eq!(d, [0, 0]);
    }
}
