//! Integration tests: every test runs the built binary in a temporary
//! workdir. One target, so the library links once.

mod cron;
mod fixtures;
mod help;
mod objstore;
mod proxy;
mod run;
mod shards;
mod workdir;
