//! The port-I/O bus as the builder assembles it: COM1 and COM2, the i8042, the ACPI sleep and
//! reset registers and pvpanic.

use std::sync::{Arc, Mutex};

use vmm_sys_util::eventfd::EventFd;

use super::Input;
use crate::devices::GuestEventSink;
use crate::devices::acpi_power::{RESET_PORT, ResetRegister, SLEEP_CONTROL_PORT, SleepRegisters};
use crate::devices::bus::Bus;
use crate::devices::i8042::{I8042, I8042_BASE, I8042_LEN};
use crate::devices::pvpanic::{PVPANIC_PORT, PvPanic};
use crate::devices::serial::device::InputWaker;
use crate::devices::serial::output::OutputSink;
use crate::devices::serial::{COM1, COM2, SERIAL_PORT_LEN, SerialDevice};

/// Output kept per UART (the memory sink keeps everything; see the final check).
const OUT_CAP: usize = 1 << 20;

/// Ports the guest writes to raise a guest event.
const EVENT_PORTS: [u16; 4] = [I8042_BASE + 4, SLEEP_CONTROL_PORT, RESET_PORT, PVPANIC_PORT];

/// Port reads and writes of any size against the bus, and host input queued to the console:
/// nothing panics, a UART emits at most one byte per one-byte write to it, and guest events
/// come only from writes to the ports that raise them.
pub fn pio_bus(data: &[u8]) {
    let mut inp = Input::new(data);
    let last_write = Arc::new(Mutex::new(None::<u16>));
    let events: GuestEventSink = {
        let last = last_write.clone();
        Arc::new(move |_| {
            let port = *last.lock().unwrap();
            assert!(
                port.is_some_and(|p| EVENT_PORTS.contains(&p)),
                "a guest event from a write to port {port:?}"
            );
        })
    };
    let uart = |name| -> Option<(Arc<Mutex<SerialDevice>>, OutputSink)> {
        let out = OutputSink::memory(OUT_CAP, None);
        let irq = EventFd::new(libc::EFD_NONBLOCK).ok()?;
        let dev = SerialDevice::new(name, irq, InputWaker::default(), out.clone());
        Some((Arc::new(Mutex::new(dev)), out))
    };
    let (Some((com1, out1)), Some((com2, out2))) = (uart("COM1"), uart("COM2")) else {
        return;
    };
    let mut bus = Bus::new();
    let inserted = [
        bus.insert(com1.clone(), u64::from(COM1.base), SERIAL_PORT_LEN),
        bus.insert(com2, u64::from(COM2.base), SERIAL_PORT_LEN),
        bus.insert(
            Arc::new(Mutex::new(I8042::new(events.clone()))),
            u64::from(I8042_BASE),
            I8042_LEN,
        ),
        bus.insert(
            Arc::new(Mutex::new(SleepRegisters::new(events.clone()))),
            u64::from(SLEEP_CONTROL_PORT),
            2,
        ),
        bus.insert(
            Arc::new(Mutex::new(ResetRegister::new(events.clone()))),
            u64::from(RESET_PORT),
            1,
        ),
        bus.insert(
            Arc::new(Mutex::new(PvPanic::new(events))),
            u64::from(PVPANIC_PORT),
            1,
        ),
    ];
    assert!(inserted.iter().all(Result::is_ok));
    let ports = [
        u32::from(COM1.base),
        u32::from(COM2.base),
        u32::from(I8042_BASE),
        u32::from(SLEEP_CONTROL_PORT),
        u32::from(RESET_PORT),
        u32::from(PVPANIC_PORT),
    ];
    let mut steps = 0;
    let mut uart_writes = [0usize; 2];
    while !inp.done() && steps < 4096 {
        steps += 1;
        let op = inp.u8();
        let base = inp.pick_u32(&ports) as u16;
        let port = u64::from(base.wrapping_add(u16::from(inp.u8() % 8)));
        let size = [1usize, 2, 4, 8, 0][usize::from(op >> 2) % 5];
        match op & 3 {
            0 => {
                let mut buf = [0u8; 8];
                bus.read(port, &mut buf[..size]);
            }
            1 | 2 => {
                let v = inp.u64().to_le_bytes();
                for (i, info) in [COM1, COM2].iter().enumerate() {
                    let range = u64::from(info.base)..u64::from(info.base) + SERIAL_PORT_LEN;
                    if size == 1 && range.contains(&port) {
                        uart_writes[i] += 1;
                    }
                }
                *last_write.lock().unwrap() = Some(port as u16);
                bus.write(port, &v[..size]);
                *last_write.lock().unwrap() = None;
            }
            _ => {
                let bytes = inp.chunk();
                let n = com1.lock().unwrap().enqueue(bytes);
                assert!(n <= bytes.len());
            }
        }
    }
    for (out, writes) in [out1, out2].iter().zip(uart_writes) {
        assert!(out.memory_contents().len() <= writes);
    }
}
