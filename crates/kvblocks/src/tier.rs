//! Tier identity at run time: which storage layer a block lives in.
//!
//! Managers are typed by a zero-sized tier marker (`BlockManager<Gpu>`); code
//! that crosses tiers at run time (the shared registry, event streams, a
//! transfer queue) names the tier with a [`LogicalLayoutHandle`] instead.

/// The storage layer a block lives in (kvbm-logical's names).
///
/// ```
/// use kvblocks::LogicalLayoutHandle;
/// assert!(LogicalLayoutHandle::G1 < LogicalLayoutHandle::G2, "faster tiers sort first");
/// assert_eq!(LogicalLayoutHandle::G3.to_string(), "G3");
/// assert_eq!("g2".parse::<LogicalLayoutHandle>(), Ok(LogicalLayoutHandle::G2));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LogicalLayoutHandle {
    /// Device memory (GPU HBM).
    G1,
    /// Host memory (pinned CPU RAM).
    G2,
    /// Local disk.
    G3,
    /// Remote storage outside this node's control.
    G4,
}

impl LogicalLayoutHandle {
    /// Every tier, fastest first.
    pub const ALL: [LogicalLayoutHandle; 4] = [Self::G1, Self::G2, Self::G3, Self::G4];

    /// The tier's position, fastest first (`G1` is 0).
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The tier's name (`"G1"` ...).
    pub const fn name(self) -> &'static str {
        match self {
            Self::G1 => "G1",
            Self::G2 => "G2",
            Self::G3 => "G3",
            Self::G4 => "G4",
        }
    }
}

impl std::fmt::Display for LogicalLayoutHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A tier name that is not one of `G1`..`G4`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown tier {0:?} (known: G1, G2, G3, G4)")]
pub struct UnknownTier(pub String);

impl std::str::FromStr for LogicalLayoutHandle {
    type Err = UnknownTier;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|tier| tier.name().eq_ignore_ascii_case(name.trim()))
            .ok_or_else(|| UnknownTier(name.to_string()))
    }
}
