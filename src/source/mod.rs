//! Listing and reading source objects.
//!
//! A SOURCE is a file, a folder, or an object-store prefix (`store`). A
//! folder or prefix is listed recursively and sorted by the whole key, so
//! the row order of a run never depends on the file system or the store.
//! What Spark, Hadoop and Firehose leave beside the data (hidden files,
//! `_SUCCESS`, `_temporary/`, `*.crc`) and empty objects are skipped.

pub mod store;

use std::fs;
use std::io;
use std::mem::MaybeUninit;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use globset::{Glob, GlobSet, GlobSetBuilder};
use object_store::ObjectStore;
use object_store::path::Path as StorePath;

use crate::decode::Source;
use crate::error::{Error, Result};
use store::{StoreUrl, Stores};

/// Where an object's bytes are.
#[derive(Debug, Clone)]
pub enum Location {
    Local(PathBuf),
    Remote {
        store: Arc<dyn ObjectStore>,
        path: StorePath,
    },
}

/// One object to convert.
#[derive(Debug, Clone)]
pub struct Object {
    /// How errors and logs name it: the SOURCE as given plus the key under
    /// it, or the object's URL.
    pub name: String,
    /// The key under its SOURCE, which `--include`/`--exclude` match.
    pub key: String,
    pub size: u64,
    /// Last modification, epoch seconds (when the store or file system says).
    pub modified: Option<i64>,
    /// The store's ETag (object storage only).
    pub etag: Option<String>,
    pub location: Location,
}

impl Object {
    /// Opens a local object; remote objects are fetched by the pipeline.
    pub(crate) fn open_local(&self, path: &Path) -> Result<Box<dyn Source>> {
        let file = fs::File::open(path).map_err(|source| Error::Read {
            key: self.name.clone(),
            what: "cannot open".into(),
            source,
        })?;
        // Unbuffered: the chunk reader asks for a chunk at a time, straight
        // into the chunk's buffer, and the decompressors buffer their input
        // themselves. A buffer here copied part of every chunk twice.
        Ok(Box::new(LocalFile::new(file)))
    }
}

/// How far ahead of a local file's reading, and into the files to be read
/// next, the kernel is asked to read (`read_ahead`), once reading is seen
/// to wait on the disk.
pub(crate) const READ_AHEAD: u64 = 16 << 20;

/// Bytes read from local files so far, and up to how many of them reading
/// counts as cold: a read that had most of its bytes from the disk makes
/// the next `COLD_FOR` bytes cold (see `LocalFile`).
static READ: AtomicU64 = AtomicU64::new(0);
static COLD_UNTIL: AtomicU64 = AtomicU64::new(0);

/// How long a read from the disk keeps reading cold: a cold run goes on
/// missing the cache (reads that find the pages asked ahead still under
/// way count), a cached one stops asking ahead soon after a miss.
const COLD_FOR: u64 = 256 << 20;

/// Whether reading local files waits on the disk (recently did).
pub(crate) fn reading_cold() -> bool {
    READ.load(Ordering::Relaxed) < COLD_UNTIL.load(Ordering::Relaxed)
}

/// Counts `n` bytes read, `from_disk` of them from the disk.
fn count_read(n: u64, from_disk: bool) {
    let read = READ.fetch_add(n, Ordering::Relaxed) + n;
    if from_disk {
        COLD_UNTIL.fetch_max(read + COLD_FOR, Ordering::Relaxed);
    }
}

/// Asks the kernel to start reading `len` bytes of `file` from `offset`
/// into its cache, without waiting for them. Its own read-ahead (128 KiB
/// on this machine's disk) is far shorter than a chunk, so each chunk's
/// read waited on the disk when the file was not cached: asked ahead, the
/// disk works while the cores decode (a run over the benchmark's NDJSON
/// set from an empty cache took 2.2-2.3 s, 1.6-1.7 s asked ahead).
pub(crate) fn read_ahead(file: &fs::File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let (offset, len) = (
            i64::try_from(offset).unwrap_or(i64::MAX),
            i64::try_from(len).unwrap_or(i64::MAX),
        );
        // SAFETY: a hint about an open descriptor; it reads or writes no
        // memory of ours. A failure only means no read-ahead.
        unsafe { libc::posix_fadvise(file.as_raw_fd(), offset, len, libc::POSIX_FADV_WILLNEED) };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}

