//! Feature specification and the ride a prediction is made for.
//!
//! The default recipe is the course's: a one-hot `PU_DO` (pickup and dropoff zone pair) plus the
//! numeric `trip_distance`. Categorical terms map a ride to a slot in a fixed-size table, so that
//! prediction is an array lookup and never allocates.

use serde::{Deserialize, Serialize};

use crate::{MAX_ZONE_ID, ModelError};

/// Zone slots: ids 0..=265.
const ZONE_SLOTS: usize = MAX_ZONE_ID as usize + 1;

/// One ride, as the model sees it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Ride {
    /// Pickup taxi zone id.
    #[serde(rename = "PULocationID")]
    pub pu_location_id: u32,
    /// Dropoff taxi zone id.
    #[serde(rename = "DOLocationID")]
    pub do_location_id: u32,
    /// Trip distance in miles.
    pub trip_distance: f64,
    /// Hour of day of the pickup (0-23), when known; only the `hour` feature uses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pickup_hour: Option<u8>,
}

/// A categorical term, one-hot encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Categorical {
    /// The pickup and dropoff zone pair, `"<PU>_<DO>"`.
    PuDo,
    /// The pickup zone.
    Pu,
    /// The dropoff zone.
    Do,
    /// The pickup hour of day.
    Hour,
}

impl Categorical {
    /// The name scikit-learn's DictVectorizer would give the column prefix.
    pub fn name(self) -> &'static str {
        match self {
            Self::PuDo => "PU_DO",
            Self::Pu => "PULocationID",
            Self::Do => "DOLocationID",
            Self::Hour => "hour",
        }
    }

    /// How many slots the term's lookup table has.
    pub fn slots(self) -> usize {
        match self {
            Self::PuDo => ZONE_SLOTS * ZONE_SLOTS,
            Self::Pu | Self::Do => ZONE_SLOTS,
            Self::Hour => 24,
        }
    }

    /// The ride's slot, or `None` when the ride has no valid value for this term.
    #[inline]
    pub fn slot(self, ride: &Ride) -> Option<usize> {
        let zone = |z: u32| (z as usize) < ZONE_SLOTS;
        match self {
            Self::PuDo => (zone(ride.pu_location_id) && zone(ride.do_location_id))
                .then(|| ride.pu_location_id as usize * ZONE_SLOTS + ride.do_location_id as usize),
            Self::Pu => zone(ride.pu_location_id).then_some(ride.pu_location_id as usize),
            Self::Do => zone(ride.do_location_id).then_some(ride.do_location_id as usize),
            Self::Hour => ride.pickup_hour.filter(|h| *h < 24).map(usize::from),
        }
    }

    /// The vocabulary label of a slot, as DictVectorizer writes it after `=`: `"130_205"`.
    pub fn label(self, slot: usize) -> String {
        match self {
            Self::PuDo => format!("{}_{}", slot / ZONE_SLOTS, slot % ZONE_SLOTS),
            Self::Pu | Self::Do | Self::Hour => slot.to_string(),
        }
    }

    /// The slot of a vocabulary label; `None` when it is not one this term produces.
    pub fn parse_label(self, label: &str) -> Option<usize> {
        let slot = match self {
            Self::PuDo => {
                let (pu, dol) = label.split_once('_')?;
                let (pu, dol): (usize, usize) = (pu.parse().ok()?, dol.parse().ok()?);
                if pu >= ZONE_SLOTS || dol >= ZONE_SLOTS {
                    return None;
                }
                pu * ZONE_SLOTS + dol
            }
            Self::Pu | Self::Do | Self::Hour => label.parse().ok()?,
        };
        (slot < self.slots()).then_some(slot)
    }
}

/// A numeric term.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Numeric {
    /// Trip distance in miles.
    TripDistance,
}

impl Numeric {
    /// The column name.
    pub fn name(self) -> &'static str {
        match self {
            Self::TripDistance => "trip_distance",
        }
    }

    /// The ride's value.
    #[inline]
    pub fn value(self, ride: &Ride) -> f64 {
        match self {
            Self::TripDistance => ride.trip_distance,
        }
    }
}

/// Which features a model uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureSpec {
    /// One-hot terms. The first is solved exactly by absorption; further ones are fitted as dense
    /// columns with their first level as the reference.
    pub categorical: Vec<Categorical>,
    /// Numeric terms.
    pub numeric: Vec<Numeric>,
}

impl Default for FeatureSpec {
    /// The course's recipe: one-hot `PU_DO` plus `trip_distance`.
    fn default() -> Self {
        Self {
            categorical: vec![Categorical::PuDo],
            numeric: vec![Numeric::TripDistance],
        }
    }
}

impl FeatureSpec {
    /// Parses a comma-separated list such as `pu_do,trip_distance` or `pu,do,hour,trip_distance`.
    pub fn parse(s: &str) -> Result<Self, ModelError> {
        let mut spec = Self {
            categorical: Vec::new(),
            numeric: Vec::new(),
        };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "pu_do" => spec.categorical.push(Categorical::PuDo),
                "pu" => spec.categorical.push(Categorical::Pu),
                "do" => spec.categorical.push(Categorical::Do),
                "hour" => spec.categorical.push(Categorical::Hour),
                "trip_distance" => spec.numeric.push(Numeric::TripDistance),
                other => return Err(ModelError::UnknownFeature(other.to_string())),
            }
        }
        if spec.categorical.is_empty() && spec.numeric.is_empty() {
            return Err(ModelError::UnknownFeature(s.to_string()));
        }
        Ok(spec)
    }

    /// True when a term needs the pickup hour.
    pub fn needs_hour(&self) -> bool {
        self.categorical.contains(&Categorical::Hour)
    }
}

impl std::fmt::Display for FeatureSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self
            .categorical
            .iter()
            .map(|c| match c {
                Categorical::PuDo => "pu_do",
                Categorical::Pu => "pu",
                Categorical::Do => "do",
                Categorical::Hour => "hour",
            })
            .chain(self.numeric.iter().map(|n| n.name()))
            .collect();
        f.write_str(&names.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ride(pu: u32, dol: u32) -> Ride {
        Ride {
            pu_location_id: pu,
            do_location_id: dol,
            trip_distance: 1.0,
            pickup_hour: Some(7),
        }
    }

    #[test]
    fn pu_do_labels_round_trip() {
        let slot = Categorical::PuDo.slot(&ride(130, 205)).unwrap();
        assert_eq!(Categorical::PuDo.label(slot), "130_205");
        assert_eq!(Categorical::PuDo.parse_label("130_205"), Some(slot));
    }

    #[test]
    fn out_of_range_zones_have_no_slot() {
        assert_eq!(Categorical::PuDo.slot(&ride(266, 1)), None);
        assert_eq!(Categorical::Do.slot(&ride(1, 9999)), None);
        assert_eq!(Categorical::PuDo.parse_label("300_1"), None);
        assert_eq!(Categorical::PuDo.parse_label("a_b"), None);
    }

    #[test]
    fn spec_parses_and_prints() {
        let spec = FeatureSpec::parse("pu,do,hour,trip_distance").unwrap();
        assert_eq!(spec.to_string(), "pu,do,hour,trip_distance");
        assert!(spec.needs_hour());
        assert_eq!(
            FeatureSpec::parse("pu_do,trip_distance").unwrap(),
            FeatureSpec::default()
        );
        assert!(
            matches!(FeatureSpec::parse("pu_do,zone"), Err(ModelError::UnknownFeature(f)) if f == "zone")
        );
    }
}
