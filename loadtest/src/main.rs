//! `loadtest <scenario> [options] [goose options]`: runs one goose scenario against a
//! local product-api, writes HTML and JSON reports, and exits non-zero when the run
//! breaks its latency or error-rate limits, so CI can gate on it.

mod api;
mod host;
mod scenarios;
mod server_metrics;
mod signing;
mod summary;
mod thresholds;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser};
use goose::config::GooseConfiguration;
use goose::prelude::*;

use scenarios::ScenarioName;
use thresholds::Limits;

/// Where the service listens in development and CI.
const DEFAULT_HOST: &str = "http://127.0.0.1:8000";

/// Exit status when the run could not happen or could not be judged (bad options,
/// refused host, goose error). Distinct from 1, which means "ran and failed limits".
const EXIT_SETUP: u8 = 2;

/// Load tests for product-api. Every goose option is accepted after the scenario; the
/// ones this tool defaults differently are listed in loadtest/README.md.
#[derive(Parser)]
#[command(name = "loadtest")]
struct Cli {
    /// Scenario to run.
    #[arg(value_enum)]
    scenario: ScenarioName,

    /// Fail when any request's p99 (or the p99 over all requests) is above this, in ms.
    #[arg(
        long,
        value_name = "MS",
        default_value = "200",
        value_parser = thresholds::parse_max_p99_ms,
        help_heading = "Limits"
    )]
    max_p99_ms: u64,

    /// Fail when failed requests / all requests is above this fraction (0.01 = 1%).
    #[arg(
        long,
        value_name = "FRACTION",
        default_value = "0",
        value_parser = thresholds::parse_max_error_rate,
        help_heading = "Limits"
    )]
    max_error_rate: f64,

    // Help text set explicitly: rustdoc markdown would show `[::1]` in backticks.
    #[arg(
        long,
        help_heading = "Limits",
        help = "Allow a --host that is not loopback (127.0.0.0/8, localhost, [::1])"
    )]
    allow_remote: bool,

    /// Key to sign webhook deliveries with (`whsec_` + base64), as the service's
    /// `WEBHOOK_SECRET`; needed by `webhook` and `mixed`.
    #[arg(
        long,
        env = "WEBHOOK_SECRET",
        hide_env_values = true,
        value_name = "SECRET",
        help_heading = "Scenarios"
    )]
    webhook_secret: Option<String>,

    /// The service's `CURSOR_SECRET`, to sign cursors at random positions; needed by
    /// `uncached` and `uncached-search`.
    #[arg(
        long,
        env = "CURSOR_SECRET",
        hide_env_values = true,
        value_name = "SECRET",
        help_heading = "Scenarios"
    )]
    cursor_secret: Option<String>,

    /// Do not scrape the service's /metrics before and after the run.
    #[arg(long, help_heading = "Scenarios")]
    no_server_metrics: bool,

    #[command(flatten)]
    goose: GooseConfiguration,
}

#[tokio::main]
async fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    // `test_plan` is crate-private in goose's configuration, so ask clap directly.
    let test_plan_given = matches.contains_id("test_plan");
    // Boxed: goose's futures are large, and main's stack need not hold them.
    match Box::pin(run(cli, test_plan_given)).await {
        Ok(code) => code,
        Err(message) => {
            eprintln!("loadtest: {message}");
            ExitCode::from(EXIT_SETUP)
        }
    }
}

async fn run(mut cli: Cli, test_plan_given: bool) -> Result<ExitCode, String> {
    let limits = Limits {
        max_p99_us: cli.max_p99_ms,
        max_error_rate: cli.max_error_rate,
    };
    // `--render-report` only turns an earlier JSON report into other formats.
    let render_only = cli.goose.render_report.is_some();
    apply_defaults(&mut cli.goose, cli.scenario, test_plan_given);
    let target = cli.goose.host.clone().unwrap_or_default();
    if !cli.allow_remote && !host::is_loopback(&target)? {
        return Err(format!(
            "refusing --host {target}: load tests here only target this machine \
             (127.0.0.0/8, localhost, [::1]); pass --allow-remote to override"
        ));
    }
    if !render_only {
        add_default_reports(&mut cli.goose, cli.scenario)?;
        set_up_webhooks(cli.scenario, cli.webhook_secret.as_deref())?;
        set_up_cursors(cli.scenario, cli.cursor_secret.as_deref())?;
    }
    let scrape = !render_only && !cli.no_server_metrics && !cli.goose.no_metrics;
    let before = if scrape {
        server_buckets(&target, "before").await
    } else {
        None
    };

    let reports = cli.goose.report_file.clone();
    let (metrics, goose_verdict) = Box::pin(attack(cli.goose, cli.scenario)).await?;
    if render_only {
        return Ok(ExitCode::SUCCESS);
    }

    let (rows, total) = summary::summarize(&metrics);
    println!("\n{} against {target}", cli.scenario.as_str());
    print!("{}", summary::table(&rows, &total));
    println!(
        "note: client-side times (goose + reqwest overhead included), in buckets at most \
         0.8% wide; server-side and sub-millisecond percentiles should come from the \
         service's /metrics or wrk."
    );
    let server = match before {
        Some(before) => server_buckets(&target, "after")
            .await
            .map(|after| after.since(&before)),
        None => None,
    };
    if let Some(server) = &server {
        print_server_side(server, total.requests);
    }
    for report in &reports {
        println!("report: {report}");
    }
    println!(
        "{}",
        summary::machine_line(
            cli.scenario.as_str(),
            &total,
            metrics.duration,
            server.as_ref()
        )
    );

    let mut violations = thresholds::evaluate(&rows, &total, limits);
    violations.extend(goose_verdict);
    Ok(verdict(&violations, &total, limits))
}

