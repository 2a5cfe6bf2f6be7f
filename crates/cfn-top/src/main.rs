fn main() -> std::process::ExitCode {
    cfn_core::cli::tool_main("cfn-top", cfn_top::run)
}
