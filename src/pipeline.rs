//! The conversion run: the only module that decides threads, channels and
//! ordering.
//!
//! `--threads` decoding threads take turns at one feeder, which walks the
//! objects in key order, opens each (detecting compression and format) and
//! cuts its stream into chunks at record boundaries: a thread reads the next
//! chunk itself, under the feeder's lock, then decodes, maps and encodes it
//! into CSV bytes on its own, while the chunk's bytes are still in its
//! core's cache. The calling thread is the one writer: it puts chunk results
//! back in sequence order, so rows come out in object order then offset
//! order whatever the parallelism, and the first error in that order is the
//! one reported. A fixed number of permits bounds the chunks in flight (a
//! Parquet row group takes one per 32,768 rows, up to half of them), so
//! memory depends on the chunk size, the row groups' size and the thread
//! count, never on the input size.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Read, Write};
use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use futures::StreamExt;
use object_store::ObjectStoreExt;
use tokio::runtime::Handle;

use crate::config::{ConvertConfig, CsvDest, Target};
use crate::decode::csv::{self, Header};
use crate::decode::json::{Scanner, Selector, Splitter};
use crate::decode::parquet::ParquetSource;
use crate::decode::{self, Boundaries, Chunk, ChunkReader, Compression, Format, Source};
use crate::error::{Error, Result};
use crate::mapping::{self, Cell, Converted, FirstRecord, Mapping};
use crate::progress::Progress;
use crate::schema::Schema;
use crate::sink::csv::Dialect;
use crate::sink::dedupe::Dedupe;
use crate::sink::parts::{Part, PartNames, Parts};
use crate::sink::{self, AtomicFile, CsvOut, Upload};
use crate::source::store::Stores;
use crate::source::{self, Location, Object};
use crate::validate::{RowRules, Tally};

/// The asynchronous side of a run: a small tokio runtime for object-store
/// requests, and the stores it has built.
pub(crate) struct Io {
    rt: tokio::runtime::Runtime,
    stores: Stores,
}

impl Io {
    pub fn new(storage_options: &[(String, String)]) -> Result<Self> {
        Self::with_retries(storage_options, 10, Duration::from_secs(180))
    }

    pub fn with_retries(
        storage_options: &[(String, String)],
        retries: usize,
        retry_timeout: Duration,
    ) -> Result<Self> {
        // One thread drives the requests up to 7 cores: on two, a second
        // one cost 2-3% more CPU reading from S3 (its wake-ups and work
        // stealing), for the same wall time. From 8 cores on, one a
        // quarter of the cores, up to four, so that decrypting a fast
        // link's TLS does not wait on one thread.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads((cores / 4).clamp(1, 4))
            .thread_name("io")
            .enable_all()
            .build()
            .map_err(|source| Error::Setup {
                what: "cannot start the I/O runtime",
                source,
            })?;
        let env = std::env::vars().collect();
        Ok(Io {
            rt,
            stores: Stores::new(storage_options.to_vec(), env).with_retries(retries, retry_timeout),
        })
    }

    pub fn handle(&self) -> &Handle {
        self.rt.handle()
    }

    /// The objects to read: every SOURCE listed, in the `--since`/`--until`
    /// window, less this run's own outputs (a DEST inside a SOURCE must not
    /// be read back next time).
    fn list(&self, cfg: &ConvertConfig) -> Result<Vec<Object>> {
        let mut objects = self.list_all(cfg)?;
        objects.retain(|o| source::in_window(o, &cfg.window));
        Ok(objects)
    }

    /// As `list`, whatever the window.
    pub(crate) fn list_all(&self, cfg: &ConvertConfig) -> Result<Vec<Object>> {
        let mut objects =
            self.rt
                .block_on(source::list(&cfg.sources, &cfg.filter, &self.stores))?;
        let csv = match &cfg.csv {
            Some(CsvDest::File(t)) => Some(t),
            _ => None,
        };
        let outputs: Vec<&Target> = csv.into_iter().chain(cfg.schema_out.iter()).collect();
        objects.retain(|o| {
            !outputs.iter().any(|t| is_target(o, t)) && !csv.is_some_and(|t| is_part_of(o, t))
        });
        Ok(objects)
    }

    /// Opens the CSV output: a hidden local file, an upload, or stdout.
    /// A local file the run reads back (`read_back`) is written through
    /// the page cache.
    pub(crate) fn csv_out(
        &self,
        dest: &CsvDest,
        part_bytes: usize,
        read_back: bool,
    ) -> Result<CsvOut> {
        Ok(match dest {
            CsvDest::Stdout => CsvOut::Stdout(io::BufWriter::with_capacity(1 << 20, io::stdout())),
            CsvDest::File(Target::Local(path)) if read_back => {
                CsvOut::File(AtomicFile::create(path)?)
            }
            CsvDest::File(Target::Local(path)) => CsvOut::File(AtomicFile::create_large(path)?),
            CsvDest::File(Target::Url(url)) => {
                let store = self.rt.block_on(self.stores.get(url))?;
                let path = object_store::path::Path::from(url.key.as_str());
                CsvOut::Upload(Upload::start(
                    self.handle(),
                    store,
                    &path,
                    url.at(&url.key),
                    part_bytes,
                )?)
            }
        })
    }

    /// Writes a small file (a schema) atomically, locally or to a store.
    pub fn write_small(&self, target: &Target, bytes: &[u8]) -> Result<()> {
        match target {
            Target::Local(path) => sink::write_atomic(path, bytes),
            Target::Url(url) => {
                let store = self.rt.block_on(self.stores.get(url))?;
                let path = object_store::path::Path::from(url.key.as_str());
                sink::put_object(
                    self.handle(),
                    store.as_ref(),
                    &path,
                    &url.at(&url.key),
                    bytes.to_vec(),
                )
            }
        }
    }
}

impl Io {
    /// Reads a small file or object whole; `None` when there is none.
    pub(crate) fn read_small(&self, target: &Target) -> Result<Option<Vec<u8>>> {
        match target {
            Target::Local(path) => match std::fs::read(path) {
                Ok(bytes) => Ok(Some(bytes)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(source) => Err(Error::Read {
                    key: target.to_string(),
                    what: "cannot read".into(),
                    source,
                }),
            },
            Target::Url(url) => {
                let store = self.rt.block_on(self.stores.get(url))?;
                let path = object_store::path::Path::from(url.key.as_str());
                let got = self.rt.block_on(async {
                    match store.get(&path).await {
                        Ok(r) => r.bytes().await.map(Some),
                        Err(object_store::Error::NotFound { .. }) => Ok(None),
                        Err(e) => Err(e),
                    }
                });
                got.map(|b| b.map(|b| b.to_vec()))
                    .map_err(|source| Error::Store {
                        url: target.to_string(),
                        what: "cannot read".into(),
                        source,
                    })
            }
        }
    }

    /// Creates a small file or object only if none exists: `false` when
    /// one does (a lock held).
    pub(crate) fn create_new(&self, target: &Target, bytes: &[u8]) -> Result<bool> {
        match target {
            Target::Local(path) => {
                let err = |what, source| Error::Write {
                    path: path.clone(),
                    what,
                    source,
                };
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| err("cannot create the folder", e))?;
                }
                // Written whole beside it, then linked into place (which
                // fails if the name exists): the file never shows up empty
                // or half-written, whenever the process dies.
                let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
                let mut tmp = tempfile::Builder::new()
                    .prefix(".create-new")
                    .tempfile_in(dir.unwrap_or(std::path::Path::new(".")))
                    .map_err(|e| err("cannot create", e))?;
                tmp.write_all(bytes)
                    .and_then(|()| tmp.as_file().sync_all())
                    .map_err(|e| err("cannot write", e))?;
                match std::fs::hard_link(tmp.path(), path) {
                    Ok(()) => Ok(true),
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
                    // A file system without hard links: created only if
                    // absent, then written.
                    Err(_) => {
                        let mut file = match std::fs::OpenOptions::new()
                            .write(true)
                            .create_new(true)
                            .open(path)
                        {
                            Ok(f) => f,
                            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
                            Err(e) => return Err(err("cannot create", e)),
                        };
                        file.write_all(bytes)
                            .and_then(|()| file.sync_all())
                            .map_err(|e| err("cannot write", e))?;
                        Ok(true)
                    }
                }
            }
            Target::Url(url) => {
                let store = self.rt.block_on(self.stores.get(url))?;
                let path = object_store::path::Path::from(url.key.as_str());
                let put = self.rt.block_on(store.put_opts(
                    &path,
                    bytes.to_vec().into(),
                    object_store::PutMode::Create.into(),
                ));
                match put {
                    Ok(_) => Ok(true),
                    Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
                    Err(source) => Err(Error::Store {
                        url: target.to_string(),
                        what: "cannot create".into(),
                        source,
                    }),
                }
            }
        }
    }

    /// An object to read at `target`, of `size` bytes.
    pub(crate) fn object_at(&self, name: &str, target: &Target, size: u64) -> Result<Object> {
        let location = match target {
            Target::Local(path) => Location::Local(path.clone()),
            Target::Url(url) => Location::Remote {
                store: self.rt.block_on(self.stores.get(url))?,
                path: object_store::path::Path::from(url.key.as_str()),
            },
        };
        Ok(Object {
            name: name.to_string(),
            key: String::new(),
            size,
            modified: None,
            etag: None,
            location,
        })
    }

    /// The size of a file or object; `None` when there is none.
    pub(crate) fn size(&self, target: &Target) -> Result<Option<u64>> {
        match target {
            Target::Local(path) => match std::fs::metadata(path) {
                Ok(m) => Ok(Some(m.len())),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(source) => Err(Error::Read {
                    key: target.to_string(),
                    what: "cannot read".into(),
                    source,
                }),
            },
            Target::Url(url) => {
                let store = self.rt.block_on(self.stores.get(url))?;
                let path = object_store::path::Path::from(url.key.as_str());
                match self.rt.block_on(store.head(&path)) {
                    Ok(meta) => Ok(Some(meta.size)),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(source) => Err(Error::Store {
                        url: target.to_string(),
                        what: "cannot read".into(),
                        source,
                    }),
                }
            }
        }
    }

    /// Opens `objects` for reading in order, fetching ahead.
    pub(crate) fn reader<'a>(&self, objects: &'a [Object]) -> ObjectStreams<'a> {
        ObjectStreams(Prefetch::new(objects, self.handle(), 2))
    }

    /// Removes a file or object; one already gone is no error.
    pub(crate) fn delete(&self, target: &Target) -> Result<()> {
        match target {
            Target::Local(path) => match std::fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(Error::Write {
                    path: path.clone(),
                    what: "cannot remove",
                    source: e,
                }),
                _ => Ok(()),
            },
            Target::Url(url) => {
                let store = self.rt.block_on(self.stores.get(url))?;
                let path = object_store::path::Path::from(url.key.as_str());
                match self.rt.block_on(store.delete(&path)) {
                    Err(e) if !matches!(e, object_store::Error::NotFound { .. }) => {
                        Err(Error::Store {
                            url: target.to_string(),
                            what: "cannot remove".into(),
                            source: e,
                        })
                    }
                    _ => Ok(()),
                }
            }
        }
    }
}

