use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = odf_gateway::cli::Cli::parse();
    // A server says what it is doing; a command only what went wrong.
    let default = if cli.command.is_server() { "info,fjall=warn,lsm_tree=warn" } else { "warn" };
    odf_gateway::cli::log_output::init(default);
    match odf_gateway::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) if odf_gateway::cli::is_closed_pipe(&e) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
