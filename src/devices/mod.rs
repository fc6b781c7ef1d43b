//! Emulated devices and the buses that route guest port and MMIO accesses to them.

pub mod acpi_power;
pub mod bus;
pub mod i8042;
pub mod pvpanic;
pub mod serial;
pub mod virtio;

use std::sync::Arc;

/// Why the guest asked to reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetCause {
    /// 0xfe written to the i8042 command port (Linux `reboot=k`).
    I8042,
    /// The FADT reset register (Linux's default `reboot`).
    AcpiResetRegister,
    /// The CPU shut down (triple fault).
    TripleFault,
}

/// Something the guest asked the VMM to do through a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestEvent {
    /// ACPI S5 through the FADT sleep control register.
    PowerOff,
    Reset(ResetCause),
    /// The guest reported a panic through pvpanic.
    Panic,
}

/// Where devices send [`GuestEvent`]s (the VMM's exit logic).
pub type GuestEventSink = Arc<dyn Fn(GuestEvent) + Send + Sync>;
