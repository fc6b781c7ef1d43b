//! A virtio-mmio device's interrupt: the InterruptStatus bits and the irqfd that raises the
//! device's GSI.

use std::sync::atomic::{AtomicU32, Ordering};

use vmm_sys_util::eventfd::EventFd;

use crate::log_limit::LogLimit;

/// InterruptStatus bit 0: the device used a buffer.
pub const INT_USED_RING: u32 = 1;
/// InterruptStatus bit 1: the configuration changed (or the device needs a reset).
pub const INT_CONFIG: u32 = 2;

static IRQ_FAILED: LogLimit = LogLimit::new();

pub struct Interrupt {
    status: AtomicU32,
    /// Registered with KVM as an irqfd for the device's GSI.
    pub irq: EventFd,
}

impl Interrupt {
    pub fn new(irq: EventFd) -> Self {
        Interrupt {
            status: AtomicU32::new(0),
            irq,
        }
    }

    /// Sets `bits` in InterruptStatus and raises the interrupt.
    pub fn trigger(&self, bits: u32) {
        self.status.fetch_or(bits, Ordering::SeqCst);
        if let Err(e) = self.irq.write(1)
            && let Some(n) = IRQ_FAILED.hit()
        {
            log::warn!("virtio interrupt failed ({n}x): {e}");
        }
    }

    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    /// InterruptACK: clears the acknowledged bits.
    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }

    pub fn clear(&self) {
        self.status.store(0, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_sets_bits_and_signals() {
        let i = Interrupt::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
        i.trigger(INT_USED_RING);
        i.trigger(INT_CONFIG);
        assert_eq!(i.status(), 3);
        assert_eq!(i.irq.read().unwrap(), 2);
        i.ack(INT_USED_RING);
        assert_eq!(i.status(), INT_CONFIG);
        i.clear();
        assert_eq!(i.status(), 0);
    }
}
