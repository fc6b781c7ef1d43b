//! A vm-superio 8250 behind the port-I/O bus, raising its IRQ through an irqfd.

use std::sync::{Arc, Condvar};

use vm_superio::serial::SerialEvents;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use super::output::OutputSink;
use crate::devices::bus::BusDevice;
use crate::log_limit::LogLimit;

/// Where a UART sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SerialPortInfo {
    pub base: u16,
    pub irq: u32,
}

/// Raises the UART's interrupt by signalling an eventfd registered as a KVM irqfd.
pub struct IrqTrigger(pub EventFd);

impl Trigger for IrqTrigger {
    type E = std::io::Error;

    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

/// Wakes the host-input thread when the guest drained the receive FIFO.
#[derive(Clone, Default)]
pub struct InputWaker(pub Arc<Condvar>);

impl SerialEvents for InputWaker {
    fn buffer_read(&self) {}
    fn out_byte(&self) {}
    fn tx_lost_byte(&self) {}
    fn in_buffer_empty(&self) {
        self.0.notify_all();
    }
}

pub type Uart = Serial<IrqTrigger, InputWaker, OutputSink>;

/// One UART on the bus.
pub struct SerialDevice {
    uart: Uart,
    name: &'static str,
}

/// Interrupt enable register offset, and its "THR empty" bit.
const IER_OFFSET: u64 = 1;
const IER_THRI: u8 = 0x02;
/// Line control register offset, and its divisor-latch bit (IER is then the divisor).
const LCR_OFFSET: u8 = 3;
const LCR_DLAB: u8 = 0x80;
/// IIR's "THR empty" interrupt bit.
const IIR_THRE: u8 = 0x02;

static ODD_ACCESS: LogLimit = LogLimit::new();
static TRIGGER_FAILED: LogLimit = LogLimit::new();

impl SerialDevice {
    pub fn new(name: &'static str, irq: EventFd, waker: InputWaker, out: OutputSink) -> Self {
        SerialDevice {
            uart: Serial::with_events(IrqTrigger(irq), waker, out),
            name,
        }
    }

    fn dlab(&mut self) -> bool {
        // Reading LCR has no side effects.
        self.uart.read(LCR_OFFSET) & LCR_DLAB != 0
    }

    pub fn fifo_capacity(&self) -> usize {
        self.uart.fifo_capacity()
    }

