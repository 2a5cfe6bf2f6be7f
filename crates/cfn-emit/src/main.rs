fn main() -> std::process::ExitCode {
    cfn_core::cli::tool_main("cfn-emit", cfn_emit::run)
}
