//! Repeated runs with `--state` (SPEC section 11): only new objects, a
//! folder per run, crash safety proven at every failpoint and by a real
//! SIGKILL, the lock, `--since`/`--until`, and outputs cut by size.

use std::collections::BTreeMap;
use std::fs;
use std::time::{Duration, Instant};

use crate::workdir::{Run, Workdir};

/// Object `n` of a source: `records` events, concatenated JSON with no
/// whitespace, each with an item id unique in the whole test.
fn object(n: usize, records: usize) -> String {
    (0..records)
        .map(|r| {
            format!(
                r#"{{"user_id":"u{}","item_id":"i{n}-{r}","event_type":"click","timestamp":{}}}"#,
                r % 7,
                1_700_000_000 + n * 1000 + r
            )
        })
        .collect()
}

/// Writes objects `from..to` under `raw/2024/01/10/20/`.
fn add_objects(wd: &Workdir, from: usize, to: usize, records: usize) {
    for n in from..to {
        wd.write(
            &format!("raw/2024/01/10/20/stream-{n:04}"),
            object(n, records),
        );
    }
}

/// Every item id objects `from..to` hold, sorted.
fn expected_ids(from: usize, to: usize, records: usize) -> Vec<String> {
    let mut ids: Vec<String> = (from..to)
        .flat_map(|n| (0..records).map(move |r| format!("i{n}-{r}")))
        .collect();
    ids.sort();
    ids
}

const HEADER: &str = "USER_ID,ITEM_ID,TIMESTAMP,EVENT_TYPE";

fn args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "convert",
        "raw",
        "-o",
        "out/",
        "--state",
        "state/interactions.json",
        "-q",
    ];
    args.extend_from_slice(extra);
    args
}

/// The visible delta parts: run folder → (part file → item ids), each part
/// checked to start with the header.
fn deltas(wd: &Workdir) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let mut out: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    for file in wd.files("out/interactions") {
        let (folder, part) = file.split_once('/').expect("a run folder");
        if part.starts_with('.') {
            continue; // a hidden leftover of a crash, never imported
        }
        let text = wd.read(&format!("out/interactions/{file}"));
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some(HEADER), "{file}");
        let ids = lines
            .map(|l| l.split(',').nth(1).unwrap().to_string())
            .collect();
        out.entry(folder.to_string())
            .or_default()
            .insert(part.to_string(), ids);
    }
    out
}

/// Every item id across the delta folders, sorted (duplicates kept).
fn all_ids(wd: &Workdir) -> Vec<String> {
    let mut ids: Vec<String> = deltas(wd)
        .into_values()
        .flat_map(|parts| parts.into_values().flatten())
        .collect();
    ids.sort();
    ids
}

fn state_json(wd: &Workdir) -> serde_json::Value {
    serde_json::from_str(&wd.read("state/interactions.json")).unwrap()
}

fn crashed(run: &Run, point: &str) {
    assert_eq!(run.code, None, "expected an abort\n{}", run.describe());
    assert!(
        run.stderr.contains(&format!(
            "failpoint {}: aborting",
            point.split(':').next().unwrap()
        )),
        "{}",
        run.describe()
    );
}