/// True when `object` is the file `target` names.
pub(crate) fn is_target(object: &Object, target: &Target) -> bool {
    match (&object.location, target) {
        (Location::Local(path), Target::Local(out)) => same_file(path, out),
        (Location::Remote { .. }, Target::Url(url)) => object.name == url.at(&url.key),
        _ => false,
    }
}

/// True when both paths name one existing file (through links too).
#[cfg(unix)]
fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    // Asked for every object listed: two `stat`s, where resolving both
    // paths took a `readlink` for each of their folders.
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// True when `object` is a part `NAME-00000.csv`, … of the output `target`
/// (`NAME.csv`).
fn is_part_of(object: &Object, target: &Target) -> bool {
    // `candidate` is `stem-DDDDD.ext` for `name` = `stem.ext`.
    fn matches(candidate: &str, name: &str) -> bool {
        let (stem, ext) = match name.rfind('.') {
            Some(dot) if !name[dot..].contains('/') => name.split_at(dot),
            _ => (name, ""),
        };
        candidate
            .strip_prefix(stem)
            .and_then(|rest| rest.strip_suffix(ext))
            .and_then(|rest| rest.strip_prefix('-'))
            .is_some_and(|digits| digits.len() == 5 && digits.bytes().all(|b| b.is_ascii_digit()))
    }
    match (&object.location, target) {
        (Location::Local(path), Target::Local(out)) => {
            let dir = |p: &std::path::Path| {
                let parent = p.parent().filter(|d| !d.as_os_str().is_empty());
                std::fs::canonicalize(parent.unwrap_or(std::path::Path::new(".")))
            };
            let name = |p: &std::path::Path| {
                p.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            };
            // The names first: they rule out every other object unresolved.
            matches(&name(path), &name(out))
                && matches!((dir(path), dir(out)), (Ok(a), Ok(b)) if a == b)
        }
        (Location::Remote { .. }, Target::Url(url)) => matches(&object.name, &url.at(&url.key)),
        _ => false,
    }
}

/// Objects opened in order, the next ones fetched ahead.
pub(crate) struct ObjectStreams<'a>(Prefetch<'a>);

impl ObjectStreams<'_> {
    pub fn open(&mut self, index: usize) -> Result<Box<dyn Source>> {
        self.0.open(index)
    }
}

/// Fetches remote objects ahead of the feeder, `ahead` at a time, each into
/// a bounded channel, so that the next objects are on their way while one
/// is decoded and memory stays bounded.
struct Prefetch<'a> {
    objects: &'a [Object],
    handle: Handle,
    ahead: usize,
    started: VecDeque<(usize, tokio::sync::mpsc::Receiver<io::Result<Bytes>>)>,
    next: usize,
}

impl<'a> Prefetch<'a> {
    fn new(objects: &'a [Object], handle: &Handle, ahead: usize) -> Self {
        Prefetch {
            objects,
            handle: handle.clone(),
            ahead: ahead.max(1),
            started: VecDeque::new(),
            next: 0,
        }
    }

    /// The raw bytes of object `index`; objects are opened in order.
    fn open(&mut self, index: usize) -> Result<Box<dyn Source>> {
        let object = &self.objects[index];
        if self.next <= index {
            self.next = index;
        }
        while self.next < self.objects.len() && self.next < index + self.ahead {
            if let Location::Local(path) = &self.objects[self.next].location
                && self.next > index
                && crate::source::reading_cold()
                && let Ok(file) = std::fs::File::open(path)
            {
                // Its start on its way into the cache while this one is read.
                crate::source::read_ahead(&file, 0, crate::source::READ_AHEAD);
            }
            if let Location::Remote { store, path } = &self.objects[self.next].location {
                let (tx, rx) = tokio::sync::mpsc::channel(16);
                let (store, path) = (Arc::clone(store), path.clone());
                self.handle.spawn(async move {
                    match store.get(&path).await {
                        Err(e) => {
                            let _ = tx.send(Err(io::Error::other(e))).await;
                        }
                        Ok(got) => {
                            let mut body = got.into_stream();
                            while let Some(item) = body.next().await {
                                let failed = item.is_err();
                                if tx.send(item.map_err(io::Error::other)).await.is_err() || failed
                                {
                                    return;
                                }
                            }
                        }
                    }
                });
                self.started.push_back((self.next, rx));
            }
            self.next += 1;
        }
        match &object.location {
            Location::Local(path) => object.open_local(path),
            Location::Remote { .. } => {
                while let Some((i, rx)) = self.started.pop_front() {
                    if i == index {
                        return Ok(Box::new(ChannelReader {
                            rx,
                            current: Bytes::new(),
                        }));
                    }
                }
                unreachable!("remote objects are opened in order")
            }
        }
    }
}

/// A blocking `Read` over the body chunks a fetch task sends.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl ChannelReader {
    /// The body chunk being read, the next one if it is used up; empty at
    /// the end of the body.
    fn current(&mut self) -> io::Result<&[u8]> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(bytes)) => self.current = bytes,
                Some(Err(e)) => return Err(e),
                None => break,
            }
        }
        Ok(&self.current)
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let current = self.current()?;
        let n = buf.len().min(current.len());
        buf[..n].copy_from_slice(&current[..n]);
        self.current.advance(n);
        Ok(n)
    }
}

impl Source for ChannelReader {
    /// Copies the body chunks straight into `buf`'s spare room.
    fn append(&mut self, buf: &mut Vec<u8>, limit: usize) -> io::Result<usize> {
        let mut appended = 0;
        while appended < limit {
            let current = self.current()?;
            if current.is_empty() {
                break;
            }
            let n = current.len().min(limit - appended);
            buf.extend_from_slice(&current[..n]);
            self.current.advance(n);
            appended += n;
        }
        Ok(appended)
    }

    fn pieces(&self) -> bool {
        true
    }

    fn piece(&mut self) -> io::Result<Bytes> {
        self.current()?;
        Ok(std::mem::take(&mut self.current))
    }
}

/// What a finished run did, for the closing summary.
#[derive(Debug)]
pub struct Summary {
    pub objects: u64,
    pub bytes: u64,
    pub records: u64,
    pub rows: u64,
    /// Bad records set aside, by reason.
    pub rejected: BTreeMap<String, u64>,
    /// Rows dropped by `--dedupe`.
    pub duplicates: u64,
    /// The bytes of CSV written.
    pub csv_bytes: u64,
    /// The output check the workers made of every row written; `None`
    /// when the rows written are not the rows converted (`--dedupe`), so
    /// the check reads the output back.
    pub(crate) tally: Option<Tally>,
    /// A local copy of a CSV written to stdout or object storage, for the
    /// output check; removed when dropped.
    pub copy: Option<tempfile::TempPath>,
    pub duration: Duration,
    /// Every file written: the CSV parts, then the schema.
    pub outputs: Vec<String>,
    /// The CSV as written: one part, or several with `--max-file-size` or
    /// `--state`.
    pub parts: Vec<Part>,
    pub warnings: Vec<String>,
    /// The schema written (or that would describe the CSV).
    pub schema: String,
    /// The value kinds seen per column, from which types are inferred.
    pub seen: Vec<u8>,
}

/// An object opened for reading: its detected encoding and decoded stream.
struct Opened {
    compression: Compression,
    format: Format,
    /// For CSV: given, or detected from the header line.
    delimiter: u8,
    stream: Box<dyn Source>,
    /// The local file the stream reads, when uncompressed JSON, for chunks
    /// cut by ranges (`ChunkReader::ranged`).
    ranges: Option<source::FileRanges>,
}

fn open(object: &Object, raw: Box<dyn Source>, cfg: &ConvertConfig) -> Result<Opened> {
    let read_err = |what: &str, source| Error::Read {
        key: object.name.clone(),
        what: what.to_string(),
        source,
    };
    let mut raw = raw;
    let ranges = raw.ranges();
    let head = peek(&mut raw, 4).map_err(|e| read_err("cannot read", e))?;
    let compression = cfg
        .compression
        .unwrap_or_else(|| decode::detect_compression(&object.key, &head));
    let raw: Box<dyn Source> = Box::new(Read::chain(io::Cursor::new(head), raw));
    let mut stream = decode::decompress(raw, compression)
        .map_err(|e| read_err("cannot start decompressing", e))?;
    let head = peek(&mut stream, 1024)
        .map_err(|e| read_err(&format!("cannot decompress ({})", compression.name()), e))?;
    let format = cfg
        .format
        .unwrap_or_else(|| decode::detect_format(&object.key, &head));
    let body = head
        .strip_prefix(b"\xEF\xBB\xBF".as_slice())
        .unwrap_or(&head);
    let delimiter = cfg.delimiter.unwrap_or_else(|| csv::detect_delimiter(body));
    Ok(Opened {
        compression,
        format,
        delimiter,
        stream: Box::new(Read::chain(io::Cursor::new(head), stream)),
        ranges: ranges.filter(|_| compression == Compression::None && format == Format::Json),
    })
}

/// Reads up to `n` bytes (fewer only at the end of the stream).
fn peek(r: &mut impl Read, n: usize) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(n);
    r.by_ref().take(n as u64).read_to_end(&mut head)?;
    Ok(head)
}

/// One unit of decoding work, in sequence order.
enum Work {
    Chunk(Decoder, Chunk),
    /// A Parquet row group; `bool`: the object's last.
    RowGroup(Arc<ParquetSource>, usize, bool),
}

/// Permits for work in flight, from its dispatch until the writer is done
/// with it: four a thread.
fn in_flight(cfg: &ConvertConfig) -> usize {
    cfg.threads * 4
}

/// Rows of a row group a permit stands for.
const ROWS_A_PERMIT: usize = 32_768;

