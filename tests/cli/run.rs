//! Behaviour of a run beyond one fixture: outputs are atomic, stdout
//! streams, the order is the same at any parallelism, the dry run writes
//! nothing, and what goes to stderr.

use std::io::Read;
use std::process::Stdio;

use crate::workdir::{Workdir, fixtures_dir};

const SAMPLE_COLUMNS: &str = "ITEM_ID,USER_ID,EVENT_TYPE,EVENT_VALUE,TIMESTAMP";

fn sample_workdir() -> Workdir {
    let wd = Workdir::new();
    wd.copy_tree(&fixtures_dir().join("sample-readme"));
    wd
}

/// Many objects and records, with every JSON shape, some text needing
/// quotes, and records large enough to straddle chunk boundaries.
fn generated_workdir() -> Workdir {
    let wd = Workdir::new();
    for (name, body) in generated_objects() {
        wd.write(&name, body);
    }
    wd
}

/// `generated_workdir`'s objects, gzip (`.gz`), zstd (`.zst`) and plain in
/// turn.
fn compressed_workdir() -> Workdir {
    use std::io::Write;
    let wd = Workdir::new();
    for (file, (name, body)) in generated_objects().into_iter().enumerate() {
        let (name, bytes) = match file % 3 {
            0 => {
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                gz.write_all(body.as_bytes()).unwrap();
                (format!("{name}.gz"), gz.finish().unwrap())
            }
            1 => (
                format!("{name}.zst"),
                zstd::encode_all(body.as_bytes(), 1).unwrap(),
            ),
            _ => (name, body.into_bytes()),
        };
        wd.write(&name, bytes);
    }
    wd
}

fn generated_objects() -> Vec<(String, String)> {
    let mut objects = Vec::new();
    for file in 0..12 {
        let mut body = String::new();
        if file % 3 == 1 {
            body.push('[');
        }
        for i in 0..400 {
            let n = file * 1000 + i;
            let sep = match (file % 3, i) {
                (1, 0) => "",
                (1, _) => ",",
                (2, _) => "\n",
                _ => "",
            };
            body.push_str(&format!(
                "{sep}{{\"user_id\":{},\"itemId\":\"i-{}\",\"ts\":{},\"event_type\":\"view\",\"note\":\"a, \\\"quoted\\\" }}{{ text {}\",\"pad\":\"{}\"}}",
                n % 37,
                n % 101,
                1_600_000_000_000u64 + n as u64,
                n,
                "x".repeat(n % 300)
            ));
        }
        if file % 3 == 1 {
            body.push(']');
        }
        objects.push((format!("input/2024/01/{:02}/part-{file}", file % 4), body));
    }
    objects
}

