//! The personalize-prep binary: parse, run the library, print the error,
//! map it to an exit code (0 ok, 1 run failed, 2 usage, 3 validation).

use std::io::ErrorKind;
use std::process::ExitCode;

use clap::Parser;
use personalize_prep::{Error, cli::Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match personalize_prep::run(&cli) {
        Ok(code) => ExitCode::from(code as u8),
        // A closed pipe on stdout (`| head`) is the reader's choice, not a failure.
        Err(Error::Write { ref source, .. }) if source.kind() == ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(err) => {
            let mut message = err.to_string();
            let mut cause = std::error::Error::source(&err);
            // Some errors (object_store's) already print their causes.
            while let Some(c) = cause {
                let text = c.to_string();
                if !message.contains(&text) {
                    message.push_str(&format!(": {text}"));
                }
                cause = c.source();
            }
            eprintln!("personalize-prep: {message}");
            ExitCode::from(err.exit_code() as u8)
        }
    }
}
