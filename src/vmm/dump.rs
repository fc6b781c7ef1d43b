//! The VMM state dump that users trigger with SIGUSR1 or the control socket's `dump`: each
//! vCPU's registers, pending and injected events (`KVM_GET_VCPU_EVENTS`), mp_state and local
//! APIC (IRR, ISR, timer, LVTs), the in-kernel IOAPIC and PICs, and each device's interrupt
//! state.
//!
//! A vCPU's state can only be read by the thread that runs it (KVM_RUN holds the vCPU), so a
//! dump is a request: the requester bumps a generation and kicks every vCPU thread out of
//! KVM_RUN; each thread describes itself between two KVM_RUNs (or while parked) and answers.
//! A vCPU that does not answer within the deadline is reported as such: its thread is not in
//! KVM_RUN but busy or blocked inside the VMM, which is itself the most useful finding.

use std::fmt::Write as _;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use kvm_bindings::{
    KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, kvm_irqchip,
    kvm_lapic_state, kvm_pic_state,
};
use kvm_ioctls::{VcpuFd, VmFd};

use super::pause::PauseControl;
use crate::devices::bus::Bus;

/// How long vCPUs get to answer a dump request.
pub const DUMP_TIMEOUT: Duration = Duration::from_secs(1);

struct Answers {
    generation: u64,
    per_vcpu: Vec<Option<String>>,
}

/// Shared by the vCPU threads and whoever asks for a dump (the main thread on SIGUSR1, the
/// control server).
pub struct StateDump {
    answers: Mutex<Answers>,
    answered: Condvar,
    /// One dump at a time.
    busy: Mutex<()>,
    vm: Arc<VmFd>,
    io_bus: Arc<Bus>,
    mmio_bus: Arc<Bus>,
    pause: Arc<PauseControl>,
    started: Instant,
}

