//! Object storage against real servers on 127.0.0.1 that `scripts/test`
//! installs and starts: SeaweedFS (S3), Azurite (Azure Blob) and
//! fake-gcs-server (GCS, reads only). Without them these tests are ignored
//! by a plain `cargo test`, never reported as passing; `scripts/test` runs
//! them with `--include-ignored`, and then a missing server is a failure.

use std::fs;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::proxy::{FaultProxy, Faults};
use crate::workdir::{Run, Workdir, fixtures_dir, run_of};

const SAMPLE_COLUMNS: &str = "ITEM_ID,USER_ID,EVENT_TYPE,EVENT_VALUE,TIMESTAMP";
const NEEDS_SERVERS: &str = "needs the object-store servers: run scripts/test";

fn server_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: {NEEDS_SERVERS}"))
}

fn s3_endpoint() -> String {
    server_env("PP_TEST_S3_ENDPOINT")
}

fn bucket() -> String {
    server_env("PP_TEST_S3_BUCKET")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A fresh key prefix, so tests sharing the bucket never meet.
fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{name}-{}-{nanos}", std::process::id())
}

fn test_store() -> AmazonS3 {
    AmazonS3Builder::new()
        .with_endpoint(s3_endpoint())
        .with_allow_http(true)
        .with_bucket_name(bucket())
        .with_region("us-east-1")
        .with_access_key_id("testkey")
        .with_secret_access_key("testsecret")
        .build()
        .unwrap()
}

/// Uploads every file under `dir` to `prefix/`, 32 at a time.
fn upload_tree(store: &AmazonS3, dir: &std::path::Path, prefix: &str) {
    let wd = Workdir::new();
    wd.copy_tree(dir);
    let files = wd.files("");
    runtime().block_on(async {
        futures::stream::iter(files)
            .map(|f| {
                let body = fs::read(wd.path().join(&f)).unwrap();
                let path = StorePath::from(format!("{prefix}/{f}"));
                async move { store.put(&path, body.into()).await.unwrap() }
            })
            .buffer_unordered(32)
            .collect::<Vec<_>>()
            .await;
    });
}

fn get_object(store: &AmazonS3, key: &str) -> Option<Vec<u8>> {
    runtime().block_on(async {
        match store.get(&StorePath::from(key)).await {
            Ok(r) => Some(r.bytes().await.unwrap().to_vec()),
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => panic!("{key}: {e}"),
        }
    })
}

fn put_object(store: &AmazonS3, key: &str, body: &[u8]) {
    runtime()
        .block_on(store.put(&StorePath::from(key), body.to_vec().into()))
        .unwrap();
}

/// A command with a clean AWS environment pointing at `endpoint`: no
/// profile files, no instance metadata, only what the test sets.
fn s3_command(wd: &Workdir, endpoint: &str, args: &[&str]) -> Command {
    let mut cmd = wd.command(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") || k.starts_with("AZURE") || k.starts_with("GOOGLE_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", "testkey")
        .env("AWS_SECRET_ACCESS_KEY", "testsecret")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", wd.path().join("no-aws-config"))
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            wd.path().join("no-aws-credentials"),
        )
        .env("AWS_EC2_METADATA_DISABLED", "true");
    cmd
}

fn run_cmd(mut cmd: Command, args: &[&str]) -> Run {
    run_of(args, cmd.output().expect("the binary runs"))
}

fn s3_run(wd: &Workdir, args: &[&str]) -> Run {
    run_cmd(s3_command(wd, &s3_endpoint(), args), args)
}

/// The local conversion of the sample, as the reference output.
fn sample_expected() -> String {
    fs::read_to_string(fixtures_dir().join("sample-readme/expected/interactions.csv")).unwrap()
}

#[test]
#[ignore = "needs the object-store servers: run scripts/test"]
fn s3_to_s3_is_byte_identical_to_the_local_run() {
    let store = test_store();
    let prefix = unique("firehose");
    upload_tree(
        &store,
        &fixtures_dir().join("sample-readme/input"),
        &format!("{prefix}/raw"),
    );
    let wd = Workdir::new();
    let src = format!("s3://{}/{prefix}/raw/", bucket());
    let dest = format!("s3://{}/{prefix}/out/", bucket());
    let run = s3_run(
        &wd,
        &[
            "convert",
            &src,
            "--columns",
            SAMPLE_COLUMNS,
            "-o",
            &dest,
            "-q",
        ],
    );
    run.assert_code(0);
    let csv = get_object(&store, &format!("{prefix}/out/interactions.csv")).unwrap();
    assert_eq!(String::from_utf8(csv).unwrap(), sample_expected());
    let schema = get_object(&store, &format!("{prefix}/out/interactions.avsc")).unwrap();
    let local_schema =
        fs::read(fixtures_dir().join("sample-readme/expected/interactions.avsc")).unwrap();
    assert_eq!(schema, local_schema);
}

