//! One module per scenario. [`ScenarioName`] is the command line's list of them: adding
//! a scenario is a new module, a variant here and its arms in `as_str`, `build` and
//! `defaults`.

mod browse;
mod deep;
mod filter;
mod mixed;
mod search;
mod smoke;
pub mod uncached;
pub mod webhook;

use std::time::Duration;

use clap::ValueEnum;
use goose::prelude::*;

/// The scenarios `loadtest` can run, by the name given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScenarioName {
    /// Health check plus three listing pages per iteration: does the API answer at all.
    Smoke,
    /// First pages of random categories and sorts: the cached path.
    Browse,
    /// Each user walks a sort page after page with cursors: deep keyset pages.
    Deep,
    /// Category and price range, first and second page: mostly database reads.
    Filter,
    /// Common and rare words, alone and with a category.
    Search,
    /// Signed webhook deliveries, one in five a duplicate (needs --webhook-secret).
    Webhook,
    /// All of the above but smoke, weighted, with think time between iterations.
    Mixed,
    /// Every indexed shape at a random depth, each page unique: all from MySQL (needs
    /// --cursor-secret).
    Uncached,
    /// Common and rare words, alone and with a category, at a random depth, each page
    /// unique: all from MySQL (needs --cursor-secret).
    UncachedSearch,
}

/// Load shape a scenario runs with unless the command line says otherwise. Each
/// scenario picks its own, since a smoke check and a soak need very different ones.
#[derive(Debug, Clone, Copy)]
pub struct RunDefaults {
    /// Concurrent users.
    pub users: usize,
    /// Users started per second (goose's `--increase-rate`, the old hatch rate).
    pub increase_rate: &'static str,
    /// How long to run once every user has started, in goose's TIME syntax.
    pub run_time: &'static str,
}

/// How a user paces its iterations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// Back to back: a scenario run alone measures how much the service does.
    Closed,
    /// With a pause between iterations, as people and polite clients do: in `mixed`,
    /// the user count then means concurrent clients rather than request loops.
    Think,
}

impl Pace {
    /// A user's pause between iterations under [`Pace::Think`].
    pub const THINK: (Duration, Duration) = (Duration::from_millis(50), Duration::from_millis(150));

    /// Sets `scenario`'s wait time for this pace.
    pub fn apply(self, scenario: Scenario) -> Result<Scenario, GooseError> {
        match self {
            Pace::Closed => Ok(scenario),
            Pace::Think => scenario.set_wait_time(Pace::THINK.0, Pace::THINK.1),
        }
    }
}

impl ScenarioName {
    /// The name as typed on the command line and used in report file names.
    pub fn as_str(self) -> &'static str {
        match self {
            ScenarioName::Smoke => "smoke",
            ScenarioName::Browse => "browse",
            ScenarioName::Deep => "deep",
            ScenarioName::Filter => "filter",
            ScenarioName::Search => "search",
            ScenarioName::Webhook => "webhook",
            ScenarioName::Mixed => "mixed",
            ScenarioName::Uncached => "uncached",
            ScenarioName::UncachedSearch => "uncached-search",
        }
    }

    /// The goose scenarios to register (several for `mixed`).
    pub fn build(self) -> Result<Vec<Scenario>, GooseError> {
        let pace = Pace::Closed;
        match self {
            ScenarioName::Smoke => smoke::scenario().map(|s| vec![s]),
            ScenarioName::Browse => browse::scenario(pace).map(|s| vec![s]),
            ScenarioName::Deep => deep::scenario(pace).map(|s| vec![s]),
            ScenarioName::Filter => filter::scenario(pace).map(|s| vec![s]),
            ScenarioName::Search => search::scenario(pace).map(|s| vec![s]),
            ScenarioName::Webhook => webhook::scenario(pace).map(|s| vec![s]),
            ScenarioName::Mixed => mixed::scenarios(),
            ScenarioName::Uncached => uncached::scenario(pace).map(|s| vec![s]),
            ScenarioName::UncachedSearch => uncached::search_scenario(pace).map(|s| vec![s]),
        }
    }

    pub fn defaults(self) -> RunDefaults {
        match self {
            ScenarioName::Smoke => smoke::DEFAULTS,
            ScenarioName::Browse => browse::DEFAULTS,
            ScenarioName::Deep => deep::DEFAULTS,
            ScenarioName::Filter => filter::DEFAULTS,
            ScenarioName::Search => search::DEFAULTS,
            ScenarioName::Webhook => webhook::DEFAULTS,
            ScenarioName::Mixed => mixed::DEFAULTS,
            ScenarioName::Uncached | ScenarioName::UncachedSearch => uncached::DEFAULTS,
        }
    }

    /// Whether the scenario signs webhook deliveries, so needs the secret.
    pub fn sends_webhooks(self) -> bool {
        matches!(self, ScenarioName::Webhook | ScenarioName::Mixed)
    }

    /// Whether the scenario signs its own cursors, so needs the service's cursor secret.
    pub fn signs_cursors(self) -> bool {
        matches!(self, ScenarioName::Uncached | ScenarioName::UncachedSearch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scenario_builds() {
        for name in ScenarioName::value_variants() {
            let scenarios = name.build().unwrap();
            assert!(!scenarios.is_empty(), "{}", name.as_str());
            assert!(name.defaults().users > 0);
        }
    }
}
