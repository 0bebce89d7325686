//! `product-api serve | migrate | seed --rows N`: configuration in, the service out.

use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use product_api::{app::App, config::Config, seed, server, shutdown, store, sync, telemetry};

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
    /// Sync the external catalogue (`API_URL`) once, unless another instance is syncing.
    Sync,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::from_env().context("configuration")?;
    telemetry::init(config.log_format);
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
            let inserted = seed::top_up(store.clone(), rows).await.context("seeding")?;
            tracing::info!(inserted, target = rows, "seed done");
            // Rows seeded before migration 0006 are signed here, before any load runs.
            let done = store::signatures::reconcile(&store)
                .await
                .context("reconciling search signatures")?;
            tracing::info!(
                checked = done.checked,
                signed = done.signed,
                "signatures done"
            );
            Ok(())
        }
        Command::Serve => serve(config).await,
        Command::Sync => {
            migrate(&config).await?;
            let upstream = config
                .upstream
                .as_ref()
                .context("API_URL: is not set; it names the external catalogue to sync")?;
            let store = open_store(&config)?;
            let cache = product_api::cache::ResponseCache::new(
                product_api::cache::l1::L1::new(0, config.l1_ttl),
                product_api::cache::l2::L2::new(&config.redis_target(), config.l2.clone())
                    .context("REDIS_CLUSTER_URLS or REDIS_URL")?,
                config.lock_wait,
            );
            let client = catalogue_client(&config, upstream)?;
            let report = sync::run_once(&store, &client, &cache, &sync_settings(upstream))
                .await
                .context("sync")?;
            tracing::info!(?report, "sync finished");
            store.disconnect().await;
            Ok(())
        }
    }
}

fn catalogue_client(
    config: &Config,
    upstream: &product_api::config::UpstreamConfig,
) -> anyhow::Result<product_api::upstream::CatalogueClient> {
    let tokens =
        product_api::upstream::TokenProvider::new(upstream.token.clone(), &config.redis_target())
            .context("OAUTH_TOKEN_URL / REDIS_CLUSTER_URLS or REDIS_URL")?;
    product_api::upstream::CatalogueClient::new(upstream.catalogue.clone(), tokens)
        .context("API_URL")
}

fn sync_settings(upstream: &product_api::config::UpstreamConfig) -> sync::SyncSettings {
    sync::SyncSettings {
        holder: format!("pid{}-{:08x}", std::process::id(), rand::random::<u32>()),
        page_size: upstream.sync_page_size,
        lease_ttl: std::time::Duration::from_secs(60),
    }
}

/// Syncs every `interval` for as long as the app lives.
fn spawn_background_sync(
    config: &Config,
    app: &Arc<App>,
    upstream: &product_api::config::UpstreamConfig,
    interval: std::time::Duration,
) -> anyhow::Result<()> {
    let client = catalogue_client(config, upstream)?;
    // Fetches the token at start and keeps it fresh, so sync runs never wait for one; it stops
    // when the client (and so the provider) is dropped.
    client.tokens().spawn_refresher(std::future::pending());
    let settings = sync_settings(upstream);
    let app = Arc::downgrade(app);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        loop {
            ticks.tick().await;
            let Some(app) = app.upgrade() else { return };
            if let Err(error) = sync::run_once(app.store(), &client, app.cache(), &settings).await {
                tracing::warn!(%error, "background sync failed; the next run resumes it");
            }
        }
    });
    Ok(())
}

/// Re-signs rows whose search signature is not their text's (`store::signatures`), once, in the
/// background: serving does not wait for it, a failure is retried by the next start, and the app
/// is held only during a batch, so shutdown can still close it.
fn spawn_signature_reconcile(app: &Arc<App>) {
    let app = Arc::downgrade(app);
    tokio::spawn(async move {
        let started = std::time::Instant::now();
        let mut run = store::signatures::Reconciliation::default();
        loop {
            let Some(app) = app.upgrade() else { return };
            match run.step(app.store()).await {
                Ok(true) => {}
                Ok(false) => break,
                Err(error) => {
                    tracing::warn!(%error, "reconciling search signatures failed");
                    return;
                }
            }
        }
        tracing::info!(
            checked = run.totals.checked,
            signed = run.totals.signed,
            elapsed_ms = started.elapsed().as_millis(),
            "search signatures reconciled"
        );
    });
}

async fn serve(config: Config) -> anyhow::Result<()> {
    migrate(&config).await?;
    let app = Arc::new(App::build(&config).await?);
    if config.reconcile_signatures {
        spawn_signature_reconcile(&app);
    }
    if let Some(upstream) = &config.upstream {
        if let Some(interval) = upstream.sync_interval {
            spawn_background_sync(&config, &app, upstream, interval)?;
        }
    }
    let address = std::net::SocketAddr::new(config.host, config.port);
    let listener = server::bind(address, config.server.reuse_port)?;
    tracing::info!(%address, reuse_port = config.server.reuse_port, "serving");
    let drain_delay = config.server.drain_delay;
    let draining_app = app.clone();
    let shutdown = async move {
        shutdown::signal().await;
        draining_app.begin_drain();
        tracing::info!(?drain_delay, "draining: /ready answers 503, still serving");
        tokio::time::sleep(drain_delay).await;
    };
    server::run(listener, app.clone(), &config.server, shutdown).await;
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