#[test]
#[ignore = "needs the object-store servers: run scripts/test"]
fn guessed_chunk_ends_from_s3_change_nothing() {
    // Received in pieces, an object's chunks take the pieces uncopied from
    // their first guessed boundary to their last: with text that makes
    // those guesses wrong, and bad records set aside, every chunk size and
    // thread count gives the local run's rows and rejects.
    let store = test_store();
    for first in [true, false] {
        let wd = Workdir::new();
        crate::run::write_guess_breaking(&wd, first);
        let prefix = unique("guess");
        upload_tree(&store, &wd.path().join("input"), &prefix);
        let src = format!("s3://{}/{prefix}/", bucket());
        let local = wd.run(&crate::run::skipping_args("input", &[]));
        local.assert_code(0);
        let want = (
            local.stdout_text(),
            wd.read("rejects.ndjson").replace("input/", &src),
        );
        assert_eq!(want.1.lines().count(), 2, "{}", want.1);
        for size in ["7", "100", "333", "1000", "1048576"] {
            for threads in ["1", "2"] {
                let extra = ["--chunk-bytes", size, "--threads", threads];
                let run = s3_run(&wd, &crate::run::skipping_args(&src, &extra));
                run.assert_code(0);
                let got = (run.stdout_text(), wd.read("rejects.ndjson"));
                assert!(
                    got == want,
                    "first {first}, chunk bytes {size}, threads {threads}:\n{}\n{}",
                    got.0,
                    got.1
                );
            }
        }
    }
}

#[test]
#[ignore = "needs the object-store servers: run scripts/test"]
fn a_csv_object_starting_with_blank_lines_converts_as_a_local_file() {
    let store = test_store();
    let prefix = unique("blank-csv");
    put_object(
        &store,
        &format!("{prefix}/events.csv"),
        crate::run::CSV_AFTER_BLANKS.as_bytes(),
    );
    let wd = Workdir::new();
    let src = format!("s3://{}/{prefix}/", bucket());
    let run = s3_run(&wd, &["convert", &src, "-o", "-", "-q"]);
    run.assert_code(0);
    assert_eq!(run.stdout_text(), crate::run::CSV_AFTER_BLANKS_ROWS);
}

fn azure_command(wd: &Workdir, args: &[&str]) -> Command {
    let endpoint = server_env("PP_TEST_AZURE_ENDPOINT");
    let blob_url = endpoint.trim_end_matches("/devstoreaccount1").to_string();
    let mut cmd = wd.command(args);
    cmd.env("AZURE_STORAGE_USE_EMULATOR", "true")
        .env("AZURITE_BLOB_STORAGE_URL", blob_url);
    cmd
}

/// Azurite's well-known development account key.
const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

fn azure_store() -> object_store::azure::MicrosoftAzure {
    let endpoint = server_env("PP_TEST_AZURE_ENDPOINT");
    object_store::azure::MicrosoftAzureBuilder::new()
        .with_account("devstoreaccount1")
        .with_access_key(AZURITE_KEY)
        .with_container_name("test-container")
        .with_endpoint(endpoint)
        .with_allow_http(true)
        .build()
        .unwrap()
}

#[test]
#[ignore = "needs the object-store servers: run scripts/test"]
fn azure_to_azure_is_byte_identical_to_the_local_run() {
    let store = azure_store();
    let prefix = unique("az");
    let wd = Workdir::new();
    wd.copy_tree(&fixtures_dir().join("sample-readme"));
    let rt = runtime();
    for file in wd.files("input") {
        let body = fs::read(wd.path().join("input").join(&file)).unwrap();
        let path = StorePath::from(format!("{prefix}/raw/{file}"));
        rt.block_on(store.put(&path, body.into())).unwrap();
    }
    let src = format!("az://test-container/{prefix}/raw/");
    let dest = format!("az://test-container/{prefix}/out/");
    let args = [
        "convert",
        &src,
        "--columns",
        SAMPLE_COLUMNS,
        "-o",
        &dest,
        "-q",
    ];
    run_cmd(azure_command(&wd, &args), &args).assert_code(0);
    let csv = rt
        .block_on(async {
            let got = store
                .get(&StorePath::from(format!("{prefix}/out/interactions.csv")))
                .await?;
            got.bytes().await
        })
        .unwrap();
    assert_eq!(String::from_utf8(csv.to_vec()).unwrap(), sample_expected());
}

