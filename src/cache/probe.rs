//! Whether a page's first miss at this instance reads L2 before loading it.
//!
//! Under `L2_ADMISSION=second-miss` a first miss reads L2 in case another instance, or this one
//! before a restart, stored the page. After a start, with L2 warm and L1 cold, many do find it,
//! and each hit spares MySQL a load. In a steady state a first miss is mostly a page no one asked
//! for twice (a deep cursor, a one-off price band): L2 cannot hold it, since only second misses
//! are written, and the read is a Redis round trip for nothing. Measured under issue 5's
//! `uncached` load, where every request is such a miss, those reads cost ~10 % of the
//! requests a second (perf/RESULTS.md, 2026-11-29 fourth session): about a fifth of what a hit
//! saves (a MySQL query, ~190 µs of MariaDB's CPU).
//!
//! So the reads are kept while they pay for themselves: each window of [`WINDOW`] reads decides
//! the next one. While at least one read in [`MIN_YIELD`] hits, every first miss reads; below
//! that, one in [`SAMPLE`] does, so traffic moving to pages other instances share is noticed
//! within `WINDOW × SAMPLE` first misses. A read skipped that would have hit costs one load,
//! what the page's first miss would cost without L2. Second misses, the herd the fill lock is
//! for, always read L2.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Mutex;

/// Reads whose hits decide whether the next window reads every first miss.
pub const WINDOW: u32 = 64;

/// The yield, one hit in this many reads, below which first misses read L2 only by sample: a
/// read costs about a fifth of what its hit saves, and reads are kept a little below parity
/// since a hit also spares MySQL the latency of a query at the moment it matters (a start).
pub const MIN_YIELD: u32 = 8;

/// While reads do not pay, one first miss in this many reads L2.
pub const SAMPLE: u32 = 16;

/// `L2_FIRST_MISS_READS`: when a first miss reads L2 (`always`, `by-yield`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProbePolicy {
    /// Every first miss reads L2.
    Always,
    /// Every first miss while reads find pages, one in [`SAMPLE`] while they do not.
    ByYield,
}

/// Decides, per first miss, whether it reads L2, from the yield of the reads before it.
pub struct Probe {
    policy: ProbePolicy,
    /// Whether the last window's reads fell below [`MIN_YIELD`].
    sampling: AtomicBool,
    /// First misses seen while sampling, to pick one in [`SAMPLE`].
    ticks: AtomicU32,
    window: Mutex<Window>,
}

#[derive(Default)]
struct Window {
    reads: u32,
    hits: u32,
}

impl Probe {
    /// Starts reading every first miss: after a start is when L2 is most likely to hold them.
    #[must_use]
    pub fn new(policy: ProbePolicy) -> Self {
        Probe {
            policy,
            sampling: AtomicBool::new(false),
            ticks: AtomicU32::new(0),
            window: Mutex::new(Window::default()),
        }
    }

    /// Whether this first miss reads L2. A skipped one is the [`SAMPLE`]-th of a run, so the
    /// first miss after reads stop paying is skipped.
    #[must_use]
    pub fn reads(&self) -> bool {
        if self.policy == ProbePolicy::Always || !self.sampling.load(Ordering::Relaxed) {
            return true;
        }
        self.ticks.fetch_add(1, Ordering::Relaxed) % SAMPLE == SAMPLE - 1
    }

    /// Records what a read found; the last read of a window sets the next window's mode.
    pub fn found(&self, hit: bool) {
        if self.policy == ProbePolicy::Always {
            return;
        }
        let mut window = self
            .window
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        window.reads += 1;
        window.hits += u32::from(hit);
        if window.reads >= WINDOW {
            let pays = window.hits * MIN_YIELD >= window.reads;
            *window = Window::default();
            if self.sampling.swap(!pays, Ordering::Relaxed) == pays {
                self.ticks.store(0, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `first_misses` through `probe`, each read finding a page when `hit` says so; how
    /// many read.
    fn run(probe: &Probe, first_misses: u32, hit: impl Fn(u32) -> bool) -> u32 {
        let mut reads = 0;
        for i in 0..first_misses {
            if probe.reads() {
                probe.found(hit(i));
                reads += 1;
            }
        }
        reads
    }

    #[test]
    fn every_first_miss_reads_until_a_window_of_reads_finds_too_little() {
        let probe = Probe::new(ProbePolicy::ByYield);
        assert_eq!(run(&probe, WINDOW, |_| false), WINDOW);
        assert!(
            !probe.reads(),
            "the first miss after a barren window is skipped"
        );
        assert_eq!(run(&probe, SAMPLE * WINDOW, |_| false), WINDOW);
    }

    #[test]
    fn reads_that_find_one_page_in_min_yield_keep_every_first_miss_reading() {
        let probe = Probe::new(ProbePolicy::ByYield);
        let at_yield = |i: u32| i % MIN_YIELD == 0;
        assert_eq!(run(&probe, 4 * WINDOW, at_yield), 4 * WINDOW);
    }

    #[test]
    fn sampled_reads_that_find_pages_bring_every_first_miss_back() {
        let probe = Probe::new(ProbePolicy::ByYield);
        run(&probe, WINDOW, |_| false);
        assert_eq!(run(&probe, SAMPLE * WINDOW, |_| true), WINDOW);
        assert_eq!(
            run(&probe, WINDOW, |_| true),
            WINDOW,
            "every first miss reads again"
        );
    }

    #[test]
    fn always_reads_every_first_miss() {
        let probe = Probe::new(ProbePolicy::Always);
        assert_eq!(run(&probe, 4 * WINDOW, |_| false), 4 * WINDOW);
    }

    #[test]
    fn the_policy_parses_and_names_its_values() {
        use crate::config::choice;
        assert_eq!(choice(" By-Yield "), Ok(ProbePolicy::ByYield));
        assert_eq!(choice("always"), Ok(ProbePolicy::Always));
        assert!(choice::<ProbePolicy>("never")
            .unwrap_err()
            .contains("`by-yield`"));
    }
}
