//! vsock_tool: the vsock test peer for micro-vmm's end-to-end scenarios and benchmarks. Built
//! static; the same binary runs in the guest (AF_VSOCK) and on the host (AF_UNIX, with
//! Firecracker's `CONNECT <port>` handshake).
//!
//!   vsock_tool serve PORT                       guest: echo server on vsock PORT
//!   vsock_tool userve PATH                      host: echo server on Unix socket PATH
//!   vsock_tool vconnect CID PORT BYTES [OPTS]   guest: client to CID:PORT over vsock
//!   vsock_tool uconnect UDS PORT BYTES [OPTS]   host: client through micro-vmm's UDS
//!   OPTS: --conns K (K parallel connections, BYTES each), --abort-after N (drop the
//!         connection after sending N bytes), --rtt N (N one-byte round trips, then close)
//!
//! A client sends BYTES of a deterministic stream, half-closes its write side, reads the echo
//! until EOF and checks every byte. It prints one line:
//!   RESULT ok conns=K bytes=B secs=S MiBps=R     (or RESULT refused / RESULT error <why>)

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::thread;
use std::time::Instant;

/// A connected stream of either kind.
struct Stream(UnixStream);

impl Stream {
    fn try_clone(&self) -> io::Result<Stream> {
        self.0.try_clone().map(Stream)
    }
}

fn vsock_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just created and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn sockaddr_vm(cid: u32, port: u32) -> libc::sockaddr_vm {
    // SAFETY: sockaddr_vm is plain data; all-zero is a valid starting value.
    let mut a: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    a.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    a.svm_cid = cid;
    a.svm_port = port;
    a
}

/// AF_VSOCK sockets behave like stream sockets; UnixStream's Read/Write/shutdown work on any
/// stream socket fd, so the vsock fd is wrapped in one.
fn stream_from_fd(fd: OwnedFd) -> Stream {
    Stream(UnixStream::from(fd))
}

fn vsock_connect(cid: u32, port: u32) -> io::Result<Stream> {
    let fd = vsock_socket()?;
    let a = sockaddr_vm(cid, port);
    // SAFETY: `a` is a valid sockaddr_vm of the given size for the whole call.
    let r = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&a as *const libc::sockaddr_vm).cast(),
            std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stream_from_fd(fd))
}

