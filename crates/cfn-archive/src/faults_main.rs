//! `cfn-archive-faults`: `cfn-archive` with its fault injection armed (`hooks`), for the
//! crash-safety tests and the chaos soak. Never packaged or installed.

fn main() -> std::process::ExitCode {
    cfn_archive::hooks::arm();
    cfn_core::cli::tool_main("cfn-archive", cfn_archive::run)
}