/// A local file read in order, each read straight into the spare room of
/// the chunk's buffer in one call (std's `read_to_end` reads 8 KiB, then
/// twice as much each time: ten calls a chunk).
///
/// On Linux a read first asks for cached bytes only (`RWF_NOWAIT`). Once a
/// read had to wait and at least half of its bytes came from the disk
/// (the thread's `ru_inblock`), this run's reads of local files are taken
/// to wait on the disk, and the kernel is asked to read `READ_AHEAD` bytes
/// ahead of each (and of the files next in line, see `Prefetch`). Not
/// asked while the files are cached: a hint still walks the cache over its
/// range (3% of a cached run's CPU), and reads that wait for a few pages
/// this VM's kernel dropped from its cache are not a cold disk. (The test
/// was a read under 1 GB/s: reads preempted half-way or faulting their
/// buffer in passed it, and a cached run made 500-800 hints.)
pub(crate) struct LocalFile {
    ranges: FileRanges,
    /// Bytes read so far.
    at: u64,
}

/// A local file read at any offset, by its `LocalFile` in order and by the
/// workers that take chunks of it as ranges (`ChunkReader::ranged`), each
/// read as `LocalFile` describes.
#[derive(Clone)]
pub(crate) struct FileRanges(Arc<Ranges>);

impl std::fmt::Debug for FileRanges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FileRanges")
    }
}

struct Ranges {
    file: fs::File,
    /// Bytes the kernel has been asked to read ahead, from the start.
    asked: AtomicU64,
    /// Whether `RWF_NOWAIT` reads work on this file.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    nowait: AtomicBool,
}

impl LocalFile {
    pub fn new(file: fs::File) -> Self {
        let ranges = FileRanges(Arc::new(Ranges {
            file,
            asked: AtomicU64::new(0),
            nowait: AtomicBool::new(cfg!(target_os = "linux")),
        }));
        ranges.ask_ahead(0);
        LocalFile { ranges, at: 0 }
    }

    /// Reads into `dst` at `self.at`, in one call: the bytes read, 0 at the
    /// end of the file.
    fn read_into(&mut self, dst: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
        let n = self.ranges.read_at(self.at, dst)?;
        self.at += n as u64;
        Ok(n)
    }
}

impl FileRanges {
    /// The file's length now.
    pub fn len(&self) -> io::Result<u64> {
        Ok(self.0.file.metadata()?.len())
    }

    /// Asks for the bytes up to `READ_AHEAD` past `at`, once half of the
    /// way asked before is read, when reading waits on the disk.
    fn ask_ahead(&self, at: u64) {
        let asked = self.0.asked.load(Ordering::Relaxed);
        if reading_cold() && at + READ_AHEAD / 2 >= asked {
            let upto = at + READ_AHEAD;
            if self.0.asked.fetch_max(upto, Ordering::Relaxed) < upto {
                read_ahead(&self.0.file, asked, upto - asked);
            }
        }
    }

    /// Reads into `dst` at `offset`, in one call: the bytes read, 0 at the
    /// end of the file.
    fn read_at(&self, offset: u64, dst: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
        if dst.is_empty() {
            return Ok(0);
        }
        let (n, from_disk) = self.read_once(offset, dst)?;
        count_read(n as u64, from_disk);
        self.ask_ahead(offset + n as u64);
        Ok(n)
    }

    /// Appends bytes `offset..offset + len` of the file to `buf`: how many,
    /// fewer only at the end of the file.
    pub fn read_range(&self, offset: u64, len: usize, buf: &mut Vec<u8>) -> io::Result<usize> {
        buf.reserve(len);
        let mut appended = 0;
        while appended < len {
            let dst = &mut buf.spare_capacity_mut()[..len - appended];
            let n = self.read_at(offset + appended as u64, dst)?;
            if n == 0 {
                break;
            }
            // SAFETY: `read_at` initialised the first `n` spare bytes.
            unsafe { buf.set_len(buf.len() + n) };
            appended += n;
        }
        Ok(appended)
    }