/// Runs goose. A goose `--threshold` that failed still hands back the run's
/// metrics: they are judged too, and goose's verdict is reported alongside ours.
async fn attack(
    config: GooseConfiguration,
    scenario: ScenarioName,
) -> Result<(GooseMetrics, Option<String>), String> {
    let mut attack = GooseAttack::initialize_with_config(config).map_err(|e| e.to_string())?;
    for built in scenario.build().map_err(|e| e.to_string())? {
        attack = attack.register_scenario(built);
    }
    match Box::pin(attack.execute()).await {
        Ok(metrics) => Ok((metrics, None)),
        Err(error) => {
            let message = error.to_string();
            match error {
                GooseError::ThresholdsFailed { metrics, .. } => Ok((*metrics.0, Some(message))),
                _ => Err(message),
            }
        }
    }
}

/// Gives the webhook scenarios their signing key, or refuses to start without one:
/// every unsigned delivery would fail, which says nothing about the service.
fn set_up_webhooks(scenario: ScenarioName, secret: Option<&str>) -> Result<(), String> {
    if !scenario.sends_webhooks() {
        return Ok(());
    }
    let secret = secret.ok_or_else(|| {
        format!(
            "scenario {} signs webhook deliveries: give --webhook-secret or WEBHOOK_SECRET \
             (the service's own secret)",
            scenario.as_str()
        )
    })?;
    let signer = signing::Signer::parse(secret).map_err(|e| e.to_string())?;
    scenarios::webhook::set_signer(signer);
    Ok(())
}

/// Gives the uncached scenarios the service's cursor secret, or refuses to start
/// without one: every cursor signed with another key would be a 400.
fn set_up_cursors(scenario: ScenarioName, secret: Option<&str>) -> Result<(), String> {
    if !scenario.signs_cursors() {
        return Ok(());
    }
    let secret = secret.ok_or_else(|| {
        format!(
            "scenario {} signs cursors: give --cursor-secret or CURSOR_SECRET (the \
             service's own secret)",
            scenario.as_str()
        )
    })?;
    scenarios::uncached::set_cursor_secret(secret);
    Ok(())
}

/// The service's request-duration buckets, or `None` with a warning: the
/// server-side view is extra information, never a reason to fail a run.
async fn server_buckets(target: &str, when: &str) -> Option<server_metrics::Buckets> {
    match server_metrics::scrape(target).await {
        Ok(buckets) => Some(buckets),
        Err(error) => {
            eprintln!("warning: no server-side figures ({when} the run): {error}");
            None
        }
    }
}

fn print_server_side(server: &server_metrics::Buckets, client_requests: usize) {
    println!(
        "server-side (/metrics, {} requests answered during the run; goose sent {}):",
        server.total(),
        client_requests
    );
    for (label, q) in [("p50", 0.5), ("p99", 0.99)] {
        println!("  {label} {}", server_metrics::describe(server.quantile(q)));
    }
    println!(
        "  (interpolated inside the service's histogram buckets: no finer than the bucket shown)"
    );
}

/// Prints PASS or each FAIL, and returns the exit status.
fn verdict(violations: &[String], total: &thresholds::RequestStats, limits: Limits) -> ExitCode {
    if violations.is_empty() {
        println!(
            "PASS: error rate {:.4}% <= {:.4}%, every p99 <= {} ms",
            total.error_rate() * 100.0,
            limits.max_error_rate * 100.0,
            thresholds::format_ms(limits.max_p99_us)
        );
        ExitCode::SUCCESS
    } else {
        for violation in violations {
            eprintln!("FAIL: {violation}");
        }
        ExitCode::FAILURE
    }
}