impl Work {
    /// The permits the work takes. A chunk takes one; a row group one per
    /// `ROWS_A_PERMIT` rows, at most half of them all, as what it becomes
    /// (its CSV, its tally) is as large as several chunks': the memory in
    /// flight stays bounded, while two row groups at least can be.
    fn permits(&self, in_flight: usize) -> u32 {
        let permits = match self {
            Work::Chunk(..) => 1,
            Work::RowGroup(source, group, _) => source.group_rows(*group).div_ceil(ROWS_A_PERMIT),
        };
        permits.clamp(1, (in_flight / 2).max(1)) as u32
    }
}

/// Opens a Parquet object for row-group reads: local files in place, remote
/// objects spooled to a temporary file first (Parquet needs random access).
fn open_parquet(object: &Object, raw: Box<dyn Source>) -> Result<ParquetSource> {
    let fail = |what: &str, source: io::Error| Error::Read {
        key: object.name.clone(),
        what: what.to_string(),
        source,
    };
    let (path, spool) = match &object.location {
        Location::Local(path) => {
            drop(raw);
            (path.clone(), None)
        }
        Location::Remote { .. } => {
            let mut tmp = tempfile::NamedTempFile::new()
                .map_err(|e| fail("cannot create a temporary file", e))?;
            let mut raw = raw;
            io::copy(&mut raw, tmp.as_file_mut()).map_err(|e| fail("cannot read", e))?;
            let path = tmp.into_temp_path();
            (path.to_path_buf(), Some(path))
        }
    };
    ParquetSource::open(path, spool).map_err(|message| Error::Decode {
        key: object.name.clone(),
        message,
    })
}

/// How the chunks of one object are decoded.
#[derive(Clone)]
enum Decoder {
    Json,
    Csv(Arc<Header>),
}

/// One object's chunks, with its decoder: for CSV the header is read from
/// the first chunk and cut off it.
struct ObjectReader<'a> {
    object: &'a Object,
    format: Format,
    decompressed: bool,
    reader: ChunkReader<Box<dyn Source>>,
    decoder: Option<Decoder>,
    delimiter: u8,
}

impl<'a> ObjectReader<'a> {
    fn new(object: &'a Object, opened: Opened, cfg: &ConvertConfig) -> Self {
        let boundaries = Boundaries::for_format(opened.format, opened.delimiter);
        let reader = ChunkReader::new(opened.stream, cfg.chunk_bytes, boundaries);
        ObjectReader {
            object,
            format: opened.format,
            decompressed: opened.compression != Compression::None,
            reader: match opened.ranges {
                Some(ranges) => reader.ranged(ranges),
                None => reader,
            },
            decoder: None,
            delimiter: opened.delimiter,
        }
    }

    /// The next chunk and how to decode it. After an error the object
    /// cannot be read further.
    fn next_chunk(&mut self) -> Result<Option<(Decoder, Chunk)>> {
        let at = |offset: u64| {
            if self.decompressed {
                format!("byte {offset} of the decompressed stream")
            } else {
                format!("byte {offset}")
            }
        };
        let mut chunk = match self.reader.next_chunk() {
            Ok(Some(chunk)) => chunk,
            Ok(None) => return Ok(None),
            Err(e) => {
                let error = Error::Read {
                    key: self.object.name.clone(),
                    what: format!("cannot read at {}", at(e.offset)),
                    source: e.error,
                };
                return Err(error);
            }
        };
        if self.decoder.is_none() {
            self.decoder = Some(match self.format {
                Format::Csv => match csv::read_header(&chunk.bytes, self.delimiter) {
                    Ok(Some((header, end))) => {
                        chunk.bytes.drain(..end);
                        chunk.utf8 = None;
                        chunk.base += end as u64;
                        Decoder::Csv(header)
                    }
                    // Nothing but blanks: no rows in this chunk, and the
                    // header, if any, in a later one.
                    Ok(None) => {
                        let blank = Decoder::Csv(Arc::new(Header {
                            names: Vec::new(),
                            delimiter: b',',
                        }));
                        if !chunk.last {
                            return Ok(Some((blank, chunk)));
                        }
                        blank
                    }
                    Err(reason) => {
                        let origin = crate::error::Origin::in_stream(
                            &self.object.name,
                            chunk.base,
                            0,
                            self.decompressed,
                        );
                        return Err(Error::record(origin, None, "csv-header", reason));
                    }
                },
                _ => Decoder::Json,
            });
        }
        let decoder = self.decoder.clone().expect("set above");
        Ok(Some((decoder, chunk)))
    }
}

/// The first record of a chunk, for matching reserved fields by name: a CSV
/// header's names, or the first JSON object's keys. `Err` when the chunk
/// starts with malformed JSON.
fn first_record(
    decoder: &Decoder,
    chunk: &Chunk,
    skip: bool,
) -> std::result::Result<Option<FirstRecord>, ()> {
    if let Decoder::Csv(header) = decoder {
        return Ok((!header.names.is_empty()).then(|| FirstRecord::from_names(&header.names)));
    }
    let selector = Selector::default();
    let mut scanner = Scanner::new(&chunk.bytes, chunk.top);
    loop {
        match scanner.next_record(&selector, &mut []) {
            Ok(Some((start, end))) => return Ok(FirstRecord::from_json(&chunk.bytes[start..end])),
            Ok(None) => return Ok(None),
            // Skipping: the first good record decides the mapping.
            Err(e) if skip => {
                scanner.resync(e.record_start, e.pos);
            }
            Err(_) => return Err(()),
        }
    }
}

/// What the writer receives for one sequence number. A JSON chunk comes
/// back with it (and whether its object was decompressed), in case a
/// record cut at its guessed end must be read again with the next one.
enum Done {
    Rows {
        object: usize,
        converted: Box<Converted>,
        /// The chunk was the object's last.
        last: bool,
        json: Option<(Chunk, bool)>,
    },
    Failed {
        object: usize,
        error: Error,
        json: Option<(Chunk, bool)>,
    },
}

/// The rules of the output check, decided once the mapping is: none with
/// `--dedupe`, which drops rows after conversion.
type Rules = OnceLock<Option<Arc<RowRules>>>;

fn rules_for(rules: &Rules, cfg: &ConvertConfig, mapping: &Mapping) -> Option<Arc<RowRules>> {
    rules
        .get_or_init(|| {
            let name = output_names(cfg).into_iter().next().unwrap_or_default();
            (!cfg.dedupe).then(|| Arc::new(RowRules::for_output(&name, &mapping.schema(&[]))))
        })
        .clone()
}

/// Converts one unit of work of object `index` into rows.
fn convert_work(
    mapping: &Mapping,
    index: usize,
    name: &str,
    work: Work,
    decompressed: bool,
    opts: mapping::RowOptions,
) -> Done {
    let mut work = work;
    if let Work::Chunk(_, chunk) = &mut work
        && let Err(e) = chunk.fill()
    {
        let error = Error::Read {
            key: name.to_string(),
            what: format!("cannot read at byte {}", e.offset),
            source: e.error,
        };
        let json = None;
        return Done::Failed {
            object: index,
            error,
            json,
        };
    }
    let (converted, last, json) = match work {
        Work::Chunk(Decoder::Json, chunk) => (
            mapping.convert_json(&chunk, name, decompressed, opts),
            chunk.last,
            Some((chunk, decompressed)),
        ),
        Work::Chunk(Decoder::Csv(header), chunk) => (
            mapping.convert_csv(&chunk, &header, name, decompressed, opts),
            chunk.last,
            None,
        ),
        Work::RowGroup(source, group, last) => (
            mapping.convert_parquet(&source, group, name, opts),
            last,
            None,
        ),
    };
    match converted {
        Ok(converted) => Done::Rows {
            object: index,
            converted: Box::new(converted),
            last,
            json,
        },
        Err(error) => Done::Failed {
            object: index,
            error,
            json,
        },
    }
}

/// Lists what would be converted and the resolved mapping (`--dry-run`).
pub fn dry_run(cfg: &ConvertConfig, out: &mut dyn Write) -> Result<()> {
    let io = Io::with_retries(&cfg.storage_options, cfg.retries, cfg.retry_timeout)?;
    let objects = io.list(cfg)?;
    let mut prefetch = Prefetch::new(&objects, io.handle(), 1);
    let total: u64 = objects.iter().map(|o| o.size).sum();
    let mut text = format!(
        "{} object{}, {total} bytes\n",
        objects.len(),
        if objects.len() == 1 { "" } else { "s" }
    );
    let mut first = None;
    for (index, object) in objects.iter().enumerate() {
        let opened = open(object, prefetch.open(index)?, cfg)?;
        let enc = match opened.compression {
            Compression::None => opened.format.to_string(),
            c => format!("{} ({})", opened.format, c.name()),
        };
        text.push_str(&format!(
            "  {}  {} bytes  {enc}\n",
            object.name, object.size
        ));
        if first.is_none() && opened.format == Format::Parquet {
            let source = open_parquet(object, opened.stream)?;
            let (keys, paths) = source.names();
            first = Some((object.name.clone(), 0, FirstRecord { keys, paths }));
        } else if first.is_none() {
            let mut reader = ObjectReader::new(object, opened, cfg);
            while let Some((decoder, chunk)) = reader.next_chunk()? {
                if let Ok(Some(rec)) = first_record(&decoder, &chunk, cfg.skip) {
                    first = Some((object.name.clone(), chunk.base, rec));
                    break;
                }
            }
        }
    }
    let mapping = resolve(cfg, first.as_ref().map(|(k, o, r)| (k.as_str(), *o, r)))?;
    text.push_str(&format!("mapping ({}):\n", mapping.dataset));
    let width = mapping
        .fields
        .iter()
        .map(|f| f.name.len())
        .max()
        .unwrap_or(0);
    let schema = mapping.schema(&[]);
    for (field, sf) in mapping.fields.iter().zip(&schema.fields) {
        let path = field.path.as_deref().unwrap_or("(nothing)");
        let ty = match field.ty {
            Some(_) if sf.nullable => format!("[\"null\", \"{}\"]", sf.ty.as_str()),
            Some(_) => sf.ty.as_str().to_string(),
            None => "inferred".to_string(),
        };
        let how = match field.source {
            mapping::FieldSource::Mapped => "--map",
            mapping::FieldSource::MatchedByName => "matched by name",
            mapping::FieldSource::Unresolved => "no source field",
        };
        let mut flags = String::new();
        if field.categorical {
            flags.push_str(", categorical");
        }
        if field.textual {
            flags.push_str(", textual");
        }
        text.push_str(&format!(
            "  {:width$} <- {path}  {ty}{flags}  ({how})\n",
            field.name
        ));
    }
    let outputs = output_names(cfg);
    if !outputs.is_empty() {
        text.push_str(&format!("outputs: {}\n", outputs.join(", ")));
    }
    out.write_all(text.as_bytes())
        .map_err(|source| Error::Write {
            path: "<stdout>".into(),
            what: "cannot write",
            source,
        })
}

