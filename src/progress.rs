//! What the user sees while a run goes and when it ends: an indicatif bar
//! on stderr (only when asked for or when stderr is a terminal), the closing
//! summary, and the `-v` debug logger.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::pipeline::Summary;

/// The progress bar, or nothing.
pub(crate) struct Progress {
    bar: Option<ProgressBar>,
    objects: u64,
    objects_done: AtomicU64,
    rows: AtomicU64,
}

impl Progress {
    pub fn new(enabled: bool, objects: u64, bytes: u64) -> Self {
        let bar = enabled.then(|| {
            let bar = ProgressBar::with_draw_target(Some(bytes), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {wide_bar} {binary_bytes}/{binary_total_bytes} \
                     {binary_bytes_per_sec} ETA {eta} {msg}",
                )
                .expect("a valid template"),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Progress {
            bar,
            objects,
            objects_done: AtomicU64::new(0),
            rows: AtomicU64::new(0),
        }
    }

    pub fn rows(&self, n: u64) {
        let rows = self.rows.fetch_add(n, Ordering::Relaxed) + n;
        if let Some(bar) = &self.bar {
            let done = self.objects_done.load(Ordering::Relaxed);
            bar.set_message(format!("{done}/{} objects, {rows} rows", self.objects));
        }
    }

    pub fn object_done(&self, bytes: u64) {
        self.objects_done.fetch_add(1, Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            bar.inc(bytes);
        }
        self.rows(0);
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
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
    format!(
        "converted {} ({}), {} read, {} written, 0 rejected in {secs:.2} s ({rate:.1} MB/s)\n  outputs: {}\n",
        plural(s.objects, "object", "objects"),
        plural(s.bytes, "byte", "bytes"),
        plural(s.records, "record", "records"),
        plural(s.rows, "row", "rows"),
        s.outputs.join(", ")
    )
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
