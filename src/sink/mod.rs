//! Where rows go: the CSV encoding and atomic outputs.
//!
//! A local output is written to a hidden temporary file beside its final
//! name, flushed and synced, and renamed only when the whole run succeeded;
//! a failed run removes it, so no visible partial file ever exists. A killed
//! run may leave its hidden file behind: the next run into the same place
//! removes it. An object-store output is a multipart upload, completed only
//! when the run succeeded and aborted otherwise, so no partial object ever
//! appears and an existing object is left as it was.

pub mod csv;
pub(crate) mod dedupe;
#[cfg(target_os = "linux")]
mod direct;
/// No direct writes off Linux: every file goes through the cache.
#[cfg(not(target_os = "linux"))]
mod direct {
    use std::{fs, io};

    pub(crate) fn enable(_: &fs::File) -> bool {
        false
    }

    pub(crate) enum DirectFile {}

    impl DirectFile {
        pub fn new(_: fs::File) -> io::Result<DirectFile> {
            Err(io::ErrorKind::Unsupported.into())
        }
        pub fn write_all(&mut self, _: &[u8]) -> io::Result<()> {
            match *self {}
        }
        pub fn finish(self) -> io::Result<fs::File> {
            match self {}
        }
    }
}
pub(crate) mod parts;

use std::fs;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::thread;

use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use tokio::runtime::Handle;

use crate::error::{Error, Result};

/// Part uploads in flight at once: with 8 MiB parts, at most 32 MiB of
/// output is buffered for upload.
const UPLOADS_IN_FLIGHT: usize = 4;

/// The marker in our temporary file names, so leftovers can be recognised.
const TMP_MARK: &str = ".personalize-prep-tmp-";

/// Every this many bytes written to a local output, the syncer is asked
/// to sync them (if it is not still busy with its last sync).
const SYNC_EVERY: u64 = 8 << 20;

/// Syncs a file's data to disk on a thread of its own while the run goes on
/// writing. What a sync waits for is not only the data: it ends with a flush
/// of the disk's cache. On this machine's virtual disk one sync of the
/// benchmark's 272 MB output at the end took 0.16–0.40 s even when the
/// kernel had already written every byte; synced as the run went, the last
/// sync took 17 ms. Best effort until the end: an error stops the syncer
/// and is reported by `finish`.
struct Syncer {
    ask: mpsc::SyncSender<()>,
    thread: thread::JoinHandle<io::Result<()>>,
}

impl Syncer {
    fn start(file: &fs::File) -> io::Result<Syncer> {
        let file = file.try_clone()?;
        // No room in the channel: an ask gets through only while the
        // syncer waits for one.
        let (ask, asks) = mpsc::sync_channel::<()>(0);
        let thread = thread::Builder::new().name("sync".into()).spawn(move || {
            while asks.recv().is_ok() {
                file.sync_data()?;
            }
            Ok(())
        })?;
        Ok(Syncer { ask, thread })
    }

    /// Asks for a sync of what has been written so far: false if the last
    /// one is still running.
    fn ask(&self) -> bool {
        self.ask.try_send(()).is_ok()
    }

    /// Waits for the last sync and gives its error. The final sync would
    /// not report an error a sync of the syncer saw, since both descriptors
    /// share one open file, and an open file hears of an error once.
    fn finish(self) -> io::Result<()> {
        drop(self.ask);
        self.thread
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the sync thread panicked")))
    }
}

/// How a local output's bytes reach its file.
enum Out {
    /// Through the page cache, synced as it grows (see `Syncer`).
    Cached(BufWriter<fs::File>),
    /// Past the cache, on a thread of its own (see `direct`).
    Direct(Box<direct::DirectFile>),
}

/// A file that appears at its final path only on `commit`.
pub(crate) struct AtomicFile {
    path: PathBuf,
    tmp: PathBuf,
    file: Option<Out>,
    /// Bytes handed to the file so far.
    written: u64,
    /// Bytes handed to the system when the syncer was last asked to sync.
    asked: u64,
    /// Started when the file first grows by `SYNC_EVERY`.
    syncer: Option<Syncer>,
    /// Folders this file created, deepest first: removed if it never lands.
    created: Vec<PathBuf>,
}

impl AtomicFile {
    /// Creates the hidden temporary file (and the folder), removing any that
    /// an earlier killed run left for the same path.
    pub fn create(path: &Path) -> Result<Self> {
        Self::open(path, false)
    }