fn output_names(cfg: &ConvertConfig) -> Vec<String> {
    let mut names = Vec::new();
    match &cfg.csv {
        Some(CsvDest::File(t)) => names.push(t.to_string()),
        Some(CsvDest::Stdout) => names.push("<stdout>".to_string()),
        None => {}
    }
    if let Some(s) = &cfg.schema_out {
        names.push(s.to_string());
    }
    names
}

/// Resolves the mapping against the first record, if there is one.
fn resolve(cfg: &ConvertConfig, first: Option<(&str, u64, &FirstRecord)>) -> Result<Mapping> {
    mapping::resolve(&cfg.mapping, first.map(|(_, _, r)| r)).map_err(|message| {
        let key = match first {
            Some((key, offset, _)) => format!("{key}: byte {offset}"),
            None => "the mapping".to_string(),
        };
        Error::Mapping { key, message }
    })
}

/// What `inspect` sees: each object with its encoding, then its records as
/// (path, value) pairs, nested JSON objects flattened to dotted paths.
pub(crate) trait Visit {
    fn object(&mut self, object: &Object, format: Format, compression: Compression);
    fn record(&mut self, fields: Vec<(String, Cell<'static>)>);
}

/// Reads every record of every object in order on one thread, at most
/// `sample` per object, for `inspect`.
pub(crate) fn scan_records(
    cfg: &ConvertConfig,
    sample: Option<u64>,
    visit: &mut dyn Visit,
) -> Result<()> {
    let io = Io::with_retries(&cfg.storage_options, cfg.retries, cfg.retry_timeout)?;
    let objects = io.list(cfg)?;
    let mut prefetch = Prefetch::new(&objects, io.handle(), cfg.concurrency);
    let selector = Selector::default();
    for (index, object) in objects.iter().enumerate() {
        let opened = open(object, prefetch.open(index)?, cfg)?;
        visit.object(object, opened.format, opened.compression);
        let mut left = sample.unwrap_or(u64::MAX);
        if opened.format == Format::Parquet {
            let source = open_parquet(object, opened.stream)?;
            let (keys, paths) = source.names();
            // Leaves only: a struct is seen through its fields.
            let leaves: Vec<String> = paths
                .iter()
                .filter(|p| !paths.iter().any(|q| q.starts_with(&format!("{p}."))))
                .cloned()
                .collect();
            for group in 0..source.row_groups() {
                let batches =
                    source
                        .read_row_group(group, &keys)
                        .map_err(|message| Error::Decode {
                            key: object.name.clone(),
                            message,
                        })?;
                for batch in &batches {
                    let columns: Vec<_> = leaves
                        .iter()
                        .map(|p| crate::decode::parquet::column(batch, p))
                        .collect();
                    for row in 0..batch.num_rows() {
                        if left == 0 {
                            break;
                        }
                        left -= 1;
                        let fields = leaves
                            .iter()
                            .zip(&columns)
                            .filter_map(|(p, c)| {
                                Some((p.clone(), c.as_ref()?.cell(row).into_owned()))
                            })
                            .collect();
                        visit.record(fields);
                    }
                }
            }
            continue;
        }
        let decompressed = opened.compression != Compression::None;
        let mut reader = ObjectReader::new(object, opened, cfg);
        while left > 0 {
            let Some((decoder, chunk)) = reader.next_chunk()? else {
                break;
            };
            match decoder {
                Decoder::Json => {
                    let mut scanner = Scanner::new(&chunk.bytes, chunk.top);
                    while left > 0 {
                        let span = scanner.next_record(&selector, &mut []).map_err(|e| {
                            let origin = crate::error::Origin::in_stream(
                                &object.name,
                                chunk.base + e.record_start as u64,
                                0,
                                decompressed,
                            );
                            Error::record(origin, None, e.kind.name(), e.describe(chunk.base))
                        })?;
                        let Some((start, end)) = span else { break };
                        left -= 1;
                        let value: serde_json::Value =
                            serde_json::from_slice(&chunk.bytes[start..end]).unwrap_or_default();
                        let mut fields = Vec::new();
                        flatten_json("", &value, &mut fields);
                        visit.record(fields);
                    }
                }
                Decoder::Csv(header) => {
                    let mut csv = ::csv::ReaderBuilder::new()
                        .has_headers(false)
                        .delimiter(header.delimiter)
                        .flexible(true)
                        .from_reader(chunk.bytes.as_slice());
                    for record in csv.byte_records() {
                        if left == 0 {
                            break;
                        }
                        let Ok(record) = record else { break };
                        if record.len() == 1 && record[0].is_empty() {
                            continue;
                        }
                        left -= 1;
                        let fields = header
                            .names
                            .iter()
                            .zip(record.iter())
                            .map(|(name, field)| {
                                let text = String::from_utf8_lossy(field);
                                (name.clone(), Cell::from_text(&text).into_owned())
                            })
                            .collect();
                        visit.record(fields);
                    }
                }
            }
        }
    }
    Ok(())
}

/// A JSON object's values by dotted path; an object is itself a value
/// (`Cell::Object`) and its fields follow it.
fn flatten_json(prefix: &str, value: &serde_json::Value, out: &mut Vec<(String, Cell<'static>)>) {
    let Some(map) = value.as_object() else {
        return;
    };
    for (k, v) in map {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        out.push((path.clone(), json_cell(v)));
        if v.is_object() {
            flatten_json(&path, v, out);
        }
    }
}

fn json_cell(v: &serde_json::Value) -> Cell<'static> {
    use serde_json::Value as V;
    match v {
        V::Null => Cell::Null,
        V::Bool(b) => Cell::Bool(*b),
        V::Number(n) => {
            let text = n.to_string();
            let integer = n.is_i64() || n.is_u64();
            Cell::Number {
                text: text.into(),
                integer,
            }
        }
        V::String(s) => Cell::Str(s.clone().into()),
        V::Array(items) => Cell::List(items.iter().map(json_cell).collect()),
        V::Object(_) => Cell::Object,
    }
}

/// How the CSV of a run is laid out.
pub(crate) enum Layout {
    /// One file, object or stdout.
    One(CsvDest),
    /// Parts of at most `max_file` bytes, in folders of at most
    /// `max_folder` bytes.
    Parts {
        names: PartNames,
        max_file: Option<u64>,
        max_folder: Option<u64>,
    },
}

/// Converts every object into one CSV (or its parts) and its schema.
pub fn convert(cfg: &ConvertConfig) -> Result<Summary> {
    let io = Io::with_retries(&cfg.storage_options, cfg.retries, cfg.retry_timeout)?;
    let objects = io.list(cfg)?;
    let dest = cfg.csv.clone().expect("convert has an output");
    let layout = match (cfg.max_file_size, dest.clone()) {
        (Some(max), CsvDest::File(target)) => Layout::Parts {
            names: PartNames::Beside(target),
            max_file: Some(max),
            max_folder: None,
        },
        (_, dest) => Layout::One(dest),
    };
    let mut summary = convert_objects(cfg, &io, &objects, layout)?;
    if let CsvDest::File(target) = &dest {
        let split = cfg.max_file_size.is_some();
        remove_stale_parts(&io, target, split, &mut summary)?;
    }
    Ok(summary)
}

/// After a commit to `target`: removes what an earlier run with another
/// `--max-file-size` left beside it (the whole `NAME.csv`, or parts
/// `NAME-00000.csv`, … past the last one written), which a folder import
/// would otherwise read twice.
fn remove_stale_parts(io: &Io, target: &Target, split: bool, summary: &mut Summary) -> Result<()> {
    let written = if split { summary.parts.len() } else { 0 };
    let mut stale = Vec::new();
    if split && io.size(target)?.is_some() {
        stale.push(target.clone());
    }
    for i in written.. {
        let part = target.with_suffix(&format!("-{i:05}"));
        if io.size(&part)?.is_none() {
            break;
        }
        stale.push(part);
    }
    for t in stale {
        io.delete(&t)?;
        summary.warnings.push(format!(
            "removed {t}: an earlier run's output, which a folder import would read \
             besides this one"
        ));
    }
    Ok(())
}

/// Converts `objects` into `layout` and writes the schema.
pub(crate) fn convert_objects(
    cfg: &ConvertConfig,
    io: &Io,
    objects: &[Object],
    layout: Layout,
) -> Result<Summary> {
    let started = Instant::now();
    let total_bytes: u64 = objects.iter().map(|o| o.size).sum();
    log::debug!("{} objects, {total_bytes} bytes", objects.len());
    // Only a deduplicated output is checked by reading it back.
    let keep_copy = cfg.dedupe && !matches!(layout, Layout::One(CsvDest::File(Target::Local(_))));
    let csv = match layout {
        // A deduplicated local CSV is read back by the output check.
        Layout::One(dest) => Sink::One(io.csv_out(&dest, cfg.part_bytes, cfg.dedupe)?),
        Layout::Parts {
            names,
            max_file,
            max_folder,
        } => Sink::Parts(Box::new(Parts::new(
            names,
            max_file,
            max_folder,
            // Deduplicated parts are checked through the copy kept of them.
            Box::new(|target: &Target| {
                io.csv_out(&CsvDest::File(target.clone()), cfg.part_bytes, false)
            }),
        )?)),
    };
    let progress = Progress::new(cfg.progress, objects.len() as u64, total_bytes);
    let mapping: Arc<OnceLock<Arc<Mapping>>> = Arc::new(OnceLock::new());
    let (permit_tx, permit_rx) = mpsc::sync_channel::<()>(in_flight(cfg));
    let (done_tx, done_rx) = mpsc::channel::<(u64, u32, Done)>();

    let mut stats = WriterStats::default();
    let rejects = RejectSink {
        out: cfg
            .rejects
            .as_ref()
            .map(|t| io.csv_out(&CsvDest::File(t.clone()), cfg.part_bytes, false))
            .transpose()?,
        max: cfg.max_errors,
    };
    let mut out = Outputs {
        csv: CsvWriter::new(csv, keep_copy, cfg.checksum)?,
        rejects,
        dedupe: None,
        dedupe_dialect: cfg.dedupe.then_some(cfg.dialect),
    };
    let rules = Rules::new();
    let run = Run {
        cfg,
        objects,
        mapping: &mapping,
        rules: &rules,
    };
    // The objects an inflater reads count among those fetched at once.
    let inflaters = inflaters(cfg, objects);
    let ahead = (cfg.concurrency + 1).saturating_sub(inflaters).max(1);
    let prefetch = Prefetch::new(objects, io.handle(), ahead);
    let feeder = Mutex::new(Feeder::new(&run, prefetch, Arc::clone(&mapping), inflaters));
    let result = std::thread::scope(|scope| {
        let (run, feeder) = (&run, &feeder);
        for i in 0..cfg.threads {
            let (permits, done) = (permit_tx.clone(), done_tx.clone());
            std::thread::Builder::new()
                .name(format!("decode-{i}"))
                .spawn_scoped(scope, move || decode_all(run, feeder, permits, done))
                .map_err(|e| Error::usage(format!("cannot start {} threads: {e}", cfg.threads)))?;
        }
        drop((permit_tx, done_tx));
        let _batch = BatchWriter::start();
        write_all(run, done_rx, permit_rx, &mut out, &mut stats, &progress)
    });
    progress.finish();
    result?;
    let mapping = mapping.get().expect("the feeder resolves the mapping");
    let schema = mapping.schema(&stats.seen);
    if !stats.header_written {
        write_header(&mut out.csv, &schema)?;
    }
    if let Some(dedupe) = out.dedupe.take() {
        let csv = &mut out.csv;
        stats.duplicates += dedupe.finish(|line| csv.write_all(line))?;
    }
    stats.rows -= stats.duplicates;
    // The CSV first: a schema never describes a CSV that did not land.
    let (parts, copy) = out.csv.commit()?;
    let csv_bytes = parts.iter().map(|p| p.bytes).sum();
    if let Some(rejects) = out.rejects.out {
        rejects.commit()?;
    }
    let schema = schema.to_json();
    if let Some(target) = &cfg.schema_out {
        io.write_small(target, schema.as_bytes())?;
    }
    let mut warnings = mapping.warnings.clone();
    if objects.is_empty() {
        warnings.push(format!(
            "no objects found in {}: the CSV has only a header",
            cfg.sources.join(", ")
        ));
    }
    Ok(Summary {
        objects: objects.len() as u64,
        bytes: total_bytes,
        records: stats.records,
        rows: stats.rows,
        rejected: stats.rejected,
        duplicates: stats.duplicates,
        csv_bytes,
        tally: (!cfg.dedupe).then_some(stats.tally),
        copy,
        duration: started.elapsed(),
        outputs: parts
            .iter()
            .map(|p| p.name.clone())
            .chain(cfg.schema_out.iter().map(Target::to_string))
            .collect(),
        parts,
        warnings,
        schema,
        seen: stats.seen,
    })
}

fn write_header(csv: &mut CsvWriter, schema: &Schema) -> Result<()> {
    csv.header(format!("{}\n", schema.header()).as_bytes())
}

/// What the feeder hands a worker next.
enum Next {
    Work {
        seq: u64,
        object: usize,
        work: Work,
        decompressed: bool,
    },
    /// Opening or reading `object` failed: the run's last sequence number.
    Failed {
        seq: u64,
        object: usize,
        error: Error,
    },
    End,
}

/// The object being read.
enum Current<'a> {
    None,
    Stream {
        index: usize,
        reader: ObjectReader<'a>,
        decompressed: bool,
        guessing: bool,
    },
    /// A compressed object read by its `Inflater`.
    Inflating {
        index: usize,
        inflater: Inflater,
        decompressed: bool,
    },
    Parquet {
        index: usize,
        source: Arc<ParquetSource>,
        /// The next row group.
        group: usize,
    },
}

/// An object opened ahead of its turn: its raw stream, or, when its name
/// (or `--compression`) says it is compressed and there are threads to
/// spare, the inflater decompressing it.
enum Ahead {
    Raw(Result<Box<dyn Source>>),
    Inflating(Inflater),
}

/// A compressed object decompressed and cut into chunks by a thread of its
/// own, up to `INFLATED_AHEAD` chunks ahead of the feeder, so that the
/// workers' turns at the feeder's lock do not decompress: decompression
/// under the lock was a single-threaded stage that every worker waited on
/// (44% of a one-core run's CPU on the benchmark's gzip set, which capped
/// any number of workers at 2.3 times one core). Objects next in line
/// are decompressed at the same time, one thread each (`inflaters`).
/// Within one object decompression stays in order: a
/// single object far larger than `INFLATED_AHEAD` chunks is still
/// decompressed at one core's pace.
struct Inflater {
    rx: mpsc::Receiver<Inflated>,
    /// The object's name, for errors.
    name: String,
}

/// What an inflater sends: how the object opened, then its chunks in
/// order, the last `Ok(None)` or an error.
enum Inflated {
    Stream {
        decompressed: bool,
    },
    /// A Parquet object, which the feeder reads by row group.
    Parquet(Opened),
    Chunk(Result<Option<(Decoder, Chunk)>>),
}

/// Objects decompressed at once by inflaters: the current one and one a
/// worker after it (with one fewer, two workers gained nothing on the
/// benchmark's gzip set: the next object was not ready when its turn
/// came), at most `MAX_INFLATERS` and `--concurrency`; none with one worker
/// (an inflater would only take turns with it) or when no object is named
/// compressed.
fn inflaters(cfg: &ConvertConfig, objects: &[Object]) -> usize {
    if cfg.threads > 1 && objects.iter().any(|o| named_compressed(cfg, o)) {
        (cfg.threads + 1)
            .min(MAX_INFLATERS)
            .min(cfg.concurrency.max(1))
    } else {
        0
    }
}

/// Whether `object` is compressed by its name or `--compression` (one only
/// its magic bytes show compressed is decompressed by the workers in
/// turn, under the feeder's lock).
fn named_compressed(cfg: &ConvertConfig, object: &Object) -> bool {
    let compression = cfg
        .compression
        .unwrap_or_else(|| decode::detect_compression(&object.key, &[]));
    compression != Compression::None
}

/// Chunks an inflater may have decompressed and not yet handed over: a
/// Firehose object of a few MiB whole, so that the next objects' are
/// ready when their turn comes (with two, a run over the benchmark's gzip
/// set took 7% longer than decompressing under the lock; with eight, 2-6%
/// less).
const INFLATED_AHEAD: usize = 8;

/// Objects decompressed at once at most: four give over 4 GiB/s of gzip
/// output, more than seven workers decode, in at most about 36 MiB of
/// chunks (1 MiB each) not yet handed over, which the permits in flight
/// do not count.
const MAX_INFLATERS: usize = 4;

impl Inflater {
    /// Starts decompressing `object` from `raw` on a thread of its own;
    /// its chunks are cut exactly until `mapping` is resolved.
    fn start(
        object: &Object,
        raw: Box<dyn Source>,
        cfg: &Arc<ConvertConfig>,
        mapping: &Arc<OnceLock<Arc<Mapping>>>,
    ) -> Result<Inflater> {
        let (tx, rx) = mpsc::sync_channel(INFLATED_AHEAD);
        let (object, cfg, mapping) = (object.clone(), Arc::clone(cfg), Arc::clone(mapping));
        let name = object.name.clone();
        let thread = std::thread::Builder::new()
            .name("inflate".into())
            .spawn(move || {
                let inflate = AssertUnwindSafe(|| inflate(&object, raw, &cfg, &mapping, &tx));
                if std::panic::catch_unwind(inflate).is_err() {
                    let error = Error::Decode {
                        key: object.name.clone(),
                        message: "internal: decompressing a chunk panicked".into(),
                    };
                    let _ = tx.send(Inflated::Chunk(Err(error)));
                }
            })
            .map_err(|source| Error::Read {
                key: name.clone(),
                what: "cannot start a thread to decompress".into(),
                source,
            });
        thread.map(|_| Inflater { rx, name })
    }

