//! Rate-limit policies: how many requests a client may make per window, and how many at once.
//!
//! Policies come from configuration (`RATE_LIMIT_PRESET`, `RATE_LIMIT_LISTING`,
//! `RATE_LIMIT_WEBHOOK`), written `6000/min` or `6000/min,burst=300`.

use std::num::NonZeroU32;
use std::time::Duration;

use http::HeaderValue;

/// Which policy a request is charged to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PolicyKind {
    /// Every read of the API (listing, documents, unknown paths).
    Listing,
    /// Webhook deliveries: a sender retries in bursts, so it gets its own, generous policy.
    Webhook,
}

impl PolicyKind {
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            PolicyKind::Listing => "listing",
            PolicyKind::Webhook => "webhook",
        }
    }
}

/// A GCRA policy: `quota` requests per `window`, of which `burst` may come at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub kind: PolicyKind,
    pub quota: NonZeroU32,
    pub window: Duration,
    pub burst: NonZeroU32,
}

impl Policy {
    /// The time one request's worth of quota takes to come back (GCRA's emission interval).
    #[must_use]
    pub fn interval(&self) -> Duration {
        self.window / self.quota.get()
    }

    /// This policy split over `share` instances: the conservative limit each instance enforces
    /// alone while Redis cannot hold the shared quota.
    #[must_use]
    pub fn governor_quota(&self, share: u32) -> governor::Quota {
        let share = share.max(1);
        let burst = NonZeroU32::new(self.burst.get() / share).unwrap_or(NonZeroU32::MIN);
        governor::Quota::with_period(self.interval() * share)
            .unwrap_or_else(|| governor::Quota::per_second(self.quota))
            .allow_burst(burst)
    }

    /// `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers): `"listing";q=6000;w=60`.
    #[must_use]
    pub fn header(&self) -> HeaderValue {
        let text = format!(
            "\"{}\";q={};w={}",
            self.kind.name(),
            self.quota,
            self.window.as_secs().max(1)
        );
        HeaderValue::try_from(text).expect("digits and a token are a valid header value")
    }

    /// Parses `6000/min`, `100/60s`, `10/s,burst=20`. Without `burst`, a twentieth of the
    /// window's quota (three seconds of a per-minute policy) may come at once.
    pub fn parse(kind: PolicyKind, text: &str) -> Result<Policy, String> {
        let (rate, burst) = match text.split_once(',') {
            Some((rate, burst)) => (rate.trim(), Some(burst.trim())),
            None => (text.trim(), None),
        };
        let (quota, window) = rate
            .split_once('/')
            .ok_or_else(|| format!("{text:?}: expected COUNT/WINDOW, e.g. 6000/min"))?;
        let quota: NonZeroU32 = quota
            .trim()
            .parse()
            .map_err(|_| format!("{quota:?} is not a positive request count"))?;
        let window = parse_window(window.trim())?;
        let burst = match burst {
            None => NonZeroU32::new(quota.get() / 20).unwrap_or(NonZeroU32::MIN),
            Some(burst) => burst
                .strip_prefix("burst=")
                .and_then(|n| n.trim().parse().ok())
                .ok_or_else(|| format!("{burst:?}: expected burst=N with N ≥ 1"))?,
        };
        Ok(Policy {
            kind,
            quota,
            window,
            burst,
        })
    }
}

/// `s`, `min`, `h`, optionally with a count: `60s`, `5min`.
fn parse_window(text: &str) -> Result<Duration, String> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (count, unit) = text.split_at(digits);
    let count: u64 = if count.is_empty() {
        1
    } else {
        count
            .parse()
            .map_err(|_| format!("{text:?} is not a window"))?
    };
    let unit = match unit.trim() {
        "s" | "sec" | "second" => 1,
        "m" | "min" | "minute" => 60,
        "h" | "hour" => 3600,
        other => return Err(format!("{other:?} is not a window unit (s, min, h)")),
    };
    if count == 0 {
        return Err(format!("{text:?}: the window must be longer than zero"));
    }
    Ok(Duration::from_secs(count * unit))
}

/// The policies in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policies {
    pub listing: Option<Policy>,
    pub webhook: Option<Policy>,
}

impl Policies {
    /// A named preset: `standard` (listing 6000/min burst 300, webhook 60000/min burst 3000),
    /// `seed` (100 per minute for every policy, the original design's limit) or `off`.
    pub fn preset(name: &str) -> Result<Policies, String> {
        let both = |listing: &str, webhook: &str| Policies {
            listing: Policy::parse(PolicyKind::Listing, listing).ok(),
            webhook: Policy::parse(PolicyKind::Webhook, webhook).ok(),
        };
        match name {
            "standard" => Ok(both("6000/min,burst=300", "60000/min,burst=3000")),
            "seed" => Ok(both("100/min,burst=100", "100/min,burst=100")),
            "off" => Ok(Policies {
                listing: None,
                webhook: None,
            }),
            other => Err(format!("{other:?} is not a preset (standard, seed, off)")),
        }
    }

    #[must_use]
    pub fn get(&self, kind: PolicyKind) -> Option<&Policy> {
        match kind {
            PolicyKind::Listing => self.listing.as_ref(),
            PolicyKind::Webhook => self.webhook.as_ref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rates_windows_and_bursts() {
        let policy = Policy::parse(PolicyKind::Listing, "6000/min,burst=300").unwrap();
        assert_eq!(policy.quota.get(), 6000);
        assert_eq!(policy.window, Duration::from_secs(60));
        assert_eq!(policy.burst.get(), 300);
        assert_eq!(policy.interval(), Duration::from_millis(10));
        let policy = Policy::parse(PolicyKind::Webhook, "100/60s").unwrap();
        assert_eq!(policy.burst.get(), 5);
        assert_eq!(policy.window, Duration::from_secs(60));
        assert_eq!(
            Policy::parse(PolicyKind::Listing, "10/s").unwrap().burst,
            NonZeroU32::MIN
        );
    }

    #[test]
    fn rejects_malformed_policies_saying_why() {
        for text in [
            "",
            "6000",
            "0/min",
            "10/0s",
            "10/week",
            "10/min,burst=0",
            "x/min",
        ] {
            assert!(Policy::parse(PolicyKind::Listing, text).is_err(), "{text}");
        }
    }

    #[test]
    fn header_follows_the_draft_syntax() {
        let policy = Policy::parse(PolicyKind::Listing, "6000/min,burst=300").unwrap();
        assert_eq!(policy.header(), "\"listing\";q=6000;w=60");
    }

    #[test]
    fn presets_include_the_original_limit() {
        let seed = Policies::preset("seed").unwrap();
        assert_eq!(seed.listing.unwrap().quota.get(), 100);
        assert!(Policies::preset("off").unwrap().listing.is_none());
        assert!(Policies::preset("lots").is_err());
    }

    #[test]
    fn fallback_share_is_smaller_than_the_whole() {
        let policy = Policy::parse(PolicyKind::Listing, "6000/min,burst=300").unwrap();
        let half = policy.governor_quota(2);
        assert_eq!(half.burst_size().get(), 150);
        assert_eq!(half.replenish_interval(), Duration::from_millis(20));
    }
}
