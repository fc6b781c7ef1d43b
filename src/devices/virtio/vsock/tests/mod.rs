//! Device tests: a simulated guest driver (`harness`) against the real event loop and real
//! Unix sockets in a temporary directory.

mod harness;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use vmm_sys_util::tempdir::TempDir;

use super::packet::HEADER_LEN;
use super::*;
use crate::devices::virtio::{VIRTIO_F_VERSION_1, VirtioDevice};
use harness::*;

#[test]
fn identity_and_config_space() {
    let g = Guest::new();
    let d = g.dev.lock().unwrap();
    assert_eq!(d.device_type(), VIRTIO_ID_VSOCK);
    assert_eq!(d.queue_max_sizes(), &[256, 256, 256]);
    assert_eq!(d.queue_events().len(), 3);
    assert_eq!(d.features(), VIRTIO_F_VERSION_1);
    let mut cid = [0u8; 8];
    d.read_config(0, &mut cid);
    assert_eq!(u64::from_le_bytes(cid), CID);
    let mut past = [0xffu8; 4];
    d.read_config(6, &mut past);
    assert_eq!(past, [0, 0, 0, 0]);
    assert!(matches!(
        Vsock::new(2, &g.uds.with_extension("x")),
        Err(VsockError::InvalidCid(2))
    ));
}

#[test]
fn host_connect_split_line_and_data_both_ways() {
    let mut g = Guest::new();
    let mut s = g.host();
    // Split over several writes, mixed case, and application data right behind the line.
    for part in [&b"Con"[..], b"NeCt 5", b"2"] {
        s.write_all(part).unwrap();
        std::thread::sleep(Duration::from_millis(30));
    }
    s.write_all(b"\nearly bytes").unwrap();
    let req = g.expect(op::REQUEST);
    assert_eq!(req.hdr.src_port, HOST_PORT_FIRST);
    assert_eq!(req.hdr.dst_port, 52);
    assert_eq!(req.hdr.buf_alloc, CONN_BUF_SIZE);
    g.send(op::RESPONSE, 52, req.hdr.src_port, &[]);
    assert_eq!(read_line(&mut s), "OK 1073741824\n");
    // Nothing after the newline was swallowed by the handshake.
    assert_eq!(g.recv_data(52, 11), b"early bytes");
    s.write_all(b"hello").unwrap();
    assert_eq!(g.recv_data(52, 5), b"hello");
    g.send(op::RW, 52, HOST_PORT_FIRST, b"world");
    assert_eq!(read_n(&mut s, 5), b"world");
    // Large transfers both ways.
    let big: Vec<u8> = (0..600_000u32).map(|i| (i % 253) as u8).collect();
    let mut w = s.try_clone().unwrap();
    let sent = big.clone();
    let writer = std::thread::spawn(move || w.write_all(&sent).unwrap());
    assert_eq!(g.recv_data(52, big.len()), big);
    writer.join().unwrap();
    let mut r = s.try_clone().unwrap();
    let n = big.len();
    let reader = std::thread::spawn(move || read_n(&mut r, n));
    g.write_data(52, HOST_PORT_FIRST, &big);
    assert_eq!(reader.join().unwrap(), big);
    // A second host connection gets the next port.
    let (_s2, port2) = g.host_connect(53);
    assert_eq!(port2, HOST_PORT_FIRST + 1);
    assert!(g.healthy());
}

#[test]
fn connect_keyword_in_any_case() {
    let mut g = Guest::new();
    let mut keep = Vec::new();
    for (line, port) in [
        ("connect 60\n", 60),
        ("CONNECT 61\n", 61),
        ("cOnNeCt\t62\r\n", 62),
    ] {
        let mut s = g.host();
        s.write_all(line.as_bytes()).unwrap();
        let req = g.expect(op::REQUEST);
        assert_eq!(req.hdr.dst_port, port);
        g.send(op::RESPONSE, port, req.hdr.src_port, &[]);
        assert_eq!(read_line(&mut s), format!("OK {}\n", req.hdr.src_port));
        keep.push(s);
    }
    assert_eq!(g.connections(), 3);
}

