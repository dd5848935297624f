//! The TCB status of a piece of evidence: Intel's levels from best to worst, and the outcomes
//! that are not levels (no collateral, no matching level, dev evidence).

use std::fmt;

/// How current the platform that made the evidence is.
///
/// Intel's statuses come from signed collateral; one this build does not know is kept as
/// [`TcbStatus::Unknown`], which ranks below every known level and no policy can accept.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TcbStatus {
    /// The platform is at the latest TCB level.
    UpToDate,
    /// Up to date, but software hardening is needed for some advisories.
    SwHardeningNeeded,
    /// Up to date, but the platform's configuration needs changing.
    ConfigurationNeeded,
    /// Both of the above.
    ConfigurationAndSwHardeningNeeded,
    /// The platform's TCB is out of date.
    OutOfDate,
    /// Out of date, and the configuration needs changing.
    OutOfDateConfigurationNeeded,
    /// The platform's keys are revoked; never acceptable.
    Revoked,
    /// No collateral was given (TDX), or a check failed before the TCB could be read (SNP).
    Unverified,
    /// The collateral was checked but no TCB level matches the platform.
    NoMatchingTcbLevel,
    /// Dev evidence has no TCB.
    NotApplicable,
    /// A status the collateral names that this build does not know.
    Unknown(String),
}

/// Intel's statuses, best first; a policy may name these (but never `Revoked`).
pub const INTEL_LEVELS: [TcbStatus; 7] = [
    TcbStatus::UpToDate,
    TcbStatus::SwHardeningNeeded,
    TcbStatus::ConfigurationNeeded,
    TcbStatus::ConfigurationAndSwHardeningNeeded,
    TcbStatus::OutOfDate,
    TcbStatus::OutOfDateConfigurationNeeded,
    TcbStatus::Revoked,
];

impl TcbStatus {
    /// The name Intel's collateral and our JSON use.
    pub fn as_str(&self) -> &str {
        match self {
            TcbStatus::UpToDate => "UpToDate",
            TcbStatus::SwHardeningNeeded => "SWHardeningNeeded",
            TcbStatus::ConfigurationNeeded => "ConfigurationNeeded",
            TcbStatus::ConfigurationAndSwHardeningNeeded => "ConfigurationAndSWHardeningNeeded",
            TcbStatus::OutOfDate => "OutOfDate",
            TcbStatus::OutOfDateConfigurationNeeded => "OutOfDateConfigurationNeeded",
            TcbStatus::Revoked => "Revoked",
            TcbStatus::Unverified => "Unverified",
            TcbStatus::NoMatchingTcbLevel => "NoMatchingTcbLevel",
            TcbStatus::NotApplicable => "NotApplicable",
            TcbStatus::Unknown(s) => s,
        }
    }

    /// Reads one of Intel's level names (as collateral states it); anything else is
    /// [`TcbStatus::Unknown`].
    pub fn from_intel(name: &str) -> Self {
        INTEL_LEVELS
            .iter()
            .find(|s| s.as_str() == name)
            .cloned()
            .unwrap_or_else(|| TcbStatus::Unknown(name.to_owned()))
    }

    /// Position in Intel's best-to-worst order; every other status ranks worst of all.
    pub fn rank(&self) -> usize {
        INTEL_LEVELS
            .iter()
            .position(|s| s == self)
            .unwrap_or(INTEL_LEVELS.len())
    }
}

impl fmt::Display for TcbStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ranks_last() {
        for s in &INTEL_LEVELS {
            assert_eq!(&TcbStatus::from_intel(s.as_str()), s);
        }
        let odd = TcbStatus::from_intel("TDRelaunchAdvised");
        assert_eq!(odd, TcbStatus::Unknown("TDRelaunchAdvised".into()));
        assert!(odd.rank() > TcbStatus::Revoked.rank());
        assert!(TcbStatus::UpToDate.rank() < TcbStatus::OutOfDate.rank());
        // Not Intel levels: never confused with one.
        assert_eq!(
            TcbStatus::from_intel("Unverified"),
            TcbStatus::Unknown("Unverified".into())
        );
    }
}
