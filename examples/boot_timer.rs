//! boot_timer: runs a VMM command and timestamps its console output, for bench/linux-boot
//! (built static and run inside the nested test host, where only busybox is available).
//!
//!   boot_timer [MARKER]... -- COMMAND [ARG]...
//!
//! Prints one line: `TIMING first=<ms> <marker>=<ms>... exit=<ms> rc=<code>`, all measured
//! from just before the spawn; a marker never seen prints `-`. Output is not echoed.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(sep) = args.iter().position(|a| a == "--") else {
        eprintln!("usage: boot_timer [MARKER]... -- COMMAND [ARG]...");
        std::process::exit(2);
    };
    let markers = &args[..sep];
    let Some((cmd, cmd_args)) = args[sep + 1..].split_first() else {
        eprintln!("boot_timer: no command");
        std::process::exit(2);
    };
    let start = Instant::now();
    let mut child = match Command::new(cmd)
        .args(cmd_args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("boot_timer: cannot run {cmd}: {e}");
            std::process::exit(2);
        }
    };
    let mut out = child.stdout.take().expect("piped stdout");
    let mut seen: Vec<Option<f64>> = vec![None; markers.len()];
    let mut first = None;
    let mut text = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = match out.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let now = start.elapsed().as_secs_f64() * 1000.0;
        first.get_or_insert(now);
        // Search only the tail that can hold a new match (markers are short).
        let from = text.len().saturating_sub(256);
        text.extend_from_slice(&buf[..n]);
        for (m, t) in markers.iter().zip(seen.iter_mut()) {
            if t.is_none() && text[from..].windows(m.len()).any(|w| w == m.as_bytes()) {
                *t = Some(now);
            }
        }
        if text.len() > 1 << 20 {
            text.drain(..text.len() - 4096);
        }
    }
    let status = child.wait();
    let exit = start.elapsed().as_secs_f64() * 1000.0;
    let fmt = |t: Option<f64>| t.map_or("-".to_string(), |v| format!("{v:.1}"));
    let mut line = format!("TIMING first={}", fmt(first));
    for (m, t) in markers.iter().zip(&seen) {
        line.push_str(&format!(" {}={}", m.replace([' ', '='], "_"), fmt(*t)));
    }
    let rc = status.ok().and_then(|s| s.code()).map_or(-1, |c| c);
    line.push_str(&format!(" exit={exit:.1} rc={rc}"));
    println!("{line}");
}