#[test]
fn bad_handshakes_close_the_host_socket() {
    let mut g = Guest::new();
    // Garbage: closed at once.
    let mut s = g.host();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    assert!(expect_closed(&mut s) < Duration::from_millis(400));
    // Too long.
    let mut s = g.host();
    s.write_all(format!("CONNECT{}5\n", " ".repeat(30)).as_bytes())
        .unwrap();
    assert!(expect_closed(&mut s) < Duration::from_millis(400));
    // EOF before the newline.
    let mut s = g.host();
    s.write_all(b"CONNECT 5").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    assert!(expect_closed(&mut s) < Duration::from_millis(400));
    // No newline within the timeout (500 ms here).
    let mut s = g.host();
    s.write_all(b"CONNECT 5").unwrap();
    let waited = expect_closed(&mut s);
    assert!(waited >= Duration::from_millis(350), "{waited:?}");
    // Silent connection: the same.
    let mut s = g.host();
    assert!(expect_closed(&mut s) >= Duration::from_millis(350));
    // The guest never heard of any of them.
    g.quiet(100);
    assert_eq!(g.connections(), 0);
}

#[test]
fn guest_connects_to_a_host_listener() {
    let mut g = Guest::new();
    let (_l, mut s) = g.guest_connect(1000, 1234);
    g.send(op::RW, 1000, 1234, b"ping");
    assert_eq!(read_n(&mut s, 4), b"ping");
    s.write_all(b"pong").unwrap();
    assert_eq!(g.recv_data(1000, 4), b"pong");
    // The guest resets: the host socket closes.
    g.send(op::RST, 1000, 1234, &[]);
    expect_closed(&mut s);
    g.quiet(50);
    assert_eq!(g.connections(), 0);
}

#[test]
fn guest_connect_to_nobody_gets_rst_promptly() {
    let mut g = Guest::new();
    let t = Instant::now();
    g.send(op::REQUEST, 1001, 9999, &[]);
    let r = g.expect(op::RST);
    assert_eq!((r.hdr.src_port, r.hdr.dst_port), (9999, 1001));
    // A stale socket file (nobody listening) too.
    drop(UnixListener::bind(format!("{}_9998", g.uds.display())).unwrap());
    g.send(op::REQUEST, 1002, 9998, &[]);
    let r = g.expect(op::RST);
    assert_eq!((r.hdr.src_port, r.hdr.dst_port), (9998, 1002));
    assert!(t.elapsed() < Duration::from_millis(400));
    g.quiet(50);
    assert_eq!(g.connections(), 0);
}

#[test]
fn host_connect_refused_or_ignored_by_the_guest() {
    let mut g = Guest::new();
    // Refused: RST from the guest, host socket closed with nothing written.
    let mut s = g.host();
    s.write_all(b"CONNECT 77\n").unwrap();
    let req = g.expect(op::REQUEST);
    g.send(op::RST, 77, req.hdr.src_port, &[]);
    assert!(expect_closed(&mut s) < Duration::from_millis(400));
    // Ignored: closed after the request timeout; the guest then gets an RST.
    let mut s = g.host();
    s.write_all(b"CONNECT 78\n").unwrap();
    let req = g.expect(op::REQUEST);
    let waited = expect_closed(&mut s);
    assert!(waited >= Duration::from_millis(350), "{waited:?}");
    let rst = g.expect(op::RST);
    assert_eq!((rst.hdr.src_port, rst.hdr.dst_port), (req.hdr.src_port, 78));
    // A late RESPONSE is answered with RST.
    g.send(op::RESPONSE, 78, req.hdr.src_port, &[]);
    g.expect(op::RST);
    assert_eq!(g.connections(), 0);
}

#[test]
fn host_half_close_reaches_the_guest_as_send_only() {
    let mut g = Guest::new();
    let (mut s, hport) = g.host_connect(80);
    s.write_all(b"question").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(g.recv_data(80, 8), b"question");
    let sd = g.expect(op::SHUTDOWN);
    assert_eq!(sd.hdr.flags, shutdown::SEND);
    // The guest can still answer, and the host still receives it.
    g.send(op::RW, 80, hport, b"answer");
    assert_eq!(read_n(&mut s, 6), b"answer");
    // The guest closes: the host sees EOF, the guest gets the final RST.
    let mut h = g.hdr(op::SHUTDOWN, 80, hport, 0);
    h.flags = shutdown::BOTH;
    g.send_hdr(h);
    expect_closed(&mut s);
    g.expect(op::RST);
    assert_eq!(g.connections(), 0);
}