    /// One read at `offset`: the bytes read, and whether most of them
    /// came from the disk.
    #[cfg(target_os = "linux")]
    fn read_once(&self, offset: u64, dst: &mut [MaybeUninit<u8>]) -> io::Result<(usize, bool)> {
        let file = &self.0.file;
        let nowait = self.0.nowait.load(Ordering::Relaxed);
        if nowait {
            match pread(file, dst, offset, libc::RWF_NOWAIT) {
                Ok(n) => return Ok((n, false)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // Not on this file system: plain reads, never found cold.
                Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                    self.0.nowait.store(false, Ordering::Relaxed)
                }
                Err(e) => return Err(e),
            }
        }
        let n = pread(file, dst, offset, 0)?;
        // The call that gave up started reading what it lacked: the disk's
        // bytes are counted from this thread's last miss on.
        let from_disk = nowait && 2 * 512 * blocks_read_since_last_miss() >= n as u64;
        Ok((n, n > 0 && from_disk))
    }

    /// One read at the file's own position, which is `offset`: elsewhere
    /// than Linux only `LocalFile` reads, in order.
    #[cfg(not(target_os = "linux"))]
    fn read_once(&self, _offset: u64, dst: &mut [MaybeUninit<u8>]) -> io::Result<(usize, bool)> {
        dst.fill(MaybeUninit::new(0));
        // SAFETY: every byte was just initialised.
        let dst = unsafe { &mut *(dst as *mut [MaybeUninit<u8>] as *mut [u8]) };
        Ok((io::Read::read(&mut &self.0.file, dst)?, false))
    }
}

/// `preadv2` of `dst` at `offset` with `flags`, retried when interrupted.
#[cfg(target_os = "linux")]
fn pread(
    file: &fs::File,
    dst: &mut [MaybeUninit<u8>],
    offset: u64,
    flags: i32,
) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let iov = libc::iovec {
        iov_base: dst.as_mut_ptr().cast(),
        iov_len: dst.len(),
    };
    let offset =
        libc::off_t::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    loop {
        // SAFETY: `iov` spans `dst`, memory the kernel may write; it reads
        // nothing from it.
        let n = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, offset, flags) };
        match usize::try_from(n) {
            Ok(n) => return Ok(n),
            Err(_) => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
}

/// The 512-byte blocks this thread has had read from storage since its
/// last call (all of them at the first).
#[cfg(target_os = "linux")]
fn blocks_read_since_last_miss() -> u64 {
    thread_local!(static SEEN: std::cell::Cell<u64> = const { std::cell::Cell::new(0) });
    // SAFETY: `getrusage` fills the struct it is given.
    let now = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_THREAD, &mut usage);
        u64::try_from(usage.ru_inblock).unwrap_or(0)
    };
    SEEN.with(|seen| now.saturating_sub(seen.replace(now)))
}

impl io::Read for LocalFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: initialised bytes seen as maybe-uninitialised ones, which
        // `read_into` only writes.
        let dst = unsafe { &mut *(buf as *mut [u8] as *mut [MaybeUninit<u8>]) };
        self.read_into(dst)
    }
}

impl Source for LocalFile {
    /// Reads into the vector's spare room as it is: `read` alone would
    /// have it zeroed first (std's default), 3% of a run's CPU.
    fn append(&mut self, buf: &mut Vec<u8>, limit: usize) -> io::Result<usize> {
        let n = self.ranges.read_range(self.at, limit, buf)?;
        self.at += n as u64;
        Ok(n)
    }

    /// On Linux, where reads at an offset go as `LocalFile` describes.
    fn ranges(&self) -> Option<FileRanges> {
        cfg!(target_os = "linux").then(|| self.ranges.clone())
    }
}

/// `--include` and `--exclude` globs over object keys.
#[derive(Debug, Clone, Default)]
pub struct KeyFilter {
    include: Option<GlobSet>,
    exclude: Option<GlobSet>,
}