fn convert_args(extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "convert",
        "input",
        "--map",
        "TIMESTAMP=ts",
        "--map",
        "NOTE=note",
        "-q",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

#[test]
fn output_is_identical_at_any_parallelism_and_chunk_size() {
    let wd = generated_workdir();
    let reference = {
        let args = convert_args(&["--threads", "1", "-o", "-"]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = wd.run(&args);
        run.assert_code(0);
        run.stdout
    };
    let text = String::from_utf8(reference.clone()).unwrap();
    assert_eq!(text.lines().count(), 1 + 12 * 400);
    // Matched reserved fields first, then the --map fields in their order.
    assert_eq!(
        text.lines().next(),
        Some("USER_ID,ITEM_ID,EVENT_TYPE,TIMESTAMP,NOTE")
    );
    // Objects in key order (the folders sort before the file numbers).
    assert!(
        text.lines()
            .nth(1)
            .unwrap()
            .starts_with("0,i-0,view,1600000000,"),
        "{}",
        text.lines().nth(1).unwrap()
    );
    for extra in [
        &["--threads", "2"][..],
        &["--threads", "3", "--chunk-bytes", "1"],
        &["--threads", "2", "--chunk-bytes", "777"],
        &["--threads", "1", "--chunk-bytes", "65536"],
    ] {
        assert!(
            csv_of(&wd, extra) == reference,
            "output differs with {extra:?}"
        );
    }
}

/// The CSV a run over `wd` with `convert_args(extra)` writes to stdout.
fn csv_of(wd: &Workdir, extra: &[&str]) -> Vec<u8> {
    let mut e = extra.to_vec();
    e.extend(["-o", "-"]);
    let args = convert_args(&e);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = wd.run(&args);
    run.assert_code(0);
    run.stdout
}

/// Compressed objects are decompressed beside the workers, several at
/// once: the rows and their order are those of the plain objects.
#[test]
fn compressed_objects_convert_as_plain_ones_at_any_parallelism() {
    let reference = csv_of(&generated_workdir(), &["--threads", "1"]);
    let wd = compressed_workdir();
    for extra in [
        &["--threads", "1"][..],
        &["--threads", "2"],
        &["--threads", "3", "--chunk-bytes", "1"],
        &["--threads", "2", "--chunk-bytes", "777"],
        &["--threads", "8", "--chunk-bytes", "4096"],
    ] {
        assert!(
            csv_of(&wd, extra) == reference,
            "output differs with {extra:?}"
        );
    }
}

/// A compressed object that breaks fails the run at its turn, whatever
/// was decompressed ahead of it: a later broken one is not what is
/// reported, and nothing is written.
#[test]
fn a_broken_compressed_object_fails_the_run_in_its_turn() {
    let wd = compressed_workdir();
    let cut = std::fs::read(wd.path().join("input/2024/01/02/part-6.gz")).unwrap();
    wd.write("input/2024/01/02/part-6.gz", &cut[..cut.len() / 2]);
    wd.write("input/2024/01/03/part-3.gz", "not gzip, though named so");
    for threads in ["1", "2", "3"] {
        let args = convert_args(&["--threads", threads, "-o", "out.csv"]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = wd.run(&args);
        run.assert_code(1);
        assert_eq!(
            run.stderr,
            "personalize-prep: input/2024/01/02/part-6.gz: cannot read at byte 42973 \
             of the decompressed stream: incomplete deflate stream\n",
            "--threads {threads}"
        );
        assert_wrote_nothing(&wd);
    }
}

/// A run of `args` with the failpoint `point` (`NAME:N`) armed, which
/// panics there and fails (exit 1).
fn panicked_run(wd: &Workdir, args: &[&str], point: &str) -> crate::workdir::Run {
    let output = wd
        .command(args)
        .env("PERSONALIZE_PREP_FAILPOINT", point)
        .output()
        .unwrap();
    let run = crate::workdir::run_of(args, output);
    run.assert_code(1);
    assert!(
        run.stderr.contains("panicked at src/failpoint.rs"),
        "{point}\n{}",
        run.describe()
    );
    run
}

/// Nothing but the input is in `wd`: no output, no temporary file.
fn assert_wrote_nothing(wd: &Workdir) {
    let written: Vec<String> = wd
        .files(".")
        .into_iter()
        .filter(|f| !f.starts_with("input/"))
        .collect();
    assert!(written.is_empty(), "{written:?}");
}

/// A bug that panics in a thread decompressing an object ahead fails the
/// run, at that object's turn, and nothing is written.
#[test]
fn a_panic_while_decompressing_fails_the_run_and_writes_nothing() {
    let wd = compressed_workdir();
    for nth in ["1", "4", "40"] {
        let args = convert_args(&["--threads", "2", "--chunk-bytes", "4096", "-o", "out.csv"]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = panicked_run(&wd, &args, &format!("inflate-panic:{nth}"));
        let last = run.stderr.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("personalize-prep: input/2024/01/")
                && last.ends_with(": internal: decompressing a chunk panicked"),
            "inflate-panic:{nth}\n{}",
            run.describe()
        );
        assert_wrote_nothing(&wd);
    }
}

#[test]
fn a_failed_run_leaves_the_previous_output_and_no_temporary_file() {
    let wd = sample_workdir();
    wd.write("out/interactions.csv", "previous\n");
    wd.write("out/interactions.avsc", "previous schema\n");
    wd.write(
        "input/useritem/2019/01/10/21/zz-broken",
        "{\"USER_ID\": 1, \"ITEM_ID\": ",
    );
    let run = wd.run(&["convert", "input", "-o", "out/"]);
    run.assert_code(1);
    assert_eq!(wd.read("out/interactions.csv"), "previous\n");
    assert_eq!(wd.read("out/interactions.avsc"), "previous schema\n");
    assert_eq!(wd.files("out"), ["interactions.avsc", "interactions.csv"]);
    assert_eq!(
        run.stderr,
        "personalize-prep: input/useritem/2019/01/10/21/zz-broken: byte 0: \
         truncated JSON: the input ends before a value (reading \"ITEM_ID\")\n"
    );
}

/// A bug that panics in a decoding thread, reading a chunk or converting
/// it, fails the run as an error does (rather than leave the writer
/// waiting for that chunk), whichever chunk and thread it hits, and
/// nothing is written.
#[test]
fn a_panic_while_decoding_fails_the_run_and_writes_nothing() {
    let wd = sample_workdir();
    wd.write("out/interactions.csv", "previous\n");
    for (point, doing) in [("read-panic", "reading"), ("decode-panic", "decoding")] {
        for (nth, threads) in [("1", "1"), ("3", "2"), ("5", "3")] {
            let args = [
                "convert",
                "input",
                "-o",
                "out/",
                "-q",
                "--chunk-bytes",
                "64",
                "--threads",
                threads,
            ];
            let run = panicked_run(&wd, &args, &format!("{point}:{nth}"));
            // The object of the chunk that panicked: which one depends on
            // the threads' timing.
            let last = run.stderr.lines().last().unwrap_or_default();
            assert!(
                last.starts_with("personalize-prep: input/useritem/2019/01/10/")
                    && last.ends_with(&format!(": internal: {doing} a chunk panicked")),
                "{point}:{nth}\n{}",
                run.describe()
            );
            assert_eq!(wd.read("out/interactions.csv"), "previous\n");
            assert_eq!(wd.files("out"), ["interactions.csv"]);
        }
    }
}

#[test]
fn a_killed_runs_leftover_is_removed_by_the_next_run() {
    let wd = sample_workdir();
    wd.write(
        "out/.interactions.csv.personalize-prep-tmp-99999",
        "half a file",
    );
    let run = wd.run(&["convert", "input", "-o", "out/", "-q"]);
    run.assert_code(0);
    assert_eq!(wd.files("out"), ["interactions.avsc", "interactions.csv"]);
}

#[test]
fn stdout_carries_the_csv_and_nothing_else() {
    let wd = sample_workdir();
    let run = wd.run(&[
        "convert",
        "input",
        "--columns",
        SAMPLE_COLUMNS,
        "-o",
        "-",
        "-q",
    ]);
    run.assert_code(0);
    let want =
        std::fs::read_to_string(fixtures_dir().join("sample-readme/expected/interactions.csv"))
            .unwrap();
    assert_eq!(run.stdout_text(), want);
    assert_eq!(run.stderr, "");
    assert!(wd.files("out").is_empty());
}

#[test]
fn a_closed_stdout_pipe_ends_the_run_quietly() {
    let wd = generated_workdir();
    let args = convert_args(&["-o", "-"]);
    let mut child = wd
        .command(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 16];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    // The pipe is closed here, like `| head -c 16`.
    let output = child.wait_with_output().unwrap();
    assert_eq!(&first, b"USER_ID,ITEM_ID,");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stderr), "");
}

#[test]
fn dry_run_lists_objects_and_mapping_and_writes_nothing() {
    let wd = sample_workdir();
    let run = wd.run(&[
        "convert",
        "input",
        "--map",
        "SOURCE_TYPE=type",
        "-o",
        "out/",
        "--dry-run",
    ]);
    run.assert_code(0);
    assert_eq!(
        run.stdout_text(),
        "1 object, 1406 bytes\n  \
         input/useritem/2019/01/10/20/useritem-stream-1-2019-01-10-20-34-04-5c1a8f0e-2b7d-4e6a-9c3f-1d2e3f4a5b6c  1406 bytes  json\n\
         mapping (interactions):\n  \
         USER_ID     <- USER_ID  string  (matched by name)\n  \
         ITEM_ID     <- ITEM_ID  string  (matched by name)\n  \
         TIMESTAMP   <- TIMESTAMP  long  (matched by name)\n  \
         EVENT_TYPE  <- EVENT_TYPE  string  (matched by name)\n  \
         EVENT_VALUE <- EVENT_VALUE  [\"null\", \"float\"]  (matched by name)\n  \
         SOURCE_TYPE <- type  inferred, categorical  (--map)\n\
         outputs: out/interactions.csv, out/interactions.avsc\n"
    );
    assert!(wd.files("out").is_empty());
}

#[test]
fn summary_names_counts_and_outputs() {
    let wd = sample_workdir();
    let run = wd.run(&["convert", "input", "-o", "out/events.csv"]);
    run.assert_code(0);
    let (first, rest) = run.stderr.split_once(" in ").expect(&run.stderr);
    assert_eq!(
        first,
        "converted 1 object (1406 bytes), 12 records read, 12 rows written, 0 rejected"
    );
    // Then the output check: the small sample is below the training minimums.
    assert!(
        rest.ends_with(
            " MB/s)\n  outputs: out/events.csv, out/events.avsc\n\
             personalize-prep: warning[min-interactions]: 12 interactions; training needs at least 1,000\n\
             personalize-prep: warning[min-users-with-2]: 1 users with at least 2 interactions; \
             training needs at least 25 (\"Dataset has fewer than 25 users with at least 2 interactions each\")\n"
        ),
        "{rest}"
    );
    assert_eq!(wd.files("out"), ["events.avsc", "events.csv"]);
}

#[test]
fn verbose_logs_each_object_and_progress_always_draws_a_bar() {
    let wd = sample_workdir();
    let run = wd.run(&["convert", "input", "-o", "out/", "-v", "-q"]);
    run.assert_code(0);
    assert!(
        run.stderr.contains("personalize-prep: debug: input/useritem/2019/01/10/20/useritem-stream-1-2019-01-10-20-34-04-5c1a8f0e-2b7d-4e6a-9c3f-1d2e3f4a5b6c: 1406 bytes, json (none)\n"),
        "{}",
        run.stderr
    );
    let quiet = wd.run(&["convert", "input", "-o", "out/", "--progress", "never"]);
    assert!(!quiet.stderr.contains('\r'));
    let bar = wd.run(&["convert", "input", "-o", "out/", "--progress", "always"]);
    bar.assert_code(0);
    assert!(
        bar.stderr
            .starts_with("personalize-prep: progress: 1/1 objects, 12 rows, 1406 bytes\n"),
        "{}",
        bar.stderr
    );
}

#[test]
fn schema_command_reads_no_data() {
    let wd = Workdir::new();
    let run = wd.run(&[
        "schema",
        "--dataset",
        "items",
        "--map",
        "GENRES=genres",
        "--map",
        "PRICE=price",
        "--type",
        "PRICE=float",
        "--map",
        "DESCRIPTION=text",
        "--textual",
        "DESCRIPTION",
    ]);
    run.assert_code(0);
    assert_eq!(
        run.stdout_text(),
        r#"{
  "type": "record",
  "name": "Items",
  "namespace": "com.amazonaws.personalize.schema",
  "fields": [
    {"name": "ITEM_ID", "type": "string"},
    {"name": "GENRES", "type": ["null", "string"], "categorical": true},
    {"name": "PRICE", "type": ["null", "float"]},
    {"name": "DESCRIPTION", "type": ["null", "string"], "textual": true}
  ],
  "version": "1.0"
}
"#
    );
    let run = wd.run(&[
        "schema",
        "--dataset",
        "users",
        "--map",
        "AGE=age",
        "-o",
        "users.avsc",
    ]);
    run.assert_code(0);
    assert!(
        wd.read("users.avsc").contains(
            "{\"name\": \"AGE\", \"type\": [\"null\", \"string\"], \"categorical\": true}"
        )
    );
}

