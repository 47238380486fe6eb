//! The `durq` binary: a thin shell around [`durq::cli::main`].
fn main() -> std::process::ExitCode {
    durq::cli::main()
}
