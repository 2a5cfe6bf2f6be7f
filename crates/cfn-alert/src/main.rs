fn main() -> std::process::ExitCode {
    cfn_core::cli::tool_main("cfn-alert", cfn_alert::run)
}