#[test]
fn usage_errors_exit_2_before_reading() {
    let wd = Workdir::new();
    for (args, want) in [
        (
            &["convert", "nowhere", "-o", "out/", "--textual", "X"][..],
            "personalize-prep: --textual X: textual fields exist only in the items dataset\n",
        ),
        (
            &["convert", "nowhere", "-o", "out/", "--map", "USER_ID"],
            "personalize-prep: --map USER_ID: expected FIELD=PATH, e.g. --map USER_ID=user.id\n",
        ),
        (
            &["convert", "nowhere", "-o", "out/", "--delimiter", "\n"],
            "personalize-prep: --delimiter \"\\n\": expected one ASCII character other than a quote or a line end (or tab)\n",
        ),
        (
            &["convert", "nowhere", "-o", "out/", "--type", "USER_ID=int"],
            "personalize-prep: --type USER_ID: USER_ID is a reserved field of interactions with a fixed type\n",
        ),
        (
            &["schema", "--columns", "USER_ID,ITEM_ID"],
            "personalize-prep: --columns: TIMESTAMP is required in interactions and must be listed\n",
        ),
        (
            &["schema", "--map", "2x=y"],
            "personalize-prep: --map 2x=y: \"2x\" is not a valid field name (letters, digits and _, not starting with a digit)\n",
        ),
    ] {
        let run = wd.run(args);
        run.assert_code(2);
        assert_eq!(run.stderr, want);
    }
    let run = wd.run(&["convert", "-o", "out/"]);
    run.assert_code(2);
    assert_eq!(
        run.stderr,
        "personalize-prep: no SOURCE given (on the command line or in --config)\n"
    );
}

