//! `autogit-agent`: see `autogit_agent::cli`.

fn main() -> std::process::ExitCode {
    autogit_agent::cli::main()
}