#[test]
#[ignore = "needs the object-store servers: run scripts/test"]
fn gcs_source_is_byte_identical_to_the_local_run() {
    let endpoint = server_env("PP_TEST_GCS_ENDPOINT");
    let wd = Workdir::new();
    let key = format!(
        r#"{{"gcs_base_url": "{endpoint}", "disable_oauth": true, "client_email": "", "private_key": "", "private_key_id": ""}}"#
    );
    let args = [
        "convert",
        "gs://test-bucket/firehose/",
        "--columns",
        SAMPLE_COLUMNS,
        "-o",
        "out/",
        "-q",
    ];
    let mut cmd = wd.command(&args);
    cmd.env("GOOGLE_SERVICE_ACCOUNT_KEY", key);
    run_cmd(cmd, &args).assert_code(0);
    assert_eq!(wd.read("out/interactions.csv"), sample_expected());
}

/// `n` small objects, each one record, in a Firehose-like layout.
fn many_objects(wd: &Workdir, n: usize) {
    for i in 0..n {
        wd.write(
            &format!("raw/2024/01/{:02}/{:02}/part-{i:05}", i % 28 + 1, i % 24),
            format!(
                r#"{{"user_id":"u{i}","item_id":{},"timestamp":{}}}"#,
                i % 97,
                1_700_000_000 + i
            ),
        );
    }
}

#[test]
#[ignore = "needs the object-store servers: run scripts/test"]
fn listing_pages_through_1500_objects_in_key_order() {
    let store = test_store();
    let wd = Workdir::new();
    many_objects(&wd, 1500);
    let prefix = unique("many");
    upload_tree(&store, &wd.path().join("raw"), &prefix);
    let local = wd.run(&["convert", "raw", "-o", "local.csv", "-q"]);
    local.assert_code(0);
    let src = format!("s3://{}/{prefix}/", bucket());
    let run = s3_run(
        &wd,
        &[
            "convert",
            &src,
            "-o",
            "remote.csv",
            "--concurrency",
            "16",
            "-q",
        ],
    );
    run.assert_code(0);
    let remote = wd.read("remote.csv");
    assert_eq!(remote.lines().count(), 1501);
    assert_eq!(remote, wd.read("local.csv"));
}

/// Input whose CSV is about 12 MB: three parts of 5 MiB.
fn big_input(wd: &Workdir) {
    let note = "n".repeat(230);
    for f in 0..4 {
        let mut body = String::new();
        for i in 0..12_000 {
            let n = f * 12_000 + i;
            body.push_str(&format!(
                r#"{{"user_id":{},"item_id":"i{}","timestamp":{},"note":"{note} {n}"}}"#,
                n % 5000,
                n % 777,
                1_700_000_000 + n
            ));
        }
        wd.write(&format!("big/part-{f}.json"), body);
    }
}

#[test]
#[ignore = "needs the object-store servers: run scripts/test"]
fn large_output_streams_through_a_multipart_upload() {
    let store = test_store();
    let wd = Workdir::new();
    big_input(&wd);
    let base = ["convert", "big", "--map", "NOTE=note", "-q"];
    let local: Vec<&str> = base.iter().copied().chain(["-o", "local.csv"]).collect();
    wd.run(&local).assert_code(0);
    let prefix = unique("multipart");
    let dest = format!("s3://{}/{prefix}/events.csv", bucket());
    let remote: Vec<&str> = base
        .iter()
        .copied()
        .chain(["-o", &dest, "--part-bytes", "5242880"])
        .collect();
    s3_run(&wd, &remote).assert_code(0);
    let want = fs::read(wd.path().join("local.csv")).unwrap();
    assert!(want.len() > 2 * 5_242_880, "only {} bytes", want.len());
    let got = get_object(&store, &format!("{prefix}/events.csv")).unwrap();
    assert!(got == want, "uploaded CSV differs from the local one");
    let meta = runtime()
        .block_on(store.head(&StorePath::from(format!("{prefix}/events.csv"))))
        .unwrap();
    let etag = meta.e_tag.unwrap_or_default();
    assert!(
        etag.trim_matches('"').ends_with("-3"),
        "ETag {etag} is not of 3 parts"
    );
}

