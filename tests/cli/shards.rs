//! Beyond one machine (SPEC section 12): plan, shards in any order and any
//! number of times, commit byte-identical to a single-machine convert;
//! missing, stale and mismatched shards; the Spark driver in local mode.

use std::fs;
use std::process::Command;
use std::time::Instant;

use crate::workdir::Workdir;

/// `n` objects under `raw/`, with a metadata field that is an integer in
/// the first objects and a decimal in the last one (so the type is only
/// right when every shard's inference is merged), text needing quotes, and
/// concatenated JSON, NDJSON and arrays.
fn events(wd: &Workdir, n: usize) {
    for o in 0..n {
        let price = |r: usize| {
            if o + 1 == n && r == 0 {
                "9.5".to_string()
            } else {
                (o * 10 + r).to_string()
            }
        };
        let records: Vec<String> = (0..6)
            .map(|r| {
                format!(
                    r#"{{"user_id":"u{}","item_id":"i{o}-{r}","event_type":"buy","timestamp":{},"price":{},"note":"a, \"b\" {o}"}}"#,
                    r % 4,
                    1_700_000_000 + o * 10 + r,
                    price(r)
                )
            })
            .collect();
        let body = match o % 3 {
            0 => records.concat(),
            1 => records.join("\n"),
            _ => format!("[{}]", records.join(",")),
        };
        wd.write(
            &format!("raw/2024/01/{:02}/{:02}/events-{o:04}", o % 28 + 1, o % 24),
            body,
        );
    }
}

const MAPPING: [&str; 4] = ["--map", "PRICE=price", "--map", "NOTE=note"];

fn single(wd: &Workdir) {
    let mut args = vec!["convert", "raw", "-o", "single/", "-q"];
    args.extend(MAPPING);
    wd.run(&args).assert_code(0);
}

fn plan(wd: &Workdir, shards: &str) {
    let mut args = vec!["plan", "raw", "-o", "run/", "--shards", shards, "-q"];
    args.extend(MAPPING);
    wd.run(&args).assert_code(0);
}

fn shard(wd: &Workdir, i: usize) {
    wd.run(&["convert", "--plan", "run", "--shard", &i.to_string(), "-q"])
        .assert_code(0);
}