    /// The next message. (The thread sends until its last one, and stops
    /// early only once the feeder has hung up.)
    fn next(&self) -> Inflated {
        self.rx.recv().unwrap_or_else(|_| {
            Inflated::Chunk(Err(Error::Decode {
                key: self.name.clone(),
                message: "internal: a decompressing thread ended early".into(),
            }))
        })
    }
}

/// An inflater's thread: opens `object`, then sends its chunks until the
/// last, an error, or the feeder hangs up.
fn inflate(
    object: &Object,
    raw: Box<dyn Source>,
    cfg: &ConvertConfig,
    mapping: &OnceLock<Arc<Mapping>>,
    tx: &mpsc::SyncSender<Inflated>,
) {
    let opened = match open(object, raw, cfg) {
        Ok(opened) => opened,
        Err(e) => {
            let _ = tx.send(Inflated::Chunk(Err(e)));
            return;
        }
    };
    if opened.format == Format::Parquet {
        let _ = tx.send(Inflated::Parquet(opened));
        return;
    }
    let decompressed = opened.compression != Compression::None;
    if tx.send(Inflated::Stream { decompressed }).is_err() {
        return;
    }
    let mut reader = ObjectReader::new(object, opened, cfg);
    let mut guessing = false;
    loop {
        if !guessing && mapping.get().is_some() {
            reader.reader.guess_from_now();
            guessing = true;
        }
        crate::failpoint::panic_at("inflate-panic");
        let next = reader.next_chunk();
        let more = matches!(next, Ok(Some(_)));
        if tx.send(Inflated::Chunk(next)).is_err() || !more {
            return;
        }
    }
}

/// The run's objects as units of work in sequence order: objects in
/// order, chunks (or row groups) in order, each given out once the mapping
/// is known. The workers take turns at it under a lock, so that a chunk is
/// read (copied from the kernel, its UTF-8 checked) on the core that goes
/// on to convert it, while its bytes are in that core's cache.
struct Feeder<'a> {
    run: &'a Run<'a>,
    prefetch: Prefetch<'a>,
    /// The next object to open.
    next_object: usize,
    /// Objects opened ahead, from `next_object` on, and the next to open.
    ahead: VecDeque<(usize, Ahead)>,
    next_ahead: usize,
    /// Objects decompressed at once (`inflaters`), the current one
    /// included; 0: objects are opened at their turn only.
    inflaters: usize,
    /// For inflaters: the run's configuration, and its mapping once known.
    inflate_cfg: Option<Arc<ConvertConfig>>,
    mapping: Arc<OnceLock<Arc<Mapping>>>,
    current: Current<'a>,
    /// Chunks without a record, held until the mapping is resolved.
    held: Vec<(usize, Work, bool)>,
    /// Work ready to be given out, in order.
    ready: VecDeque<(usize, Work, bool)>,
    seq: u64,
    /// After a failure, the end, or when the writer has hung up.
    ended: bool,
}

