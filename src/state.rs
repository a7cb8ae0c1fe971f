//! Repeated runs (SPEC section 11): `--state` keeps a manifest of the
//! objects converted, so each run converts only what is new into its own
//! folder `DEST/<dataset>/<run-id>/`, one INCREMENTAL import.
//!
//! The order of a run is what makes it crash-safe: take the lock; redo a
//! run the state says is pending (its exact object list, into its own
//! folder, with its own size limits, so the redo writes the same files);
//! record the new run and its object list as pending; write its outputs
//! (each becomes visible only when all are written); mark it done. A crash
//! anywhere leaves either nothing visible of the run or a pending record
//! that the next run completes, so every source record lands in exactly one
//! delta folder.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::config::{ConvertConfig, StateConfig, Target};
use crate::error::{Error, Result};
use crate::failpoint;
use crate::mapping::value::format_utc;
use crate::pipeline::{self, Io, Layout, Summary};
use crate::sink::parts::PartNames;
use crate::source::{self, Location, Object};

/// The manifest, as stored (pretty JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    /// `personalize-prep state 1`.
    pub format: String,
    pub dataset: String,
    pub runs: Vec<RunRecord>,
}

const FORMAT: &str = "personalize-prep state 1";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pending,
    Done,
}

/// One run: pending from before its first output is written until every
/// output landed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: String,
    pub status: Status,
    pub started: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<String>,
    /// The limits the run was cut with; a redo uses the same.
    pub max_import_size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_file_size: Option<u64>,
    /// Once done: the folders and files written, and the rows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub folders: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// The objects, in the order converted.
    pub objects: Vec<Seen>,
}

/// An object as it was when converted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    pub name: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified: Option<String>,
}

impl Seen {
    fn of(object: &Object) -> Self {
        Seen {
            name: object.name.clone(),
            size: object.size,
            etag: object.etag.clone(),
            modified: object.modified.map(format_utc),
        }
    }

    /// How `object` differs from when it was converted, if it does.
    fn change(&self, object: &Object) -> Option<String> {
        let now = Seen::of(object);
        if now.size != self.size {
            Some(format!("size {} → {}", self.size, now.size))
        } else if now.etag.is_some() && self.etag.is_some() && now.etag != self.etag {
            Some("ETag changed".to_string())
        } else if now.etag.is_none() && self.etag.is_none() && now.modified != self.modified {
            Some(format!(
                "modified {} → {}",
                self.modified.as_deref().unwrap_or("?"),
                now.modified.as_deref().unwrap_or("?")
            ))
        } else {
            None
        }
    }
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn state_error(target: &Target, message: impl Into<String>) -> Error {
    Error::State {
        target: target.to_string(),
        message: message.into(),
    }
}

impl State {
    fn load(io: &Io, target: &Target, dataset: &str) -> Result<State> {
        let Some(bytes) = io.read_small(target)? else {
            return Ok(State {
                format: FORMAT.to_string(),
                dataset: dataset.to_string(),
                runs: Vec::new(),
            });
        };
        let state: State = serde_json::from_slice(&bytes)
            .map_err(|e| state_error(target, format!("not a personalize-prep state file: {e}")))?;
        if state.format != FORMAT {
            return Err(state_error(
                target,
                format!("format {:?}; this version reads {FORMAT:?}", state.format),
            ));
        }
        if state.dataset != dataset {
            return Err(state_error(
                target,
                format!(
                    "the state of a {} dataset, not {dataset}: give each dataset its own --state",
                    state.dataset
                ),
            ));
        }
        Ok(state)
    }

    /// Written whole and atomically (a renamed file, or one PUT).
    fn save(&self, io: &Io, target: &Target) -> Result<()> {
        let mut text = serde_json::to_string_pretty(self).expect("a state serialises");
        text.push('\n');
        io.write_small(target, text.as_bytes())
    }

    fn pending(&self) -> Option<&RunRecord> {
        self.runs.iter().find(|r| r.status == Status::Pending)
    }