#[test]
fn a_missing_source_is_a_run_error() {
    let wd = Workdir::new();
    let run = wd.run(&["convert", "nowhere", "-o", "out/"]);
    run.assert_code(1);
    assert_eq!(
        run.stderr,
        "personalize-prep: nowhere: cannot read the source: No such file or directory (os error 2)\n"
    );
}

#[test]
fn flags_win_over_the_config_file() {
    let wd = Workdir::new();
    wd.copy_tree(&fixtures_dir().join("config-file"));
    let run = wd.run(&[
        "convert",
        "--config",
        "prep.toml",
        "--map",
        "TITLE=sku",
        "--csv-dialect",
        "rfc4180",
        "-o",
        "-",
        "-q",
    ]);
    run.assert_code(0);
    assert_eq!(
        run.stdout_text(),
        "ITEM_ID,PRICE,GENRES,TITLE,CREATION_TIMESTAMP\n\
         a-1,12.5,home|kitchen,a-1,1704164645\n\
         a-2,7,home,a-2,1704164645\n"
    );
    assert!(
        wd.files("out").is_empty(),
        "-o from the flag replaces the file's output"
    );
}

#[test]
fn inspect_suggests_a_config_that_converts_the_data() {
    // The fixture whose `inspect --json` is asserted exactly.
    let wd = Workdir::new();
    wd.copy_tree(&fixtures_dir().join("inspect-json"));
    let suggest = wd.run(&["inspect", "input", "--suggest"]);
    suggest.assert_code(0);
    let config = suggest.stdout_text();
    assert!(
        config.contains("\n[[field]]\nname = \"USER_ID\"\npath = \"USER_ID\"\n"),
        "{config}"
    );
    assert!(
        config.contains("\n# [[field]]\n# name = \"TYPE\"\n# path = \"type\"\n"),
        "{config}"
    );
    wd.write("prep.toml", &suggest.stdout);
    let run = wd.run(&["convert", "--config", "prep.toml", "-q"]);
    run.assert_code(0);
    let sample =
        std::fs::read_to_string(fixtures_dir().join("sample-readme/expected/interactions.csv"))
            .unwrap();
    // The sample's rows in the documented column order, then the extra record.
    let mut want = String::from("USER_ID,ITEM_ID,TIMESTAMP,EVENT_TYPE,EVENT_VALUE\n");
    for line in sample.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        want.push_str(&format!("{},{},{},{},{}\n", f[1], f[0], f[4], f[2], f[3]));
    }
    want.push_str("u2,i9,1547159644,view,\n");
    assert_eq!(wd.read("out/interactions.csv"), want);
    let text = wd.run(&["inspect", "input", "--sample", "2"]);
    text.assert_code(0);
    assert!(
        text.stdout_text()
            .starts_with("2 objects (2 json), 1537 bytes, 3 records\n"),
        "{}",
        text.stdout_text()
    );
}

