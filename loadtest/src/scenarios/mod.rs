//! One module per scenario. [`ScenarioName`] is the command line's list of them: adding
//! a scenario is a new module, a variant here and its arms in `build` and `defaults`.

mod smoke;

use clap::ValueEnum;
use goose::prelude::*;

/// The scenarios `loadtest` can run, by the name given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScenarioName {
    /// Health check plus three listing pages per iteration: does the API answer at all.
    Smoke,
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

impl ScenarioName {
    /// The name as typed on the command line and used in report file names.
    pub fn as_str(self) -> &'static str {
        match self {
            ScenarioName::Smoke => "smoke",
        }
    }

    /// The goose scenario to register.
    pub fn build(self) -> Result<Scenario, GooseError> {
        match self {
            ScenarioName::Smoke => smoke::scenario(),
        }
    }

    pub fn defaults(self) -> RunDefaults {
        match self {
            ScenarioName::Smoke => smoke::DEFAULTS,
        }
    }
}
