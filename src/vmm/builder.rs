//! The one place that knows the build order: KVM, VM-wide state, memory, boot image, devices,
//! vCPUs. Everything it reads was validated in [`crate::api::config`].

use std::fs::File;
use std::sync::{Arc, Mutex};

use kvm_bindings::{KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY, kvm_pit_config};
use kvm_ioctls::{Kvm, VmFd};
use vm_memory::GuestAddress;
use vmm_sys_util::eventfd::EventFd;

use super::dump::StateDump;
use super::event_loop::Subscriber;
use super::exit::{ExitState, VmExit};
use super::memory::{self, GuestMemoryMmap};
use super::pause::PauseControl;
use super::vcpu::Vcpu;
use super::{Vmm, VmmError, signals};
use crate::api::{BootSource, OutputTarget, VmConfig};
use crate::boot::layout::{CMDLINE_START, KVM_IDENTITY_MAP_START, KVM_TSS_START, RamLayout};
use crate::boot::loader::{EntryPoint, load_cmdline, load_initrd, load_kernel};
use crate::boot::{acpi, bootparams, cpuid, firmware, msrs, regs, reset_vector};
use crate::devices::GuestEventSink;
use crate::devices::acpi_power::{RESET_PORT, ResetRegister, SLEEP_CONTROL_PORT, SleepRegisters};
use crate::devices::bus::Bus;
use crate::devices::i8042::{I8042, I8042_BASE, I8042_LEN};
use crate::devices::pvpanic::{PVPANIC_PORT, PvPanic};
use crate::devices::serial::device::InputWaker;
use crate::devices::serial::output::{DEFAULT_CAPACITY, OutputSink, direct_handle};
use crate::devices::serial::{COM1, COM2, SERIAL_PORT_LEN, SerialDevice, SerialPortInfo};
use crate::devices::virtio::block::Block;
use crate::devices::virtio::mmio::{self, MmioTransport};
use crate::devices::virtio::vsock::Vsock;
use crate::devices::virtio::{Interrupt, VirtioDevice};
use kvm_ioctls::IoEventAddress;

fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmmError {
    move |source| VmmError::Kvm { what, source }
}

/// How the BSP starts, decided while loading the boot image.
enum BspStart {
    Long64 {
        entry: GuestAddress,
        zero_page: GuestAddress,
    },
    Pvh {
        entry: GuestAddress,
        start_info: GuestAddress,
    },
    /// Firmware: KVM's reset state already is the reset vector.
    ResetVector,
}

