//! `binann-server`: see `binann-server --help`.

use clap::Parser;

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,actix_server=warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let config = binann_server::ServerConfig::parse();
    match serve(config) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("binann-server: error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

#[actix_web::main]
async fn serve(config: binann_server::ServerConfig) -> anyhow::Result<()> {
    let addr = format!("{}:{}", config.host, config.port);
    let listener = std::net::TcpListener::bind(&addr).map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    let prepared = binann_server::prepare(config)?;
    let local = listener.local_addr()?;
    println!("binann-server listening on http://{local}");
    binann_server::run(listener, prepared)?.await?;
    Ok(())
}
