//! The `gan-engine` command line.

mod cli;

use clap::Parser;

fn main() {
    let args = cli::Cli::parse();
    if let Err(e) = cli::run(args) {
        // One clear line for people; exit code 2 for every error the user can act on.
        eprintln!("error: {e:#}");
        std::process::exit(2);
    }
}