impl KeyFilter {
    pub fn new(include: &[String], exclude: &[String]) -> Result<Self> {
        fn build(globs: &[String], flag: &str) -> Result<Option<GlobSet>> {
            if globs.is_empty() {
                return Ok(None);
            }
            let mut set = GlobSetBuilder::new();
            for g in globs {
                let glob = Glob::new(g).map_err(|e| Error::usage(format!("{flag} {g:?}: {e}")))?;
                set.add(glob);
            }
            set.build()
                .map(Some)
                .map_err(|e| Error::usage(format!("{flag}: {e}")))
        }
        Ok(KeyFilter {
            include: build(include, "--include")?,
            exclude: build(exclude, "--exclude")?,
        })
    }

    fn accepts(&self, key: &str) -> bool {
        self.include.as_ref().is_none_or(|s| s.is_match(key))
            && !self.exclude.as_ref().is_some_and(|s| s.is_match(key))
    }
}

/// True for what writers leave beside their data.
fn is_skipped(segment: &str) -> bool {
    segment.starts_with('.')
        || segment == "_SUCCESS"
        || segment == "_temporary"
        || segment.ends_with(".crc")
}

/// Lists every SOURCE in the order given, each in key order.
pub async fn list(sources: &[String], filter: &KeyFilter, stores: &Stores) -> Result<Vec<Object>> {
    let mut all = Vec::new();
    for source in sources {
        if let Some(url) = StoreUrl::parse(source)? {
            let store = stores.get(&url).await?;
            for (key, meta) in store::list(stores, &url).await? {
                if meta.size == 0 || key.split('/').any(is_skipped) || !filter.accepts(&key) {
                    continue;
                }
                all.push(Object {
                    name: url.at(meta.location.as_ref()),
                    key,
                    size: meta.size,
                    modified: Some(meta.last_modified.timestamp()),
                    etag: meta.e_tag.clone(),
                    location: Location::Remote {
                        store: Arc::clone(&store),
                        path: meta.location,
                    },
                });
            }
            continue;
        }
        let local = local_path(source);
        let meta = fs::metadata(&local).map_err(|e| Error::Read {
            key: source.clone(),
            what: "cannot read the source".into(),
            source: e,
        })?;
        let mut found: Vec<Found> = Vec::new();
        if meta.is_dir() {
            walk(&local, "", &mut found).map_err(|e| Error::Read {
                key: source.clone(),
                what: "cannot list the folder".into(),
                source: e,
            })?;
            found.sort_by(|a, b| a.0.cmp(&b.0));
        } else {
            let key = local
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            found.push((key, local.clone(), meta.len(), modified(&meta)));
        }
        for (key, path, size, modified) in found {
            if size == 0 || !filter.accepts(&key) {
                continue;
            }
            let name = if meta.is_dir() {
                format!("{}/{key}", source.trim_end_matches('/'))
            } else {
                source.clone()
            };
            all.push(Object {
                name,
                key,
                size,
                modified,
                etag: None,
                location: Location::Local(path),
            });
        }
    }
    Ok(all)
}

/// The local path of a SOURCE given as a path or a `file://` URL.
pub(crate) fn local_path(source: &str) -> PathBuf {
    PathBuf::from(source.strip_prefix("file://").unwrap_or(source))
}

/// A file found in a folder: key, path, size, modification time.
type Found = (String, PathBuf, u64, Option<i64>);

fn modified(meta: &fs::Metadata) -> Option<i64> {
    let t = meta.modified().ok()?;
    let d = t.duration_since(std::time::UNIX_EPOCH).ok()?;
    i64::try_from(d.as_secs()).ok()
}

/// The hour of a Firehose partition in `key` (`.../YYYY/MM/DD/HH/...`,
/// the last such run of folders), as epoch seconds.
pub fn key_hour(key: &str) -> Option<i64> {
    let folders: Vec<&str> = key.split('/').collect();
    let folders = &folders[..folders.len().saturating_sub(1)];
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    folders.windows(4).rev().find_map(|w| {
        if !(digits(w[0], 4) && digits(w[1], 2) && digits(w[2], 2) && digits(w[3], 2)) {
            return None;
        }
        let iso = format!("{}-{}-{}T{}:00:00Z", w[0], w[1], w[2], w[3]);
        crate::mapping::value::parse_iso8601(&iso)
    })
}

