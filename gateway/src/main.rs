use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> std::process::ExitCode {
    let cli = odf_gateway::cli::Cli::parse();
    // A server says what it is doing; a command only what went wrong.
    let default = if cli.command.is_server() { "info,fjall=warn,lsm_tree=warn" } else { "warn" };
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default)))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match odf_gateway::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) if odf_gateway::cli::is_closed_pipe(&e) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