impl StateDump {
    pub fn new(
        vcpus: usize,
        vm: Arc<VmFd>,
        io_bus: Arc<Bus>,
        mmio_bus: Arc<Bus>,
        pause: Arc<PauseControl>,
    ) -> Self {
        StateDump {
            answers: Mutex::new(Answers {
                generation: 0,
                per_vcpu: vec![None; vcpus],
            }),
            answered: Condvar::new(),
            busy: Mutex::new(()),
            vm,
            io_bus,
            mmio_bus,
            pause,
            started: Instant::now(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Answers> {
        self.answers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The generation of the newest request (0: none yet). vCPU threads compare it with the
    /// last one they answered.
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// A vCPU thread's answer to request `generation`.
    pub fn answer(&self, vcpu: usize, generation: u64, text: String) {
        let mut a = self.lock();
        if a.generation == generation
            && let Some(slot) = a.per_vcpu.get_mut(vcpu)
        {
            *slot = Some(text);
            self.answered.notify_all();
        }
    }

    /// Collects the whole dump (waits at most `timeout` for the vCPUs).
    pub fn collect(&self, timeout: Duration) -> String {
        let _one = self.busy.lock().unwrap_or_else(PoisonError::into_inner);
        let deadline = Instant::now() + timeout;
        let generation = {
            let mut a = self.lock();
            a.generation += 1;
            a.per_vcpu.iter_mut().for_each(|s| *s = None);
            a.generation
        };
        let mut out = String::new();
        let _ = writeln!(
            out,
            "micro-vmm state dump #{generation}, {:.3} s after start{}",
            self.started.elapsed().as_secs_f64(),
            if self.pause.is_paused() {
                " (paused)"
            } else {
                ""
            }
        );
        // Kick until every vCPU answered: a kick can land just before a thread looks.
        let mut a = self.lock();
        loop {
            if a.per_vcpu.iter().all(Option::is_some) {
                break;
            }
            drop(a);
            self.pause.kick_all();
            a = self.lock();
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let wait = (deadline - now).min(Duration::from_millis(20));
            a = self
                .answered
                .wait_timeout(a, wait)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        for (i, s) in a.per_vcpu.iter().enumerate() {
            match s {
                Some(text) => out.push_str(text),
                None => {
                    let _ = writeln!(
                        out,
                        "vcpu{i}: no answer within {timeout:?}: its thread is not in KVM_RUN \
                         (busy or blocked inside the VMM)"
                    );
                }
            }
        }
        drop(a);
        out.push_str(&describe_irqchips(&self.vm));
        out.push_str(&self.io_bus.describe_devices("port"));
        out.push_str(&self.mmio_bus.describe_devices("mmio"));
        out
    }
}

const MP_STATES: [&str; 10] = [
    "RUNNABLE",
    "UNINITIALIZED",
    "INIT_RECEIVED",
    "HALTED",
    "SIPI_RECEIVED",
    "STOPPED",
    "CHECK_STOP",
    "OPERATING",
    "LOAD",
    "AP_RESET_HOLD",
];

/// One vCPU's state, as lines prefixed `vcpuN:`. Called on the vCPU's own thread.
pub fn describe_vcpu(id: u8, fd: &VcpuFd) -> String {
    let mut out = String::new();
    let p = format!("vcpu{id}:");
    match fd.get_mp_state() {
        Ok(m) => {
            let name = MP_STATES
                .get(m.mp_state as usize)
                .copied()
                .unwrap_or("unknown");
            let _ = writeln!(out, "{p} mp_state {name} ({})", m.mp_state);
        }
        Err(e) => {
            let _ = writeln!(out, "{p} mp_state unreadable: {e}");
        }
    }
    match fd.get_regs() {
        Ok(r) => {
            let _ = writeln!(
                out,
                "{p} rip {:#x} rsp {:#x} rflags {:#x} rax {:#x} rbx {:#x} rcx {:#x} rdx {:#x} \
                 rsi {:#x} rdi {:#x} rbp {:#x}",
                r.rip, r.rsp, r.rflags, r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp
            );
        }
        Err(e) => {
            let _ = writeln!(out, "{p} registers unreadable: {e}");
        }
    }
    match fd.get_sregs() {
        Ok(s) => {
            let pending: Vec<String> = (0..256usize)
                .filter(|v| s.interrupt_bitmap[v / 64] & (1 << (v % 64)) != 0)
                .map(|v| format!("{v:#x}"))
                .collect();
            let _ = writeln!(
                out,
                "{p} cr0 {:#x} cr2 {:#x} cr3 {:#x} cr4 {:#x} efer {:#x} cs {:#x} (l={} db={}) \
                 apic_base {:#x} pending external interrupts [{}]",
                s.cr0,
                s.cr2,
                s.cr3,
                s.cr4,
                s.efer,
                s.cs.selector,
                s.cs.l,
                s.cs.db,
                s.apic_base,
                pending.join(" ")
            );
        }
        Err(e) => {
            let _ = writeln!(out, "{p} special registers unreadable: {e}");
        }
    }
    match fd.get_vcpu_events() {
        Ok(ev) => {
            let x = &ev.exception;
            let i = &ev.interrupt;
            let n = &ev.nmi;
            let _ = writeln!(
                out,
                "{p} events: exception injected={} pending={} nr={} error_code={} (has={}); \
                 interrupt injected={} nr={:#x} soft={} shadow={}; nmi injected={} pending={} \
                 masked={}; sipi_vector {:#x}; smi smm={} pending={}",
                x.injected,
                x.pending,
                x.nr,
                x.error_code,
                x.has_error_code,
                i.injected,
                i.nr,
                i.soft,
                i.shadow,
                n.injected,
                n.pending,
                n.masked,
                ev.sipi_vector,
                ev.smi.smm,
                ev.smi.pending
            );
        }
        Err(e) => {
            let _ = writeln!(out, "{p} events unreadable: {e}");
        }
    }
    match fd.get_lapic() {
        Ok(l) => {
            let _ = writeln!(out, "{p} {}", describe_lapic(&l));
        }
        Err(e) => {
            let _ = writeln!(out, "{p} LAPIC unreadable: {e}");
        }
    }
    out
}

fn lapic_reg(l: &kvm_lapic_state, offset: usize) -> u32 {
    let b = |i: usize| l.regs[offset + i] as u8;
    u32::from_le_bytes([b(0), b(1), b(2), b(3)])
}

/// The vectors set in a 256-bit LAPIC register (ISR, TMR, IRR: eight 32-bit words 16 bytes
/// apart).
fn lapic_vectors(l: &kvm_lapic_state, offset: usize) -> String {
    let mut v = Vec::new();
    for word in 0..8 {
        let bits = lapic_reg(l, offset + word * 0x10);
        for bit in 0..32 {
            if bits & (1 << bit) != 0 {
                v.push(format!("{:#x}", word * 32 + bit));
            }
        }
    }
    format!("[{}]", v.join(" "))
}

/// The registers of a LAPIC that matter for interrupt delivery, on one line.
pub fn describe_lapic(l: &kvm_lapic_state) -> String {
    format!(
        "lapic id {} tpr {:#x} ppr {:#x} svr {:#x} isr {} irr {} tmr {} esr {:#x} icr {:#x}:{:#x} \
         lvt-timer {:#x} tmict {:#x} tmcct {:#x} tdcr {:#x} lint0 {:#x} lint1 {:#x} lvt-error {:#x}",
        lapic_reg(l, 0x20) >> 24,
        lapic_reg(l, 0x80),
        lapic_reg(l, 0xa0),
        lapic_reg(l, 0xf0),
        lapic_vectors(l, 0x100),
        lapic_vectors(l, 0x200),
        lapic_vectors(l, 0x180),
        lapic_reg(l, 0x280),
        lapic_reg(l, 0x310),
        lapic_reg(l, 0x300),
        lapic_reg(l, 0x320),
        lapic_reg(l, 0x380),
        lapic_reg(l, 0x390),
        lapic_reg(l, 0x3e0),
        lapic_reg(l, 0x350),
        lapic_reg(l, 0x360),
        lapic_reg(l, 0x370),
    )
}

/// One IOAPIC redirection entry: "pin N: vector 0x.. fixed edge high dest 0x.. masked".
pub fn describe_redirection(pin: usize, e: u64) -> String {
    let modes = [
        "fixed", "lowest", "smi", "reserved", "nmi", "init", "reserved", "extint",
    ];
    format!(
        "pin {pin}: vector {:#x} {} {} {} dest {:#x}{}{}{}{}",
        e & 0xff,
        modes[((e >> 8) & 7) as usize],
        if e & (1 << 11) != 0 {
            "logical"
        } else {
            "physical"
        },
        if e & (1 << 15) != 0 { "level" } else { "edge" },
        e >> 56,
        if e & (1 << 13) != 0 {
            " active-low"
        } else {
            ""
        },
        if e & (1 << 12) != 0 { " pending" } else { "" },
        if e & (1 << 14) != 0 {
            " remote-irr"
        } else {
            ""
        },
        if e & (1 << 16) != 0 { " masked" } else { "" },
    )
}

fn describe_pic(name: &str, p: &kvm_pic_state) -> String {
    format!(
        "{name}: irr {:#04x} imr {:#04x} isr {:#04x} vector base {:#x} elcr {:#04x}\n",
        p.irr, p.imr, p.isr, p.irq_base, p.elcr
    )
}

/// The in-kernel IOAPIC (every pin that is unmasked, pending or in service) and both PICs.
fn describe_irqchips(vm: &VmFd) -> String {
    let mut out = String::new();
    let mut chip = kvm_irqchip {
        chip_id: KVM_IRQCHIP_IOAPIC,
        ..Default::default()
    };
    match vm.get_irqchip(&mut chip) {
        Ok(()) => {
            // SAFETY: chip_id is KVM_IRQCHIP_IOAPIC, so KVM filled the `ioapic` member.
            let io = unsafe { chip.chip.ioapic };
            let _ = writeln!(out, "ioapic: id {} irr {:#010x}", io.id >> 24, io.irr);
            for (pin, e) in io.redirtbl.iter().enumerate() {
                // SAFETY: every redirection entry is a plain u64 in the `bits` view.
                let bits = unsafe { e.bits };
                let interesting = bits & (1 << 16) == 0 || bits & (3 << 12) != 0;
                if interesting {
                    let _ = writeln!(out, "ioapic: {}", describe_redirection(pin, bits));
                }
            }
        }
        Err(e) => {
            let _ = writeln!(out, "ioapic: unreadable: {e}");
        }
    }
    for (id, name) in [
        (KVM_IRQCHIP_PIC_MASTER, "pic master"),
        (KVM_IRQCHIP_PIC_SLAVE, "pic slave"),
    ] {
        let mut chip = kvm_irqchip {
            chip_id: id,
            ..Default::default()
        };
        match vm.get_irqchip(&mut chip) {
            // SAFETY: chip_id names a PIC, so KVM filled the `pic` member.
            Ok(()) => out.push_str(&describe_pic(name, unsafe { &chip.chip.pic })),
            Err(e) => {
                let _ = writeln!(out, "{name}: unreadable: {e}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirection_entries_read_as_the_ioapic_spec_says() {
        // Vector 0x24, fixed, physical, edge, active high, dest 1, unmasked.
        assert_eq!(
            describe_redirection(4, 0x0100_0000_0000_0024),
            "pin 4: vector 0x24 fixed physical edge dest 0x1"
        );
        // Level-triggered, active low, remote IRR set, masked.
        let e = 0x31 | (1 << 15) | (1 << 13) | (1 << 14) | (1 << 16);
        assert_eq!(
            describe_redirection(9, e),
            "pin 9: vector 0x31 fixed physical level dest 0x0 active-low remote-irr masked"
        );
    }

    #[test]
    fn lapic_vectors_come_from_the_256_bit_registers() {
        let mut l = kvm_lapic_state::default();
        // IRR word 1 bit 4 = vector 0x24; ISR word 7 bit 31 = vector 0xff.
        l.regs[0x210] = 0x10;
        l.regs[0x170 + 3] = 0x80u8 as std::os::raw::c_char;
        l.regs[0x20 + 3] = 2; // APIC id 2
        let s = describe_lapic(&l);
        assert!(s.starts_with("lapic id 2 "), "{s}");
        assert!(s.contains("isr [0xff]"), "{s}");
        assert!(s.contains("irr [0x24]"), "{s}");
        assert!(s.contains("tmr []"), "{s}");
    }
}
