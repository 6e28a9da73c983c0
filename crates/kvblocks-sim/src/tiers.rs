//! The tier list of a tiered replay as the user writes it, checked: which
//! tiers (`G1`..`G4`), how many blocks each holds, and which eviction policy
//! each lower tier runs.
//!
//! This module only parses and validates; it builds no manager (that is
//! [`crate::tiered`]). Every mistake is a [`TierSpecError`] whose message is
//! one line naming the offending part, so the command line can print it as
//! is.
//!
//! # Syntax
//!
//! - Tiers: `G1=4000,G2=32000[,G3=..][,G4=..]`. `G1` comes first (requests
//!   are served from it); the others follow in storage order, each at most
//!   once; a tier may be left out (`G1=4000,G3=100000`: GPU and disk, no host
//!   tier). A capacity is a block count of at least 1, or `inf`: as many
//!   blocks as the trace has distinct blocks, so the tier never evicts.
//! - Lower-tier policies: `G2=lru,G3=sieve`; a tier not named runs the G1
//!   policy of the run.
//! - Bandwidths: `G2=25,G3=5.5` in GB/s (10^9 bytes per second).

use kvblocks::{EvictionPolicyKind, LogicalLayoutHandle};

use crate::replay::MAX_CAPACITY;

/// How many blocks a tier holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TierCapacity {
    /// A fixed block count.
    Blocks(usize),
    /// `inf`: as many blocks as the replayed trace has distinct blocks.
    Unbounded,
}

impl TierCapacity {
    /// The block count for a trace with `distinct` distinct blocks.
    pub fn resolve(self, distinct: usize) -> usize {
        match self {
            TierCapacity::Blocks(blocks) => blocks,
            TierCapacity::Unbounded => distinct.clamp(1, MAX_CAPACITY),
        }
    }
}

impl std::fmt::Display for TierCapacity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TierCapacity::Blocks(blocks) => write!(f, "{blocks}"),
            TierCapacity::Unbounded => f.write_str("inf"),
        }
    }
}

/// One tier of a configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TierSpec {
    /// Which tier.
    pub tier: LogicalLayoutHandle,
    /// Its size.
    pub capacity: TierCapacity,
}

/// A checked tier list: `G1` first, the rest in storage order, none twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierList(Vec<TierSpec>);

impl TierList {
    /// The tiers, `G1` first.
    pub fn tiers(&self) -> &[TierSpec] {
        &self.0
    }

    /// The list as written canonically (`G1=4000,G2=inf`).
    pub fn label(&self) -> String {
        self.0
            .iter()
            .map(|spec| format!("{}={}", spec.tier, spec.capacity))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A tier list, policy list or bandwidth list that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TierSpecError {
    /// Nothing between the commas.
    #[error("{flag}: empty tier list (expected e.g. G1=4000,G2=32000)")]
    Empty {
        /// The flag.
        flag: &'static str,
    },
    /// A part without `=`.
    #[error("{flag}: `{part}` is not TIER=VALUE (expected e.g. {example})")]
    NotAPair {
        /// The flag.
        flag: &'static str,
        /// What was written.
        part: String,
        /// A correct example.
        example: &'static str,
    },
    /// Not one of G1..G4.
    #[error("{flag}: unknown tier `{name}` (known: G1, G2, G3, G4)")]
    UnknownTier {
        /// The flag.
        flag: &'static str,
        /// What was written.
        name: String,
    },
    /// A tier named twice.
    #[error("{flag}: tier {tier} is given twice")]
    Repeated {
        /// The flag.
        flag: &'static str,
        /// The tier.
        tier: LogicalLayoutHandle,
    },
    /// A tier after a slower one.
    #[error("--tiers: {tier} comes after {previous}; list tiers fastest first (G1, G2, G3, G4)")]
    OutOfOrder {
        /// The tier out of place.
        tier: LogicalLayoutHandle,
        /// The slower tier before it.
        previous: LogicalLayoutHandle,
    },
    /// The list does not start with G1.
    #[error("--tiers: the first tier must be G1 (requests are served from it), not {first}")]
    NoG1 {
        /// The first tier given.
        first: LogicalLayoutHandle,
    },
    /// Not a block count.
    #[error(
        "--tiers: {tier}=`{text}` is not a block count (a whole number of at least 1, or inf)"
    )]
    BadCapacity {
        /// The tier.
        tier: LogicalLayoutHandle,
        /// What was written.
        text: String,
    },
    /// A capacity of zero.
    #[error("--tiers: {tier}=0 is not a valid capacity (a tier holds at least 1 block)")]
    ZeroCapacity {
        /// The tier.
        tier: LogicalLayoutHandle,
    },
    /// Past [`MAX_CAPACITY`].
    #[error(
        "--tiers: {tier}={text} blocks is more than kvsim replays (limit {MAX_CAPACITY} blocks)"
    )]
    TooLarge {
        /// The tier.
        tier: LogicalLayoutHandle,
        /// What was written.
        text: String,
    },
    /// A policy name that is not known.
    #[error("--tier-policy: {tier}=`{name}` is not a policy (known: {known})")]
    UnknownPolicy {
        /// The tier.
        tier: LogicalLayoutHandle,
        /// What was written.
        name: String,
        /// The known names.
        known: String,
    },
    /// A policy for G1 (G1's policy is `--policy`).
    #[error("--tier-policy: G1's policy is set with --policy; name lower tiers only (G2..G4)")]
    G1Policy,
    /// A bandwidth that is not a positive number.
    #[error("--tier-bandwidth: {tier}=`{text}` is not a positive bandwidth in GB/s")]
    BadBandwidth {
        /// The tier.
        tier: LogicalLayoutHandle,
        /// What was written.
        text: String,
    },
    /// A bandwidth for G1 (the tier requests are served from moves nothing).
    #[error("--tier-bandwidth: G1 moves no blocks; give bandwidths of G2..G4 only")]
    G1Bandwidth,
}