    /// Queues host input for the guest; returns how many bytes fitted.
    pub fn enqueue(&mut self, bytes: &[u8]) -> usize {
        match self.uart.enqueue_raw_bytes(bytes) {
            Ok(n) => n,
            Err(vm_superio::serial::Error::FullFifo) => 0,
            Err(e) => {
                if let Some(n) = TRIGGER_FAILED.hit() {
                    log::warn!("{}: input interrupt failed ({n}x): {e}", self.name);
                }
                // The bytes are in the FIFO even though the interrupt was lost.
                bytes.len().min(1)
            }
        }
    }
}

impl BusDevice for SerialDevice {
    fn describe(&self) -> Option<String> {
        let st = self.uart.state();
        Some(format!(
            "{}: ier {:#04x} iir {:#04x} lcr {:#04x} mcr {:#04x} lsr {:#04x} msr {:#04x}, {} input \
             bytes queued",
            self.name,
            st.interrupt_enable,
            st.interrupt_identification,
            st.line_control,
            st.modem_control,
            st.line_status,
            st.modem_status,
            st.in_buffer.len()
        ))
    }

    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if data.len() != 1 {
            if let Some(n) = ODD_ACCESS.hit() {
                log::warn!("{}: {}-byte read ignored ({n}x)", self.name, data.len());
            }
            data.fill(0xff);
            return;
        }
        data[0] = self.uart.read(offset as u8);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if data.len() != 1 {
            if let Some(n) = ODD_ACCESS.hit() {
                log::warn!("{}: {}-byte write ignored ({n}x)", self.name, data.len());
            }
            return;
        }
        // A 16550's interrupt output is a level: disabling THRI drops it, enabling THRI while
        // the transmitter is empty raises it again. vm-superio raises it only when its THRE
        // bit is not already pending, so a THRE left pending from the last burst would leave
        // the driver waiting forever for the next one. Raise it here in that case.
        let rearm_thre = offset == IER_OFFSET && !self.dlab() && {
            let st = self.uart.state();
            data[0] & IER_THRI != 0
                && st.interrupt_enable & IER_THRI == 0
                && st.interrupt_identification & IIR_THRE != 0
        };
        if let Err(e) = self.uart.write(offset as u8, data[0])
            && let Some(n) = TRIGGER_FAILED.hit()
        {
            log::warn!("{}: write failed ({n}x): {e}", self.name);
        }
        if rearm_thre
            && let Err(e) = self.uart.interrupt_evt().trigger()
            && let Some(n) = TRIGGER_FAILED.hit()
        {
            log::warn!("{}: interrupt failed ({n}x): {e}", self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const THR: u64 = 0;
    const IER: u64 = 1;
    const LSR: u64 = 5;

    fn device() -> (SerialDevice, OutputSink, EventFd) {
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let sink = OutputSink::memory(1024, None);
        let dev = SerialDevice::new(
            "test",
            irq.try_clone().unwrap(),
            InputWaker::default(),
            sink.clone(),
        );
        (dev, sink, irq)
    }

    #[test]
    fn output_reaches_the_sink() {
        let (mut dev, sink, _irq) = device();
        for b in b"hi\n" {
            dev.write(THR, &[*b]);
        }
        assert_eq!(sink.memory_contents(), b"hi\n");
    }

    #[test]
    fn input_is_bounded_by_the_fifo_and_raises_the_irq() {
        let (mut dev, _sink, irq) = device();
        // Enable the received-data interrupt.
        dev.write(IER, &[0x01]);
        let flood = vec![b'x'; 10_000];
        let taken = dev.enqueue(&flood);
        assert_eq!(taken, 64);
        assert_eq!(dev.fifo_capacity(), 0);
        assert_eq!(dev.enqueue(b"more"), 0);
        assert_eq!(irq.read().unwrap(), 1);
        let mut lsr = [0u8];
        dev.read(LSR, &mut lsr);
        assert_eq!(lsr[0] & 1, 1, "data ready");
        let mut b = [0u8];
        dev.read(THR, &mut b);
        assert_eq!(b[0], b'x');
        assert_eq!(dev.fifo_capacity(), 1);
    }

    #[test]
    fn re_enabling_thri_with_thre_pending_raises_the_interrupt() {
        let (mut dev, _sink, irq) = device();
        dev.write(IER_OFFSET, &[IER_THRI]);
        assert_eq!(irq.read().unwrap(), 1, "THRI enabled with THR empty");
        dev.write(THR, b"x");
        let _ = irq.read();
        // The driver stops transmitting without reading IIR: THRE stays pending.
        dev.write(IER_OFFSET, &[0]);
        assert!(irq.read().is_err(), "no interrupt while disabled");
        // Enabling THRI again must raise the interrupt again.
        dev.write(IER_OFFSET, &[IER_THRI]);
        assert_eq!(irq.read().unwrap(), 1);
        // With DLAB set, offset 1 is the divisor, not IER.
        dev.write(IER_OFFSET, &[0]);
        dev.write(3, &[LCR_DLAB]);
        dev.write(IER_OFFSET, &[IER_THRI]);
        assert!(irq.read().is_err());
    }

    #[test]
    fn wide_accesses_are_ignored() {
        let (mut dev, sink, _irq) = device();
        dev.write(THR, &[1, 2]);
        let mut d = [0u8; 4];
        dev.read(LSR, &mut d);
        assert_eq!(d, [0xff; 4]);
        assert!(sink.memory_contents().is_empty());
    }
}
