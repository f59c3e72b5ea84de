//! The load-balancing policy a resource declares and clients follow.
//! Shared by the CRD, the ZooKeeper records and the discovery client; no I/O.

use serde::{Deserialize, Serialize};

/// How clients pick one provider per request.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum Policy {
    /// Each endpoint in turn.
    #[default]
    RoundRobin,
    /// Uniformly at random.
    Random,
    /// At random, in proportion to the published weights.
    WeightedRandom,
    /// Smooth weighted round robin (nginx style): proportional and evenly interleaved.
    WeightedRoundRobin,
    /// Power of two choices over in-flight request counts.
    LeastRequest,
    /// A key maps to the same endpoint while it stays; about 1/n of keys move when one of n leaves.
    ConsistentHash,
}

impl Policy {
    /// Every policy, in declaration order.
    pub const ALL: [Policy; 6] = [
        Policy::RoundRobin,
        Policy::Random,
        Policy::WeightedRandom,
        Policy::WeightedRoundRobin,
        Policy::LeastRequest,
        Policy::ConsistentHash,
    ];

    /// The name used in YAML, JSON and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::RoundRobin => "RoundRobin",
            Policy::Random => "Random",
            Policy::WeightedRandom => "WeightedRandom",
            Policy::WeightedRoundRobin => "WeightedRoundRobin",
            Policy::LeastRequest => "LeastRequest",
            Policy::ConsistentHash => "ConsistentHash",
        }
    }
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Policy::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                let names: Vec<_> = Policy::ALL.iter().map(|p| p.as_str()).collect();
                format!("unknown policy {s:?}; expected one of {}", names.join(", "))
            })
    }
}