#[test]
#[ignore = "needs the object-store servers: run scripts/test"]
fn killed_during_upload_leaves_no_object_and_the_rerun_succeeds() {
    let store = test_store();
    let wd = Workdir::new();
    big_input(&wd);
    let prefix = unique("killed");
    let key = format!("{prefix}/events.csv");
    put_object(&store, &key, b"previous\n");
    let upstream: SocketAddr = s3_endpoint().trim_start_matches("http://").parse().unwrap();
    // Slow requests make the upload take long enough to kill it midway.
    let proxy = FaultProxy::start(
        upstream,
        Faults {
            delay: Duration::from_millis(300),
            ..Faults::default()
        },
    );
    let dest = format!("s3://{}/{key}", bucket());
    let args = [
        "convert",
        "big",
        "--map",
        "NOTE=note",
        "-q",
        "-o",
        &dest,
        "--part-bytes",
        "5242880",
    ];
    let mut child = s3_command(&wd, &proxy.endpoint(), &args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    // Wait until a part upload has gone out, then kill.
    while proxy.counts.puts.load(Ordering::Relaxed) < 1 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before any part was sent"
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no upload started"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(child.try_wait().unwrap().is_none());
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        get_object(&store, &key).as_deref(),
        Some(&b"previous\n"[..])
    );
    drop(proxy);
    s3_run(&wd, &args).assert_code(0);
    let local = [
        "convert",
        "big",
        "--map",
        "NOTE=note",
        "-q",
        "-o",
        "local.csv",
    ];
    wd.run(&local).assert_code(0);
    let got = get_object(&store, &key).unwrap();
    assert!(got == fs::read(wd.path().join("local.csv")).unwrap());
}

#[test]
#[ignore = "needs the object-store servers: run scripts/test"]
fn a_failed_run_leaves_the_existing_object_as_it_was() {
    let store = test_store();
    let wd = Workdir::new();
    wd.write(
        "in/a.json",
        r#"{"user_id":1,"item_id":2,"timestamp":3}{"user_id":1,"item_id":2}"#,
    );
    let prefix = unique("failed");
    put_object(&store, &format!("{prefix}/x.csv"), b"previous\n");
    let dest = format!("s3://{}/{prefix}/x.csv", bucket());
    let run = s3_run(&wd, &["convert", "in", "-o", &dest]);
    run.assert_code(1);
    assert_eq!(
        run.stderr,
        "personalize-prep: in/a.json: byte 39: TIMESTAMP: missing: the record has no \"timestamp\", and a value is required\n"
    );
    assert_eq!(
        get_object(&store, &format!("{prefix}/x.csv")).as_deref(),
        Some(&b"previous\n"[..])
    );
    assert_eq!(get_object(&store, &format!("{prefix}/x.avsc")), None);
}

#[test]
#[ignore = "needs the object-store servers: run scripts/test"]
fn a_wrong_secret_and_a_missing_bucket_are_clear_errors() {
    let wd = Workdir::new();
    let src = format!("s3://{}/anything/", bucket());
    let args = ["convert", src.as_str(), "-o", "out/", "-v"];
    let mut cmd = s3_command(&wd, &s3_endpoint(), &args);
    cmd.env("AWS_SECRET_ACCESS_KEY", "wrong-secret-4f9a1c");
    let run = run_cmd(cmd, &args);
    run.assert_code(1);
    assert!(
        run.stderr
            .contains(&format!("personalize-prep: {src}: cannot list: ")),
        "{}",
        run.describe()
    );
    assert!(run.stderr.contains("403"), "{}", run.describe());
    assert!(
        !run.stderr.contains("wrong-secret-4f9a1c"),
        "the secret leaked"
    );
    assert!(!run.stderr.contains("testkey") || !run.stderr.contains("testsecret"));

    let run = s3_run(&wd, &["convert", "s3://no-such-bucket-pp/x/", "-o", "out/"]);
    run.assert_code(1);
    assert!(
        run.stderr
            .starts_with("personalize-prep: s3://no-such-bucket-pp/x/: cannot list: "),
        "{}",
        run.describe()
    );
    assert!(
        run.stderr.contains("404") || run.stderr.contains("NoSuchBucket"),
        "{}",
        run.describe()
    );
    assert!(wd.files("out").is_empty());
}