fn vsock_listen(port: u32) -> io::Result<OwnedFd> {
    let fd = vsock_socket()?;
    let a = sockaddr_vm(libc::VMADDR_CID_ANY, port);
    // SAFETY: `a` is a valid sockaddr_vm for the whole call.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&a as *const libc::sockaddr_vm).cast(),
            std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t,
        )
    };
    // SAFETY: listen(2) on our own socket.
    if r != 0 || unsafe { libc::listen(fd.as_raw_fd(), 1024) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

fn vsock_accept(listener: &OwnedFd) -> io::Result<Stream> {
    // SAFETY: accept4 with null address pointers is valid.
    let fd = unsafe {
        libc::accept4(
            listener.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by accept4 and is owned by nobody else.
    Ok(stream_from_fd(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Echoes until EOF, then half-closes: what the client half-closed comes back complete.
fn echo(mut s: Stream) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match s.0.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if s.0.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
    let _ = s.0.shutdown(Shutdown::Write);
}

/// The deterministic byte at position `i` of connection `c`'s stream.
fn byte_at(c: u64, i: u64) -> u8 {
    let x = (i ^ (c << 40)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (x >> 56) as u8
}

struct Opts {
    conns: u64,
    abort_after: Option<u64>,
    rtt: Option<u64>,
}

/// Sends `bytes`, half-closes, checks the echo. Returns the bytes verified.
fn run_client(s: Stream, c: u64, bytes: u64, opts: &Opts) -> Result<u64, String> {
    if let Some(n) = opts.rtt {
        let mut s = s;
        let mut b = [0u8; 1];
        for i in 0..n {
            s.0.write_all(&[i as u8])
                .map_err(|e| format!("rtt write: {e}"))?;
            s.0.read_exact(&mut b)
                .map_err(|e| format!("rtt read: {e}"))?;
            if b[0] != i as u8 {
                return Err(format!("rtt echo {} != {}", b[0], i as u8));
            }
        }
        return Ok(n);
    }
    let mut w = s.try_clone().map_err(|e| e.to_string())?;
    let abort = opts.abort_after;
    let writer = thread::spawn(move || -> Result<(), String> {
        let mut buf = vec![0u8; 64 * 1024];
        let mut sent = 0u64;
        let limit = abort.map_or(bytes, |a| a.min(bytes));
        while sent < limit {
            let n = (limit - sent).min(buf.len() as u64) as usize;
            for (k, b) in buf[..n].iter_mut().enumerate() {
                *b = byte_at(c, sent + k as u64);
            }
            w.0.write_all(&buf[..n])
                .map_err(|e| format!("write: {e}"))?;
            sent += n as u64;
        }
        if abort.is_some() {
            // Drop the connection abruptly (no half-close): RST semantics.
            let _ = w.0.shutdown(Shutdown::Both);
        } else {
            w.0.shutdown(Shutdown::Write)
                .map_err(|e| format!("shutdown: {e}"))?;
        }
        Ok(())
    });
    let mut r = s;
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0u64;
    loop {
        match r.0.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                for (k, b) in buf[..n].iter().enumerate() {
                    if *b != byte_at(c, got + k as u64) {
                        return Err(format!("byte {} differs", got + k as u64));
                    }
                }
                got += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                if abort.is_some() {
                    break;
                }
                return Err(format!("read after {got} bytes: {e}"));
            }
        }
    }
    writer
        .join()
        .map_err(|_| "writer panicked".to_string())?
        .or_else(|e| if abort.is_some() { Ok(()) } else { Err(e) })?;
    if abort.is_none() && got != bytes {
        return Err(format!("echo ended after {got} of {bytes} bytes"));
    }
    Ok(got)
}

/// Connects through micro-vmm's Unix socket: `CONNECT <port>\n`, then expects `OK <n>\n`.
fn uds_connect(uds: &str, port: u32) -> Result<Stream, String> {
    let mut s = UnixStream::connect(uds).map_err(|e| format!("connect {uds}: {e}"))?;
    s.write_all(format!("CONNECT {port}\n").as_bytes())
        .map_err(|e| format!("handshake write: {e}"))?;
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while line.len() < 32 {
        match s.read(&mut b) {
            Ok(0) => return Err("refused".into()),
            Ok(_) if b[0] == b'\n' => break,
            Ok(_) => line.push(b[0]),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Err("refused".into()),
            Err(e) => return Err(format!("handshake read: {e}")),
        }
    }
    let text = String::from_utf8_lossy(&line);
    if !text.starts_with("OK ") {
        return Err(format!("bad handshake answer {text:?}"));
    }
    Ok(Stream(s))
}

fn client(connect: &(dyn Fn() -> Result<Stream, String> + Sync), bytes: u64, opts: Opts) -> i32 {
    let start = Instant::now();
    let results: Vec<Result<u64, String>> = thread::scope(|sc| {
        let handles: Vec<_> = (0..opts.conns)
            .map(|c| {
                let opts = &opts;
                sc.spawn(move || {
                    let s = connect()?;
                    run_client(s, c, bytes, opts)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("panicked".into())))
            .collect()
    });
    let secs = start.elapsed().as_secs_f64();
    let mut total = 0;
    for r in &results {
        match r {
            Ok(n) => total += n,
            Err(e) if e == "refused" || e.contains("Connection reset") || e.contains("refused") => {
                println!("RESULT refused secs={secs:.3} ({e})");
                return 3;
            }
            Err(e) => {
                println!("RESULT error {e} secs={secs:.3}");
                return 1;
            }
        }
    }
    println!(
        "RESULT ok conns={} bytes={total} secs={secs:.3} MiBps={:.1}",
        opts.conns,
        total as f64 / secs.max(1e-9) / 1048576.0
    );
    0
}

fn parse_opts(rest: &[String]) -> Opts {
    let mut o = Opts {
        conns: 1,
        abort_after: None,
        rtt: None,
    };
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        let v = it.next().and_then(|v| v.parse().ok());
        match (a.as_str(), v) {
            ("--conns", Some(v)) => o.conns = v,
            ("--abort-after", Some(v)) => o.abort_after = Some(v),
            ("--rtt", Some(v)) => o.rtt = Some(v),
            _ => {
                eprintln!("vsock_tool: bad option {a}");
                std::process::exit(2);
            }
        }
    }
    o
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize| -> u64 {
        args.get(i).and_then(|v| v.parse().ok()).unwrap_or_else(|| {
            eprintln!("vsock_tool: argument {i} must be a number");
            std::process::exit(2)
        })
    };
    let code = match args.first().map(String::as_str) {
        Some("serve") => {
            let l = vsock_listen(num(1) as u32).unwrap_or_else(|e| {
                eprintln!("vsock_tool: listen: {e}");
                std::process::exit(1)
            });
            println!("LISTENING {}", num(1));
            loop {
                match vsock_accept(&l) {
                    Ok(s) => {
                        thread::spawn(move || echo(s));
                    }
                    Err(e) => eprintln!("vsock_tool: accept: {e}"),
                }
            }
        }
        Some("userve") => {
            let path = args.get(1).cloned().unwrap_or_default();
            let _ = std::fs::remove_file(&path);
            let l = UnixListener::bind(&path).unwrap_or_else(|e| {
                eprintln!("vsock_tool: bind {path}: {e}");
                std::process::exit(1)
            });
            println!("LISTENING {path}");
            for s in l.incoming().flatten() {
                thread::spawn(move || echo(Stream(s)));
            }
            0
        }
        Some("vconnect") => {
            let (cid, port) = (num(1) as u32, num(2) as u32);
            client(
                &|| vsock_connect(cid, port).map_err(|e| e.to_string()),
                num(3),
                parse_opts(&args[4..]),
            )
        }
        Some("uconnect") => {
            let uds = args.get(1).cloned().unwrap_or_default();
            let port = num(2) as u32;
            client(&|| uds_connect(&uds, port), num(3), parse_opts(&args[4..]))
        }
        _ => {
            eprintln!("usage: see the header of examples/vsock_tool.rs");
            2
        }
    };
    std::process::exit(code);
}
