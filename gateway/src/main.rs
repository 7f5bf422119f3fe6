use clap::Parser;

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    odf_gateway::memory::tune_malloc();
    let cli = odf_gateway::cli::Cli::parse();
    // A server says what it is doing; a command only what went wrong.
    // rskafka says each connection it opens at info: our consumer says what matters.
    let default = if cli.command.is_server() { "info,fjall=warn,lsm_tree=warn,rskafka=warn" } else { "warn" };
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
