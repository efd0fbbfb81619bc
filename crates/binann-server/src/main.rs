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
    let local = listener.local_addr()?;
    // Decided before the run directory is touched: a refusal changes nothing.
    let access = binann_server::Access::decide(&config, local)?;
    if access.token().is_none() && !local.ip().is_loopback() {
        tracing::warn!("listening on {local} without an access token (--no-auth): anyone who can reach it can label and see every image");
    }
    let announcement = binann_server::announcement(&config, local, &access);
    let prepared = binann_server::prepare(config)?;
    println!("{announcement}");
    binann_server::run(listener, prepared, access)?.await?;
    Ok(())
}
