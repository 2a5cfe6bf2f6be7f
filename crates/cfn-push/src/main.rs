fn main() -> std::process::ExitCode {
    cfn_core::cli::tool_main("cfn-push", cfn_push::run)
}