#[test]
fn each_run_converts_only_new_objects_into_its_own_folder() {
    let wd = Workdir::new();
    add_objects(&wd, 0, 2, 3);
    wd.run(&args(&[])).assert_code(0);
    let first = deltas(&wd);
    assert_eq!(first.len(), 1);
    let (run1, parts) = first.iter().next().unwrap();
    assert_eq!(run1.len(), "20261128T174538Z".len());
    assert_eq!(parts.keys().collect::<Vec<_>>(), ["part-00000.csv"]);
    assert_eq!(
        wd.read(&format!("out/interactions/{run1}/part-00000.csv")),
        format!(
            "{HEADER}\nu0,i0-0,1700000000,click\nu1,i0-1,1700000001,click\nu2,i0-2,1700000002,click\n\
             u0,i1-0,1700001000,click\nu1,i1-1,1700001001,click\nu2,i1-2,1700001002,click\n"
        )
    );
    assert!(wd.path().join("out/interactions.avsc").exists());
    let state = state_json(&wd);
    assert_eq!(state["runs"][0]["status"], "done");
    assert_eq!(state["runs"][0]["rows"], 6);
    assert_eq!(state["runs"][0]["objects"].as_array().unwrap().len(), 2);
    // The lock is released.
    assert!(!wd.path().join("state/interactions.json.lock").exists());

    add_objects(&wd, 2, 3, 2);
    std::thread::sleep(Duration::from_millis(1100)); // a new run id
    let run = wd.run(
        &args(&[])
            .into_iter()
            .filter(|a| *a != "-q")
            .collect::<Vec<_>>(),
    );
    run.assert_code(0);
    let second = deltas(&wd);
    assert_eq!(second.len(), 2);
    let (run2, parts) = second.iter().nth(1).unwrap();
    assert!(run2 > run1);
    assert_eq!(
        parts["part-00000.csv"],
        ["i2-0", "i2-1"],
        "only the new object"
    );
    assert!(
        run.stderr
            .contains(&format!("run {run2}: out/interactions/{run2}")),
        "{}",
        run.stderr
    );
    // An incremental delta is not held to the training minimums.
    assert!(!run.stderr.contains("min-interactions"), "{}", run.stderr);

    let before = wd.read("state/interactions.json");
    let run = wd.run(&[
        "convert",
        "raw",
        "-o",
        "out/",
        "--state",
        "state/interactions.json",
    ]);
    run.assert_code(0);
    assert_eq!(
        run.stderr,
        "personalize-prep: nothing new in raw since the last run (3 objects converted in 2 runs); nothing written\n"
    );
    assert_eq!(wd.read("state/interactions.json"), before);
    assert_eq!(deltas(&wd), second);
}