/// Builds the VM described by `cfg`.
pub fn build(cfg: &VmConfig) -> Result<Vmm, VmmError> {
    signals::block_stop_signals().map_err(|source| VmmError::Host {
        what: "signal mask",
        source,
    })?;

    raise_fd_limit(fds_needed(cfg));

    // 1. KVM and the VM.
    let kvm = Kvm::new().map_err(VmmError::OpenKvm)?;
    let api = kvm.get_api_version();
    if api != 12 {
        return Err(VmmError::KvmApiVersion(api));
    }
    let max = kvm.get_max_vcpus();
    if usize::from(cfg.vcpus) > max {
        return Err(VmmError::TooManyVcpus {
            wanted: cfg.vcpus,
            max,
        });
    }
    warn_if_emulated();
    let vm = kvm.create_vm().map_err(kvm_err("create a VM"))?;

    // 2. Guest memory (plus the firmware window for --bios).
    let ram = RamLayout::new(cfg.mem_bytes());
    let mut ranges = ram.ranges();
    let firmware_image = match &cfg.boot {
        BootSource::Firmware { image } => {
            let img = firmware::read_firmware(image)?;
            ranges.push((firmware::firmware_base(img.len() as u64), img.len() as u64));
            Some(img)
        }
        BootSource::Kernel { .. } => None,
    };
    let mem = memory::create(&ranges)?;
    let rom_start = firmware_image
        .as_ref()
        .map(|img| firmware::firmware_base(img.len() as u64));
    memory::register(&vm, &mem, rom_start)?;
    // Devices reach guest memory only through this view: the firmware ROM is not in it, so a
    // descriptor pointing into the ROM is an error for that request, never a write to it.
    let device_mem = memory::device_view(&mem, rom_start)?;

    // 3. VM-wide devices in KVM. Only after the memory slots: KVM_SET_USER_MEMORY_REGION after
    // KVM_CREATE_IRQCHIP costs 4-7 ms more in the kernel (measured on this project's hosts).
    vm.set_tss_address(KVM_TSS_START as usize)
        .map_err(kvm_err("set the TSS address"))?;
    vm.set_identity_map_address(KVM_IDENTITY_MAP_START)
        .map_err(kvm_err("set the identity-map address"))?;
    vm.create_irq_chip()
        .map_err(kvm_err("create the irqchip"))?;
    vm.create_pit2(kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    })
    .map_err(kvm_err("create the PIT"))?;

    // 4. The boot image and what it is told (the DSDT describes the virtio devices).
    let virtio_count = cfg.disks.len() + usize::from(cfg.vsock.is_some());
    let virtio_slots: Vec<acpi::MmioDeviceInfo> = (0..virtio_count).map(mmio::slot).collect();
    let start = match (&cfg.boot, &firmware_image) {
        (
            BootSource::Kernel {
                kernel,
                initrd,
                cmdline,
            },
            _,
        ) => {
            let cmdline = if cfg.mmio_cmdline {
                with_mmio_devices(cmdline, &virtio_slots)
            } else {
                cmdline.clone()
            };
            load_linux(
                &mem,
                &ram,
                cfg.vcpus,
                &virtio_slots,
                kernel,
                initrd.as_deref(),
                &cmdline,
            )?
        }
        (BootSource::Firmware { .. }, Some(img)) => {
            firmware::load_firmware(&mem, img)?;
            BspStart::ResetVector
        }
        (BootSource::Firmware { .. }, None) => unreachable!("firmware read above"),
    };

    // 5. Devices.
    let exit = Arc::new(ExitState::new().map_err(|source| VmmError::Host {
        what: "exit eventfd",
        source,
    })?);
    let events: GuestEventSink = {
        let exit = exit.clone();
        Arc::new(move |e| exit.request(VmExit::from(e)))
    };
    let mut outputs = Vec::new();
    let serial_out = open_output("--serial", &cfg.serial, cfg.output_limit, &mut outputs)?;
    let log_out = if cfg.log == cfg.serial {
        serial_out.clone()
    } else {
        open_output("--log", &cfg.log, cfg.output_limit, &mut outputs)?
    };
    let console_waker = InputWaker::default();
    let console = Arc::new(Mutex::new(serial_device(
        &vm,
        "COM1",
        &COM1,
        console_waker.clone(),
        serial_out,
    )?));
    let log_port = Arc::new(Mutex::new(serial_device(
        &vm,
        "COM2",
        &COM2,
        InputWaker::default(),
        log_out,
    )?));
    let mut io_bus = Bus::new();
    io_bus.insert(console.clone(), u64::from(COM1.base), SERIAL_PORT_LEN)?;
    io_bus.insert(log_port, u64::from(COM2.base), SERIAL_PORT_LEN)?;
    io_bus.insert(
        Arc::new(Mutex::new(I8042::new(events.clone()))),
        u64::from(I8042_BASE),
        I8042_LEN,
    )?;
    io_bus.insert(
        Arc::new(Mutex::new(SleepRegisters::new(events.clone()))),
        u64::from(SLEEP_CONTROL_PORT),
        2,
    )?;
    io_bus.insert(
        Arc::new(Mutex::new(ResetRegister::new(events.clone()))),
        u64::from(RESET_PORT),
        1,
    )?;
    io_bus.insert(
        Arc::new(Mutex::new(PvPanic::new(events))),
        u64::from(PVPANIC_PORT),
        1,
    )?;
    let io_bus = Arc::new(io_bus);
    let mut mmio_bus = Bus::new();
    let mut subscribers: Vec<Subscriber> = Vec::new();
    for (i, (disk_cfg, slot)) in cfg.disks.iter().zip(&virtio_slots).enumerate() {
        let name = format!("vd{}", (b'a' + i as u8) as char);
        let backend =
            crate::disk::open(disk_cfg).map_err(|source| VmmError::Disk { index: i, source })?;
        let block = Arc::new(Mutex::new(Block::new(name, backend).map_err(|source| {
            VmmError::Host {
                what: "virtio-blk eventfd",
                source,
            }
        })?));
        add_virtio_device(&vm, &device_mem, &mut mmio_bus, block.clone(), slot)?;
        subscribers.push(block);
    }
    if let Some(v) = &cfg.vsock {
        let vsock = Arc::new(Mutex::new(
            Vsock::new(v.cid, &v.uds).map_err(VmmError::Vsock)?,
        ));
        add_virtio_device(
            &vm,
            &device_mem,
            &mut mmio_bus,
            vsock.clone(),
            &virtio_slots[cfg.disks.len()],
        )?;
        subscribers.push(vsock);
    }
    let mmio_bus = Arc::new(mmio_bus);

    // 6. vCPUs: CPUID, MSRs and LAPIC for all; boot registers for the BSP only (the APs wait
    // for INIT/SIPI from the guest, as on hardware).
    let base_cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(kvm_err("report CPUID"))?;
    let topology = cpuid::Topology {
        count: cfg.vcpus,
        tsc_deadline: kvm.check_extension(kvm_ioctls::Cap::TscDeadlineTimer),
    };
    let pause = Arc::new(PauseControl::new());
    let vm = Arc::new(vm);
    let dump = Arc::new(StateDump::new(
        usize::from(cfg.vcpus),
        vm.clone(),
        io_bus.clone(),
        mmio_bus.clone(),
        pause.clone(),
    ));
    let mut vcpus = Vec::with_capacity(usize::from(cfg.vcpus));
    for id in 0..cfg.vcpus {
        let fd = vm
            .create_vcpu(u64::from(id))
            .map_err(kvm_err("create a vCPU"))?;
        cpuid::set_cpuid(&fd, &base_cpuid, id, topology)?;
        msrs::set_boot_msrs(&fd)?;
        msrs::set_lint(&fd)?;
        if id == 0 {
            match start {
                BspStart::Long64 { entry, zero_page } => {
                    regs::setup_long_mode(&fd, &mem, entry, zero_page)?
                }
                BspStart::Pvh { entry, start_info } => {
                    regs::setup_pvh(&fd, &mem, entry, start_info)?
                }
                BspStart::ResetVector => {}
            }
        }
        vcpus.push(Vcpu::new(
            id,
            fd,
            io_bus.clone(),
            mmio_bus.clone(),
            exit.clone(),
            pause.clone(),
            dump.clone(),
        ));
    }

    Ok(Vmm {
        vcpus,
        devices: subscribers,
        console,
        console_waker,
        console_in: cfg.console_in,
        outputs,
        exit,
        pause,
        dump,
        _vm: vm,
        _kvm: kvm,
        _mem: mem,
    })
}