/// Whether `object` falls in `--since`/`--until`: its Firehose hour
/// partition overlaps the window, or, for a key with no date, its
/// modification time is in it (an object with neither is left out of a
/// bounded window).
pub fn in_window(object: &Object, window: &crate::config::Window) -> bool {
    if window.is_open() {
        return true;
    }
    match (key_hour(&object.name), object.modified) {
        (Some(hour), _) => window.overlaps(hour, hour + 3600),
        (None, Some(t)) => window.overlaps(t, t + 1),
        (None, None) => false,
    }
}

fn walk(dir: &Path, prefix: &str, out: &mut Vec<Found>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_skipped(&name) {
            continue;
        }
        let key = format!("{prefix}{name}");
        let kind = entry.file_type()?;
        if kind.is_dir() {
            walk(&entry.path(), &format!("{key}/"), out)?;
        } else {
            // Follows a link to a file; links to folders are not walked, so
            // a link cycle cannot loop.
            let meta = fs::metadata(entry.path())?;
            if meta.is_file() {
                out.push((key, entry.path(), meta.len(), modified(&meta)));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads `path` a chunk at a time as the chunk reader does, checking
    /// after each read that it asked ahead when reading was cold.
    fn read_all(path: &Path) -> Vec<u8> {
        let mut file = LocalFile::new(fs::File::open(path).unwrap());
        let mut got = Vec::new();
        while file.append(&mut got, 1 << 20).unwrap() > 0 {
            if reading_cold() {
                // Asked at least half the way ahead of the reading.
                let asked = file.ranges.0.asked.load(Ordering::Relaxed);
                assert!(asked >= file.at + READ_AHEAD / 2, "{asked} {}", file.at);
            }
        }
        let mut small = [0u8; 1000];
        let n = io::Read::read(&mut file, &mut small).unwrap();
        assert_eq!((n, file.at), (0, got.len() as u64));
        got
    }

    #[test]
    fn a_local_file_reads_alike_cached_evicted_and_cold() {
        let body: Vec<u8> = (0..(3u32 << 20) + 77).map(|i| (i % 251) as u8).collect();
        let mut tmp = tempfile::NamedTempFile::new().unwrap();
        io::Write::write_all(&mut tmp, &body).unwrap();
        assert!(read_all(tmp.path()) == body);
        // Out of the cache (where the file system lets it go): the reads
        // that ask for cached bytes only give up, and read on waiting.
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            tmp.as_file().sync_all().unwrap();
            // SAFETY: a hint about an open descriptor.
            unsafe {
                libc::posix_fadvise(tmp.as_file().as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED)
            };
            assert!(read_all(tmp.path()) == body);
        }
        // Cold: asked ahead of every read.
        count_read(0, true);
        assert!(reading_cold());
        assert!(read_all(tmp.path()) == body);
        // Cached reads take it back once `COLD_FOR` more bytes are read.
        count_read(COLD_FOR, false);
        assert!(!reading_cold());
    }

    #[test]
    fn lists_recursively_in_key_order_and_skips_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for (path, body) in [
            ("b/2.json", "{}"),
            ("a-b.json", "{}"),
            ("a/1.json", "{}"),
            ("a/.hidden", "{}"),
            ("a/_SUCCESS", "{}"),
            ("a/part.crc", "{}"),
            ("_temporary/x.json", "{}"),
            ("a/empty.json", ""),
        ] {
            let p = root.join(path);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, body).unwrap();
        }
        let src = root.to_string_lossy().into_owned();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let stores = Stores::new(Vec::new(), Vec::new());
        let keys = |filter: &KeyFilter| -> Vec<String> {
            rt.block_on(list(std::slice::from_ref(&src), filter, &stores))
                .unwrap()
                .into_iter()
                .map(|o| o.key)
                .collect()
        };
        assert_eq!(
            keys(&KeyFilter::default()),
            ["a-b.json", "a/1.json", "b/2.json"]
        );
        let f = KeyFilter::new(&["b/**".into(), "a/*".into()], &["*1.json".into()]).unwrap();
        assert_eq!(keys(&f), ["b/2.json"]);
    }
}
