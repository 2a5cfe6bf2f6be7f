fn main() -> std::process::ExitCode {
    cfn_core::cli::tool_main("cfn-cat", cfn_cat::run)
}
