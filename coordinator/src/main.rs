//! `autogit-coordinator`: see `autogit_coordinator::cli`.

fn main() -> std::process::ExitCode {
    autogit_coordinator::cli::main()
}