#[test]
fn guest_half_close_reaches_the_host_after_buffered_data() {
    let mut g = Guest::new();
    let (_l, mut s) = g.guest_connect(2000, 4000);
    g.send(op::RW, 2000, 4000, b"request");
    let mut h = g.hdr(op::SHUTDOWN, 2000, 4000, 0);
    h.flags = shutdown::SEND;
    g.send_hdr(h);
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"request");
    // The other direction still works.
    s.write_all(b"response").unwrap();
    assert_eq!(g.recv_data(2000, 8), b"response");
    // The host closes: the guest is told both directions are done, then the connection goes.
    drop(s);
    // As in host_close_without_half_close_times_out_to_rst: SEND may come first.
    let mut flags = g.expect(op::SHUTDOWN).hdr.flags;
    if flags == shutdown::SEND {
        flags = g.expect(op::SHUTDOWN).hdr.flags;
    }
    assert_eq!(flags, shutdown::BOTH);
    let end = Instant::now() + WAIT;
    while g.connections() != 0 {
        assert!(Instant::now() < end);
        g.poll();
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn host_close_without_half_close_times_out_to_rst() {
    let mut g = Guest::new();
    let (mut s, _) = g.host_connect(81);
    s.write_all(b"bye").unwrap();
    drop(s);
    assert_eq!(g.recv_data(81, 3), b"bye");
    // The EOF may be seen (and passed on as SEND) before the hang-up that says the host is
    // gone both ways; then a second SHUTDOWN carries both flags.
    let mut flags = g.expect(op::SHUTDOWN).hdr.flags;
    if flags == shutdown::SEND {
        flags = g.expect(op::SHUTDOWN).hdr.flags;
    }
    assert_eq!(flags, shutdown::BOTH);
    // The guest does not answer: RST after the close timeout.
    g.expect(op::RST);
    assert_eq!(g.connections(), 0);
}

#[test]
fn credit_towards_the_guest_is_respected_and_resumes() {
    let mut g = Guest::new();
    g.buf_alloc = 10_000;
    let (mut s, hport) = g.host_connect(90);
    let data: Vec<u8> = (0..30_000u32).map(|i| (i * 7) as u8).collect();
    s.write_all(&data).unwrap();
    let mut got = Vec::new();
    for round in 1..=3 {
        got.extend(g.recv_data(90, 10_000));
        // Not one byte beyond the credit: only a credit request may come.
        g.quiet(200);
        assert_eq!(got.len(), 10_000 * round);
        // The guest application read everything: tell the device.
        g.fwd.insert((90, hport), got.len() as u32);
        g.send(op::CREDIT_UPDATE, 90, hport, &[]);
    }
    assert_eq!(got, data);
    // A CREDIT_REQUEST is answered.
    g.send(op::CREDIT_REQUEST, 90, hport, &[]);
    let p = g.recv_within(WAIT).unwrap();
    assert_eq!(p.hdr.op, op::CREDIT_UPDATE);
    assert_eq!(p.hdr.buf_alloc, CONN_BUF_SIZE);
}

#[test]
fn credit_stall_asks_the_guest() {
    let mut g = Guest::new();
    g.buf_alloc = 100;
    let (mut s, _) = g.host_connect(91);
    s.write_all(&[1u8; 300]).unwrap();
    let p = g.recv_within(WAIT).unwrap();
    assert_eq!((p.hdr.op, p.data.len()), (op::RW, 100));
    let p = g.recv_within(WAIT).unwrap();
    assert_eq!(p.hdr.op, op::CREDIT_REQUEST);
    assert!(g.recv_within(Duration::from_millis(200)).is_none());
}

#[test]
fn guest_beyond_our_credit_is_reset() {
    let mut g = Guest::new();
    let (mut s, hport) = g.host_connect(95);
    // 5 x 64 KiB in one batch, no credit update in between: the fifth exceeds 256 KiB.
    let chunk = vec![0x5au8; 64 * 1024];
    let chains: Vec<_> = (0..5)
        .map(|_| Guest::chain(&g.hdr(op::RW, 95, hport, chunk.len()), &chunk))
        .collect();
    g.send_chains(&chains);
    let r = g.expect(op::RST);
    assert_eq!((r.hdr.src_port, r.hdr.dst_port), (hport, 95));
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    assert!(got.len() <= CONN_BUF_SIZE as usize, "{}", got.len());
    assert_eq!(g.connections(), 0);
}

#[test]
fn a_thousand_host_connections() {
    const N: u32 = 1000;
    let mut g = Guest::with(Duration::from_secs(20), RxLayout::Two(4096), true);
    let uds = g.uds.clone();
    let clients = std::thread::spawn(move || {
        let mut socks: Vec<UnixStream> = (0..N)
            .map(|i| {
                let mut s = UnixStream::connect(&uds).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                writeln!(s, "CONNECT {}", 10_000 + i).unwrap();
                s
            })
            .collect();
        for s in &mut socks {
            assert!(read_line(s).starts_with("OK "));
        }
        for (i, s) in socks.iter_mut().enumerate() {
            s.write_all(format!("hi {i:04}").as_bytes()).unwrap();
        }
        for (i, s) in socks.iter_mut().enumerate() {
            assert_eq!(read_n(s, 7), format!("hi {i:04}").as_bytes());
        }
        socks
    });
    // Count bytes: a message may arrive in pieces.
    let mut echoed = 0;
    let end = Instant::now() + Duration::from_secs(60);
    while echoed < 7 * N as usize {
        assert!(Instant::now() < end, "stuck after {echoed} echoes");
        let Some(p) = g.recv_within(Duration::from_millis(10)) else {
            continue;
        };
        match p.hdr.op {
            op::REQUEST => g.send(op::RESPONSE, p.hdr.dst_port, p.hdr.src_port, &[]),
            op::RW => {
                g.send(op::RW, p.hdr.dst_port, p.hdr.src_port, &p.data);
                echoed += p.data.len();
            }
            op::CREDIT_UPDATE => {}
            other => panic!("unexpected op {other}"),
        }
    }
    let socks = clients.join().unwrap();
    assert_eq!(g.connections(), N as usize);
    // Every host program leaves: the guest is told, answers RST, and all is forgotten.
    drop(socks);
    let mut closed = 0;
    while closed < N {
        assert!(Instant::now() < end, "only {closed} closed");
        let p = g.recv();
        if p.hdr.op == op::SHUTDOWN {
            g.send(op::RST, p.hdr.dst_port, p.hdr.src_port, &[]);
            closed += 1;
        }
    }
    let end = Instant::now() + WAIT;
    while g.connections() != 0 {
        assert!(Instant::now() < end);
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn connection_limit_closes_extra_host_connections() {
    let mut g = Guest::with(Duration::from_secs(30), RxLayout::Two(4096), true);
    let socks: Vec<UnixStream> = (0..MAX_CONNECTIONS).map(|_| g.host()).collect();
    let end = Instant::now() + WAIT;
    while g.connections() < MAX_CONNECTIONS {
        assert!(Instant::now() < end, "{}", g.connections());
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut extra = g.host();
    assert!(expect_closed(&mut extra) < Duration::from_secs(1));
    assert_eq!(g.connections(), MAX_CONNECTIONS);
    // Guest requests get RST.
    g.send(op::REQUEST, 5000, 5001, &[]);
    let r = g.expect(op::RST);
    assert_eq!((r.hdr.src_port, r.hdr.dst_port), (5001, 5000));
    // Room again once some leave.
    drop(socks);
    let end = Instant::now() + WAIT;
    while g.connections() != 0 {
        assert!(Instant::now() < end, "{}", g.connections());
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn malformed_packets_are_dropped_or_reset() {
    let mut g = Guest::with(Duration::from_millis(500), RxLayout::Two(4096), false);
    // A bad RX chain first (device-readable): returned empty, then good buffers.
    {
        let _d = g.dev.lock().unwrap();
        g.rx.push(&g.mem, &[(HEADER_LEN as u32, 0, &[])]).unwrap();
    }
    g.refill();
    let good = g.hdr(op::RW, 1, 2, 0);
    let mut chains = Vec::new();
    // Header shorter than 44 bytes.
    chains.push(vec![(20, 0, good.to_bytes()[..20].to_vec())]);
    // Zero-length descriptor.
    chains.push(vec![(0, 0, Vec::new())]);
    // Device-writable TX descriptor.
    chains.push(vec![(HEADER_LEN as u32, F_WRITE, good.to_bytes().to_vec())]);
    // len above 64 KiB.
    let mut h = g.hdr(op::RW, 1, 2, 0);
    h.len = MAX_PKT_DATA + 1;
    chains.push(vec![
        (HEADER_LEN as u32, 0, h.to_bytes().to_vec()),
        (MAX_PKT_DATA + 1, 0, Vec::new()),
    ]);
    // len larger than the data descriptor.
    h.len = 100;
    chains.push(vec![
        (HEADER_LEN as u32, 0, h.to_bytes().to_vec()),
        (10, 0, vec![0; 10]),
    ]);
    // Wrong source and destination CIDs.
    let mut h = g.hdr(op::REQUEST, 1, 2, 0);
    h.src_cid = 4;
    chains.push(Guest::chain(&h, &[]));
    let mut h = g.hdr(op::REQUEST, 1, 2, 0);
    h.dst_cid = 1;
    chains.push(Guest::chain(&h, &[]));
    // Unknown op on no connection.
    chains.push(Guest::chain(&g.hdr(99, 1, 2, 0), &[]));
    g.send_chains(&chains);
    g.quiet(150);
    assert_eq!(g.empty_rx, 0, "the bad RX buffer is only used when needed");
    // RW on no connection: RST (in the first usable buffer, after the bad one).
    g.send(op::RW, 5, 6, b"x");
    let r = g.expect(op::RST);
    assert_eq!((r.hdr.src_port, r.hdr.dst_port), (6, 5));
    assert_eq!(g.empty_rx, 1);
    // A datagram-type REQUEST: RST.
    let mut h = g.hdr(op::REQUEST, 7, 8, 0);
    h.type_ = 2;
    g.send_hdr(h);
    g.expect(op::RST);
    // Unknown op on a live connection: RST and the host socket closes.
    let (mut s, hport) = g.host_connect(100);
    g.send(42, 100, hport, &[]);
    g.expect(op::RST);
    expect_closed(&mut s);
    // A second REQUEST on a live connection: the same.
    let (mut s, hport) = g.host_connect(101);
    g.send(op::REQUEST, 101, hport, &[]);
    g.expect(op::RST);
    expect_closed(&mut s);
    // All TX chains came back, and the device still works.
    assert!(g.healthy());
    let (_l, mut s) = g.guest_connect(3000, 3001);
    g.send(op::RW, 3000, 3001, b"fine");
    assert_eq!(read_n(&mut s, 4), b"fine");
    g.poll();
    assert!(g.tx.chains.is_empty());
    assert!(g.tx_lens.len() > 10 && g.tx_lens.iter().all(|&len| len == 0));
}

#[test]
fn single_descriptor_rx_buffers() {
    let mut g = Guest::with(Duration::from_millis(500), RxLayout::One(1000), true);
    let (mut s, _) = g.host_connect(110);
    let data: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
    s.write_all(&data).unwrap();
    assert_eq!(g.recv_data(110, 5000), data);
}

#[test]
fn reset_drops_every_connection() {
    let mut g = Guest::new();
    let (mut s1, _) = g.host_connect(120);
    let (_l, mut s2) = g.guest_connect(4000, 4001);
    g.dev.lock().unwrap().reset();
    expect_closed(&mut s1);
    expect_closed(&mut s2);
    assert_eq!(g.connections(), 0);
}

#[test]
fn stale_socket_replaced_live_one_refused() {
    let dir = TempDir::new_with_prefix("/tmp/vsock-bind").unwrap();
    let path = dir.as_path().join("v.sock");
    // Stale: a socket file nobody listens on.
    drop(UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let dev = Vsock::new(CID, &path).unwrap();
    assert_eq!(dev.uds_path(), path);
    // Live: our own listener is there now.
    assert!(matches!(Vsock::new(CID, &path), Err(VsockError::InUse(_))));
    drop(dev);
    assert!(!path.exists(), "the socket file goes with the device");
    // Not a socket: left alone.
    std::fs::write(&path, b"data").unwrap();
    assert!(matches!(
        Vsock::new(CID, &path),
        Err(VsockError::NotASocket(_))
    ));
    assert_eq!(std::fs::read(&path).unwrap(), b"data");
}

#[test]
fn guest_shutdown_waits_for_buffered_data() {
    let mut g = Guest::new();
    let (_l, mut s) = g.guest_connect(2100, 4100);
    // The host does not read: a full credit window is more than the socket takes, so part of
    // it waits in the device.
    let data: Vec<u8> = (0..CONN_BUF_SIZE).map(|i| (i % 251) as u8).collect();
    g.write_data(2100, 4100, &data);
    g.quiet(50);
    assert!(g.dev.lock().unwrap().muxer.buffered() > 0);
    let mut h = g.hdr(op::SHUTDOWN, 2100, 4100, 0);
    h.flags = shutdown::SEND;
    g.send_hdr(h);
    g.quiet(100);
    // Everything arrives before the EOF.
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got == data);
    // The connection is still open the other way.
    s.write_all(b"done").unwrap();
    assert_eq!(g.recv_data(2100, 4), b"done");
}

/// A listener whose backlog takes one connection.
fn tiny_backlog_listener(path: &str) -> UnixListener {
    use std::os::fd::AsRawFd;
    let l = UnixListener::bind(path).unwrap();
    // SAFETY: listen(2) on a socket this function owns; it only changes the backlog.
    assert_eq!(unsafe { libc::listen(l.as_raw_fd(), 0) }, 0);
    l
}

#[test]
fn guest_connect_to_a_full_backlog_is_retried_without_blocking() {
    let mut g = Guest::new();
    let path = format!("{}_7000", g.uds.display());
    let l = tiny_backlog_listener(&path);
    let _queued = UnixStream::connect(&path).unwrap();
    g.send(op::REQUEST, 2200, 7000, &[]);
    // The device keeps serving other work meanwhile.
    g.send(op::RW, 1, 2, b"x");
    assert_eq!(g.expect(op::RST).hdr.dst_port, 1);
    g.quiet(150);
    // Room in the backlog: the retry succeeds.
    let (_first, _) = l.accept().unwrap();
    let r = g.expect(op::RESPONSE);
    assert_eq!((r.hdr.src_port, r.hdr.dst_port), (7000, 2200));
    let (mut s, _) = l.accept().unwrap();
    g.send(op::RW, 2200, 7000, b"hi");
    assert_eq!(read_n(&mut s, 2), b"hi");
    // Still full at the deadline: RST.
    let path = format!("{}_7001", g.uds.display());
    let _l = tiny_backlog_listener(&path);
    let _queued = UnixStream::connect(&path).unwrap();
    let t = Instant::now();
    g.send(op::REQUEST, 2201, 7001, &[]);
    let r = g.expect(op::RST);
    assert_eq!((r.hdr.src_port, r.hdr.dst_port), (7001, 2201));
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "{:?}",
        t.elapsed()
    );
}

/// Guest connections to `<uds>_<hport>`, accepted and held by a thread that never reads.
fn silent_listener(g: &Guest, hport: u32) -> std::sync::mpsc::Receiver<UnixStream> {
    let l = UnixListener::bind(format!("{}_{hport}", g.uds.display())).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for s in l.incoming() {
            if tx.send(s.unwrap()).is_err() {
                return;
            }
        }
    });
    rx
}

#[test]
fn a_flood_of_connections_and_data_stays_within_the_budget() {
    const MAX_CONN: usize = 16;
    const BUDGET: u64 = 1 << 20;
    let mut g = Guest::with(Duration::from_secs(30), RxLayout::Two(4096), true);
    g.dev.lock().unwrap().muxer.set_limits(MAX_CONN, BUDGET);
    let hport = 7000;
    let _held = silent_listener(&g, hport);
    // 24 requests at once: 16 are served, 8 refused with RST.
    let chains: Vec<_> = (0..24)
        .map(|i| Guest::chain(&g.hdr(op::REQUEST, 2000 + i, hport, 0), &[]))
        .collect();
    g.send_chains(&chains);
    let mut windows = HashMap::new();
    let mut refused = 0;
    while windows.len() + refused < 24 {
        let p = g.recv();
        match p.hdr.op {
            op::RESPONSE => {
                windows.insert(p.hdr.dst_port, p.hdr.buf_alloc);
            }
            op::RST => refused += 1,
            other => panic!("unexpected op {other}"),
        }
    }
    assert_eq!((windows.len(), refused), (MAX_CONN, 24 - MAX_CONN));
    let total: u64 = windows.values().map(|&w| u64::from(w)).sum();
    assert!(total <= BUDGET, "windows {total} over the budget");
    assert!(windows.values().all(|&w| w >= MIN_CONN_BUF), "{windows:?}");
    assert!(windows.values().any(|&w| w == CONN_BUF_SIZE), "{windows:?}");
    assert_eq!(g.dev.lock().unwrap().muxer.granted(), total);
    // Every connection sends its whole window; nobody reads on the host.
    let mut chains = Vec::new();
    for (&gport, &w) in &windows {
        let mut left = w as usize;
        while left > 0 {
            let n = left.min(MAX_PKT_DATA as usize);
            chains.push(Guest::chain(&g.hdr(op::RW, gport, hport, n), &vec![7u8; n]));
            left -= n;
        }
    }
    g.send_chains(&chains);
    // Nothing was refused or dropped: no RST, every packet taken, memory within the budget.
    g.quiet(300);
    assert_eq!(g.connections(), MAX_CONN);
    let buffered = g.dev.lock().unwrap().muxer.buffered() as u64;
    assert!(buffered <= BUDGET, "buffered {buffered}");
    // The windows come back when connections go: a new one gets the full size again.
    for &gport in windows.keys() {
        g.send(op::RST, gport, hport, &[]);
    }
    let end = Instant::now() + WAIT;
    while g.connections() != 0 {
        assert!(Instant::now() < end, "{}", g.connections());
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(g.dev.lock().unwrap().muxer.granted(), 0);
    g.send(op::REQUEST, 3000, hport, &[]);
    let r = g.expect(op::RESPONSE);
    assert_eq!(r.hdr.buf_alloc, CONN_BUF_SIZE);
}

#[test]
fn host_connections_beyond_the_budget_are_closed() {
    // A budget for two smallest windows and a connection cap of four: the third host
    // request is refused before the guest hears of it.
    let mut g = Guest::with(Duration::from_secs(30), RxLayout::Two(4096), true);
    g.dev
        .lock()
        .unwrap()
        .muxer
        .set_limits(4, 2 * u64::from(MIN_CONN_BUF));
    let (_a, _) = g.host_connect(80);
    let (_b, _) = g.host_connect(81);
    let mut c = g.host();
    writeln!(c, "CONNECT 82").unwrap();
    assert!(expect_closed(&mut c) < Duration::from_secs(2));
    g.quiet(100);
    assert_eq!(g.connections(), 2);
    // Guest requests too.
    g.send(op::REQUEST, 5000, 5001, &[]);
    g.expect(op::RST);
}

#[test]
fn a_chain_with_an_indirect_descriptor_is_refused_unread() {
    /// VIRTQ_DESC_F_INDIRECT: not offered by this device.
    const F_INDIRECT: u16 = 4;
    let mut g = Guest::new();
    // A well-formed indirect table whose one descriptor holds a REQUEST to a port nobody
    // listens on: followed, it would be answered with RST. Not negotiated, it is not parsed
    // at all: used with length 0, no answer.
    let h = g.hdr(op::REQUEST, 70, 71, 0);
    let header_at = (MEM_SIZE as u64) - 0x10_0000;
    vm_memory::Bytes::write_slice(&g.mem, &h.to_bytes(), vm_memory::GuestAddress(header_at))
        .unwrap();
    let mut table = [0u8; 16];
    table[0..8].copy_from_slice(&header_at.to_le_bytes());
    table[8..12].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
    g.send_chains(&[vec![(16, F_INDIRECT, table.to_vec())]]);
    g.quiet(200);
    {
        let dev = g.dev.clone();
        let _d = dev.lock().unwrap();
        g.reclaim_tx();
    }
    assert_eq!(g.tx_lens, vec![0], "the chain is returned");
    // The device goes on serving well-formed chains.
    g.send(op::REQUEST, 70, 71, &[]);
    let r = g.expect(op::RST);
    assert_eq!((r.hdr.src_port, r.hdr.dst_port), (71, 70));
    assert!(g.healthy());
}