/// Fills in what the command line left out, for a bounded headless run: the local
/// host, the scenario's load shape, no telnet controller and coordinated-omission
/// mitigation. Set on the configuration rather than through `GooseDefault` because
/// the loopback guard needs the effective host before goose starts.
///
/// Options goose refuses together are respected: no run time with `--iterations`
/// or `--test-plan`, no increase rate with `--increase-time` or `--test-plan`.
fn apply_defaults(config: &mut GooseConfiguration, scenario: ScenarioName, test_plan: bool) {
    let defaults = scenario.defaults();
    config.host.get_or_insert_with(|| DEFAULT_HOST.to_string());
    if !test_plan {
        config.users.get_or_insert(defaults.users);
        if config.increase_time.is_none() {
            config
                .increase_rate
                .get_or_insert_with(|| defaults.increase_rate.to_string());
        }
        if config.iterations.is_none() {
            config
                .run_time
                .get_or_insert_with(|| defaults.run_time.to_string());
        }
    }
    // Nothing here drives a run interactively; an open control port is only a risk.
    // (The WebSocket controller is already off by default in goose 0.19, and its
    // `--no-websocket` flag is deprecated with a warning, so it is left alone.)
    config.no_telnet = true;
    if !config.no_metrics {
        config
            .co_mitigation
            .get_or_insert(GooseCoordinatedOmissionMitigation::Average);
    }
}

/// Unless `--report-file` was given, writes `perf/reports/<scenario>-<UTC time>.html`
/// and `.json` under the workspace root, creating the folder. goose picks each
/// report's format from its extension. (`GooseDefault::ReportFile` holds a single
/// file, so the list is set on the configuration instead.)
fn add_default_reports(
    config: &mut GooseConfiguration,
    scenario: ScenarioName,
) -> Result<(), String> {
    if !config.report_file.is_empty() || config.no_metrics {
        return Ok(());
    }
    let dir = workspace_root().join("perf").join("reports");
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let stem = format!(
        "{}-{}",
        scenario.as_str(),
        chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
    );
    for extension in ["html", "json"] {
        let path = dir.join(format!("{stem}.{extension}"));
        config.report_file.push(path.to_string_lossy().into_owned());
    }
    Ok(())
}

/// The workspace root, known at build time: reports land in the repository however
/// the binary is started (`cargo run` from any folder, or the built binary).
fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> (Cli, bool) {
        let matches = Cli::command()
            .try_get_matches_from(std::iter::once("loadtest").chain(args.iter().copied()))
            .unwrap();
        let cli = Cli::from_arg_matches(&matches).unwrap();
        (cli, matches.contains_id("test_plan"))
    }

    #[test]
    fn command_line_is_consistent() {
        // Catches clashes between our options and the flattened goose ones.
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_make_a_bounded_local_run() {
        let (mut cli, test_plan) = parse(&["smoke"]);
        assert_eq!(cli.max_p99_ms, 200_000);
        assert!(cli.max_error_rate.abs() < f64::EPSILON);
        apply_defaults(&mut cli.goose, cli.scenario, test_plan);
        let config = &cli.goose;
        assert_eq!(config.host.as_deref(), Some(DEFAULT_HOST));
        assert_eq!(config.run_time.as_deref(), Some("10s"));
        assert_eq!(config.users, Some(4));
        assert_eq!(config.increase_rate.as_deref(), Some("4"));
        assert!(config.no_telnet);
        assert!(matches!(
            config.co_mitigation,
            Some(GooseCoordinatedOmissionMitigation::Average)
        ));
    }

    #[test]
    fn command_line_wins_and_conflicts_are_avoided() {
        let (mut cli, test_plan) = parse(&[
            "smoke",
            "--max-p99-ms",
            "50",
            "-H",
            "http://localhost:9000",
            "--iterations",
            "3",
            "--increase-time",
            "2s",
        ]);
        assert_eq!(cli.max_p99_ms, 50_000);
        apply_defaults(&mut cli.goose, cli.scenario, test_plan);
        let config = &cli.goose;
        assert_eq!(config.host.as_deref(), Some("http://localhost:9000"));
        assert_eq!(config.run_time, None);
        assert_eq!(config.increase_rate, None);
    }

    #[test]
    fn test_plan_sets_its_own_shape() {
        let (mut cli, test_plan) = parse(&["smoke", "--test-plan", "2,1s;0,1s"]);
        assert!(test_plan);
        apply_defaults(&mut cli.goose, cli.scenario, test_plan);
        assert_eq!(cli.goose.users, None);
        assert_eq!(cli.goose.run_time, None);
        assert_eq!(cli.goose.increase_rate, None);
    }
}