    /// `create` for a file that may grow large (a CSV): written directly
    /// where the file system allows.
    pub fn create_large(path: &Path) -> Result<Self> {
        Self::open(path, true)
    }

    fn open(path: &Path, large: bool) -> Result<Self> {
        let err = |what, source| Error::Write {
            path: path.to_path_buf(),
            what,
            source,
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let created: Vec<PathBuf> = dir
            .ancestors()
            .take_while(|d| !d.as_os_str().is_empty() && !d.exists())
            .map(Path::to_path_buf)
            .collect();
        fs::create_dir_all(&dir).map_err(|e| err("cannot create the folder", e))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let prefix = format!(".{name}{TMP_MARK}");
        if let Ok(entries) = fs::read_dir(&dir) {
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().starts_with(&prefix) {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        let tmp = dir.join(format!("{prefix}{}", std::process::id()));
        let cannot = |e| err("cannot create a temporary file", e);
        let file = fs::File::create(&tmp).map_err(cannot)?;
        let out = if large && direct::enable(&file) {
            Out::Direct(Box::new(direct::DirectFile::new(file).map_err(cannot)?))
        } else {
            // Small: a chunk's rows (hundreds of KiB) are written straight
            // through instead of copied into the buffer first.
            Out::Cached(BufWriter::with_capacity(64 << 10, file))
        };
        Ok(AtomicFile {
            path: path.to_path_buf(),
            tmp,
            file: Some(out),
            written: 0,
            asked: 0,
            syncer: None,
            created,
        })
    }

    pub fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        let cannot = |source| Error::Write {
            path: self.path.clone(),
            what: "cannot write",
            source,
        };
        let file = match self.file.as_mut().expect("written before commit") {
            Out::Cached(file) => file,
            Out::Direct(direct) => return direct.write_all(bytes).map_err(cannot),
        };
        file.write_all(bytes).map_err(cannot)?;
        self.written += bytes.len() as u64;
        let reached = self.written - file.buffer().len() as u64;
        if reached - self.asked >= SYNC_EVERY {
            if self.syncer.is_none() {
                self.syncer = Syncer::start(file.get_ref()).ok();
            }
            match &self.syncer {
                // Still syncing: asked again at the next write.
                Some(syncer) if !syncer.ask() => {}
                // Asked, or no syncer could start: again in `SYNC_EVERY`.
                _ => self.asked = reached,
            }
        }
        Ok(())
    }

    /// Flushes, syncs and renames the file into place.
    pub fn commit(mut self) -> Result<()> {
        let file = self.file.take().expect("committed once");
        let err = |what, source| Error::Write {
            path: self.path.clone(),
            what,
            source,
        };
        let file = match file {
            Out::Cached(file) => file
                .into_inner()
                .map_err(|e| err("cannot write", e.into_error()))?,
            Out::Direct(direct) => direct.finish().map_err(|e| err("cannot write", e))?,
        };
        if let Some(syncer) = self.syncer.take() {
            syncer.finish().map_err(|e| err("cannot sync", e))?;
        }
        file.sync_all().map_err(|e| err("cannot sync", e))?;
        fs::rename(&self.tmp, &self.path).map_err(|e| err("cannot rename into place", e))?;
        Ok(())
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
            for dir in &self.created {
                let _ = fs::remove_dir(dir);
            }
        }
    }
}

/// A multipart upload that becomes an object only on `commit`; dropped
/// before that, it is aborted.
pub(crate) struct Upload {
    url: String,
    handle: Handle,
    writer: Option<WriteMultipart>,
}

impl Upload {
    pub fn start(
        handle: &Handle,
        store: Arc<dyn ObjectStore>,
        path: &StorePath,
        url: String,
        part_bytes: usize,
    ) -> Result<Self> {
        let upload = handle
            .block_on(store.put_multipart(path))
            .map_err(|source| Error::Store {
                url: url.clone(),
                what: "cannot start the upload".into(),
                source,
            })?;
        Ok(Upload {
            url,
            handle: handle.clone(),
            writer: Some(WriteMultipart::new_with_chunk_size(upload, part_bytes)),
        })
    }

    fn error(&self, source: object_store::Error) -> Error {
        Error::Store {
            url: self.url.clone(),
            what: "cannot upload".into(),
            source,
        }
    }