    /// A run id from the UTC time, later than every run before it.
    fn new_id(&self, mut now: i64) -> String {
        let id = |t: i64| format_utc(t).replace(['-', ':'], "");
        while self.runs.iter().any(|r| r.id >= id(now)) {
            now += 1;
        }
        id(now)
    }

    /// Records the limits a pending run is redone under.
    fn set_limits(&mut self, redo: &RunRecord) {
        if let Some(run) = self.runs.iter_mut().find(|r| r.id == redo.id) {
            run.max_import_size = redo.max_import_size;
            run.max_file_size = redo.max_file_size;
        }
    }

    fn finish(&mut self, id: &str, folders: Vec<String>, summary: &Summary) {
        let run = self
            .runs
            .iter_mut()
            .find(|r| r.id == id)
            .expect("the run is recorded");
        run.status = Status::Done;
        run.finished = Some(format_utc(now_secs()));
        run.folders = folders;
        run.outputs = summary.parts.iter().map(|p| p.name.clone()).collect();
        run.rows = Some(summary.rows);
    }
}

/// Who holds a lock, as written in it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Holder {
    host: String,
    pid: u32,
    /// When the process started, in clock ticks since boot (Linux), so a
    /// reused pid is not taken for the holder.
    #[serde(default)]
    pid_start: Option<u64>,
    /// The PID namespace (`/proc/self/ns/pid`): containers sharing a host
    /// name have their own pids, which say nothing about each other.
    #[serde(default)]
    pid_ns: Option<String>,
    started: String,
    started_at: i64,
}

impl Holder {
    fn me() -> Self {
        let now = now_secs();
        Holder {
            host: host_name(),
            pid: std::process::id(),
            pid_start: process_start(std::process::id()),
            pid_ns: std::fs::read_link("/proc/self/ns/pid")
                .ok()
                .map(|p| p.display().to_string()),
            started: format_utc(now),
            started_at: now,
        }
    }

    /// Whether the holder is a process of this host that no longer runs.
    fn is_gone(&self, me: &Holder) -> bool {
        if self.host != me.host || self.pid_ns.is_none() || self.pid_ns != me.pid_ns {
            return false;
        }
        if self.pid == me.pid {
            return true;
        }
        if !std::path::Path::new("/proc/self/stat").exists() {
            return false;
        }
        match (process_start(self.pid), self.pid_start) {
            (None, _) => true,
            (Some(now), Some(then)) => now != then,
            (Some(_), None) => false,
        }
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".to_string())
}

/// Field 22 of /proc/PID/stat: the process's start time.
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// The lock on a state: a file created only if absent, or an object
/// created with a create-if-absent PUT. Released when dropped, if it is
/// still this run's; a crash leaves it for the next run to judge.
struct Lock<'a> {
    io: &'a Io,
    target: Target,
    /// What this run wrote into it.
    text: String,
}

/// How long a takeover may hold its claim before another run may remove
/// it (a takeover takes a few requests).
const CLAIM_TIMEOUT_SECS: i64 = 60;

impl<'a> Lock<'a> {
    fn take(io: &'a Io, st: &StateConfig) -> Result<Self> {
        let target = st.target.with_extension_added("lock");
        let me = Holder::me();
        let text = serde_json::to_string_pretty(&me).expect("a holder serialises");
        for _ in 0..5 {
            if io.create_new(&target, text.as_bytes())? {
                log::debug!("locked {target}");
                return Ok(Lock { io, target, text });
            }
            let Some(bytes) = io.read_small(&target)? else {
                continue; // released in between
            };
            let holder: Option<Holder> = serde_json::from_slice(&bytes).ok();
            let who = match &holder {
                Some(h) => format!("host {}, pid {}, started {}", h.host, h.pid, h.started),
                None => "an unreadable lock".to_string(),
            };
            let age = holder.as_ref().map(|h| now_secs() - h.started_at);
            let why = if st.break_lock {
                Some("--break-lock".to_string())
            } else if holder.as_ref().is_some_and(|h| h.is_gone(&me)) {
                Some("its process is no longer running".to_string())
            } else {
                match (st.lock_timeout, age) {
                    (Some(limit), Some(age)) if age >= limit.as_secs() as i64 => {
                        Some(format!("older than --lock-timeout ({age} s)"))
                    }
                    _ => None,
                }
            };
            match why {
                Some(why) => {
                    if Lock::remove_judged(io, &target, &bytes, &me, &text)? {
                        eprintln!(
                            "personalize-prep: warning: {target}: removed the lock of {who}: {why}"
                        );
                    }
                }
                None => {
                    return Err(state_error(
                        &st.target,
                        format!(
                            "another run holds the lock {target} ({who}{}); it may still be \
                             running. --lock-timeout DURATION takes over a lock older than \
                             that; --break-lock removes it",
                            age.map(|a| format!(", {a} s ago")).unwrap_or_default()
                        ),
                    ));
                }
            }
        }
        Err(state_error(
            &st.target,
            format!("cannot take the lock {target}: other runs keep taking it"),
        ))
    }