/// A crash at `point`, new objects arriving, then a rerun: every record
/// once across the delta folders, and the crashed run's folder holds
/// exactly its own objects.
fn crash_and_rerun(point: &str, extra: &[&str]) {
    let wd = Workdir::new();
    add_objects(&wd, 0, 4, 50);
    let crash = wd
        .command(&args(extra))
        .env("PERSONALIZE_PREP_FAILPOINT", point)
        .output()
        .unwrap();
    let crash = crate::workdir::run_of(&args(extra), crash);
    crashed(&crash, point);
    let state = state_json(&wd);
    let pending = &state["runs"][0];
    let pending_id = pending["id"].as_str().unwrap().to_string();
    let expect_status = if point.starts_with("after-done") {
        "done"
    } else {
        "pending"
    };
    assert_eq!(pending["status"], expect_status, "{point}");
    if !point.starts_with("after-commit") && !point.starts_with("after-done") {
        assert!(
            deltas(&wd).is_empty(),
            "{point}: a visible output after the crash"
        );
    }

    add_objects(&wd, 4, 6, 50);
    std::thread::sleep(Duration::from_millis(1100));
    let rerun = wd.run(&args(extra));
    rerun.assert_code(0);
    // The lock of the crashed process is taken over: it no longer runs.
    assert!(
        rerun.stderr.contains("its process is no longer running"),
        "{point}: {}",
        rerun.describe()
    );
    assert_eq!(all_ids(&wd), expected_ids(0, 6, 50), "{point}");
    let folders = deltas(&wd);
    let crashed_run: Vec<String> = folders
        .iter()
        .filter(|(f, _)| f.starts_with(&pending_id))
        .flat_map(|(_, parts)| parts.values().flatten().cloned())
        .collect();
    let mut crashed_run = crashed_run;
    crashed_run.sort();
    assert_eq!(
        crashed_run,
        expected_ids(0, 4, 50),
        "{point}: the redo is exact"
    );
    let state = state_json(&wd);
    assert!(
        state["runs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "done")
    );
}

#[test]
fn a_crash_after_the_pending_record_is_redone_exactly() {
    crash_and_rerun("after-pending", &[]);
}

#[test]
fn a_crash_mid_decode_is_redone_exactly() {
    crash_and_rerun("mid-decode:3", &["--chunk-bytes", "300", "--threads", "2"]);
}

#[test]
fn a_crash_mid_upload_is_redone_exactly() {
    crash_and_rerun(
        "mid-upload:2",
        &["--chunk-bytes", "300", "--max-file-size", "2KB"],
    );
}

#[test]
fn a_crash_after_the_commit_is_redone_into_the_same_files() {
    crash_and_rerun("after-commit", &["--max-file-size", "2KB"]);
}

#[test]
fn a_crash_after_the_run_is_done_leaves_only_the_lock() {
    crash_and_rerun("after-done", &[]);
}

#[test]
fn a_sigkill_at_a_random_moment_loses_and_duplicates_nothing() {
    let wd = Workdir::new();
    add_objects(&wd, 0, 150, 400);
    let extra = ["--chunk-bytes", "4096", "--max-file-size", "200KB"];
    // How long a whole run takes here, to aim the kills inside one.
    let probe = Workdir::new();
    add_objects(&probe, 0, 150, 400);
    let t = Instant::now();
    probe.run(&args(&extra)).assert_code(0);
    let full = t.elapsed();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    eprintln!("sigkill test: a run takes {full:?}; seed {seed}");
    let mut rng = seed | 1;
    let mut kills = Vec::new();
    for round in 0..3 {
        // xorshift: a delay anywhere in the run
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let delay = full.mul_f64((rng % 1000) as f64 / 1000.0);
        let mut child = wd
            .command(&args(&extra))
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let _ = child.kill();
        let status = child.wait().unwrap();
        kills.push(format!("round {round}: killed after {delay:?} ({status})"));
        if round == 1 {
            add_objects(&wd, 150, 160, 400);
        }
    }
    let run = wd.run(&args(&extra));
    run.assert_code(0);
    assert_eq!(
        all_ids(&wd),
        expected_ids(0, 160, 400),
        "seed {seed}: {kills:?}"
    );
}

#[test]
fn a_held_lock_fails_fast_naming_the_holder_and_can_be_taken_over() {
    let wd = Workdir::new();
    add_objects(&wd, 0, 1, 2);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let lock = |age: u64| {
        format!(
            r#"{{"host":"etl-7","pid":4242,"started":"then","started_at":{}}}"#,
            now - age
        )
    };
    wd.write("state/interactions.json.lock", lock(600));
    let started = Instant::now();
    let run = wd.run(&args(&[]));
    run.assert_code(1);
    assert!(started.elapsed() < Duration::from_secs(10));
    let text = run.stderr.trim_end();
    assert!(
        text.starts_with(
            "personalize-prep: state/interactions.json: another run holds the lock \
             state/interactions.json.lock (host etl-7, pid 4242, started then, "
        ) && text.ends_with(
            "it may still be running. --lock-timeout DURATION takes over a lock older than \
             that; --break-lock removes it"
        ),
        "{text}"
    );
    assert!(deltas(&wd).is_empty());
    // Younger than the timeout: still held.
    wd.run(&args(&["--lock-timeout", "1h"])).assert_code(1);
    // Older: taken over, with a warning.
    let run = wd.run(&args(&["--lock-timeout", "5m"]));
    run.assert_code(0);
    assert!(
        run.stderr.contains(
            "removed the lock of host etl-7, pid 4242, started then: older than --lock-timeout"
        ),
        "{}",
        run.stderr
    );
    assert!(!wd.path().join("state/interactions.json.lock").exists());
    // --break-lock removes any lock.
    add_objects(&wd, 1, 2, 2);
    wd.write("state/interactions.json.lock", lock(0));
    let run = wd.run(&args(&["--break-lock"]));
    run.assert_code(0);
    assert!(run.stderr.contains("--break-lock"), "{}", run.stderr);
    assert_eq!(all_ids(&wd), expected_ids(0, 2, 2));
}

#[test]
fn since_and_until_select_hour_partitions_or_modification_times() {
    let wd = Workdir::new();
    for (hour, n) in [("19", 0), ("20", 1), ("21", 2)] {
        wd.write(&format!("raw/2024/01/10/{hour}/s-{n}"), object(n, 1));
    }
    let flat = wd.write("raw/flat/s-3", object(3, 1));
    // 2024-01-10T20:30:00Z
    fs::File::options()
        .write(true)
        .open(&flat)
        .unwrap()
        .set_modified(std::time::UNIX_EPOCH + Duration::from_secs(1_704_918_600))
        .unwrap();
    let ids = |extra: &[&str]| {
        let mut a = vec!["convert", "raw", "-o", "-", "-q"];
        a.extend_from_slice(extra);
        let run = wd.run(&a);
        run.assert_code(0);
        run.stdout_text()
            .lines()
            .skip(1)
            .map(|l| l.split(',').nth(1).unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ids(&[
            "--since",
            "2024/01/10/20",
            "--until",
            "2024-01-10T21:00:00Z"
        ]),
        ["i1-0", "i3-0"]
    );
    // An hour partition is in when it overlaps the window.
    assert_eq!(
        ids(&[
            "--since",
            "2024-01-10T20:45:00Z",
            "--until",
            "2024/01/10/22"
        ]),
        ["i1-0", "i2-0"]
    );
    assert_eq!(ids(&["--until", "2024/01/10/20"]), ["i0-0"]);
    let run = wd.run(&["convert", "raw", "-o", "-", "--since", "yesterday"]);
    run.assert_code(2);
    assert_eq!(
        run.stderr,
        "personalize-prep: --since yesterday: expected RFC 3339 (2024-01-10T20:00:00Z) or YYYY/MM/DD/HH\n"
    );
}

#[test]
fn a_large_delta_is_cut_into_run_folders_within_the_import_size() {
    let wd = Workdir::new();
    add_objects(&wd, 0, 10, 40);
    wd.run(&args(&[
        "--max-import-size",
        "3KB",
        "--max-file-size",
        "1200B",
    ]))
    .assert_code(0);
    let folders = deltas(&wd);
    assert!(folders.len() >= 4, "{:?}", folders.keys());
    let first = folders.keys().next().unwrap().clone();
    for (i, (folder, parts)) in folders.iter().enumerate() {
        let expect = if i == 0 {
            first.clone()
        } else {
            format!("{first}-{:03}", i + 1)
        };
        assert_eq!(folder, &expect);
        let mut size = 0;
        for part in parts.keys() {
            let bytes = fs::metadata(wd.path().join(format!("out/interactions/{folder}/{part}")))
                .unwrap()
                .len();
            assert!(bytes <= 1200, "{folder}/{part}: {bytes}");
            size += bytes;
        }
        assert!(size <= 3000, "{folder}: {size}");
        assert!(parts.len() >= 2, "{folder}");
    }
    assert_eq!(all_ids(&wd), expected_ids(0, 10, 40));
    let state = state_json(&wd);
    assert_eq!(
        state["runs"][0]["folders"].as_array().unwrap().len(),
        folders.len()
    );
}

#[test]
fn max_file_size_splits_any_output_into_parts_with_the_header() {
    let wd = Workdir::new();
    add_objects(&wd, 0, 3, 10);
    let run = wd.run(&["convert", "raw", "-o", "one/", "-q"]);
    run.assert_code(0);
    let whole = wd.read("one/interactions.csv");
    wd.run(&[
        "convert",
        "raw",
        "-o",
        "split/",
        "-q",
        "--max-file-size",
        "0.3KB",
    ])
    .assert_code(0);
    let files = wd.files("split");
    assert_eq!(
        files,
        [
            "interactions-00000.csv",
            "interactions-00001.csv",
            "interactions-00002.csv",
            "interactions.avsc"
        ]
    );
    let mut joined = format!("{HEADER}\n");
    for f in &files[..3] {
        let text = wd.read(&format!("split/{f}"));
        assert!(text.len() <= 300, "{f}: {}", text.len());
        joined.push_str(text.strip_prefix(&format!("{HEADER}\n")).unwrap());
    }
    assert_eq!(joined, whole);
    assert_eq!(
        wd.read("split/interactions.avsc"),
        wd.read("one/interactions.avsc")
    );
    // A row that cannot fit.
    let run = wd.run(&["convert", "raw", "-o", "tiny/", "--max-file-size", "40B"]);
    run.assert_code(2);
    assert_eq!(
        run.stderr,
        "personalize-prep: a row of 25 bytes (with the 37-byte header) does not fit in a part of at most 40 bytes: raise --max-file-size or --max-import-size\n"
    );
    assert!(wd.files("tiny").is_empty(), "{:?}", wd.files("tiny"));
}

#[test]
fn a_changed_object_is_reported_not_converted_again() {
    let wd = Workdir::new();
    add_objects(&wd, 0, 2, 2);
    wd.run(&args(&[])).assert_code(0);
    wd.write("raw/2024/01/10/20/stream-0001", object(1, 3));
    let run = wd.run(&args(&[]));
    run.assert_code(0);
    assert_eq!(
        run.stderr,
        "personalize-prep: warning: raw/2024/01/10/20/stream-0001: changed since run \
         {} converted it (size 154 → 231); objects are treated as immutable, so it is not \
         converted again\n"
            .replace("{}", state_json(&wd)["runs"][0]["id"].as_str().unwrap())
    );
    assert_eq!(all_ids(&wd), expected_ids(0, 2, 2));
}

#[test]
fn a_pending_run_whose_object_is_gone_is_a_clear_error() {
    let wd = Workdir::new();
    add_objects(&wd, 0, 2, 2);
    let crash = wd
        .command(&args(&[]))
        .env("PERSONALIZE_PREP_FAILPOINT", "after-pending")
        .output()
        .unwrap();
    assert_eq!(crash.status.code(), None);
    fs::remove_file(wd.path().join("raw/2024/01/10/20/stream-0001")).unwrap();
    let run = wd.run(&args(&[]));
    run.assert_code(1);
    let id = state_json(&wd)["runs"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        run.stderr.ends_with(&format!(
            "personalize-prep: state/interactions.json: run {id} is pending (an earlier run \
             stopped before it was done) and lists raw/2024/01/10/20/stream-0001, which is no \
             longer there; restore it, or remove run {id} from the state to give that run up\n"
        )),
        "{}",
        run.stderr
    );
}

#[test]
fn state_usage_errors() {
    let wd = Workdir::new();
    add_objects(&wd, 0, 1, 1);
    for (args, message) in [
        (
            vec!["convert", "raw", "-o", "x.csv", "--state", "s.json"],
            "--state writes a folder per run: -o DEST must be a folder or prefix",
        ),
        (
            vec!["convert", "raw", "-o", "-", "--max-file-size", "1MB"],
            "--max-file-size splits files: it cannot go with -o -",
        ),
        (
            vec!["convert", "raw", "-o", "o/", "--max-file-size", "1 parsec"],
            "--max-file-size 1 parsec: expected a size such as 500MB, 1GB or 64MiB",
        ),
        (
            vec![
                "convert",
                "raw",
                "-o",
                "o/",
                "--state",
                "s.json",
                "--lock-timeout",
                "soon",
            ],
            "--lock-timeout soon: expected a duration such as 90s, 30m, 2h or 1d",
        ),
    ] {
        let run = wd.run(&args);
        run.assert_code(2);
        assert_eq!(run.stderr, format!("personalize-prep: {message}\n"));
    }
}

#[test]
fn a_dry_run_shows_the_pending_run_and_the_new_objects_and_writes_nothing() {
    let wd = Workdir::new();
    add_objects(&wd, 0, 1, 2);
    let crash = wd
        .command(&args(&[]))
        .env("PERSONALIZE_PREP_FAILPOINT", "after-pending")
        .output()
        .unwrap();
    assert_eq!(crash.status.code(), None);
    fs::remove_file(wd.path().join("state/interactions.json.lock")).unwrap();
    add_objects(&wd, 1, 3, 2);
    let before = wd.files("");
    let run = wd.run(&args(&["--dry-run"]));
    run.assert_code(0);
    let id = state_json(&wd)["runs"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        run.stdout_text(),
        format!(
            "state state/interactions.json: 1 runs, 1 objects converted\n\
             pending run {id} would be redone into out/interactions/{id}: 1 objects\n\
             \x20 raw/2024/01/10/20/stream-0000  154 bytes\n\
             new: 2 objects, 308 bytes\n\
             \x20 raw/2024/01/10/20/stream-0001  154 bytes\n\
             \x20 raw/2024/01/10/20/stream-0002  154 bytes\n"
        )
    );
    assert_eq!(wd.files(""), before);
}

/// A run holding the lock, asleep for `secs` right after recording its
/// run as pending (returned once the state shows it).
fn asleep_after_pending(
    wd: &Workdir,
    secs: u32,
    stderr: std::process::Stdio,
) -> std::process::Child {
    let child = wd
        .command(&args(&[]))
        .env("PERSONALIZE_PREP_FAILPOINT", "after-pending")
        .env("PERSONALIZE_PREP_FAILPOINT_SLEEP", secs.to_string())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let waited = Instant::now();
    while !wd.path().join("state/interactions.json").exists() {
        assert!(
            waited.elapsed() < Duration::from_secs(30),
            "the first run never got going"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

#[test]
fn a_second_run_fails_fast_while_the_first_holds_the_lock() {
    let wd = Workdir::new();
    add_objects(&wd, 0, 3, 5);
    // The first run stops right after recording its run as pending.
    let mut first = asleep_after_pending(&wd, 60, std::process::Stdio::null());
    let started = Instant::now();
    let second = wd.run(&args(&[]));
    second.assert_code(1);
    assert!(started.elapsed() < Duration::from_secs(10));
    let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert!(
        second.stderr.contains(&format!(
            "another run holds the lock state/interactions.json.lock (host {}, pid {}, started ",
            host.trim(),
            first.id()
        )),
        "{}",
        second.stderr
    );
    // Killed, its lock is taken over and its pending run redone.
    first.kill().unwrap();
    first.wait().unwrap();
    let third = wd.run(&args(&[]));
    third.assert_code(0);
    assert!(third.stderr.contains("its process is no longer running"));
    assert_eq!(all_ids(&wd), expected_ids(0, 3, 5));
}

#[test]
fn a_run_whose_rows_did_not_fit_is_redone_under_the_new_limits() {
    let wd = Workdir::new();
    add_objects(&wd, 0, 2, 3);
    // The header alone is over the limit: a usage error, not a crash.
    let run = wd.run(&args(&["--max-file-size", "20B"]));
    run.assert_code(2);
    assert_eq!(
        run.stderr,
        "personalize-prep: the 37-byte header does not fit in a part of at most 20 bytes \
         with a row: raise --max-file-size or --max-import-size\n"
    );
    // A row over the limit leaves the run pending with nothing visible...
    let run = wd.run(&args(&["--max-file-size", "60B"]));
    run.assert_code(2);
    assert!(
        run.stderr.starts_with("personalize-prep: a row of "),
        "{}",
        run.stderr
    );
    let state = state_json(&wd);
    let id = state["runs"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(state["runs"][0]["status"], "pending");
    assert_eq!(state["runs"][0]["max_file_size"], 60);
    assert!(deltas(&wd).is_empty());
    // ...and a rerun with a larger limit redoes it under that limit.
    wd.run(&args(&["--max-file-size", "10MB"])).assert_code(0);
    let state = state_json(&wd);
    assert_eq!(state["runs"].as_array().unwrap().len(), 1);
    assert_eq!(state["runs"][0]["status"], "done");
    assert_eq!(state["runs"][0]["max_file_size"], 10_000_000);
    assert_eq!(deltas(&wd).keys().collect::<Vec<_>>(), [&id]);
    assert_eq!(all_ids(&wd), expected_ids(0, 2, 3));
}

#[test]
fn outputs_of_an_earlier_split_are_removed_and_never_read_back() {
    let wd = Workdir::new();
    add_objects(&wd, 0, 3, 4);
    let convert = |dest: &str, extra: &[&str]| {
        let mut a = vec!["convert", "raw", "-o", dest, "-q"];
        a.extend_from_slice(extra);
        wd.run(&a)
    };
    let removed = |names: &[&str]| -> String {
        names
            .iter()
            .map(|n| {
                format!(
                    "personalize-prep: warning: removed {n}: an earlier run's output, which a \
                     folder import would read besides this one\n"
                )
            })
            .collect()
    };
    convert("out/", &["--max-file-size", "300B"]).assert_code(0);
    let parts = wd.files("out");
    assert!(parts.len() >= 3, "{parts:?}");
    let later: Vec<String> = (1..parts.len() - 1)
        .map(|i| format!("out/interactions-{i:05}.csv"))
        .collect();
    let run = convert("out/", &["--max-file-size", "10MB"]);
    run.assert_code(0);
    let later: Vec<&str> = later.iter().map(String::as_str).collect();
    assert_eq!(run.stderr, removed(&later));
    assert_eq!(
        wd.files("out"),
        ["interactions-00000.csv", "interactions.avsc"]
    );
    let run = convert("out/", &[]);
    run.assert_code(0);
    assert_eq!(run.stderr, removed(&["out/interactions-00000.csv"]));
    assert_eq!(wd.files("out"), ["interactions.avsc", "interactions.csv"]);
    let whole = wd.read("out/interactions.csv");
    let run = convert("out/", &["--max-file-size", "10MB"]);
    assert_eq!(run.stderr, removed(&["out/interactions.csv"]));
    assert_eq!(wd.read("out/interactions-00000.csv"), whole);
    // Parts written inside the source are not read back by the next run.
    for _ in 0..2 {
        convert("raw/out/", &["--max-file-size", "300B"]).assert_code(0);
    }
    let mut joined = String::new();
    for f in wd.files("raw/out").iter().filter(|f| f.ends_with(".csv")) {
        let text = wd.read(&format!("raw/out/{f}"));
        joined.push_str(text.strip_prefix(&format!("{HEADER}\n")).unwrap());
    }
    assert_eq!(wd.files("raw/out"), parts);
    assert_eq!(format!("{HEADER}\n{joined}"), whole);
}

#[test]
fn a_run_whose_lock_was_taken_over_stops_without_saving() {
    let wd = Workdir::new();
    add_objects(&wd, 0, 3, 5);
    // The first run sleeps after recording its run as pending...
    let first = asleep_after_pending(&wd, 3, std::process::Stdio::piped());
    // ...a second one breaks its lock and redoes that run...
    let second = wd.run(&args(&["--break-lock"]));
    second.assert_code(0);
    let done = wd.read("state/interactions.json");
    // ...and the first, awake, finds its lock gone: it saves nothing.
    let out = first.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.ends_with(
            "this run's lock was taken over (it now names no lock at all); stopping without \
             saving the state: the next run redoes what this one did not finish\n"
        ),
        "{stderr}"
    );
    assert_eq!(wd.read("state/interactions.json"), done);
    assert!(!wd.path().join("state/interactions.json.lock").exists());
    assert_eq!(all_ids(&wd), expected_ids(0, 3, 5));
    let state = state_json(&wd);
    assert_eq!(state["runs"].as_array().unwrap().len(), 1);
    assert_eq!(state["runs"][0]["status"], "done");
}