    pub fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        let writer = self.writer.as_mut().expect("written before commit");
        self.handle
            .block_on(async {
                writer.wait_for_capacity(UPLOADS_IN_FLIGHT).await?;
                writer.write(bytes);
                Ok(())
            })
            .map_err(|e| self.error(e))
    }

    pub fn commit(mut self) -> Result<()> {
        let writer = self.writer.take().expect("committed once");
        self.handle
            .block_on(writer.finish())
            .map(|_| ())
            .map_err(|e| self.error(e))
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if let Some(writer) = self.writer.take()
            && let Err(e) = self.handle.block_on(writer.abort())
        {
            log::warn!("{}: cannot abort the unfinished upload: {e}", self.url);
        }
    }
}

/// Where the CSV goes.
pub(crate) enum CsvOut {
    File(AtomicFile),
    Upload(Upload),
    Stdout(BufWriter<io::Stdout>),
}

impl CsvOut {
    pub fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        match self {
            CsvOut::File(f) => f.write_all(bytes),
            CsvOut::Upload(u) => u.write_all(bytes),
            CsvOut::Stdout(out) => out.write_all(bytes).map_err(stdout_error),
        }
    }

    /// How the user knows this output.
    pub fn name(&self) -> String {
        match self {
            CsvOut::File(f) => f.path.display().to_string(),
            CsvOut::Upload(u) => u.url.clone(),
            CsvOut::Stdout(_) => "<stdout>".to_string(),
        }
    }

    pub fn commit(self) -> Result<()> {
        match self {
            CsvOut::File(f) => f.commit(),
            CsvOut::Upload(u) => u.commit(),
            CsvOut::Stdout(mut out) => out.flush().map_err(stdout_error),
        }
    }
}

fn stdout_error(source: io::Error) -> Error {
    Error::Write {
        path: PathBuf::from("<stdout>"),
        what: "cannot write",
        source,
    }
}

/// Writes a small file (the schema) atomically.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = AtomicFile::create(path)?;
    file.write_all(bytes)?;
    file.commit()
}

/// Writes a small object in one request (atomic on every store).
pub(crate) fn put_object(
    handle: &Handle,
    store: &dyn ObjectStore,
    path: &StorePath,
    url: &str,
    bytes: Vec<u8>,
) -> Result<()> {
    handle
        .block_on(store.put(path, bytes.into()))
        .map(|_| ())
        .map_err(|source| Error::Store {
            url: url.to_string(),
            what: "cannot write".into(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes pieces of uneven sizes, at least `bytes` in all, and gives
    /// what was written.
    fn uneven_pieces(bytes: usize, mut write: impl FnMut(&[u8])) -> Vec<u8> {
        let mut written = Vec::new();
        let mut n = 0u32;
        while written.len() < bytes {
            let piece: Vec<u8> = (0..(n % 7) * 100_003 + 17)
                .map(|i| (i as u8) ^ n as u8)
                .collect();
            write(&piece);
            written.extend_from_slice(&piece);
            n += 1;
        }
        written
    }

    /// The hidden file is gone and `path` alone is left in `dir`.
    fn landed_alone(dir: &Path) {
        let names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["out.csv"]);
    }

    /// Written in uneven pieces past a few sync points, the file lands
    /// whole, and the hidden file is gone.
    #[test]
    fn a_file_synced_as_it_grows_lands_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.csv");
        let mut out = AtomicFile::create(&path).unwrap();
        let expected = uneven_pieces(3 * SYNC_EVERY as usize + 12_345, |piece| {
            out.write_all(piece).unwrap()
        });
        assert!(out.syncer.is_some(), "the syncer never started");
        out.commit().unwrap();
        assert_eq!(fs::read(&path).unwrap(), expected);
        landed_alone(dir.path());
    }

    /// A large file written directly, in uneven pieces across several
    /// buffers and ending in a partial block, lands whole.
    #[test]
    fn a_file_written_directly_lands_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.csv");
        let mut out = AtomicFile::create_large(&path).unwrap();
        if !matches!(out.file, Some(Out::Direct(_))) {
            eprintln!("no direct writes on this file system: written through the cache");
        }
        let expected = uneven_pieces(3 * (1 << 20) + 12_345, |piece| {
            out.write_all(piece).unwrap()
        });
        out.commit().unwrap();
        assert_eq!(fs::read(&path).unwrap(), expected);
        landed_alone(dir.path());
    }
}