impl<'a> Feeder<'a> {
    fn new(
        run: &'a Run<'a>,
        prefetch: Prefetch<'a>,
        mapping: Arc<OnceLock<Arc<Mapping>>>,
        inflaters: usize,
    ) -> Self {
        Feeder {
            run,
            prefetch,
            next_object: 0,
            ahead: VecDeque::new(),
            next_ahead: 0,
            inflaters,
            inflate_cfg: None,
            mapping,
            current: Current::None,
            held: Vec::new(),
            ready: VecDeque::new(),
            seq: 0,
            ended: false,
        }
    }

    fn fail(&mut self, object: usize, error: Error) -> Next {
        self.ended = true;
        Next::Failed {
            seq: self.seq,
            object,
            error,
        }
    }

    /// Sets the mapping; the held chunks are ready from then on.
    fn resolved(&mut self, mapping: Mapping) {
        let _ = self.run.mapping.set(Arc::new(mapping));
        self.ready.extend(self.held.drain(..));
    }

    /// After a panic in `take`: the run fails at the object being read.
    fn panicked(&mut self) -> Next {
        let object = self.next_object.saturating_sub(1);
        let key = self.run.objects.get(object).map(|o| o.name.clone());
        let error = Error::Decode {
            key: key.unwrap_or_default(),
            message: "internal: reading a chunk panicked".into(),
        };
        self.fail(object, error)
    }

    /// The next unit of work in sequence order, read now.
    fn take(&mut self) -> Next {
        let Run {
            cfg,
            objects,
            mapping,
            ..
        } = *self.run;
        loop {
            if self.ended {
                return Next::End;
            }
            if let Some((object, work, decompressed)) = self.ready.pop_front() {
                let seq = self.seq;
                self.seq += 1;
                return Next::Work {
                    seq,
                    object,
                    work,
                    decompressed,
                };
            }
            match &mut self.current {
                Current::None if self.next_object == objects.len() => {
                    if mapping.get().is_none() {
                        self.resolved(fallback(cfg));
                    }
                    self.ended = self.ready.is_empty();
                }
                Current::None => {
                    let index = self.next_object;
                    self.next_object += 1;
                    if let Err(e) = self.open(index) {
                        return self.fail(index, e);
                    }
                }
                Current::Parquet {
                    index,
                    source,
                    group,
                } => {
                    let (index, groups) = (*index, source.row_groups());
                    if *group == groups {
                        self.current = Current::None;
                        continue;
                    }
                    let work = Work::RowGroup(Arc::clone(source), *group, *group + 1 == groups);
                    *group += 1;
                    self.ready.push_back((index, work, false));
                }
                Current::Stream {
                    index,
                    reader,
                    decompressed,
                    guessing,
                } => {
                    let (index, decompressed) = (*index, *decompressed);
                    if !*guessing && mapping.get().is_some() {
                        // The run's first record is read (before this
                        // object, or from its first chunk): the rest need
                        // not be cut exactly.
                        reader.reader.guess_from_now();
                        *guessing = true;
                    }
                    crate::failpoint::panic_at("read-panic");
                    let next = reader.next_chunk();
                    if let Some(failed) = self.chunk_read(index, decompressed, next) {
                        return failed;
                    }
                }
                Current::Inflating {
                    index,
                    inflater,
                    decompressed,
                } => {
                    let (index, decompressed) = (*index, *decompressed);
                    crate::failpoint::panic_at("read-panic");
                    let next = match inflater.next() {
                        Inflated::Chunk(next) => next,
                        _ => Err(Error::Decode {
                            key: objects[index].name.clone(),
                            message: "internal: a decompressing thread opened twice".into(),
                        }),
                    };
                    if let Some(failed) = self.chunk_read(index, decompressed, next) {
                        return failed;
                    }
                }
            }
        }
    }

    /// Takes the next chunk read from object `index`, held until the
    /// mapping is known (which the run's first record resolves); at the
    /// object's end the next object is due. `Some`: the run fails.
    fn chunk_read(
        &mut self,
        index: usize,
        decompressed: bool,
        next: Result<Option<(Decoder, Chunk)>>,
    ) -> Option<Next> {
        let Run {
            cfg,
            objects,
            mapping,
            ..
        } = *self.run;
        let (decoder, chunk) = match next {
            Ok(Some(next)) => next,
            Ok(None) => {
                self.current = Current::None;
                return None;
            }
            Err(error) => return Some(self.fail(index, error)),
        };
        if mapping.get().is_none() {
            match first_record(&decoder, &chunk, cfg.skip) {
                Ok(Some(first)) => {
                    let name = &objects[index].name;
                    match resolve(cfg, Some((name, chunk.base, &first))) {
                        Ok(m) => self.resolved(m),
                        Err(e) => return Some(self.fail(index, e)),
                    }
                }
                // Malformed from the start: the worker reports it.
                Err(()) => self.resolved(fallback(cfg)),
                Ok(None) => {
                    let work = Work::Chunk(decoder, chunk);
                    self.held.push((index, work, decompressed));
                    return None;
                }
            }
        }
        let work = Work::Chunk(decoder, chunk);
        self.ready.push_back((index, work, decompressed));
        None
    }

    /// Opens `index` and the objects after it up to `inflaters` in all (in
    /// order, as `Prefetch` wants), each one named compressed handed to an
    /// inflater.
    fn open_ahead(&mut self, index: usize) {
        let (cfg, objects) = (self.run.cfg, self.run.objects);
        let upto = (index + self.inflaters.max(1)).min(objects.len());
        while self.next_ahead < upto {
            let j = self.next_ahead;
            self.next_ahead += 1;
            let ahead = match self.prefetch.open(j) {
                Ok(raw) if self.inflaters > 0 && named_compressed(cfg, &objects[j]) => {
                    let shared = self
                        .inflate_cfg
                        .get_or_insert_with(|| Arc::new(cfg.clone()));
                    match Inflater::start(&objects[j], raw, shared, &self.mapping) {
                        Ok(inflater) => Ahead::Inflating(inflater),
                        Err(e) => Ahead::Raw(Err(e)),
                    }
                }
                raw => Ahead::Raw(raw),
            };
            self.ahead.push_back((j, ahead));
        }
    }

    /// Opens object `index` as the current one; a Parquet file's columns
    /// resolve the mapping when no record has.
    fn open(&mut self, index: usize) -> Result<()> {
        let cfg = self.run.cfg;
        let object = &self.run.objects[index];
        self.open_ahead(index);
        let opened = match self.ahead.pop_front() {
            Some((i, Ahead::Raw(raw))) if i == index => open(object, raw?, cfg)?,
            Some((i, Ahead::Inflating(inflater))) if i == index => match inflater.next() {
                Inflated::Stream { decompressed } => {
                    self.current = Current::Inflating {
                        index,
                        inflater,
                        decompressed,
                    };
                    return Ok(());
                }
                Inflated::Parquet(opened) => opened,
                Inflated::Chunk(Err(e)) => return Err(e),
                Inflated::Chunk(Ok(_)) => {
                    return Err(Error::Decode {
                        key: object.name.clone(),
                        message: "internal: a decompressing thread sent a chunk first".into(),
                    });
                }
            },
            _ => unreachable!("objects are opened ahead in order"),
        };
        log::debug!(
            "{}: {} bytes, {} ({})",
            object.name,
            object.size,
            opened.format,
            opened.compression.name()
        );
        if opened.format == Format::Parquet {
            let source = Arc::new(open_parquet(object, opened.stream)?);
            if self.run.mapping.get().is_none() {
                let (keys, paths) = source.names();
                let first = FirstRecord { keys, paths };
                self.resolved(resolve(cfg, Some((&object.name, 0, &first)))?);
            }
            self.current = Current::Parquet {
                index,
                source,
                group: 0,
            };
        } else {
            self.current = Current::Stream {
                index,
                decompressed: opened.compression != Compression::None,
                // Boundaries are guessed once the mapping is known (the
                // first record is read from an exactly cut chunk).
                guessing: false,
                reader: ObjectReader::new(object, opened, cfg),
            };
        }
        Ok(())
    }
}

/// A decoding thread: takes the next unit of work from the feeder (reading
/// it, holding the lock), its permits (still holding it, so that permits
/// are taken in sequence order and a unit waiting for several cannot
/// starve the one the writer waits for), then converts it and sends the
/// result. Ends with the feeder, at a failure (sent in sequence), or when
/// the writer hangs up.
fn decode_all(
    run: &Run,
    feeder: &Mutex<Feeder>,
    permits: mpsc::SyncSender<()>,
    done: mpsc::Sender<(u64, u32, Done)>,
) {
    let Run {
        cfg,
        objects,
        mapping,
        rules,
    } = *run;
    loop {
        let Ok(mut guard) = feeder.lock() else {
            return;
        };
        // A panic is a bug, never the input's doing: caught, it fails the
        // run in sequence, as an error would, rather than leave the writer
        // waiting for its sequence number.
        let unit = std::panic::catch_unwind(AssertUnwindSafe(|| guard.take()))
            .unwrap_or_else(|_| guard.panicked());
        let (seq, object, work, decompressed) = match unit {
            Next::End => return,
            Next::Failed { seq, object, error } => {
                let _ = permits.send(());
                let json = None;
                let failed = Done::Failed {
                    object,
                    error,
                    json,
                };
                let _ = done.send((seq, 1, failed));
                return;
            }
            Next::Work {
                seq,
                object,
                work,
                decompressed,
            } => (seq, object, work, decompressed),
        };
        let taken = work.permits(in_flight(cfg));
        for _ in 0..taken {
            if permits.send(()).is_err() {
                guard.ended = true;
                return;
            }
        }
        drop(guard);
        let name = &objects[object].name;
        let out = std::panic::catch_unwind(AssertUnwindSafe(|| {
            crate::failpoint::panic_at("decode-panic");
            let mapping = Arc::clone(mapping.get().expect("resolved before any work"));
            // The output check runs in the workers, over the rows they write.
            let rules = rules_for(rules, cfg, &mapping);
            let opts = mapping::RowOptions {
                dialect: cfg.dialect,
                skip: cfg.skip,
                rules: rules.as_deref(),
            };
            convert_work(&mapping, object, name, work, decompressed, opts)
        }))
        .unwrap_or_else(|_| Done::Failed {
            object,
            error: Error::Decode {
                key: name.clone(),
                message: "internal: decoding a chunk panicked".into(),
            },
            json: None,
        });
        if done.send((seq, taken, out)).is_err() {
            return;
        }
    }
}

