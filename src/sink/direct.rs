//! Direct writes (Linux `O_DIRECT`): the output's bytes go from an aligned
//! buffer of ours to the disk, past the page cache. A buffered write copies
//! them into the cache, whose pages the kernel must find, charge and later
//! write back; on this machine's VM, pages freed a few seconds earlier have
//! been handed back to the host, and taking them again cost 0.9-1.0 s of
//! system time for a 336 MB file (against 0.06 s right after a free).

use std::fs;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::thread;

/// Offsets and lengths of direct writes are multiples of this (every
/// logical block size in use divides it), and so is the buffer's address.
const ALIGN: usize = 4096;

/// Bytes gathered before a write.
const CAP: usize = 1 << 20;

/// Switches `file` to direct writes when its file system says how to
/// align them (`statx`, Linux 6.1 on) and `ALIGN` is aligned enough: false
/// when it is left as it was (to be written through the cache). Where a
/// file system takes direct writes without saying so (NFS, FUSE), they
/// may cost more than they save: each is a request of its own.
pub(crate) fn enable(file: &fs::File) -> bool {
    let fd = file.as_raw_fd();
    // SAFETY: all zeros is a valid `statx`, which the call fills in.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: `stx` is ours to write; the empty path with `AT_EMPTY_PATH`
    // names the descriptor itself.
    let got = unsafe {
        libc::statx(
            fd,
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_DIOALIGN,
            &mut stx,
        )
    };
    let aligned = |align: u32| align > 0 && ALIGN.is_multiple_of(align as usize);
    if got != 0
        || stx.stx_mask & libc::STATX_DIOALIGN == 0
        || !aligned(stx.stx_dio_mem_align)
        || !aligned(stx.stx_dio_offset_align)
    {
        return false;
    }
    set_direct(file, true).is_ok()
}

/// Turns `O_DIRECT` on or off for `file`.
fn set_direct(file: &fs::File, on: bool) -> io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: flag calls on a descriptor we own; no memory is passed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let flags = if on {
        flags | libc::O_DIRECT
    } else {
        flags & !libc::O_DIRECT
    };
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A buffer whose `CAP` bytes from `start` are aligned; `len` of them
/// hold bytes to write.
#[derive(Default)]
struct Buf {
    mem: Vec<u8>,
    start: usize,
    len: usize,
}

impl Buf {
    fn new() -> Buf {
        let mem = vec![0u8; CAP + ALIGN];
        let start = mem.as_ptr().align_offset(ALIGN);
        Buf { mem, start, len: 0 }
    }

    fn bytes(&self) -> &[u8] {
        &self.mem[self.start..self.start + self.len]
    }
}

/// Buffers filled on one side while a thread of its own writes the other:
/// the thread handing over the output (the run's writer) does not wait on
/// the disk.
const BUFS: usize = 2;

/// A new file written in whole aligned blocks by a thread of its own, its
/// last partial block through the cache. Where the kernel refuses a direct
/// write (it wants other alignment) or a short one leaves the offset
/// unaligned, the rest goes through the cache.
pub(crate) struct DirectFile {
    buf: Buf,
    full: mpsc::SyncSender<Buf>,
    free: mpsc::Receiver<Buf>,
    thread: Option<thread::JoinHandle<io::Result<fs::File>>>,
}

impl DirectFile {
    /// Writes `file`, which `enable` switched to direct writes, from now
    /// on.
    pub fn new(file: fs::File) -> io::Result<DirectFile> {
        let (full, fulls) = mpsc::sync_channel::<Buf>(BUFS);
        let (back, free) = mpsc::sync_channel::<Buf>(BUFS);
        for _ in 1..BUFS {
            back.send(Buf::new()).expect("room for every buffer");
        }
        let mut out = Blocks { file, direct: true };
        let thread = thread::Builder::new().name("write".into()).spawn(move || {
            // The last buffer is the one not full.
            while let Ok(mut buf) = fulls.recv() {
                let last = buf.len < CAP;
                out.write(buf.bytes(), last)?;
                buf.len = 0;
                if last || back.send(buf).is_err() {
                    break;
                }
            }
            Ok(out.file)
        })?;
        Ok(DirectFile {
            buf: Buf::new(),
            full,
            free,
            thread: Some(thread),
        })
    }

