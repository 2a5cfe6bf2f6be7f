fn main() -> std::process::ExitCode {
    cfn_core::cli::tool_main("cfn-serve", cfn_serve::run)
}