    /// Removes the lock judged stale, if it still holds `judged`: under a
    /// takeover claim (`LOCK.takeover`, created only if absent), so that of
    /// two runs judging the same stale lock only one removes it, and never
    /// the lock the other has just taken. False when the lock changed.
    fn remove_judged(
        io: &Io,
        target: &Target,
        judged: &[u8],
        me: &Holder,
        text: &str,
    ) -> Result<bool> {
        let claim = target.with_extension_added("takeover");
        if !io.create_new(&claim, text.as_bytes())? {
            let holder = io
                .read_small(&claim)?
                .and_then(|b| serde_json::from_slice::<Holder>(&b).ok());
            let stale = holder
                .as_ref()
                .is_none_or(|h| h.is_gone(me) || now_secs() - h.started_at >= CLAIM_TIMEOUT_SECS);
            if stale {
                io.delete(&claim)?;
            }
            return Ok(false);
        }
        let same = io.read_small(target)?.as_deref() == Some(judged);
        if same {
            io.delete(target)?;
        }
        io.delete(&claim)?;
        Ok(same)
    }

    /// Saves the state if the lock is still this run's: a run whose lock
    /// was taken over (`--lock-timeout`, `--break-lock`) stops instead of
    /// overwriting the state of the run that took it.
    fn save(&self, state: &State, target: &Target) -> Result<()> {
        self.check()?;
        state.save(self.io, target)
    }

    fn check(&self) -> Result<()> {
        let now = self.io.read_small(&self.target)?;
        if now.as_deref() == Some(self.text.as_bytes()) {
            return Ok(());
        }
        let who = now
            .and_then(|b| serde_json::from_slice::<Holder>(&b).ok())
            .map_or("no lock at all".to_string(), |h| {
                format!("host {}, pid {}, started {}", h.host, h.pid, h.started)
            });
        Err(state_error(
            &self.target,
            format!(
                "this run's lock was taken over (it now names {who}); stopping without \
                 saving the state: the next run redoes what this one did not finish"
            ),
        ))
    }
}

impl Drop for Lock<'_> {
    fn drop(&mut self) {
        // Another run's lock (after a takeover) is left alone.
        if self.check().is_err() {
            return;
        }
        if let Err(e) = self.io.delete(&self.target) {
            eprintln!("personalize-prep: warning: cannot release the lock: {e}");
        }
    }
}

/// One run of a `--state` invocation.
pub struct DeltaRun {
    pub id: String,
    /// A pending run, redone.
    pub redone: bool,
    /// Its folders, `DEST/<dataset>/<run-id>[-NNN]`.
    pub folders: Vec<String>,
    pub summary: Summary,
}

/// What a `--state` invocation did.
pub struct Outcome {
    pub runs: Vec<DeltaRun>,
    pub warnings: Vec<String>,
    /// Objects converted by earlier runs, and those runs.
    pub known_objects: usize,
    pub known_runs: usize,
}