#[test]
fn shards_in_any_order_and_any_number_of_times_commit_to_the_single_run() {
    let wd = Workdir::new();
    events(&wd, 40);
    single(&wd);
    plan(&wd, "4");
    for i in [3, 1, 0, 2, 1] {
        shard(&wd, i);
    }
    let run = wd.run(&["commit", "run", "-o", "assembled/"]);
    run.assert_code(0);
    assert!(
        run.stderr.starts_with("committed 4 shards: 40 objects ("),
        "{}",
        run.stderr
    );
    assert_eq!(
        wd.read("assembled/interactions.csv"),
        wd.read("single/interactions.csv")
    );
    let schema = wd.read("assembled/interactions.avsc");
    assert_eq!(schema, wd.read("single/interactions.avsc"));
    // Only the last shard sees a decimal price: the merged type is double.
    assert!(
        schema.contains(r#"{"name": "PRICE", "type": ["null", "double"]}"#),
        "{schema}"
    );
    // Without -o the parts are the output: a folder import.
    wd.run(&["commit", "run", "-q"]).assert_code(0);
    assert_eq!(
        wd.files("run/parts"),
        [
            "part-00000.csv",
            "part-00001.csv",
            "part-00002.csv",
            "part-00003.csv"
        ]
    );
    assert_eq!(
        wd.read("run/interactions.avsc"),
        wd.read("single/interactions.avsc")
    );
    let header = wd
        .read("single/interactions.csv")
        .lines()
        .next()
        .unwrap()
        .to_string();
    let mut rows = 0;
    for part in wd.files("run/parts") {
        let text = wd.read(&format!("run/parts/{part}"));
        assert!(text.starts_with(&format!("{header}\n")), "{part}");
        rows += text.lines().count() - 1;
    }
    assert_eq!(rows, 240);
    // The plan holds the mapping spelled out and contiguous ranges.
    let plan: serde_json::Value = serde_json::from_str(&wd.read("run/plan.json")).unwrap();
    let ranges: Vec<(u64, u64)> = plan["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["first"].as_u64().unwrap(), s["end"].as_u64().unwrap()))
        .collect();
    assert_eq!(ranges.first().unwrap().0, 0);
    assert_eq!(ranges.last().unwrap().1, 40);
    assert!(ranges.windows(2).all(|w| w[0].1 == w[1].0));
}

#[test]
fn missing_stale_and_mismatched_shards_are_clear_errors() {
    let wd = Workdir::new();
    events(&wd, 9);
    plan(&wd, "3");
    shard(&wd, 0);
    let run = wd.run(&["commit", "run", "-o", "out.csv"]);
    run.assert_code(1);
    assert_eq!(
        run.stderr,
        "personalize-prep: run: shards 1, 2 are not complete (no marker in done/) of 3 shards: \
         run `personalize-prep convert --plan run --shard I` for each\n"
    );
    assert!(!wd.path().join("out.csv").exists());
    shard(&wd, 1);
    shard(&wd, 2);
    // A part changed after its marker: its size or CRC gives it away.
    let part = wd.path().join("run/parts/part-00001.csv");
    let text = fs::read_to_string(&part).unwrap();
    fs::write(&part, text.replacen("u1", "u7", 1)).unwrap();
    let run = wd.run(&["commit", "run", "-o", "out.csv"]);
    run.assert_code(1);
    assert!(
        run.stderr
            .starts_with("personalize-prep: run: parts/part-00001.csv: ")
            && run.stderr.ends_with(": rerun shard 1\n"),
        "{}",
        run.stderr
    );
    assert!(!wd.path().join("out.csv").exists());
    fs::write(&part, text.clone() + "x\n").unwrap();
    let run = wd.run(&["commit", "run", "-o", "out.csv"]);
    run.assert_code(1);
    assert!(
        run.stderr.contains(&format!(
            "parts/part-00001.csv: {} bytes, but its marker says {} bytes; rerun `personalize-prep convert --plan run --shard 1`",
            text.len() + 2,
            text.len()
        )),
        "{}",
        run.stderr
    );
    // A run folder is planned once: parts of two plans never mix.
    let run = wd.run(&["plan", "raw", "-o", "run", "--shards", "2"]);
    run.assert_code(2);
    assert_eq!(
        run.stderr,
        "personalize-prep: run already holds a plan: plan into a new run folder (or remove this one)\n"
    );
    // A marker of another plan is stale.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let mut args = vec!["plan", "raw", "-o", "run3", "--shards", "3", "-q"];
    args.extend(MAPPING);
    wd.run(&args).assert_code(0);
    fs::create_dir_all(wd.path().join("run3/done")).unwrap();
    fs::copy(
        wd.path().join("run/done/part-00000.json"),
        wd.path().join("run3/done/part-00000.json"),
    )
    .unwrap();
    let run = wd.run(&["commit", "run3"]);
    run.assert_code(1);
    assert!(
        run.stderr
            .starts_with("personalize-prep: run3: shard 0 is stale: its marker was made for plan "),
        "{}",
        run.stderr
    );
    // Flags the plan fixes are refused by a shard run, not ignored.
    let run = wd.run(&["convert", "--plan", "run", "--shard", "0", "--dedupe"]);
    run.assert_code(2);
    assert!(
        run.stderr
            .contains("the argument '--plan <RUN>' cannot be used with '--dedupe'"),
        "{}",
        run.stderr
    );
    // A shard the plan does not have.
    let run = wd.run(&["convert", "--plan", "run", "--shard", "3"]);
    run.assert_code(2);
    assert_eq!(
        run.stderr,
        "personalize-prep: --shard 3: the plan has 3 shards (0 to 2)\n"
    );
    let run = wd.run(&["plan", "raw", "-o", "run2/", "--shards", "2", "--dedupe"]);
    run.assert_code(2);
    assert_eq!(
        run.stderr,
        "personalize-prep: --dedupe is not available with shards (plan)\n"
    );
}

/// pyspark from PyPI, installed by scripts/test into target/tools/venv.
fn spark_submit() -> std::path::PathBuf {
    let bin = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tools/venv/bin");
    let submit = bin.join("spark-submit");
    assert!(
        submit.exists(),
        "{} is missing: run scripts/test, which installs pyspark",
        submit.display()
    );
    submit
}

#[test]
#[ignore = "needs pyspark and Java: run scripts/test"]
fn the_spark_job_in_local_mode_is_byte_identical_to_the_single_machine_run() {
    let wd = Workdir::new();
    events(&wd, 200);
    let started = Instant::now();
    single(&wd);
    let single_time = started.elapsed();
    wd.run(&["spark-job", "-o", "driver.py"]).assert_code(0);
    let binary = wd.path().join("personalize-prep");
    fs::copy(crate::workdir::BIN, &binary).unwrap();
    let submit = spark_submit();
    let started = Instant::now();
    let mut cmd = Command::new(&submit);
    cmd.current_dir(wd.path())
        .args(["--master", "local[2]", "--files"])
        .arg(&binary)
        .arg("driver.py")
        .arg("--binary")
        .arg(&binary)
        .args(["--run", "run", "--shards", "8", "--output", "spark/", "--"])
        .args(["raw"])
        .args(MAPPING)
        .env(
            "PATH",
            format!(
                "{}:{}",
                submit.parent().unwrap().display(),
                std::env::var("PATH").unwrap()
            ),
        )
        .env("PYSPARK_PYTHON", submit.parent().unwrap().join("python"))
        .env("SPARK_LOCAL_IP", "127.0.0.1");
    let out = cmd.output().unwrap();
    let spark_time = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "spark-submit failed:\n{stderr}");
    eprintln!(
        "200 objects: single machine {single_time:?}, Spark local[2] {spark_time:?} (JVM start included)"
    );
    assert_eq!(
        wd.read("spark/interactions.csv"),
        wd.read("single/interactions.csv")
    );
    assert_eq!(
        wd.read("spark/interactions.avsc"),
        wd.read("single/interactions.avsc")
    );
    // The executors' logs: every shard ran once, in its first attempt.
    for i in 0..8 {
        let runs = stderr
            .lines()
            .filter(|l| l.starts_with(&format!("personalize-prep-spark: shard {i} attempt ")))
            .collect::<Vec<_>>();
        assert_eq!(runs.len(), 1, "shard {i}: {runs:?}\n{stderr}");
        assert!(
            runs[0].contains(&format!("shard {i} attempt 0 on "))
                && runs[0].contains(": exit 0 in ")
        );
    }
}
