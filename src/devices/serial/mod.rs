//! The 8250 UARTs: COM1 (console, ttyS0) and COM2 (log port, ttyS1), emulated by vm-superio.
//! `device` is the port-I/O glue, `output` the never-blocking output path, `input` the
//! host-input path that only reads while the guest's FIFO has room.

pub mod device;
pub mod input;
pub mod output;

pub use device::{SerialDevice, SerialPortInfo};

/// COM1: the console.
pub const COM1: SerialPortInfo = SerialPortInfo {
    base: 0x3f8,
    irq: 4,
};
/// COM2: the log port (AVF guests write their failure reason here).
pub const COM2: SerialPortInfo = SerialPortInfo {
    base: 0x2f8,
    irq: 3,
};
/// Each UART decodes eight ports.
pub const SERIAL_PORT_LEN: u64 = 8;