/// The mapping a run over `objects` resolves, as the feeder does: from the
/// first record (or a Parquet file's columns, or a CSV header).
pub(crate) fn resolve_on(cfg: &ConvertConfig, io: &Io, objects: &[Object]) -> Result<Mapping> {
    let mut prefetch = Prefetch::new(objects, io.handle(), 1);
    for (index, object) in objects.iter().enumerate() {
        let opened = open(object, prefetch.open(index)?, cfg)?;
        if opened.format == Format::Parquet {
            let source = open_parquet(object, opened.stream)?;
            let (keys, paths) = source.names();
            return resolve(cfg, Some((&object.name, 0, &FirstRecord { keys, paths })));
        }
        let mut reader = ObjectReader::new(object, opened, cfg);
        while let Some((decoder, chunk)) = reader.next_chunk()? {
            match first_record(&decoder, &chunk, cfg.skip) {
                Ok(Some(first)) => return resolve(cfg, Some((&object.name, chunk.base, &first))),
                Err(()) => return Ok(fallback(cfg)),
                Ok(None) => {}
            }
        }
    }
    Ok(fallback(cfg))
}

/// The mapping when no record was read: reserved fields stay unresolved.
fn fallback(cfg: &ConvertConfig) -> Mapping {
    mapping::resolve(&cfg.mapping, None).expect("without a record nothing can fail to match")
}

#[derive(Default)]
struct WriterStats {
    records: u64,
    rows: u64,
    seen: Vec<u8>,
    header_written: bool,
    /// Bad records set aside, by reason (`TIMESTAMP: not-a-timestamp`).
    rejected: BTreeMap<String, u64>,
    rejected_total: u64,
    /// Rows dropped by `--dedupe`.
    duplicates: u64,
    /// The output check over the rows written.
    tally: Tally,
}

/// `--dedupe` for `mapping`: the last row per id for users, items and
/// actions, whole rows otherwise.
fn dedupe_for(mapping: &Mapping, dialect: Dialect) -> Result<Dedupe> {
    use crate::schema::Dataset;
    let id = match mapping.dataset {
        Dataset::Users => "USER_ID",
        Dataset::Items => "ITEM_ID",
        Dataset::Actions => "ACTION_ID",
        Dataset::Interactions | Dataset::ActionInteractions => return Ok(Dedupe::rows()),
    };
    match mapping.fields.iter().position(|f| f.name == id) {
        Some(column) => Dedupe::last_per_id(column, dialect).map_err(|source| Error::Setup {
            what: "cannot create the --dedupe spool file",
            source,
        }),
        None => Ok(Dedupe::rows()),
    }
}

/// Where the rows go: one output, or parts.
enum Sink<'a> {
    One(CsvOut),
    Parts(Box<Parts<'a>>),
}

/// The CSV output, and for outputs that cannot be read back (stdout, object
/// storage, parts) a local copy for the check that follows the run.
struct CsvWriter<'a> {
    out: Sink<'a>,
    copy: Option<(io::BufWriter<std::fs::File>, tempfile::TempPath)>,
    /// Bytes of CSV written, every part's header included.
    bytes: u64,
    /// The CRC-32 of a single output, when asked for (it costs the
    /// writer's thread a pass over the bytes).
    crc: Option<flate2::Crc>,
}

impl<'a> CsvWriter<'a> {
    fn new(out: Sink<'a>, keep_copy: bool, checksum: bool) -> Result<Self> {
        let copy = if keep_copy {
            let tmp = tempfile::NamedTempFile::new().map_err(|source| Error::Setup {
                what: "cannot create the temporary copy of the CSV for the output check",
                source,
            })?;
            let (file, path) = tmp.into_parts();
            Some((io::BufWriter::with_capacity(1 << 20, file), path))
        } else {
            None
        };
        Ok(CsvWriter {
            out,
            copy,
            bytes: 0,
            crc: checksum.then(flate2::Crc::new),
        })
    }

    /// The header: once at the top of the output, or of every part.
    fn header(&mut self, header: &[u8]) -> Result<()> {
        self.bytes += header.len() as u64;
        match &mut self.out {
            Sink::One(out) => {
                if let Some(crc) = &mut self.crc {
                    crc.update(header);
                }
                out.write_all(header)?
            }
            Sink::Parts(parts) => parts.header(header)?,
        }
        self.copy(header)
    }

    /// Whole rows.
    fn write_all(&mut self, rows: &[u8]) -> Result<()> {
        self.bytes += rows.len() as u64;
        match &mut self.out {
            Sink::One(out) => {
                if let Some(crc) = &mut self.crc {
                    crc.update(rows);
                }
                out.write_all(rows)?
            }
            Sink::Parts(parts) => parts.write_rows(rows)?,
        }
        crate::failpoint::hit("mid-upload");
        self.copy(rows)
    }

    fn copy(&mut self, bytes: &[u8]) -> Result<()> {
        if let Some((copy, path)) = &mut self.copy {
            copy.write_all(bytes).map_err(|source| Error::Write {
                path: path.to_path_buf(),
                what: "cannot write",
                source,
            })?;
        }
        Ok(())
    }

    /// Commits the output; returns its parts and the local copy, if one
    /// was kept.
    fn commit(self) -> Result<(Vec<Part>, Option<tempfile::TempPath>)> {
        let parts = match self.out {
            Sink::One(out) => {
                let name = out.name();
                out.commit()?;
                vec![Part {
                    name,
                    folder: 0,
                    first_row: 0,
                    bytes: self.bytes,
                    crc32: self.crc.map_or(0, |crc| crc.sum()),
                }]
            }
            Sink::Parts(parts) => parts.commit()?,
        };
        let copy = match self.copy {
            None => None,
            Some((copy, path)) => {
                copy.into_inner().map_err(|e| Error::Write {
                    path: path.to_path_buf(),
                    what: "cannot write",
                    source: e.into_error(),
                })?;
                Some(path)
            }
        };
        Ok((parts, copy))
    }
}

/// What the writer writes to.
struct Outputs<'a> {
    csv: CsvWriter<'a>,
    rejects: RejectSink,
    /// Set up with the header, once the columns are known.
    dedupe: Option<Dedupe>,
    /// `--dedupe` was asked for, in this CSV dialect.
    dedupe_dialect: Option<Dialect>,
}

/// Where set-aside records go, and the limit on them.
struct RejectSink {
    out: Option<CsvOut>,
    max: Option<crate::config::MaxErrors>,
}

impl RejectSink {
    /// Counts and writes one chunk's rejects, then applies the limit.
    fn take(
        &mut self,
        rejects: Vec<mapping::Reject>,
        offset: u64,
        stats: &mut WriterStats,
    ) -> Result<()> {
        for mut r in rejects {
            if r.bad.origin.row_group.is_none() {
                r.bad.origin.row += offset;
            }
            let key = match &r.bad.field {
                Some(f) => format!("{f}: {}", r.bad.kind),
                None => r.bad.kind.to_string(),
            };
            *stats.rejected.entry(key).or_default() += 1;
            stats.rejected_total += 1;
            if let Some(out) = &mut self.out {
                let o = &r.bad.origin;
                let line = serde_json::json!({
                    "object": o.key,
                    "offset": if o.row_group.is_none() { Some(o.offset) } else { None },
                    "decompressed": o.decompressed,
                    "row_group": o.row_group,
                    "row": o.row,
                    "field": r.bad.field,
                    "reason": r.bad.kind,
                    "message": r.bad.reason,
                    "raw": r.raw,
                });
                out.write_all(format!("{line}\n").as_bytes())?;
            }
        }
        self.check(stats, false)
    }

    fn check(&self, stats: &WriterStats, at_end: bool) -> Result<()> {
        let Some(max) = self.max else { return Ok(()) };
        if !max.exceeded(stats.rejected_total, stats.records, at_end) {
            return Ok(());
        }
        let reasons: Vec<String> = stats
            .rejected
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        let limit = match max {
            crate::config::MaxErrors::Count(n) => n.to_string(),
            crate::config::MaxErrors::Percent(p) => format!("{p}%"),
        };
        Err(Error::TooManyRejects(format!(
            "{} of {} records rejected, more than --max-errors {limit} allows ({}); nothing written",
            stats.rejected_total,
            stats.records,
            reasons.join(", ")
        )))
    }
}

/// What the feeder, the decoding threads and the writer see of a run.
#[derive(Clone, Copy)]
struct Run<'a> {
    cfg: &'a ConvertConfig,
    objects: &'a [Object],
    mapping: &'a OnceLock<Arc<Mapping>>,
    rules: &'a Rules,
}

impl Run<'_> {
    /// `start`, a record cut at a guessed chunk end, joined to the next
    /// chunk (which `item` brings back) and converted again. `scan`: the
    /// record's bytes so far as `Splitter::value_end` read them, when an
    /// earlier join did. While the record does not end in the next chunk
    /// either (one longer than chunks, or broken so that it never ends by
    /// bracket balance), converting the two would give nothing but this
    /// cut record again: they are joined without converting, and the
    /// state comes back, so that each byte of a long record is read once,
    /// not once a chunk.
    fn rejoin(
        &self,
        start: Chunk,
        scan: Option<Splitter>,
        item: Done,
    ) -> Result<(Done, Option<Splitter>)> {
        let (object, json) = match item {
            Done::Rows { object, json, .. } | Done::Failed { object, json, .. } => (object, json),
        };
        let name = &self.objects[object].name;
        let Some((mut next, decompressed)) =
            json.filter(|(next, _)| next.base == start.base + start.bytes.len() as u64)
        else {
            return Err(Error::Decode {
                key: name.clone(),
                message: "internal: a cut record is not followed by the next chunk".into(),
            });
        };
        // As when cutting exactly: a record may not grow past MAX_RECORD.
        if start.bytes.len() > decode::MAX_RECORD {
            return Err(Error::Read {
                key: name.clone(),
                what: format!("cannot read at byte {}", start.base),
                source: decode::record_too_large(),
            });
        }
        let mut scan = scan.unwrap_or_else(|| {
            let mut scan = Splitter::default();
            // The cut record has not ended in its own chunk.
            let _ = scan.value_end(&start.bytes);
            scan
        });
        next.flatten();
        let carry_on = next.guessed && !next.last && scan.value_end(&next.bytes).is_none();
        let (top, mut bytes) = (start.top, start.bytes);
        bytes.extend_from_slice(&next.bytes);
        let joined = Chunk {
            bytes,
            base: start.base,
            top,
            last: next.last,
            guessed: next.guessed,
            end_top: next.end_top,
            utf8: None,
            deferred: None,
            more: bytes::Bytes::new(),
        };
        let mapping = self.mapping.get().expect("resolved before any chunk");
        let rules = rules_for(self.rules, self.cfg, mapping);
        let opts = mapping::RowOptions {
            dialect: self.cfg.dialect,
            skip: self.cfg.skip,
            rules: rules.as_deref(),
        };
        if carry_on {
            let done = Done::Rows {
                object,
                converted: Box::new(mapping.carried(top, opts)),
                last: false,
                json: Some((joined, decompressed)),
            };
            return Ok((done, Some(scan)));
        }
        let work = Work::Chunk(Decoder::Json, joined);
        let done = convert_work(mapping, object, name, work, decompressed, opts);
        Ok((done, None))
    }
}