/// Descriptors the VMM itself needs besides the devices: KVM, vCPUs, eventfds, outputs, the
/// control socket's clients (at most 128, each possibly holding a passed vsock fd), the
/// lifecycle connection.
const BASE_FDS: u64 = 512;

/// How many descriptors `cfg` can need at most: the base, every disk file, and for vsock
/// one host socket per connection plus the pending-reset queue.
fn fds_needed(cfg: &VmConfig) -> u64 {
    use crate::api::DiskConfig;
    use crate::devices::virtio::vsock::{MAX_CONNECTIONS, MAX_PENDING_RST};
    let disk_files: usize = cfg
        .disks
        .iter()
        .map(|d| match d {
            DiskConfig::Image { .. } => 1,
            DiskConfig::Composite { partitions, .. } => partitions.len(),
        })
        .sum();
    let vsock = if cfg.vsock.is_some() {
        MAX_CONNECTIONS + MAX_PENDING_RST
    } else {
        0
    };
    BASE_FDS + (disk_files + vsock) as u64
}

/// Raises the soft open-file limit to `need` (never past the hard limit, never lowering
/// it): every vsock connection holds a host socket, and 2048 of them exceed the usual soft
/// limit of 1024. A composite descriptor's component files count as one disk here; the base
/// leaves room for them.
fn raise_fd_limit(need: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into `lim`, a valid rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 && lim.rlim_cur < need {
        lim.rlim_cur = need.min(lim.rlim_max);
        // SAFETY: setrlimit reads a valid rlimit; raising the soft limit up to the hard one
        // needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            log::debug!(
                "cannot raise the open-file limit: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// `cmdline` plus one `virtio_mmio.device=<size>@<addr>:<irq>` per device (the syntax of
/// Linux's CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES).
fn with_mmio_devices(cmdline: &str, slots: &[acpi::MmioDeviceInfo]) -> String {
    let mut out = cmdline.to_string();
    for s in slots {
        out.push_str(&format!(
            " virtio_mmio.device={}K@{:#x}:{}",
            s.len >> 10,
            s.addr,
            s.irq
        ));
    }
    out
}

/// Says once, clearly, when /dev/kvm is not backed by VMX/SVM (for example `kvm_pvm`, as on
/// this project's build machines): guest code then runs through KVM's instruction emulator.
fn warn_if_emulated() {
    let Ok(cpuinfo) = std::fs::read_to_string("/proc/cpuinfo") else {
        return;
    };
    let hardware = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    if !hardware {
        log::warn!(
            "/dev/kvm is not backed by VMX/SVM (no vmx/svm CPU flag; e.g. kvm_pvm): guest code \
             is emulated, about 2000x slower, and some instructions end the VM (exit 33); \
             Linux kernels cannot boot here"
        );
    }
}

/// Loads a Linux kernel with its initrd and command line, the ACPI tables and the boot
/// parameters for the kernel's entry protocol.
fn load_linux(
    mem: &GuestMemoryMmap,
    ram: &RamLayout,
    vcpus: u8,
    virtio: &[acpi::MmioDeviceInfo],
    kernel: &std::path::Path,
    initrd: Option<&std::path::Path>,
    cmdline: &str,
) -> Result<BspStart, VmmError> {
    let k = load_kernel(mem, kernel)?;
    let rd = initrd
        .map(|p| load_initrd(mem, p, &k, ram.low_end()))
        .transpose()?;
    load_cmdline(mem, GuestAddress(CMDLINE_START), cmdline, k.cmdline_max)?;
    reset_vector::write(mem)?;
    let rsdp = acpi::write(
        mem,
        &acpi::AcpiConfig {
            vcpus,
            virtio_mmio: virtio,
        },
    )?;
    let e820 = ram.e820();
    let info = bootparams::BootInfo {
        cmdline_len: cmdline.len(),
        initrd: rd,
        e820: &e820,
        rsdp,
    };
    Ok(match k.entry {
        EntryPoint::Long64(entry) => BspStart::Long64 {
            entry,
            zero_page: bootparams::write_zero_page(mem, k.setup_header, &info)?,
        },
        EntryPoint::Pvh(entry) => BspStart::Pvh {
            entry,
            start_info: bootparams::write_pvh_start_info(mem, &info)?,
        },
    })
}

fn open_output(
    flag: &'static str,
    target: &OutputTarget,
    limit: u64,
    outputs: &mut Vec<OutputSink>,
) -> Result<OutputSink, VmmError> {
    let host = |source| VmmError::Host {
        what: "output thread",
        source,
    };
    let sink = match target {
        OutputTarget::None => return Ok(OutputSink::discard()),
        OutputTarget::Stdout => {
            // A terminal or pipe streams; only files the guest could fill are limited.
            let direct = direct_handle(&std::io::stdout());
            OutputSink::spawn("stdout", std::io::stdout(), direct, DEFAULT_CAPACITY, None)
                .map_err(host)?
        }
        OutputTarget::File(path) => {
            let f = File::create(path).map_err(|source| VmmError::Output {
                flag,
                path: path.clone(),
                source,
            })?;
            let direct = direct_handle(&f);
            OutputSink::spawn(
                flag.trim_start_matches('-'),
                f,
                direct,
                DEFAULT_CAPACITY,
                Some(limit),
            )
            .map_err(host)?
        }
    };
    outputs.push(sink.clone());
    Ok(sink)
}

/// Puts a virtio device behind a virtio-mmio transport at `slot`: the register window on the
/// MMIO bus, an ioeventfd per queue on QueueNotify, an irqfd on the slot's GSI.
fn add_virtio_device(
    vm: &VmFd,
    mem: &GuestMemoryMmap,
    mmio_bus: &mut Bus,
    device: Arc<Mutex<dyn VirtioDevice>>,
    slot: &acpi::MmioDeviceInfo,
) -> Result<(), VmmError> {
    let irq = EventFd::new(libc::EFD_NONBLOCK).map_err(|source| VmmError::Host {
        what: "virtio irq eventfd",
        source,
    })?;
    vm.register_irqfd(&irq, slot.irq)
        .map_err(kvm_err("register a virtio irqfd"))?;
    {
        let dev = device
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (q, evt) in dev.queue_events().iter().enumerate() {
            vm.register_ioevent(
                evt,
                &IoEventAddress::Mmio(slot.addr + mmio::QUEUE_NOTIFY_OFFSET),
                q as u32,
            )
            .map_err(kvm_err("register a virtio ioeventfd"))?;
        }
    }
    let transport = MmioTransport::new(device, mem.clone(), Arc::new(Interrupt::new(irq)));
    mmio_bus.insert(Arc::new(Mutex::new(transport)), slot.addr, slot.len)?;
    Ok(())
}

fn serial_device(
    vm: &VmFd,
    name: &'static str,
    port: &SerialPortInfo,
    waker: InputWaker,
    out: OutputSink,
) -> Result<SerialDevice, VmmError> {
    let irq = EventFd::new(libc::EFD_NONBLOCK).map_err(|source| VmmError::Host {
        what: "serial irq eventfd",
        source,
    })?;
    vm.register_irqfd(&irq, port.irq)
        .map_err(kvm_err("register a serial irqfd"))?;
    Ok(SerialDevice::new(name, irq, waker, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fd_limit_follows_the_devices() {
        let mut cfg = VmConfig {
            boot: BootSource::Firmware {
                image: "/fw".into(),
            },
            mem_mib: 64,
            vcpus: 1,
            serial: OutputTarget::None,
            log: OutputTarget::None,
            console_in: crate::api::InputSource::None,
            disks: vec![crate::api::DiskConfig::image("/d", false)],
            mmio_cmdline: false,
            vsock: None,
            output_limit: 64 << 20,
        };
        assert_eq!(fds_needed(&cfg), BASE_FDS + 1);
        cfg.vsock = Some(crate::api::VsockConfig {
            cid: 3,
            uds: "/v".into(),
        });
        assert_eq!(fds_needed(&cfg), BASE_FDS + 1 + 2048 + 256);
    }

    #[test]
    fn mmio_devices_on_the_command_line() {
        let slots: Vec<_> = (0..2).map(mmio::slot).collect();
        assert_eq!(
            with_mmio_devices("console=ttyS0", &slots),
            "console=ttyS0 virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=4K@0xd0001000:6"
        );
    }
}