#[test]
#[ignore = "needs the object-store servers: run scripts/test"]
fn credentials_come_from_an_aws_profile() {
    let store = test_store();
    let prefix = unique("profile");
    upload_tree(&store, &fixtures_dir().join("sample-readme/input"), &prefix);
    let wd = Workdir::new();
    wd.write("aws/config", "[profile pp-test]\nregion = us-east-1\n");
    wd.write(
        "aws/credentials",
        "[pp-test]\naws_access_key_id = testkey\naws_secret_access_key = testsecret\n\
         [pp-wrong]\naws_access_key_id = testkey\naws_secret_access_key = nope\n",
    );
    let src = format!("s3://{}/{prefix}/", bucket());
    let run_with = |profile: &str| {
        let args = [
            "convert",
            src.as_str(),
            "--columns",
            SAMPLE_COLUMNS,
            "-o",
            "out/",
            "-q",
        ];
        let mut cmd = s3_command(&wd, &s3_endpoint(), &args);
        cmd.env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_REGION")
            .env("AWS_PROFILE", profile)
            .env("AWS_CONFIG_FILE", wd.path().join("aws/config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                wd.path().join("aws/credentials"),
            );
        run_cmd(cmd, &args)
    };
    run_with("pp-test").assert_code(0);
    assert_eq!(wd.read("out/interactions.csv"), sample_expected());
    let wrong = run_with("pp-wrong");
    wrong.assert_code(1);
    assert!(wrong.stderr.contains("403"), "{}", wrong.describe());
}

#[test]
#[ignore = "needs the object-store servers: run scripts/test"]
fn retries_through_throttling_and_dropped_connections_keep_the_output() {
    let store = test_store();
    let wd = Workdir::new();
    many_objects(&wd, 120);
    big_input(&wd);
    let prefix = unique("faults");
    upload_tree(&store, &wd.path().join("raw"), &format!("{prefix}/raw"));
    upload_tree(&store, &wd.path().join("big"), &format!("{prefix}/big"));
    wd.run(&["convert", "raw", "-o", "local-raw.csv", "-q"])
        .assert_code(0);
    wd.run(&[
        "convert",
        "big",
        "--map",
        "NOTE=note",
        "-o",
        "local-big.csv",
        "-q",
    ])
    .assert_code(0);

    let upstream: SocketAddr = s3_endpoint().trim_start_matches("http://").parse().unwrap();
    let proxy = Arc::new(FaultProxy::start(
        upstream,
        Faults {
            slow_down_every: 4,
            drop_get_every: 5,
            cut_get_every: 7,
            delay: Duration::ZERO,
        },
    ));
    let src = format!("s3://{}/{prefix}/raw/", bucket());
    let dest = format!("s3://{}/{prefix}/out/raw.csv", bucket());
    let args = ["convert", src.as_str(), "-o", dest.as_str(), "-q"];
    let run = run_cmd(s3_command(&wd, &proxy.endpoint(), &args), &args);
    run.assert_code(0);
    let got = get_object(&store, &format!("{prefix}/out/raw.csv")).unwrap();
    assert_eq!(String::from_utf8(got).unwrap(), wd.read("local-raw.csv"));

    let src = format!("s3://{}/{prefix}/big/", bucket());
    let args = [
        "convert",
        src.as_str(),
        "--map",
        "NOTE=note",
        "-o",
        "remote-big.csv",
        "-q",
    ];
    run_cmd(s3_command(&wd, &proxy.endpoint(), &args), &args).assert_code(0);
    assert!(wd.read("remote-big.csv") == wd.read("local-big.csv"));
    assert!(
        proxy.counts.faults.load(Ordering::Relaxed) >= 20,
        "too few faults injected"
    );
}

#[test]
#[ignore = "needs the object-store servers: run scripts/test"]
fn retries_give_up_naming_the_object_and_the_status() {
    let store = test_store();
    let prefix = unique("give-up");
    put_object(
        &store,
        &format!("{prefix}/a.json"),
        br#"{"user_id":1,"item_id":2,"timestamp":3}"#,
    );
    let upstream: SocketAddr = s3_endpoint().trim_start_matches("http://").parse().unwrap();
    let proxy = FaultProxy::start(
        upstream,
        Faults {
            slow_down_every: 1,
            ..Faults::default()
        },
    );
    let wd = Workdir::new();
    let src = format!("s3://{}/{prefix}/", bucket());
    let args = [
        "convert",
        src.as_str(),
        "-o",
        "out/",
        "--retries",
        "2",
        "--retry-timeout",
        "20",
    ];
    let run = run_cmd(s3_command(&wd, &proxy.endpoint(), &args), &args);
    run.assert_code(1);
    assert!(
        run.stderr
            .contains(&format!("personalize-prep: {src}: cannot list: ")),
        "{}",
        run.describe()
    );
    assert!(run.stderr.contains("503"), "{}", run.describe());
    assert!(run.stderr.contains("after 2 retries"), "{}", run.describe());
}

#[test]
#[ignore = "needs the object-store servers: run scripts/test"]
fn parquet_from_s3_is_spooled_and_read_by_row_group() {
    let store = test_store();
    let prefix = unique("parquet");
    let case = fixtures_dir().join("parquet-pyarrow");
    upload_tree(&store, &case.join("input"), &prefix);
    let wd = Workdir::new();
    let args_text = fs::read_to_string(case.join("args")).unwrap();
    let src = format!("s3://{}/{prefix}/", bucket());
    let args: Vec<&str> = args_text
        .lines()
        .map(|a| if a == "input" { src.as_str() } else { a })
        .collect();
    // Exit 3: the fixture maps seven metadata fields, two more than
    // Personalize allows for interactions; the outputs are written anyway.
    s3_run(&wd, &args).assert_code(3);
    assert_eq!(
        wd.read("out/interactions.csv"),
        fs::read_to_string(case.join("expected/interactions.csv")).unwrap()
    );
}

#[test]
#[ignore = "needs the object-store servers: run scripts/test"]
fn inspect_reads_object_storage_like_convert() {
    let store = test_store();
    let prefix = unique("inspect");
    let case = fixtures_dir().join("inspect-json");
    upload_tree(&store, &case.join("input"), &prefix);
    let wd = Workdir::new();
    let src = format!("s3://{}/{prefix}/", bucket());
    let run = s3_run(&wd, &["inspect", &src, "--json"]);
    run.assert_code(0);
    // The same report as on local disk: only object names differ, and the
    // report holds none.
    assert_eq!(
        run.stdout_text(),
        fs::read_to_string(case.join("expected.stdout")).unwrap()
    );
}

#[test]
#[ignore = "needs the object-store servers: run scripts/test"]
fn azure_wrong_key_and_missing_container_are_clear_errors() {
    let wd = Workdir::new();
    let args = ["convert", "az://test-container/nothing/", "-o", "out/"];
    let mut cmd = azure_command(&wd, &args);
    cmd.env(
        "AZURE_STORAGE_ACCOUNT_KEY",
        "d3Jvbmcta2V5LTAwMDAwMDAwMDAwMDAwMDAwMDAwMDA=",
    );
    let run = run_cmd(cmd, &args);
    run.assert_code(1);
    assert!(
        run.stderr
            .starts_with("personalize-prep: az://test-container/nothing/: cannot list: "),
        "{}",
        run.describe()
    );
    assert!(run.stderr.contains("403"), "{}", run.describe());
    let args = ["convert", "az://no-such-container/x/", "-o", "out/"];
    let run = run_cmd(azure_command(&wd, &args), &args);
    run.assert_code(1);
    assert!(
        run.stderr
            .starts_with("personalize-prep: az://no-such-container/x/: cannot list: "),
        "{}",
        run.describe()
    );
    assert!(run.stderr.contains("404"), "{}", run.describe());
}

#[test]
#[ignore = "needs the object-store servers: run scripts/test"]
fn schema_to_a_url_and_storage_options_and_file_urls() {
    let store = test_store();
    let prefix = unique("schema");
    let wd = Workdir::new();
    // Keys given as storage options replace the environment's.
    let dest = format!("s3://{}/{prefix}/users.avsc", bucket());
    let args = [
        "schema",
        "--dataset",
        "users",
        "--map",
        "AGE=age",
        "-o",
        dest.as_str(),
        "--storage-option",
        "aws_access_key_id=testkey",
        "--storage-option",
        "aws_secret_access_key=testsecret",
    ];
    let mut cmd = s3_command(&wd, &s3_endpoint(), &args);
    cmd.env("AWS_SECRET_ACCESS_KEY", "not-the-secret");
    run_cmd(cmd, &args).assert_code(0);
    let schema =
        String::from_utf8(get_object(&store, &format!("{prefix}/users.avsc")).unwrap()).unwrap();
    assert!(schema.contains("\"name\": \"Users\""), "{schema}");
    let bad = s3_run(
        &wd,
        &[
            "convert",
            "in",
            "-o",
            "out/",
            "--storage-option",
            "aws_no_such_option=1",
        ],
    );
    bad.assert_code(2);
    assert!(
        bad.stderr
            .starts_with("personalize-prep: --storage-option aws_no_such_option: "),
        "{}",
        bad.stderr
    );
    // file:// URLs work as local paths.
    wd.copy_tree(&fixtures_dir().join("sample-readme"));
    let src = format!("file://{}", wd.path().join("input").display());
    let out = format!("file://{}/out/", wd.path().display());
    let run = wd.run(&[
        "convert",
        &src,
        "--columns",
        SAMPLE_COLUMNS,
        "-o",
        &out,
        "-q",
    ]);
    run.assert_code(0);
    assert_eq!(wd.read("out/interactions.csv"), sample_expected());
}

/// Every object key under `prefix/`, sorted, relative to it.
fn list_keys(store: &AmazonS3, prefix: &str) -> Vec<String> {
    let mut keys: Vec<String> = runtime().block_on(async {
        store
            .list(Some(&StorePath::from(prefix)))
            .map(|m| m.unwrap().location.to_string())
            .collect()
            .await
    });
    keys.sort();
    keys.iter()
        .map(|k| k.strip_prefix(&format!("{prefix}/")).unwrap().to_string())
        .collect()
}

/// Objects `from..to` of a Firehose prefix on S3; each record's item id
/// is unique.
fn upload_events(store: &AmazonS3, prefix: &str, from: usize, to: usize) {
    for n in from..to {
        let body: String = (0..20)
            .map(|r| {
                format!(
                    r#"{{"user_id":"u{}","item_id":"i{n}-{r}","timestamp":{}}}"#,
                    r % 3,
                    1_700_000_000 + r
                )
            })
            .collect();
        put_object(
            store,
            &format!("{prefix}/raw/2024/01/10/20/s-{n:03}"),
            body.as_bytes(),
        );
    }
}

/// Every item id in the delta folders under `prefix/out/interactions/`.
fn delta_ids(store: &AmazonS3, prefix: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for key in list_keys(store, &format!("{prefix}/out/interactions")) {
        let text = String::from_utf8(
            get_object(store, &format!("{prefix}/out/interactions/{key}")).unwrap(),
        )
        .unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("USER_ID,ITEM_ID,TIMESTAMP"), "{key}");
        ids.extend(lines.map(|l| l.split(',').nth(1).unwrap().to_string()));
    }
    ids.sort();
    ids
}

