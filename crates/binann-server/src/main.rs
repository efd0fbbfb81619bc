//! `binann-server`: see `binann-server --help`.

use clap::Parser;

fn main() -> std::process::ExitCode {
    binann_core::cli::main("binann-server", "info,actix_server=warn", || serve(binann_server::ServerConfig::parse()))
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
