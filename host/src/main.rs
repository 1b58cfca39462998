//! The `wfhost` binary: see `wfhost --help`.

fn main() -> std::process::ExitCode {
    wfhost::main()
}