    pub fn write_all(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            let buf = &mut self.buf;
            let n = (CAP - buf.len).min(bytes.len());
            let at = buf.start + buf.len;
            buf.mem[at..at + n].copy_from_slice(&bytes[..n]);
            buf.len += n;
            bytes = &bytes[n..];
            if buf.len == CAP {
                let next = match self.free.recv() {
                    Ok(next) => next,
                    Err(_) => return Err(self.failed()),
                };
                let full = std::mem::replace(&mut self.buf, next);
                if self.full.send(full).is_err() {
                    return Err(self.failed());
                }
            }
        }
        Ok(())
    }

    /// The writing thread's error: it stops only at one (or when it has
    /// written the last buffer).
    fn failed(&mut self) -> io::Error {
        match self.thread.take().map(thread::JoinHandle::join) {
            Some(Ok(Err(e))) => e,
            Some(Err(_)) => io::Error::other("the writing thread panicked"),
            _ => io::Error::other("the writing thread stopped"),
        }
    }

    /// Writes out everything. The file is then as long as the bytes
    /// written.
    pub fn finish(mut self) -> io::Result<fs::File> {
        if self.full.send(std::mem::take(&mut self.buf)).is_err() {
            return Err(self.failed());
        }
        match self.thread.take().map(thread::JoinHandle::join) {
            Some(Ok(result)) => result,
            _ => Err(io::Error::other("the writing thread panicked")),
        }
    }
}

/// The writing thread's side.
struct Blocks {
    file: fs::File,
    direct: bool,
}

impl Blocks {
    /// Writes `bytes` (whole blocks unless `last`); the last ones' partial
    /// block through the cache.
    fn write(&mut self, bytes: &[u8], last: bool) -> io::Result<()> {
        let whole = bytes.len() / ALIGN * ALIGN;
        debug_assert!(last || whole == bytes.len());
        self.write_all(&bytes[..whole])?;
        if last && whole < bytes.len() {
            if self.direct {
                self.cached()?;
            }
            self.write_all(&bytes[whole..])?;
        }
        Ok(())
    }

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut done = 0;
        while done < bytes.len() {
            match (&self.file).write(&bytes[done..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(k) => {
                    done += k;
                    if self.direct && !done.is_multiple_of(ALIGN) {
                        self.cached()?;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // The file system or the device wants other alignment.
                Err(e) if self.direct && e.raw_os_error() == Some(libc::EINVAL) => {
                    self.cached()?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Writes through the cache from now on.
    fn cached(&mut self) -> io::Result<()> {
        set_direct(&self.file, false)?;
        self.direct = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A write the kernel refuses to take directly (here: from an address
    /// off the alignment) goes through the cache, and so does the rest.
    #[test]
    fn refused_direct_writes_go_through_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.csv");
        let file = fs::File::create(&path).unwrap();
        if !enable(&file) {
            eprintln!("no direct writes on this file system: nothing to test");
            return;
        }
        let mut blocks = Blocks { file, direct: true };
        let mut buf = Buf::new();
        buf.len = CAP;
        for (i, b) in buf.mem[buf.start..buf.start + CAP].iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
        blocks.write(&buf.bytes()[..2 * ALIGN], false).unwrap();
        assert!(blocks.direct, "an aligned write was refused");
        blocks.write(&buf.bytes()[1..ALIGN + 1], false).unwrap();
        assert!(!blocks.direct, "an unaligned address was taken directly");
        blocks.write(&buf.bytes()[7..100], true).unwrap();
        let bytes = buf.bytes();
        let expected = [&bytes[..2 * ALIGN], &bytes[1..ALIGN + 1], &bytes[7..100]].concat();
        assert_eq!(fs::read(&path).unwrap(), expected);
    }
}
