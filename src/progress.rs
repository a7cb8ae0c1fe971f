//! What the user sees while a run goes and when it ends: an indicatif bar
//! on stderr (only when asked for or when stderr is a terminal), the closing
//! summary, and the `-v` debug logger.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::pipeline::Summary;

/// Progress on stderr: a bar on a terminal, plain lines (at most one a
/// second, and one at the end) when `--progress always` meets a log file,
/// or nothing.
pub(crate) struct Progress {
    display: Display,
    objects: u64,
    objects_done: AtomicU64,
    bytes_done: AtomicU64,
    rows: AtomicU64,
}

enum Display {
    Hidden,
    Bar(ProgressBar),
    Lines(Mutex<Instant>),
}

impl Progress {
    pub fn new(enabled: bool, objects: u64, bytes: u64) -> Self {
        let display = if !enabled {
            Display::Hidden
        } else if std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(Some(bytes), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {wide_bar} {binary_bytes}/{binary_total_bytes} \
                     {binary_bytes_per_sec} ETA {eta} {msg}",
                )
                .expect("a valid template"),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            Display::Bar(bar)
        } else {
            Display::Lines(Mutex::new(Instant::now()))
        };
        Progress {
            display,
            objects,
            objects_done: AtomicU64::new(0),
            bytes_done: AtomicU64::new(0),
            rows: AtomicU64::new(0),
        }
    }

    fn text(&self) -> String {
        format!(
            "{}/{} objects, {} rows",
            self.objects_done.load(Ordering::Relaxed),
            self.objects,
            self.rows.load(Ordering::Relaxed)
        )
    }

    fn update(&self, last: bool) {
        match &self.display {
            Display::Hidden => {}
            Display::Bar(bar) => {
                bar.set_position(self.bytes_done.load(Ordering::Relaxed));
                bar.set_message(self.text());
            }
            Display::Lines(printed) => {
                let mut printed = printed.lock().unwrap_or_else(|e| e.into_inner());
                if last || printed.elapsed() >= Duration::from_secs(1) {
                    *printed = Instant::now();
                    eprintln!(
                        "personalize-prep: progress: {}, {} bytes",
                        self.text(),
                        self.bytes_done.load(Ordering::Relaxed)
                    );
                }
            }
        }
    }

    pub fn rows(&self, n: u64) {
        self.rows.fetch_add(n, Ordering::Relaxed);
        self.update(false);
    }

    pub fn object_done(&self, bytes: u64) {
        self.objects_done.fetch_add(1, Ordering::Relaxed);
        self.bytes_done.fetch_add(bytes, Ordering::Relaxed);
        self.update(false);
    }

    pub fn finish(&self) {
        match &self.display {
            Display::Bar(bar) => bar.finish_and_clear(),
            Display::Lines(_) => self.update(true),
            Display::Hidden => {}
        }
    }
}

/// The closing summary line(s) for stderr.
pub fn summary_text(s: &Summary) -> String {
    let secs = s.duration.as_secs_f64();
    let rate = if secs > 0.0 {
        s.bytes as f64 / 1e6 / secs
    } else {
        0.0
    };
    let plural = |n: u64, one: &str, many: &str| {
        if n == 1 {
            format!("{n} {one}")
        } else {
            format!("{n} {many}")
        }
    };
    let rejected: u64 = s.rejected.values().sum();
    let mut text = format!(
        "converted {} ({}), {} read, {} written, {rejected} rejected in {secs:.2} s ({rate:.1} MB/s)\n  outputs: {}\n",
        plural(s.objects, "object", "objects"),
        plural(s.bytes, "byte", "bytes"),
        plural(s.records, "record", "records"),
        plural(s.rows, "row", "rows"),
        s.outputs.join(", ")
    );
    if s.duplicates > 0 {
        text.push_str(&format!("  duplicates removed: {}\n", s.duplicates));
    }
    if rejected > 0 {
        let reasons: Vec<String> = s.rejected.iter().map(|(k, n)| format!("{k} {n}")).collect();
        text.push_str(&format!("  rejected: {}\n", reasons.join(", ")));
    }
    text
}

/// Debug messages on stderr with `-v`.
struct StderrLogger;

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.target().starts_with("personalize_prep")
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            eprintln!(
                "personalize-prep: {}: {}",
                record.level().as_str().to_lowercase(),
                record.args()
            );
        }
    }

    fn flush(&self) {}
}

/// Installs the logger: debug with `verbose`, warnings otherwise.
pub fn init_logging(verbose: bool) {
    static LOGGER: StderrLogger = StderrLogger;
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(if verbose {
            log::LevelFilter::Debug
        } else {
            log::LevelFilter::Warn
        });
    }
}
