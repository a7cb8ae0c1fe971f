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
pub(crate) mod parts;

use std::fs;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use tokio::runtime::Handle;

use crate::error::{Error, Result};

/// Part uploads in flight at once: with 8 MiB parts, at most 32 MiB of
/// output is buffered for upload.
const UPLOADS_IN_FLIGHT: usize = 4;

/// The marker in our temporary file names, so leftovers can be recognised.
const TMP_MARK: &str = ".personalize-prep-tmp-";

/// Every this many bytes written to a local output, their writeback to
/// disk is started.
const WRITEBACK_BYTES: u64 = 8 << 20;

/// Starts writing `len` bytes at `offset` of `file` to disk, without
/// waiting. With much memory the kernel would otherwise keep the whole
/// output dirty until the sync before the rename, which then waits for all
/// of it (0.4–0.5 s for the 270 MB of the benchmark's output, on a disk
/// that writes 240 MB/s); started as the run goes, the writes overlap the
/// conversion. Best effort: the sync at commit reports any error.
#[cfg(target_os = "linux")]
fn start_writeback(file: &fs::File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: a system call on the descriptor `file` keeps open; it reads
    // and writes none of our memory.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_: &fs::File, _: u64, _: u64) {}

/// A file that appears at its final path only on `commit`.
pub(crate) struct AtomicFile {
    path: PathBuf,
    tmp: PathBuf,
    file: Option<BufWriter<fs::File>>,
    /// Bytes handed to the file so far.
    written: u64,
    /// Where the last writeback started (`start_writeback`) ends.
    started: u64,
    /// Folders this file created, deepest first: removed if it never lands.
    created: Vec<PathBuf>,
}

impl AtomicFile {
    /// Creates the hidden temporary file (and the folder), removing any that
    /// an earlier killed run left for the same path.
    pub fn create(path: &Path) -> Result<Self> {
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
        let file = fs::File::create(&tmp).map_err(|e| err("cannot create a temporary file", e))?;
        Ok(AtomicFile {
            path: path.to_path_buf(),
            tmp,
            // Small: a chunk's rows (hundreds of KiB) are written straight
            // through instead of copied into the buffer first.
            file: Some(BufWriter::with_capacity(64 << 10, file)),
            written: 0,
            started: 0,
            created,
        })
    }

    pub fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        let file = self.file.as_mut().expect("written before commit");
        file.write_all(bytes).map_err(|source| Error::Write {
            path: self.path.clone(),
            what: "cannot write",
            source,
        })?;
        self.written += bytes.len() as u64;
        let reached = self.written - file.buffer().len() as u64;
        if reached - self.started >= WRITEBACK_BYTES {
            start_writeback(file.get_ref(), self.started, reached - self.started);
            self.started = reached;
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
        let file = file
            .into_inner()
            .map_err(|e| err("cannot write", e.into_error()))?;
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
