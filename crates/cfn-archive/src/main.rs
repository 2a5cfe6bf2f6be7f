fn main() -> std::process::ExitCode {
    cfn_core::cli::tool_main("cfn-archive", cfn_archive::run)
}