/// Whether `object` is something `--state` itself wrote: the state, its
/// lock, or a file in a run folder (when DEST is inside a SOURCE).
fn is_ours(object: &Object, st: &StateConfig) -> bool {
    if pipeline::is_target(object, &st.target)
        || pipeline::is_target(object, &st.target.with_extension_added("lock"))
    {
        return true;
    }
    match (&object.location, &st.runs) {
        (Location::Local(path), Target::Local(runs)) => {
            match (std::fs::canonicalize(path), std::fs::canonicalize(runs)) {
                (Ok(p), Ok(r)) => p.starts_with(r),
                _ => false,
            }
        }
        (Location::Remote { .. }, Target::Url(_)) => object
            .name
            .starts_with(&format!("{}/", st.runs.to_string().trim_end_matches('/'))),
        _ => false,
    }
}

/// What a run on a state is to do.
struct Plan {
    /// A pending run to redo first, with its objects as listed now.
    pending: Option<(RunRecord, Vec<Object>)>,
    /// Objects no run has taken, in the window.
    new: Vec<Object>,
    warnings: Vec<String>,
    /// Objects converted (or pending) in earlier runs.
    known_objects: usize,
}

fn plan(cfg: &ConvertConfig, st: &StateConfig, state: &State, listed: &[Object]) -> Result<Plan> {
    let mut warnings = Vec::new();
    let by_name: HashMap<&str, &Object> = listed.iter().map(|o| (o.name.as_str(), o)).collect();
    let pending = match state.pending() {
        None => None,
        Some(run) => {
            let mut objects = Vec::with_capacity(run.objects.len());
            for seen in &run.objects {
                let Some(object) = by_name.get(seen.name.as_str()) else {
                    return Err(state_error(
                        &st.target,
                        format!(
                            "run {} is pending (an earlier run stopped before it was done) and \
                             lists {}, which is no longer there; restore it, or remove run {} \
                             from the state to give that run up",
                            run.id, seen.name, run.id
                        ),
                    ));
                };
                if let Some(change) = seen.change(object) {
                    warnings.push(format!(
                        "{}: changed since run {} listed it ({change}); converted as it is now",
                        seen.name, run.id
                    ));
                }
                objects.push((*object).clone());
            }
            Some((run.clone(), objects))
        }
    };
    let known: HashMap<&str, (&Seen, &str)> = state
        .runs
        .iter()
        .flat_map(|r| {
            r.objects
                .iter()
                .map(move |s| (s.name.as_str(), (s, r.id.as_str())))
        })
        .collect();
    let mut new = Vec::new();
    for object in listed {
        match known.get(object.name.as_str()) {
            Some((seen, run)) if state.pending().is_none_or(|p| p.id != *run) => {
                if let Some(change) = seen.change(object) {
                    warnings.push(format!(
                        "{}: changed since run {run} converted it ({change}); objects are \
                         treated as immutable, so it is not converted again",
                        object.name
                    ));
                }
            }
            Some(_) => {}
            None if source::in_window(object, &cfg.window) => new.push(object.clone()),
            None => {}
        }
    }
    Ok(Plan {
        pending,
        new,
        warnings,
        known_objects: known.len(),
    })
}

/// The listing a state's runs choose from: every object, less what the
/// runs themselves write.
fn listing(cfg: &ConvertConfig, io: &Io, st: &StateConfig) -> Result<Vec<Object>> {
    let mut listed = io.list_all(cfg)?;
    listed.retain(|o| !is_ours(o, st));
    Ok(listed)
}

