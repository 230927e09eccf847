use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = net::cli::Cli::parse();
    net::logging::init(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kvstore: cannot start the runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match runtime.block_on(net::cli::main(cli)) {
        Ok(net::cli_data::Outcome::Done) => std::process::ExitCode::SUCCESS,
        Ok(net::cli_data::Outcome::No) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("kvstore: {e}");
            std::process::ExitCode::from(e.exit_status())
        }
    }
}
