//! `mixed`: every scenario at once, as a day's traffic looks: mostly people browsing
//! cached first pages, some filtering and searching, some paging deep, and a few
//! catalogue changes arriving by webhook. goose gives each user one scenario, in
//! proportion to these weights, and every user pauses between iterations as a person
//! (or a polite client) does, so 256 users offer a realistic load instead of 256
//! back-to-back request loops.

use goose::prelude::*;

use super::{browse, deep, filter, search, webhook, Pace, RunDefaults};

/// Issue 5's target 4 is `mixed` at 256 concurrent users.
pub const DEFAULTS: RunDefaults = RunDefaults {
    users: 256,
    increase_rate: "64",
    run_time: "60s",
};

/// Builds one scenario at a given pace.
type Build = fn(Pace) -> Result<Scenario, GooseError>;

/// Each scenario and its share of the users, in percent.
pub const MIX: [(Build, usize); 5] = [
    (browse::scenario, 60),
    (filter::scenario, 15),
    (search::scenario, 10),
    (deep::scenario, 10),
    (webhook::scenario, 5),
];

pub fn scenarios() -> Result<Vec<Scenario>, GooseError> {
    MIX.iter()
        .map(|&(build, weight)| build(Pace::Think)?.set_weight(weight))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weight_of(scenarios: &[Scenario], name: &str) -> usize {
        scenarios
            .iter()
            .find(|scenario| &*scenario.name == name)
            .map_or(0, |scenario| scenario.weight)
    }

    #[test]
    fn weights_are_percentages_of_every_scenario() {
        let scenarios = scenarios().unwrap();
        assert_eq!(scenarios.iter().map(|s| s.weight).sum::<usize>(), 100);
        for name in ["browse", "filter", "search", "deep", "webhook"] {
            assert!(weight_of(&scenarios, name) > 0, "{name}");
        }
    }

    #[test]
    fn browsing_dominates_and_changes_stay_rare() {
        let scenarios = scenarios().unwrap();
        assert!(weight_of(&scenarios, "browse") >= 50);
        assert!(weight_of(&scenarios, "webhook") <= 5);
    }
}