/// Converts what is new since the last run (after redoing a pending one).
pub fn convert(cfg: &ConvertConfig) -> Result<Outcome> {
    let st = cfg.state.as_ref().expect("a --state run");
    let io = Io::with_retries(&cfg.storage_options, cfg.retries, cfg.retry_timeout)?;
    let lock = Lock::take(&io, st)?;
    let mut state = State::load(&io, &st.target, &cfg.mapping.dataset.to_string())?;
    let known_runs = state.runs.len();
    let plan = plan(cfg, st, &state, &listing(cfg, &io, st)?)?;
    let mut runs = Vec::new();
    if let Some((pending, objects)) = &plan.pending {
        log::debug!(
            "redoing pending run {} ({} objects)",
            pending.id,
            objects.len()
        );
        // A crash before its first part landed (or limits a row did not
        // fit in) left nothing of it visible: it is redone under the
        // limits of this run. Once a part landed, the same limits cut it
        // into the same files again.
        let mut pending = pending.clone();
        let limits = (st.max_import_size, cfg.max_file_size);
        if (pending.max_import_size, pending.max_file_size) != limits {
            let first = PartNames::Runs {
                runs: st.runs.clone(),
                run: pending.id.clone(),
            }
            .part(0, 0);
            if io.size(&first)?.is_none() {
                (pending.max_import_size, pending.max_file_size) = limits;
                state.set_limits(&pending);
                lock.save(&state, &st.target)?;
            }
        }
        runs.push(run_delta(
            cfg, &io, &lock, st, &mut state, &pending, objects, true,
        )?);
    }
    if !plan.new.is_empty() {
        let record = RunRecord {
            id: state.new_id(now_secs()),
            status: Status::Pending,
            started: format_utc(now_secs()),
            finished: None,
            max_import_size: st.max_import_size,
            max_file_size: cfg.max_file_size,
            folders: Vec::new(),
            outputs: Vec::new(),
            rows: None,
            objects: plan.new.iter().map(Seen::of).collect(),
        };
        state.runs.push(record.clone());
        lock.save(&state, &st.target)?;
        failpoint::hit("after-pending");
        runs.push(run_delta(
            cfg, &io, &lock, st, &mut state, &record, &plan.new, false,
        )?);
    }
    Ok(Outcome {
        runs,
        warnings: plan.warnings,
        known_objects: plan.known_objects,
        known_runs,
    })
}

/// `--dry-run --state`: what the next run would convert, without the lock
/// and without writing anything.
pub fn dry_run(cfg: &ConvertConfig) -> Result<String> {
    let st = cfg.state.as_ref().expect("a --state run");
    let io = Io::with_retries(&cfg.storage_options, cfg.retries, cfg.retry_timeout)?;
    let state = State::load(&io, &st.target, &cfg.mapping.dataset.to_string())?;
    let plan = plan(cfg, st, &state, &listing(cfg, &io, st)?)?;
    let mut text = format!(
        "state {}: {} runs, {} objects converted\n",
        st.target,
        state.runs.len(),
        plan.known_objects
    );
    let list = |text: &mut String, objects: &[Object]| {
        for o in objects {
            text.push_str(&format!("  {}  {} bytes\n", o.name, o.size));
        }
    };
    if let Some((run, objects)) = &plan.pending {
        text.push_str(&format!(
            "pending run {} would be redone into {}: {} objects\n",
            run.id,
            st.runs.join(&run.id),
            objects.len()
        ));
        list(&mut text, objects);
    }
    let bytes: u64 = plan.new.iter().map(|o| o.size).sum();
    text.push_str(&format!("new: {} objects, {bytes} bytes\n", plan.new.len()));
    list(&mut text, &plan.new);
    for w in &plan.warnings {
        text.push_str(&format!("warning: {w}\n"));
    }
    Ok(text)
}

/// Converts one run's objects into its folders and marks it done.
#[allow(clippy::too_many_arguments)]
fn run_delta(
    cfg: &ConvertConfig,
    io: &Io,
    lock: &Lock,
    st: &StateConfig,
    state: &mut State,
    record: &RunRecord,
    objects: &[Object],
    redone: bool,
) -> Result<DeltaRun> {
    let names = PartNames::Runs {
        runs: st.runs.clone(),
        run: record.id.clone(),
    };
    let layout = Layout::Parts {
        names: names.clone(),
        max_file: record.max_file_size,
        max_folder: Some(record.max_import_size),
    };
    let summary = pipeline::convert_objects(cfg, io, objects, layout)?;
    failpoint::hit("after-commit");
    let last = summary.parts.last().map_or(0, |p| p.folder);
    let folders: Vec<String> = (0..=last)
        .map(|f| {
            st.runs
                .join(&names.folder(f).unwrap_or_default())
                .to_string()
        })
        .collect();
    state.finish(&record.id, folders.clone(), &summary);
    lock.save(state, &st.target)?;
    failpoint::hit("after-done");
    Ok(DeltaRun {
        id: record.id.clone(),
        redone,
        folders,
        summary,
    })
}
