//! Following a growing log file (`tail -f`) until told to stop.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;

/// How often a followed file is polled.
pub const POLL: Duration = Duration::from_millis(50);

/// One followed file: remembers how far it was copied.
pub struct Follower<'a> {
    path: &'a Path,
    pos: u64,
}

impl<'a> Follower<'a> {
    /// Starts at the beginning of `path` (which may not exist yet).
    pub fn new(path: &'a Path) -> Follower<'a> {
        Follower { path, pos: 0 }
    }

    /// Copies what was added since the last call to `out`; a file that shrank (a new run
    /// truncated it) is read again from the start. Returns the bytes copied.
    pub fn pump(&mut self, out: &mut dyn Write) -> io::Result<u64> {
        let mut f = match File::open(self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let len = f.metadata()?.len();
        if len < self.pos {
            self.pos = 0;
        }
        f.seek(SeekFrom::Start(self.pos))?;
        let n = io::copy(&mut (&mut f).take(len - self.pos), out)?;
        self.pos += n;
        out.flush()?;
        Ok(n)
    }
}

/// Copies `path` to `out` as it grows until `done()` says so, then copies the rest.
pub fn follow(path: &Path, out: &mut dyn Write, mut done: impl FnMut() -> bool) -> io::Result<()> {
    let mut f = Follower::new(path);
    loop {
        let finished = done();
        f.pump(out)?;
        if finished {
            return Ok(());
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_growth_and_truncation() {
        let t = crate::disk::testutil::TempDir::new("mgr-follow");
        let p = t.path().join("log");
        let mut f = Follower::new(&p);
        let mut out = Vec::new();
        assert_eq!(f.pump(&mut out).unwrap(), 0);
        std::fs::write(&p, b"one\n").unwrap();
        f.pump(&mut out).unwrap();
        let mut file = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        file.write_all(b"two\n").unwrap();
        f.pump(&mut out).unwrap();
        assert_eq!(out, b"one\ntwo\n");
        std::fs::write(&p, b"new\n").unwrap();
        f.pump(&mut out).unwrap();
        assert_eq!(out, b"one\ntwo\nnew\n");
        let mut all = Vec::new();
        let mut calls = 0;
        follow(&p, &mut all, || {
            calls += 1;
            calls > 2
        })
        .unwrap();
        assert_eq!(all, b"new\n");
    }
}