/// A CSV object that starts with blank lines, and its rows.
pub(crate) const CSV_AFTER_BLANKS: &str =
    "\n\r\nUSER_ID,ITEM_ID,TIMESTAMP\nu1,i1,1700000000\n\nu2,i2,1700000001\n";

/// What `convert` makes of `CSV_AFTER_BLANKS`.
pub(crate) const CSV_AFTER_BLANKS_ROWS: &str =
    "USER_ID,ITEM_ID,TIMESTAMP\nu1,i1,1700000000\nu2,i2,1700000001\n";

#[test]
fn a_csv_starting_with_blank_lines_finds_its_header_at_any_chunk_size() {
    // A first chunk of nothing but blank lines holds no header: it is in
    // the next one (it was taken as a header of no columns).
    let wd = Workdir::new();
    wd.write("in/events.csv", CSV_AFTER_BLANKS);
    // Tabs as well: the delimiter is found on the header, past the blanks.
    wd.write("in/more.tsv", CSV_AFTER_BLANKS.replace(',', "\t"));
    for size in ["1", "2", "3", "4", "5", "8", "64", "1048576"] {
        for threads in ["1", "2"] {
            let args = [
                "convert",
                "in",
                "--chunk-bytes",
                size,
                "--threads",
                threads,
                "-o",
                "-",
                "-q",
            ];
            let run = wd.run(&args);
            run.assert_code(0);
            let rows = CSV_AFTER_BLANKS_ROWS.to_string() + &CSV_AFTER_BLANKS_ROWS[26..];
            assert_eq!(
                run.stdout_text(),
                rows,
                "chunks of {size}, {threads} threads"
            );
        }
    }
}

#[test]
fn csv_output_is_identical_at_any_chunk_size_even_with_stray_quotes() {
    let wd = Workdir::new();
    let mut body = String::from("user_id,item_id,timestamp,note\n");
    for i in 0..300 {
        let note = match i % 4 {
            0 => "5\" tv".to_string(),
            1 => format!("\"multi\nline, \"\"{i}\"\"\""),
            2 => "x\"".to_string(),
            _ => format!("plain {i}"),
        };
        body.push_str(&format!(
            "u{i},{}.0,{},{note}\r\n",
            i % 7,
            1_700_000_000 + i
        ));
    }
    wd.write("in/events.csv", body);
    let run = |extra: &[&str]| {
        let mut args = vec!["convert", "in", "--map", "NOTE=note", "-o", "-", "-q"];
        args.extend_from_slice(extra);
        let run = wd.run(&args);
        run.assert_code(0);
        run.stdout_text()
    };
    let reference = run(&["--threads", "1"]);
    assert_eq!(
        reference.lines().count(),
        1 + 300,
        "a multi-line note stays one row"
    );
    assert!(
        reference.starts_with("USER_ID,ITEM_ID,TIMESTAMP,NOTE\nu0,0.0,1700000000,\"5\\\" tv\"\nu1,1.0,1700000001,\"multi line, \\\"1\\\"\"\n"),
        "{}",
        &reference[..200]
    );
    for size in ["1", "13", "100", "4096"] {
        assert_eq!(
            run(&["--threads", "2", "--chunk-bytes", size]),
            reference,
            "chunks of {size}"
        );
    }
}

#[test]
fn a_dest_inside_its_source_is_not_read_back() {
    let wd = sample_workdir();
    for _ in 0..2 {
        let run = wd.run(&["convert", "input", "-o", "input/", "-q"]);
        run.assert_code(0);
    }
    assert_eq!(wd.read("input/interactions.csv").lines().count(), 13);
    // Nor through a link to the folder: the same file by another name.
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink("input", wd.path().join("link")).unwrap();
        let run = wd.run(&["convert", "link", "-o", "input/", "-q"]);
        run.assert_code(0);
        assert_eq!(wd.read("input/interactions.csv").lines().count(), 13);
    }
}

