fn main() -> std::process::ExitCode {
    cfn_core::cli::limit_malloc_arenas();
    cfn_core::cli::tool_main("cfn-agg", cfn_agg::run)
}