/// Splits `TIER=VALUE,...` into checked tier names and raw values; every
/// tier at most once.
fn pairs<'a>(
    flag: &'static str,
    text: &'a str,
    example: &'static str,
) -> Result<Vec<(LogicalLayoutHandle, &'a str)>, TierSpecError> {
    if text.trim().is_empty() {
        return Err(TierSpecError::Empty { flag });
    }
    let mut out: Vec<(LogicalLayoutHandle, &str)> = Vec::new();
    for part in text.split(',').map(str::trim) {
        if part.is_empty() {
            return Err(TierSpecError::Empty { flag });
        }
        let (name, value) = part
            .split_once('=')
            .ok_or_else(|| TierSpecError::NotAPair {
                flag,
                part: part.to_string(),
                example,
            })?;
        let tier: LogicalLayoutHandle =
            name.trim()
                .parse()
                .map_err(|_| TierSpecError::UnknownTier {
                    flag,
                    name: name.trim().to_string(),
                })?;
        if out.iter().any(|&(seen, _)| seen == tier) {
            return Err(TierSpecError::Repeated { flag, tier });
        }
        out.push((tier, value.trim()));
    }
    Ok(out)
}

fn parse_capacity(tier: LogicalLayoutHandle, text: &str) -> Result<TierCapacity, TierSpecError> {
    if text.eq_ignore_ascii_case("inf") {
        return Ok(TierCapacity::Unbounded);
    }
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TierSpecError::BadCapacity {
            tier,
            text: text.to_string(),
        });
    }
    let too_large = || TierSpecError::TooLarge {
        tier,
        text: text.to_string(),
    };
    let blocks: usize = text.parse().map_err(|_| too_large())?;
    if blocks == 0 {
        return Err(TierSpecError::ZeroCapacity { tier });
    }
    if blocks > MAX_CAPACITY {
        return Err(too_large());
    }
    Ok(TierCapacity::Blocks(blocks))
}

/// Parses and checks one `--tiers` value.
pub fn parse_tiers(text: &str) -> Result<TierList, TierSpecError> {
    let mut specs: Vec<TierSpec> = Vec::new();
    for (tier, value) in pairs("--tiers", text, "G1=4000,G2=32000")? {
        if let Some(previous) = specs.last().map(|s| s.tier) {
            if tier < previous {
                return Err(TierSpecError::OutOfOrder { tier, previous });
            }
        } else if tier != LogicalLayoutHandle::G1 {
            return Err(TierSpecError::NoG1 { first: tier });
        }
        specs.push(TierSpec {
            tier,
            capacity: parse_capacity(tier, value)?,
        });
    }
    Ok(TierList(specs))
}

