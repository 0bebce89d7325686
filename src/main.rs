//! `product-api serve | migrate | seed --rows N`: configuration in, the service out.

use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use product_api::{app::App, config::Config, seed, server, shutdown, store, telemetry};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(version, about = "Product-catalogue HTTP API")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply pending migrations, then serve HTTP on PORT until SIGTERM/SIGINT.
    Serve,
    /// Apply pending migrations and exit.
    Migrate,
    /// Top the catalogue up to N seed products (a no-op when it holds enough).
    Seed {
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init();
    let config = Config::from_env().context("configuration")?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?
        .block_on(run(cli.command, config))
}

async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Migrate => migrate(&config).await,
        Command::Seed { rows } => {
            migrate(&config).await?;
            let store = Arc::new(open_store(&config)?);
            let inserted = seed::top_up(store, rows).await.context("seeding")?;
            tracing::info!(inserted, target = rows, "seed done");
            Ok(())
        }
        Command::Serve => serve(config).await,
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    migrate(&config).await?;
    let app = Arc::new(App::build(&config).await?);
    let address = std::net::SocketAddr::new(config.host, config.port);
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("HOST/PORT: cannot listen on {address}"))?;
    tracing::info!(%address, "serving");
    server::run(listener, app.clone(), &config.server, shutdown::signal()).await;
    if let Ok(app) = Arc::try_unwrap(app) {
        app.close().await;
    }
    tracing::info!("stopped");
    Ok(())
}

async fn migrate(config: &Config) -> anyhow::Result<()> {
    let store = open_store(config)?;
    let applied = store::migrate::run(&store).await.context("migrating")?;
    tracing::info!(applied, "migrations up to date");
    store.disconnect().await;
    Ok(())
}

fn open_store(config: &Config) -> anyhow::Result<store::Store> {
    store::Store::new(config.database_url.expose(), &config.store).context("DATABASE_URL")
}
