fn main() -> std::process::ExitCode {
    cfn_core::cli::tool_main("cfn-promtext", cfn_promtext::run)
}