/// Parses `--tier-policy`: a policy per lower tier.
pub fn parse_tier_policies(
    text: &str,
) -> Result<Vec<(LogicalLayoutHandle, EvictionPolicyKind)>, TierSpecError> {
    let mut out = Vec::new();
    for (tier, name) in pairs("--tier-policy", text, "G2=lru,G3=sieve")? {
        if tier == LogicalLayoutHandle::G1 {
            return Err(TierSpecError::G1Policy);
        }
        let kind = name.parse().map_err(|_| TierSpecError::UnknownPolicy {
            tier,
            name: name.to_string(),
            known: EvictionPolicyKind::ALL
                .iter()
                .map(|k| k.name())
                .collect::<Vec<_>>()
                .join(", "),
        })?;
        out.push((tier, kind));
    }
    Ok(out)
}

/// Parses `--tier-bandwidth`: GB/s per lower tier.
pub fn parse_bandwidths(text: &str) -> Result<Vec<(LogicalLayoutHandle, f64)>, TierSpecError> {
    let mut out = Vec::new();
    for (tier, value) in pairs("--tier-bandwidth", text, "G2=25,G3=5")? {
        if tier == LogicalLayoutHandle::G1 {
            return Err(TierSpecError::G1Bandwidth);
        }
        let gb_per_s: f64 = value
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite() && *v > 0.0)
            .ok_or_else(|| TierSpecError::BadBandwidth {
                tier,
                text: value.to_string(),
            })?;
        out.push((tier, gb_per_s));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use LogicalLayoutHandle::{G1, G2, G3};

    #[test]
    fn a_tier_list_parses_fastest_first_with_gaps_and_inf() {
        let list = parse_tiers(" g1=4000, G3=inf ").unwrap();
        assert_eq!(
            list.tiers(),
            &[
                TierSpec {
                    tier: G1,
                    capacity: TierCapacity::Blocks(4000)
                },
                TierSpec {
                    tier: G3,
                    capacity: TierCapacity::Unbounded
                }
            ]
        );
        assert_eq!(list.label(), "G1=4000,G3=inf");
        assert_eq!(TierCapacity::Unbounded.resolve(123), 123);
    }

    #[test]
    fn every_malformed_tier_list_names_its_mistake() {
        let cases = [
            ("", "empty tier list"),
            ("G1=4,,G2=8", "empty tier list"),
            ("G1:4000", "not TIER=VALUE"),
            ("G5=10", "unknown tier `G5`"),
            ("G1=4,G1=8", "G1 is given twice"),
            ("G1=4,G3=8,G2=9", "G2 comes after G3"),
            ("G2=8", "must be G1"),
            ("G1=-5", "G1=`-5` is not a block count"),
            ("G1=4,G2=abc", "G2=`abc` is not a block count"),
            ("G1=4,G2=1.5", "G2=`1.5`"),
            ("G1=", "G1=``"),
            ("G1=0", "G1=0 is not a valid capacity"),
            ("G1=99999999999999999999999", "more than kvsim replays"),
            ("G1=16777217", "more than kvsim replays"),
        ];
        for (text, needle) in cases {
            let message = parse_tiers(text).unwrap_err().to_string();
            assert!(message.contains(needle), "{text:?}: {message}");
            assert!(!message.contains('\n'), "{message}");
        }
    }

    #[test]
    fn lower_tier_policies_and_bandwidths_parse_and_refuse_g1() {
        assert_eq!(
            parse_tier_policies("G2=LRU,G3=sieve").unwrap(),
            vec![
                (G2, EvictionPolicyKind::Lru),
                (G3, EvictionPolicyKind::Sieve)
            ]
        );
        assert_eq!(parse_tier_policies("G1=lru"), Err(TierSpecError::G1Policy));
        assert!(parse_tier_policies("G2=mru")
            .unwrap_err()
            .to_string()
            .contains("G2=`mru` is not a policy"));
        assert_eq!(parse_bandwidths("G2=12.5").unwrap(), vec![(G2, 12.5)]);
        for bad in ["G2=0", "G2=-1", "G2=fast", "G2=inf", "G2=NaN"] {
            assert!(matches!(
                parse_bandwidths(bad),
                Err(TierSpecError::BadBandwidth { .. })
            ));
        }
        assert_eq!(parse_bandwidths("G1=3"), Err(TierSpecError::G1Bandwidth));
    }
}