#[test]
#[ignore = "needs the object-store servers: run scripts/test"]
fn repeated_runs_keep_state_lock_and_deltas_on_s3() {
    let store = test_store();
    let prefix = unique("cron");
    upload_events(&store, &prefix, 0, 3);
    let wd = Workdir::new();
    let src = format!("s3://{}/{prefix}/raw/", bucket());
    let dest = format!("s3://{}/{prefix}/out/", bucket());
    let state = format!("s3://{}/{prefix}/state/interactions.json", bucket());
    let args = [
        "convert",
        src.as_str(),
        "-o",
        dest.as_str(),
        "--state",
        state.as_str(),
        "--max-file-size",
        "1KB",
        "-q",
    ];
    s3_run(&wd, &args).assert_code(0);
    let keys = list_keys(&store, &format!("{prefix}/out"));
    let run1 = keys.last().unwrap().split('/').nth(1).unwrap().to_string();
    assert_eq!(
        keys,
        [
            "interactions.avsc".to_string(),
            format!("interactions/{run1}/part-00000.csv"),
            format!("interactions/{run1}/part-00001.csv"),
        ]
    );
    let ids = |from: usize, to: usize| {
        let mut ids: Vec<String> = (from..to)
            .flat_map(|n| (0..20).map(move |r| format!("i{n}-{r}")))
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(delta_ids(&store, &prefix), ids(0, 3));
    assert_eq!(
        list_keys(&store, &format!("{prefix}/state")),
        ["interactions.json"]
    );

    // A lock object held by another host: the run fails fast, naming it.
    let lock_key = format!("{prefix}/state/interactions.json.lock");
    put_object(
        &store,
        &lock_key,
        br#"{"host":"batch-3","pid":77,"started":"2026-11-28T00:00:00Z","started_at":1795824000}"#,
    );
    upload_events(&store, &prefix, 3, 5);
    let run = s3_run(&wd, &args);
    run.assert_code(1);
    assert!(
        run.stderr.contains(&format!(
            "{state}: another run holds the lock {state}.lock (host batch-3, pid 77, started 2026-11-28T00:00:00Z"
        )),
        "{}",
        run.stderr
    );
    let mut broken: Vec<&str> = args.to_vec();
    broken.push("--break-lock");
    // A crash while the parts are uploading: nothing of the run is visible.
    let mut cmd = s3_command(&wd, &s3_endpoint(), &broken);
    cmd.env("PERSONALIZE_PREP_FAILPOINT", "mid-upload");
    let crash = run_cmd(cmd, &broken);
    assert_eq!(crash.code, None, "{}", crash.describe());
    assert_eq!(delta_ids(&store, &prefix), ids(0, 3));
    // Crash after the outputs landed, before the run is marked done.
    let mut cmd = s3_command(&wd, &s3_endpoint(), &broken);
    cmd.env("PERSONALIZE_PREP_FAILPOINT", "after-commit");
    let crash = run_cmd(cmd, &broken);
    assert_eq!(crash.code, None, "{}", crash.describe());
    assert!(
        get_object(&store, &lock_key).is_some(),
        "a crash leaves its lock"
    );
    upload_events(&store, &prefix, 5, 6);
    std::thread::sleep(Duration::from_millis(1100));
    let rerun = s3_run(&wd, &args);
    rerun.assert_code(0);
    assert!(
        rerun.stderr.contains("its process is no longer running"),
        "{}",
        rerun.describe()
    );
    assert_eq!(delta_ids(&store, &prefix), ids(0, 6));
    assert!(get_object(&store, &lock_key).is_none());
    let state_json: serde_json::Value = serde_json::from_slice(
        &get_object(&store, &format!("{prefix}/state/interactions.json")).unwrap(),
    )
    .unwrap();
    let runs = state_json["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 3);
    assert!(runs.iter().all(|r| r["status"] == "done"));
    assert!(runs[0]["objects"][0]["etag"].is_string());
}

#[test]
#[ignore = "needs the object-store servers: run scripts/test"]
fn shards_run_from_and_to_s3_and_commit_the_single_run() {
    let store = test_store();
    let prefix = unique("shards");
    upload_events(&store, &prefix, 0, 12);
    let wd = Workdir::new();
    let src = format!("s3://{}/{prefix}/raw/", bucket());
    let run = format!("s3://{}/{prefix}/run/", bucket());
    let single = format!("s3://{}/{prefix}/single/", bucket());
    s3_run(&wd, &["convert", &src, "-o", &single, "-q"]).assert_code(0);
    s3_run(&wd, &["plan", &src, "-o", &run, "--shards", "3", "-q"]).assert_code(0);
    // Shards run from another folder: the plan names objects by URL.
    let elsewhere = Workdir::new();
    for i in [2, 0, 1] {
        s3_run(
            &elsewhere,
            &["convert", "--plan", &run, "--shard", &i.to_string(), "-q"],
        )
        .assert_code(0);
    }
    assert_eq!(
        list_keys(&store, &format!("{prefix}/run")),
        [
            "done/part-00000.json",
            "done/part-00001.json",
            "done/part-00002.json",
            "parts/part-00000.csv",
            "parts/part-00001.csv",
            "parts/part-00002.csv",
            "plan.json"
        ]
    );
    let dest = format!("s3://{}/{prefix}/out/interactions.csv", bucket());
    s3_run(&wd, &["commit", &run, "-o", &dest, "-q"]).assert_code(0);
    let want = get_object(&store, &format!("{prefix}/single/interactions.csv")).unwrap();
    assert_eq!(
        get_object(&store, &format!("{prefix}/out/interactions.csv")).unwrap(),
        want
    );
    assert_eq!(
        get_object(&store, &format!("{prefix}/out/interactions.avsc")).unwrap(),
        get_object(&store, &format!("{prefix}/single/interactions.avsc")).unwrap()
    );
    assert_eq!(want.iter().filter(|&&b| b == b'\n').count(), 1 + 12 * 20);
}