/// The writer thread scheduled as a batch job for the run (Linux): a
/// result sent to it then no longer takes a decoding thread's core at
/// once, and it takes the results queued by the next time it runs, within
/// the chunks in flight. Woken by every chunk, it had a core switch
/// threads 4,400 times on the NDJSON benchmark; as a batch job, 1,200
/// times, and a two-thread run took 2% less CPU (21 alternating runs).
/// Its share of the cores stays the same. Only an ordinary thread's
/// policy is changed, and it is put back when the run ends.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
struct BatchWriter;

impl BatchWriter {
    fn start() -> Option<BatchWriter> {
        #[cfg(target_os = "linux")]
        {
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: these read and set the calling thread's scheduling
            // policy; `param` lives across the call.
            let set = unsafe {
                libc::sched_getscheduler(0) == libc::SCHED_OTHER
                    && libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) == 0
            };
            set.then_some(BatchWriter)
        }
        #[cfg(not(target_os = "linux"))]
        None
    }
}

impl Drop for BatchWriter {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        {
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: as in `start`.
            unsafe { libc::sched_setscheduler(0, libc::SCHED_OTHER, &param) };
        }
    }
}

/// The writer: results back in sequence order, rows to the CSV.
fn write_all(
    run: &Run,
    done: mpsc::Receiver<(u64, u32, Done)>,
    permits: mpsc::Receiver<()>,
    out: &mut Outputs,
    stats: &mut WriterStats,
    progress: &Progress,
) -> Result<()> {
    let (mapping, objects) = (run.mapping, run.objects);
    let mut pending: BTreeMap<u64, (u32, Done)> = BTreeMap::new();
    let mut next = 0u64;
    // A record cut at a guessed chunk end: it and the next chunk are
    // converted again together, and what the next chunk's worker made of
    // its broken start is dropped. With it, its bytes as read so far when
    // it was carried on without being converted (`Run::rejoin`).
    let mut cut: Option<(Chunk, Option<Splitter>)> = None;
    // Records of the current object before the current chunk, so that an
    // error can give the record's number within its object.
    let mut object_records = 0u64;
    for (seq, taken, item) in done.iter() {
        pending.insert(seq, (taken, item));
        while let Some((taken, item)) = pending.remove(&next) {
            next += 1;
            for _ in 0..taken {
                let _ = permits.recv();
            }
            let (item, carried) = match (cut.take(), item) {
                (None, item) => (item, None),
                // Reading the next chunk failed: that is the error to report.
                (
                    Some(_),
                    Done::Failed {
                        json: None, error, ..
                    },
                ) => return Err(error),
                (Some((start, scan)), item) => run.rejoin(start, scan, item)?,
            };
            match item {
                Done::Failed { object, error, .. } => {
                    let mut error = error;
                    // JSON and CSV chunks count rows from their own start;
                    // a Parquet row is already counted within its group.
                    if let Error::Record(bad) = &mut error
                        && bad.origin.row_group.is_none()
                    {
                        bad.origin.row += object_records;
                    }
                    log::debug!("failed in {}", objects.get(object).map_or("", |o| &o.name));
                    return Err(error);
                }
                Done::Rows {
                    object,
                    converted,
                    last,
                    json,
                } => {
                    if let (Some((at, top)), Some((mut chunk, _))) = (converted.tail, json) {
                        // The chunk's bytes from the cut on, not copied
                        // whole again when a long record is carried on.
                        chunk.flatten();
                        let mut bytes = chunk.bytes;
                        bytes.drain(..at);
                        let start = Chunk {
                            bytes,
                            base: chunk.base + at as u64,
                            top,
                            last: false,
                            guessed: true,
                            end_top: chunk.end_top,
                            utf8: None,
                            deferred: None,
                            more: bytes::Bytes::new(),
                        };
                        cut = Some((start, carried));
                    }
                    if !stats.header_written {
                        let m = mapping.get().expect("resolved before any chunk");
                        write_header(&mut out.csv, &m.schema(&[]))?;
                        stats.header_written = true;
                        stats.seen = vec![0; m.fields.len()];
                        if let Some(dialect) = out.dedupe_dialect {
                            out.dedupe = Some(dedupe_for(m, dialect)?);
                        }
                    }
                    match &mut out.dedupe {
                        None => out.csv.write_all(&converted.csv)?,
                        Some(dedupe) => {
                            let (kept, dropped) =
                                dedupe.push(&converted.csv).map_err(|source| Error::Setup {
                                    what: "cannot write the --dedupe spool file",
                                    source,
                                })?;
                            out.csv.write_all(&kept)?;
                            stats.duplicates += dropped;
                        }
                    }
                    if let Some(tally) = converted.tally {
                        // A row per line, after the header.
                        stats.tally.merge(tally, 1 + stats.rows);
                        if let Some(Some(rules)) = run.rules.get() {
                            rules.publish(&stats.tally);
                        }
                    }
                    stats.records += converted.records;
                    stats.rows += converted.rows;
                    for (s, c) in stats.seen.iter_mut().zip(&converted.seen) {
                        *s |= c;
                    }
                    out.rejects.take(converted.rejects, object_records, stats)?;
                    object_records += converted.records;
                    progress.rows(converted.rows);
                    crate::failpoint::hit("mid-decode");
                    if last {
                        object_records = 0;
                        progress.object_done(objects[object].size);
                    }
                }
            }
        }
    }
    if cut.is_some() {
        return Err(Error::Decode {
            key: String::new(),
            message: "internal: a record cut at a chunk's end was never finished".into(),
        });
    }
    out.rejects.check(stats, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The writer's thread is a batch job while its guard lives, and an
    /// ordinary thread again after it and after a run.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_writer_gets_its_scheduling_back() {
        use crate::cli::{Cli, Command};
        use clap::Parser;

        let dir = tempfile::tempdir().unwrap();
        let events = dir.path().join("events.json");
        std::fs::write(
            &events,
            "{\"u\":\"a\",\"i\":1,\"t\":5}{\"u\":\"b\",\"i\":2,\"t\":6}",
        )
        .unwrap();
        let out = dir.path().join("out.csv");
        let argv = [
            "personalize-prep",
            "convert",
            events.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ];
        let mapping = ["-m", "USER_ID=u", "-m", "ITEM_ID=i", "-m", "TIMESTAMP=t"];
        let Command::Convert(args) = Cli::try_parse_from(argv.iter().chain(&mapping))
            .unwrap()
            .command
        else {
            unreachable!("parsed as convert")
        };
        let cfg = ConvertConfig::from_args(&args, true).unwrap();
        // SAFETY: reads the calling thread's policy.
        let policy = || unsafe { libc::sched_getscheduler(0) };
        assert_eq!(policy(), libc::SCHED_OTHER);
        let batch = BatchWriter::start();
        assert!(batch.is_some());
        assert_eq!(policy(), libc::SCHED_BATCH);
        drop(batch);
        assert_eq!(policy(), libc::SCHED_OTHER);
        let summary = convert(&cfg).unwrap();
        assert_eq!(summary.rows, 2);
        assert_eq!(policy(), libc::SCHED_OTHER);
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "USER_ID,ITEM_ID,TIMESTAMP\na,1,5\nb,2,6\n"
        );
    }

    /// A row group takes a permit per 32,768 rows, at most half of all;
    /// a chunk takes one.
    #[test]
    fn work_takes_permits_by_its_size() {
        use arrow_array::{ArrayRef, Int64Array, RecordBatch};
        use parquet::arrow::ArrowWriter;
        use parquet::file::properties::WriterProperties;

        let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(0..200_000));
        let batch = RecordBatch::try_from_iter([("id", ids)]).unwrap();
        let file = tempfile::NamedTempFile::new().unwrap();
        // Row groups of 131,072, then 65,536, then 3,392 rows.
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(131_072))
            .build();
        let mut writer =
            ArrowWriter::try_new(file.reopen().unwrap(), batch.schema(), Some(props)).unwrap();
        writer.write(&batch.slice(0, 131_072)).unwrap();
        writer.flush().unwrap();
        writer.write(&batch.slice(131_072, 65_536)).unwrap();
        writer.flush().unwrap();
        writer.write(&batch.slice(196_608, 3_392)).unwrap();
        writer.close().unwrap();
        let source = Arc::new(ParquetSource::open(file.path().to_path_buf(), None).unwrap());
        assert_eq!(source.row_groups(), 3);
        let permits = |group: usize, in_flight: usize| {
            Work::RowGroup(Arc::clone(&source), group, false).permits(in_flight)
        };
        assert_eq!([permits(0, 16), permits(1, 16), permits(2, 16)], [4, 2, 1]);
        // Two row groups can always be in flight.
        assert_eq!([permits(0, 8), permits(0, 4), permits(1, 2)], [4, 2, 1]);
        let chunk = Chunk {
            bytes: b"{}".to_vec(),
            base: 0,
            top: crate::decode::json::Top::Between,
            last: true,
            guessed: false,
            end_top: crate::decode::json::Top::Between,
            utf8: None,
            deferred: None,
            more: bytes::Bytes::new(),
        };
        assert_eq!(Work::Chunk(Decoder::Json, chunk).permits(16), 1);
    }
}
