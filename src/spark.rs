//! `spark-job`: the PySpark driver for a sharded run (SPEC section 12). It
//! runs `plan`, one Spark task per shard (each runs `convert --plan RUN
//! --shard I` with the binary shipped with the job) and `commit`; Spark
//! schedules and retries, the binary does every byte of I/O.

const DRIVER: &str = include_str!("spark_driver.py");

/// The driver; with `plan` (a run folder and its shard count) it converts
/// and commits that plan instead of planning itself.
pub fn driver(plan: Option<(&str, usize)>) -> String {
    let (run, shards) = match plan {
        Some((run, shards)) => (
            serde_json::to_string(run).expect("a string serialises"),
            shards.to_string(),
        ),
        None => ("None".to_string(), "None".to_string()),
    };
    DRIVER
        .replace("__RUN__", &run)
        .replace("__SHARDS__", &shards)
}
