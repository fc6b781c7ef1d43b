//! The vsock device wired the way the builder wires it (an `Arc<Mutex<Vsock>>` subscribed to
//! the device event loop), seen only from the host side: before the guest driver is up, host
//! programs are never answered `OK`, bad handshakes are closed at once, and the socket file
//! belongs to the device.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use micro_vmm::devices::virtio::VirtioDevice;
use micro_vmm::devices::virtio::vsock::{VIRTIO_ID_VSOCK, Vsock, VsockError};
use micro_vmm::vmm::event_loop::{EventLoop, Subscriber};

fn closed_after(s: &mut UnixStream) -> Duration {
    let t = Instant::now();
    let mut rest = Vec::new();
    // Closed with our unread bytes still queued: a reset rather than an EOF.
    match s.read_to_end(&mut rest) {
        Ok(_) => assert!(rest.is_empty(), "nothing is written: {rest:?}"),
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset),
    }
    t.elapsed()
}

#[test]
fn vsock_host_side_without_a_guest_driver() {
    let dir = std::env::temp_dir().join(format!("mvmm-vsock-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let uds = dir.join("v.sock");
    let dev = Arc::new(Mutex::new(Vsock::new(42, &uds).unwrap()));
    {
        let d = dev.lock().unwrap();
        assert_eq!(d.device_type(), VIRTIO_ID_VSOCK);
        assert_eq!(d.queue_events().len(), 3);
        assert_eq!(d.guest_cid(), 42);
    }
    assert!(matches!(Vsock::new(43, &uds), Err(VsockError::InUse(_))));
    let evl = EventLoop::start(vec![dev.clone() as Subscriber]).unwrap();

    let mut bad = UnixStream::connect(&uds).unwrap();
    bad.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    bad.write_all(b"HELLO\n").unwrap();
    assert!(closed_after(&mut bad) < Duration::from_secs(1));

    // A valid request the guest cannot answer: closed after the 2 s request timeout.
    let mut s = UnixStream::connect(&uds).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"CONNECT 1024\n").unwrap();
    let waited = closed_after(&mut s);
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    assert_eq!(dev.lock().unwrap().connections(), 0);

    evl.stop();
    drop(dev);
    assert!(!uds.exists(), "the device removes its socket file");
    let _ = std::fs::remove_dir(&dir);
}
