use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match cfn_core::cli::parse_args::<cfn_serve::Cli>() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    cfn_core::cli::main_with("cfn-serve", || cfn_serve::run(cli))
}
