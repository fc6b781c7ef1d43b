//! A port-I/O or MMIO bus: non-overlapping address ranges, each owned by one device.

use std::sync::{Arc, Mutex, PoisonError};

/// A device reachable through a [`Bus`]. Offsets are relative to the device's base.
pub trait BusDevice: Send {
    fn read(&mut self, offset: u64, data: &mut [u8]);
    fn write(&mut self, offset: u64, data: &[u8]);
    /// The device's interrupt-relevant state on one line, for the state dump (`None`: the
    /// device has nothing worth showing).
    fn describe(&self) -> Option<String> {
        None
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    #[error("bus range {base:#x}+{len:#x} is empty or wraps")]
    BadRange { base: u64, len: u64 },
    #[error("bus range {base:#x}+{len:#x} overlaps another device")]
    Overlap { base: u64, len: u64 },
}

struct Entry {
    base: u64,
    len: u64,
    dev: Arc<Mutex<dyn BusDevice>>,
}

#[derive(Default)]
pub struct Bus {
    /// Sorted by `base`; ranges do not overlap.
    entries: Vec<Entry>,
}

impl Bus {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(
        &mut self,
        dev: Arc<Mutex<dyn BusDevice>>,
        base: u64,
        len: u64,
    ) -> Result<(), BusError> {
        let end = base
            .checked_add(len)
            .filter(|_| len > 0)
            .ok_or(BusError::BadRange { base, len })?;
        let i = self.entries.partition_point(|e| e.base < base);
        let overlaps_prev = i > 0 && self.entries[i - 1].base + self.entries[i - 1].len > base;
        let overlaps_next = i < self.entries.len() && self.entries[i].base < end;
        if overlaps_prev || overlaps_next {
            return Err(BusError::Overlap { base, len });
        }
        self.entries.insert(i, Entry { base, len, dev });
        Ok(())
    }

    /// The device whose range holds the whole access, with the access's offset in it.
    fn find(&self, addr: u64, size: usize) -> Option<(&Entry, u64)> {
        let i = self
            .entries
            .partition_point(|e| e.base <= addr)
            .checked_sub(1)?;
        let e = &self.entries[i];
        let offset = addr - e.base;
        (offset.checked_add(size as u64)? <= e.len).then_some((e, offset))
    }

    /// Calls `f` with the device that claims `[addr, addr + size)` and the offset into it;
    /// returns false when no device does.
    fn dispatch(&self, addr: u64, size: usize, f: impl FnOnce(&mut dyn BusDevice, u64)) -> bool {
        match self.find(addr, size) {
            Some((e, offset)) => {
                f(
                    &mut *e.dev.lock().unwrap_or_else(PoisonError::into_inner),
                    offset,
                );
                true
            }
            None => false,
        }
    }

    /// Routes a read; returns false (and leaves `data` alone) when no device claims it.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        self.dispatch(addr, data.len(), |dev, offset| dev.read(offset, data))
    }

    /// One line per device that describes itself ("<kind> <base>: <state>"). A device whose
    /// lock is held (by a vCPU that is stuck in it, say) is reported as busy, never waited for.
    pub fn describe_devices(&self, kind: &str) -> String {
        let mut out = String::new();
        for e in &self.entries {
            // A busy device (a vCPU in the middle of an access) is retried for up to ~50 ms.
            let mut tries = 0;
            let line = loop {
                match e.dev.try_lock() {
                    Ok(d) => break d.describe(),
                    Err(std::sync::TryLockError::Poisoned(p)) => break p.into_inner().describe(),
                    Err(std::sync::TryLockError::WouldBlock) if tries < 100 => {
                        tries += 1;
                        std::thread::sleep(std::time::Duration::from_micros(500));
                    }
                    Err(std::sync::TryLockError::WouldBlock) => {
                        break Some("busy (its lock stayed held)".to_string());
                    }
                }
            };
            if let Some(s) = line {
                out.push_str(&format!("{kind} {:#x}: {s}\n", e.base));
            }
        }
        out
    }

    /// Routes a write; returns false when no device claims it.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        self.dispatch(addr, data.len(), |dev, offset| dev.write(offset, data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder {
        last_write: Option<(u64, Vec<u8>)>,
    }

    impl BusDevice for Recorder {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.last_write = Some((offset, data.to_vec()));
        }
    }

    #[test]
    fn routes_by_range() {
        let mut bus = Bus::new();
        let a = Arc::new(Mutex::new(Recorder::default()));
        let b = Arc::new(Mutex::new(Recorder::default()));
        bus.insert(a.clone(), 0x3f8, 8).unwrap();
        bus.insert(b.clone(), 0x2f8, 8).unwrap();
        let mut d = [0u8; 1];
        assert!(bus.read(0x3fd, &mut d));
        assert_eq!(d[0], 5);
        assert!(bus.write(0x2f8, &[7]));
        assert_eq!(b.lock().unwrap().last_write, Some((0, vec![7])));
        assert!(a.lock().unwrap().last_write.is_none());
        assert!(!bus.read(0x400, &mut d));
        assert!(!bus.write(0x2f7, &[1]));
        // An access that runs past the device's end is not the device's.
        let mut wide = [0u8; 4];
        assert!(!bus.read(0x3fe, &mut wide));
        assert!(bus.read(0x3fc, &mut wide));
    }

    #[test]
    fn rejects_overlaps_and_bad_ranges() {
        let mut bus = Bus::new();
        let d = Arc::new(Mutex::new(Recorder::default()));
        bus.insert(d.clone(), 0x100, 0x10).unwrap();
        assert!(bus.insert(d.clone(), 0x10f, 1).is_err());
        assert!(bus.insert(d.clone(), 0xf8, 0x9).is_err());
        assert!(bus.insert(d.clone(), 0x0, 0x200).is_err());
        assert!(bus.insert(d.clone(), 0x110, 0).is_err());
        assert!(bus.insert(d.clone(), u64::MAX, 2).is_err());
        bus.insert(d.clone(), 0xf8, 0x8).unwrap();
        bus.insert(d, 0x110, 0x1).unwrap();
        assert!(!bus.read(u64::MAX, &mut [0u8; 8]));
    }
}