#[test]
fn a_failed_run_leaves_no_folder_it_created() {
    let wd = Workdir::new();
    wd.write("in/a.json", r#"{"user_id":1}"#);
    let run = wd.run(&["convert", "in", "-o", "new/sub/"]);
    run.assert_code(1);
    assert!(!wd.path().join("new").exists());
    let run = wd.run(&["convert", "in", "-o", "s3://only-a-bucket.csv"]);
    run.assert_code(2);
    assert_eq!(
        run.stderr,
        "personalize-prep: -o s3://only-a-bucket.csv: the URL names a bucket, not a file; use \
         s3://only-a-bucket.csv/ for a prefix or add a key such as \
         s3://only-a-bucket.csv/interactions.csv\n"
    );
}

#[test]
fn explicit_categorical_makes_a_string_and_a_config_needs_no_required_fields() {
    let wd = Workdir::new();
    wd.write(
        "u.json",
        r#"{"user_id":"a","age":3,"tier":7,"tags":["x","y"]}"#,
    );
    wd.write(
        "u.toml",
        "dataset = \"users\"\n[[field]]\nname = \"AGE\"\npath = \"age\"\n",
    );
    let run = wd.run(&[
        "convert",
        "u.json",
        "--config",
        "u.toml",
        "--map",
        "TIER=tier",
        "--categorical",
        "TIER",
        "--map",
        "TAGS=tags",
        "--not-categorical",
        "TAGS",
        "-o",
        "out/",
        "-q",
    ]);
    run.assert_code(1);
    // --not-categorical: a list is not joined into one plain string.
    assert_eq!(
        run.stderr,
        "personalize-prep: u.json: byte 0: TAGS: an array where a single value is required\n"
    );
    let run = wd.run(&[
        "convert",
        "u.json",
        "--config",
        "u.toml",
        "--map",
        "TIER=tier",
        "--categorical",
        "TIER",
        "-o",
        "out/",
        "-q",
    ]);
    run.assert_code(0);
    assert_eq!(wd.read("out/users.csv"), "USER_ID,AGE,TIER\na,3,7\n");
    assert!(
        wd.read("out/users.avsc").contains(
            "{\"name\": \"TIER\", \"type\": [\"null\", \"string\"], \"categorical\": true}"
        )
    );
}

#[test]
fn a_clean_dataset_meets_every_custom_rule() {
    // 1,200 interactions, 40 users with 30 each: every minimum is met.
    let wd = Workdir::new();
    wd.copy_tree(&fixtures_dir().join("validate-domain-ecommerce"));
    let run = wd.run(&[
        "validate",
        "input/interactions.csv",
        "--schema",
        "input/interactions.avsc",
        "--strict",
    ]);
    run.assert_code(0);
    assert_eq!(
        run.stdout_text(),
        "input/interactions.csv: read with no escaped quotes (both dialects read it alike)\n\
         0 errors, 0 warnings\n"
    );
}

#[test]
fn an_output_on_stdout_is_checked_too() {
    let wd = Workdir::new();
    let long = "x".repeat(1001);
    wd.write(
        "e.json",
        format!(r#"{{"user_id":"a","item_id":"1","timestamp":1,"tag":"{long}"}}"#),
    );
    let run = wd.run(&["convert", "e.json", "--map", "TAG=tag", "-o", "-", "-q"]);
    run.assert_code(3);
    assert_eq!(
        run.stderr,
        "personalize-prep: error[categorical-length]: TAG: a value over 1,000 characters \
         (separators included); the import job fails\n  at <stdout>:2:4\n"
    );
    assert_eq!(
        run.stdout_text().lines().count(),
        2,
        "the rows are written anyway"
    );
}

#[test]
fn skipping_keeps_every_good_record_around_bad_ones() {
    let wd = Workdir::new();
    let good = |i: u32| {
        format!(r#"{{"USER_ID":"u{i}","ITEM_ID":"i{i}","TIMESTAMP":{i},"EVENT_TYPE":"click"}}"#)
    };
    // A bad first record, and a bad one holding an object that looks like a record.
    let body = format!(
        "{{\"USER_ID\":\"u0\",oops}}\n{}\n{{\"USER_ID\":\"u2\",\"ITEM_ID\":bad,\"extra\":{}}}\n{}\n",
        good(1),
        good(9),
        good(3)
    );
    wd.write("e.json", body);
    let run = wd.run(&[
        "convert",
        "e.json",
        "--on-error",
        "skip",
        "-o",
        "out.csv",
        "-q",
    ]);
    run.assert_code(0);
    assert_eq!(
        wd.read("out.csv"),
        "USER_ID,ITEM_ID,TIMESTAMP,EVENT_TYPE\nu1,i1,1,click\nu3,i3,3,click\n"
    );
}

#[test]
fn the_check_reads_an_rfc4180_output_in_its_dialect() {
    let wd = Workdir::new();
    wd.write(
        "e.json",
        r#"{"u":"u1","i":"i1","t":1,"NOTE":"say \\\"hi\\\", ok"}"#,
    );
    let run = wd.run(&[
        "convert",
        "e.json",
        "--map",
        "USER_ID=u",
        "--map",
        "ITEM_ID=i",
        "--map",
        "TIMESTAMP=t",
        "--map",
        "NOTE=NOTE",
        "--csv-dialect",
        "rfc4180",
        "-o",
        "out.csv",
        "-q",
    ]);
    run.assert_code(0);
    assert_eq!(
        wd.read("out.csv"),
        "USER_ID,ITEM_ID,TIMESTAMP,NOTE\nu1,i1,1,\"say \\\"\"hi\\\"\", ok\"\n"
    );
}

#[test]
fn the_check_made_while_converting_finds_what_validate_finds() {
    // Timestamps left in milliseconds (a warning on every row) and a value
    // over 1,000 characters now and then (an error): with one record per
    // chunk, the line numbers must add up across chunks.
    let wd = Workdir::new();
    let mut body = String::new();
    for i in 0..60 {
        let tag = if i % 17 == 5 {
            "t".repeat(1001)
        } else {
            format!("tag-{}", i % 4)
        };
        let note = if i % 3 == 0 {
            "two\\nlines"
        } else {
            "one line"
        };
        body.push_str(&format!(
            "{{\"user_id\":\"u{}\",\"item_id\":\"i{i}\",\"ts\":{},\"event_type\":\"view\",\"tag\":\"{tag}\",\"note\":\"{note}\"}}",
            i % 7,
            1_600_000_000_000u64 + i
        ));
    }
    wd.write("input/events.json", body);
    let mut reference: Option<String> = None;
    for extra in [
        &["--threads", "1"][..],
        &["--threads", "2", "--chunk-bytes", "1"],
    ] {
        let mut args = vec![
            "convert",
            "input",
            "--map",
            "TIMESTAMP=ts",
            "--map",
            "TAG=tag",
            "--map",
            "NOTE=note",
            "--timestamp-unit",
            "s",
            "-o",
            "out/",
        ];
        args.extend(extra);
        let run = wd.run(&args);
        run.assert_code(3);
        let found: String = run
            .stderr
            .lines()
            .filter(|l| !l.starts_with("converted ") && !l.starts_with("  outputs:"))
            .map(|l| format!("{}\n", l.strip_prefix("personalize-prep: ").unwrap_or(l)))
            .collect();
        match &reference {
            None => reference = Some(found),
            Some(r) => assert_eq!(&found, r, "with {extra:?}"),
        }
    }
    let reference = reference.unwrap();
    let validated = wd.run(&[
        "validate",
        "out/interactions.csv",
        "--schema",
        "out/interactions.avsc",
    ]);
    validated.assert_code(3);
    let text = validated.stdout_text();
    let findings: Vec<&str> = text.lines().skip(1).collect();
    let findings = findings[..findings.len() - 1].join("\n") + "\n";
    assert_eq!(reference, findings);
    assert!(
        reference.contains(
            "error[categorical-length]: TAG: a value over 1,000 characters (separators included); the import job fails\n  at out/interactions.csv:7:5\n  at out/interactions.csv:24:5\n  at out/interactions.csv:41:5\n  (4 in all)\n"
        ),
        "{reference}"
    );
    assert!(
        reference.contains("  at out/interactions.csv:2:4\n  at out/interactions.csv:3:4\n  at out/interactions.csv:4:4\n  (60 in all)\n"),
        "{reference}"
    );
}

#[test]
fn guessed_chunk_ends_change_nothing_even_on_mixed_and_broken_input() {
    // Boundaries are guessed once the first record is read, from the
    // first object's second chunk on: text holding `}{` makes wrong
    // guesses, a top-level array between objects has no `}{` for a while,
    // and bad records (one straddling a `}{` in its text) are set aside.
    // Every chunk size must give what whole objects give, whether the
    // object comes first or second.
    for first in [true, false] {
        guessed_chunk_ends_change_nothing(first);
    }
}

fn guessed_chunk_ends_change_nothing(first: bool) {
    let wd = Workdir::new();
    write_guess_breaking(&wd, first);
    let run = |extra: &[&str]| skipping(&wd, extra);
    let (rows, rejects) = run(&[]);
    assert_eq!(rows.lines().count(), 1 + usize::from(!first) + 140);
    assert!(!rows.contains("FAKE"), "{rows}");
    assert_eq!(rejects.lines().count(), 2, "{rejects}");
    for size in ["1", "7", "40", "100", "150", "333", "1000"] {
        for threads in ["1", "2"] {
            let got = run(&["--chunk-bytes", size, "--threads", threads]);
            assert!(
                got == (rows.clone(), rejects.clone()),
                "first {first}, chunk bytes {size}, threads {threads}:\n{}\n{}",
                got.0,
                got.1
            );
        }
    }
}

/// Writes `input/b.json`, 140 records whose text makes guessed chunk ends
/// wrong, some in a top-level array, with two bad records (one straddling
/// a `}{` in its text); with `first` false, `input/a.json` before it.
pub(crate) fn write_guess_breaking(wd: &Workdir, first: bool) {
    if !first {
        wd.write(
            "input/a.json",
            r#"{"user_id":"u0","item_id":"i0","ts":1600000000,"note":"x"}"#,
        );
    }
    let record = |i: usize| {
        format!(
            r#"{{"user_id":"u{}","item_id":"i{i}","ts":{},"note":"a }}{{ b }}{{ {}"}}"#,
            i % 7,
            1_600_000_000 + i,
            "z".repeat(i % 50)
        )
    };
    let mut body = String::new();
    for i in 0..40 {
        body.push_str(&record(i));
    }
    body.push_str("\n[");
    for i in 40..80 {
        if i > 40 {
            body.push(',');
        }
        body.push_str(&record(i));
    }
    body.push_str("]\n");
    body.push_str(r#"{"user_id":"bad","item_id":"x","ts":tru,"note":"a}{b","n":{"user_id":"FAKE","item_id":"f","ts":1}}"#);
    for i in 80..120 {
        body.push_str(&record(i));
    }
    body.push_str(r#"{"user_id":"u1","item_id":"i1","ts":"never"}"#);
    for i in 120..140 {
        body.push_str(&record(i));
    }
    wd.write("input/b.json", body);
}

/// Rows and rejects of `convert input` with bad records skipped, and
/// `extra` arguments.
fn skipping(wd: &Workdir, extra: &[&str]) -> (String, String) {
    let args = skipping_args("input", extra);
    let run = wd.run(&args);
    run.assert_code(0);
    (run.stdout_text(), wd.read("rejects.ndjson"))
}

/// The arguments converting `source` to stdout with bad records skipped
/// into `rejects.ndjson`, and `extra` ones.
pub(crate) fn skipping_args<'a>(source: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "convert",
        source,
        "--map",
        "TIMESTAMP=ts",
        "--on-error",
        "skip",
        "--rejects",
        "rejects.ndjson",
        "-o",
        "-",
        "-q",
    ];
    args.extend(extra);
    args
}

#[test]
fn a_record_that_never_closes_is_read_as_in_one_chunk() {
    // A quote missing in a record near the start of a run's one object:
    // by bracket balance that record never ends, so every guessed chunk
    // end after it looks like a cut record. Carried on from chunk to
    // chunk, it must come out as when the object is read whole.
    const ROWS_AFTER_BROKEN: usize = 119;
    let wd = Workdir::new();
    let mut body = String::new();
    for i in 0..120 {
        if i == 5 {
            body.push_str(r#"{"user_id":"u5,"item_id":"broken","ts":1600000005}"#);
            continue;
        }
        // Before it, text that makes guessed chunk ends wrong; after it,
        // no bracket in any text, so that the broken record never ends.
        let note = if i < 5 { r#"a }{ \" b"# } else { "plain" };
        body.push_str(&format!(
            r#"{{"user_id":"u{}","item_id":"i{i}","ts":{},"note":"{note}"}}"#,
            i % 7,
            1_600_000_000 + i
        ));
        body.push('\n');
    }
    wd.write("input/a.json", body);
    let run = |extra: &[&str]| skipping(&wd, extra);
    let whole = run(&[]);
    assert_eq!(
        whole.0.lines().count(),
        1 + ROWS_AFTER_BROKEN,
        "{}",
        whole.0
    );
    assert_eq!(whole.1.lines().count(), 1, "{}", whole.1);
    for size in ["1", "50", "200", "1000"] {
        for threads in ["1", "2"] {
            let got = run(&["--chunk-bytes", size, "--threads", threads]);
            assert!(
                got == whole,
                "chunk bytes {size}, threads {threads}:\n{}\n{}",
                got.0,
                got.1
            );
        }
    }
}

#[test]
fn a_field_inferred_as_a_number_is_not_held_to_the_string_limits() {
    // The workers check rows before types are settled; a field that ends
    // up a number must not keep the string rules' findings.
    let wd = Workdir::new();
    wd.write(
        "input/a.json",
        format!(
            r#"{{"user_id":"u","item_id":"i","ts":1600000000,"n":1{}}}{{"user_id":"u","item_id":"i","ts":1600000001,"n":5}}"#,
            "2".repeat(1500)
        ),
    );
    let run = wd.run(&[
        "convert",
        "input",
        "--map",
        "TIMESTAMP=ts",
        "--map",
        "N=n",
        "-o",
        "out/",
        "-q",
    ]);
    run.assert_code(0);
    assert_eq!(run.stderr, "");
    let validated = wd.run(&[
        "validate",
        "out/interactions.csv",
        "--schema",
        "out/interactions.avsc",
    ]);
    validated.assert_code(0);
}
