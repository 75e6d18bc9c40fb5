//! Ride events: decoding and validating one record's data into a [`model::Ride`].
//!
//! A ride event is the JSON the course's producer writes:
//! `{"ride": {"PULocationID": 130, "DOLocationID": 205, "trip_distance": 3.66}, "ride_id": 256}`.
//! Extra fields anywhere are ignored. `ride_id` may be a number or a string and keeps its JSON
//! type in the output. `ride.pickup_hour` (0-23) is optional and only used by models with the
//! `hour` feature.
//!
//! Decoding never allocates for numeric ride ids: base64 is decoded into a buffer the caller
//! reuses, and the JSON is read straight into plain fields.

use std::fmt;

use base64::Engine as _;
use model::{MAX_ZONE_ID, Ride};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// The longest trip accepted, in miles. TLC trips longer than this are data errors (the 99.99th
/// percentile of real trips is under 100 miles), so they are dead-lettered rather than predicted.
pub const MAX_TRIP_DISTANCE_MILES: f64 = 500.0;

/// Kinesis partition keys are 1 to 256 Unicode characters; a string ride id becomes the output
/// record's partition key, so longer (or empty) ids could never be written.
pub const MAX_RIDE_ID_CHARS: usize = 256;

/// Why a record can never be predicted. The names are the `kind` field of dead-letter records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectKind {
    /// The Kinesis record's data is not valid base64.
    BadBase64,
    /// The decoded bytes are not JSON.
    NotJson,
    /// A field is missing or has the wrong type.
    InvalidField,
    /// A zone id or distance is outside the accepted range.
    OutOfRange,
}

impl RejectKind {
    /// The snake_case name used in dead-letter records and error lists.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadBase64 => "bad_base64",
            Self::NotJson => "not_json",
            Self::InvalidField => "invalid_field",
            Self::OutOfRange => "out_of_range",
        }
    }
}

impl fmt::Display for RejectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A record that can never succeed, with a sentence saying why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The class of problem.
    pub kind: RejectKind,
    /// A human sentence naming the problem.
    pub reason: String,
}

impl Rejection {
    fn new(kind: RejectKind, reason: impl Into<String>) -> Self {
        Self {
            kind,
            reason: reason.into(),
        }
    }

    /// A payload that is not a ride object at all (direct invocation with a scalar).
    pub fn not_a_ride(what: &str) -> Self {
        Self::new(
            RejectKind::InvalidField,
            format!("payload is {what}, not a ride object, a list of rides or a Kinesis event"),
        )
    }

    /// Classifies a JSON error: syntax errors mean the data is not JSON, data errors mean a field
    /// is missing or has the wrong type.
    fn from_json(e: serde_json::Error) -> Self {
        match e.classify() {
            serde_json::error::Category::Data => Self::new(
                RejectKind::InvalidField,
                format!("ride event has a missing or wrong-typed field: {e}"),
            ),
            _ => Self::new(RejectKind::NotJson, format!("record data is not JSON: {e}")),
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.reason)
    }
}

/// A ride id as the producer sent it: its JSON type is kept in the output.
#[derive(Debug, Clone, PartialEq)]
pub enum RideId {
    /// A signed integer.
    Int(i64),
    /// An unsigned integer too large for `i64`.
    UInt(u64),
    /// A number with a fraction or exponent.
    Float(f64),
    /// A string.
    Str(String),
}

impl RideId {
    /// The output record's partition key: the id as text.
    pub fn partition_key(&self) -> String {
        match self {
            Self::Int(v) => v.to_string(),
            Self::UInt(v) => v.to_string(),
            Self::Float(v) => v.to_string(),
            Self::Str(s) => s.clone(),
        }
    }
}

impl Serialize for RideId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Int(v) => s.serialize_i64(*v),
            Self::UInt(v) => s.serialize_u64(*v),
            Self::Float(v) => s.serialize_f64(*v),
            Self::Str(v) => s.serialize_str(v),
        }
    }
}

impl<'de> Deserialize<'de> for RideId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RideId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number or a string of 1 to 256 characters")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RideId, E> {
                Ok(RideId::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RideId, E> {
                Ok(i64::try_from(v).map_or(RideId::UInt(v), RideId::Int))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<RideId, E> {
                Ok(RideId::Float(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RideId, E> {
                let chars = v.chars().count();
                if chars == 0 || chars > MAX_RIDE_ID_CHARS {
                    return Err(E::invalid_length(chars, &self));
                }
                Ok(RideId::Str(v.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A zone id as sent; read as a wide integer so that negative or huge ids are reported as out of
/// range rather than as a type error. Whole floats (`130.0`, as pandas writes ids in a column with
/// gaps) are accepted.
#[derive(Debug, Clone, Copy)]
struct ZoneId(i64);

impl<'de> Deserialize<'de> for ZoneId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ZoneId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer taxi zone id")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ZoneId, E> {
                Ok(ZoneId(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ZoneId, E> {
                Ok(ZoneId(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ZoneId, E> {
                if v.fract() == 0.0 && v.abs() < 1e15 {
                    Ok(ZoneId(v as i64))
                } else {
                    Err(E::invalid_value(de::Unexpected::Float(v), &self))
                }
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
struct RideFields {
    #[serde(rename = "PULocationID")]
    pu: ZoneId,
    #[serde(rename = "DOLocationID")]
    dol: ZoneId,
    trip_distance: f64,
    #[serde(default)]
    pickup_hour: Option<i64>,
}

#[derive(Deserialize)]
struct RideEventFields {
    ride: RideFields,
    ride_id: RideId,
}

/// A validated ride event.
#[derive(Debug, Clone, PartialEq)]
pub struct RideEvent {
    /// What the model predicts from.
    pub ride: Ride,
    /// The producer's id, echoed in the output.
    pub ride_id: RideId,
}

impl RideEventFields {
    fn validate(self) -> Result<RideEvent, Rejection> {
        let zone = |name: &str, z: ZoneId| {
            if (1..=i64::from(MAX_ZONE_ID)).contains(&z.0) {
                Ok(z.0 as u32)
            } else {
                Err(Rejection::new(
                    RejectKind::OutOfRange,
                    format!(
                        "ride.{name} {} is not a taxi zone id (1 to {MAX_ZONE_ID})",
                        z.0
                    ),
                ))
            }
        };
        let pu_location_id = zone("PULocationID", self.ride.pu)?;
        let do_location_id = zone("DOLocationID", self.ride.dol)?;
        let d = self.ride.trip_distance;
        if !(d.is_finite() && (0.0..=MAX_TRIP_DISTANCE_MILES).contains(&d)) {
            return Err(Rejection::new(
                RejectKind::OutOfRange,
                format!(
                    "ride.trip_distance {d} is not a distance from 0 to {MAX_TRIP_DISTANCE_MILES} miles"
                ),
            ));
        }
        let pickup_hour = match self.ride.pickup_hour {
            None => None,
            Some(h @ 0..=23) => Some(h as u8),
            Some(h) => {
                return Err(Rejection::new(
                    RejectKind::OutOfRange,
                    format!("ride.pickup_hour {h} is not an hour of the day (0 to 23)"),
                ));
            }
        };
        Ok(RideEvent {
            ride: Ride {
                pu_location_id,
                do_location_id,
                trip_distance: d,
                pickup_hour,
            },
            ride_id: self.ride_id,
        })
    }
}

/// Decodes and validates a ride event from JSON bytes.
pub fn parse_ride_json(bytes: &[u8]) -> Result<RideEvent, Rejection> {
    serde_json::from_slice::<RideEventFields>(bytes)
        .map_err(Rejection::from_json)?
        .validate()
}

/// Decodes and validates a ride event from an already-parsed JSON value (direct invocation).
pub fn parse_ride_value(value: &serde_json::Value) -> Result<RideEvent, Rejection> {
    RideEventFields::deserialize(value)
        .map_err(Rejection::from_json)?
        .validate()
}

/// Decodes a Kinesis record's base64 data into `buf` (cleared first, reused across records), then
/// parses and validates the ride event.
pub fn decode_kinesis_data(data: &str, buf: &mut Vec<u8>) -> Result<RideEvent, Rejection> {
    buf.clear();
    base64::engine::general_purpose::STANDARD
        .decode_vec(data.trim(), buf)
        .map_err(|e| {
            Rejection::new(
                RejectKind::BadBase64,
                format!("record data is not valid base64: {e}"),
            )
        })?;
    parse_ride_json(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn decode(json: &str) -> Result<RideEvent, Rejection> {
        decode_kinesis_data(&b64(json), &mut Vec::new())
    }

    fn kind(json: &str) -> RejectKind {
        decode(json).unwrap_err().kind
    }

    #[test]
    fn course_event_decodes() {
        let ev = decode(r#"{"ride": {"PULocationID": 130, "DOLocationID": 205, "trip_distance": 3.66}, "ride_id": 256}"#)
            .unwrap();
        assert_eq!(
            ev.ride,
            Ride {
                pu_location_id: 130,
                do_location_id: 205,
                trip_distance: 3.66,
                pickup_hour: None
            }
        );
        assert_eq!(ev.ride_id, RideId::Int(256));
        assert_eq!(ev.ride_id.partition_key(), "256");
    }

    #[test]
    fn ride_id_keeps_its_json_type() {
        let id = |raw: &str| {
            decode(&format!(r#"{{"ride": {{"PULocationID": 1, "DOLocationID": 2, "trip_distance": 0}}, "ride_id": {raw}}}"#))
                .map(|e| serde_json::to_string(&e.ride_id).unwrap())
        };
        assert_eq!(id("\"abc-1\"").unwrap(), "\"abc-1\"");
        assert_eq!(id("\"tab\\there\"").unwrap(), "\"tab\\there\"");
        assert_eq!(id("18446744073709551615").unwrap(), "18446744073709551615");
        assert_eq!(id("-3").unwrap(), "-3");
        assert_eq!(id("2.5").unwrap(), "2.5");
        assert_eq!(id("null").unwrap_err().kind, RejectKind::InvalidField);
        assert_eq!(id("true").unwrap_err().kind, RejectKind::InvalidField);
        assert_eq!(id("\"\"").unwrap_err().kind, RejectKind::InvalidField);
        assert_eq!(
            id(&format!("\"{}\"", "x".repeat(257))).unwrap_err().kind,
            RejectKind::InvalidField
        );
    }

    #[test]
    fn extra_fields_and_whole_float_zones_are_accepted() {
        let ev = decode(
            r#"{"ride": {"PULocationID": 130.0, "DOLocationID": 205, "trip_distance": 1, "VendorID": 2, "pickup_hour": 7}, "ride_id": "a", "sent_at": "now"}"#,
        )
        .unwrap();
        assert_eq!(ev.ride.pu_location_id, 130);
        assert_eq!(ev.ride.pickup_hour, Some(7));
    }

    #[test]
    fn each_bad_record_gets_its_kind() {
        assert_eq!(
            decode_kinesis_data("not base64!", &mut Vec::new())
                .unwrap_err()
                .kind,
            RejectKind::BadBase64
        );
        assert_eq!(kind("ride=130"), RejectKind::NotJson);
        assert_eq!(kind(r#"{"ride": {"PULocationID": 1"#), RejectKind::NotJson);
        assert_eq!(kind("42"), RejectKind::InvalidField);
        assert_eq!(kind(r#"{"ride_id": 1}"#), RejectKind::InvalidField);
        assert_eq!(
            kind(r#"{"ride": {"PULocationID": 1, "DOLocationID": 2, "trip_distance": 1}}"#),
            RejectKind::InvalidField
        );
        assert_eq!(
            kind(
                r#"{"ride": {"PULocationID": 1, "DOLocationID": 2, "trip_distance": "3.1"}, "ride_id": 1}"#
            ),
            RejectKind::InvalidField
        );
        assert_eq!(
            kind(
                r#"{"ride": {"PULocationID": 1.5, "DOLocationID": 2, "trip_distance": 3}, "ride_id": 1}"#
            ),
            RejectKind::InvalidField
        );
        for (pu, dol, d) in [
            ("0", "2", "1"),
            ("1", "266", "1"),
            ("-4", "2", "1"),
            ("1", "2", "-0.1"),
            ("1", "2", "501"),
        ] {
            let json = format!(
                r#"{{"ride": {{"PULocationID": {pu}, "DOLocationID": {dol}, "trip_distance": {d}}}, "ride_id": 1}}"#
            );
            assert_eq!(kind(&json), RejectKind::OutOfRange, "{json}");
        }
        assert_eq!(
            kind(
                r#"{"ride": {"PULocationID": 1, "DOLocationID": 2, "trip_distance": 1, "pickup_hour": 24}, "ride_id": 1}"#
            ),
            RejectKind::OutOfRange
        );
    }

    #[test]
    fn reasons_name_the_problem() {
        let r = decode(r#"{"ride": {"PULocationID": 300, "DOLocationID": 2, "trip_distance": 1}, "ride_id": 1}"#).unwrap_err();
        assert_eq!(
            r.reason,
            "ride.PULocationID 300 is not a taxi zone id (1 to 265)"
        );
        let r = decode(r#"{"ride": {"PULocationID": 3, "DOLocationID": 2}, "ride_id": 1}"#)
            .unwrap_err();
        assert!(
            r.reason.contains("missing field `trip_distance`"),
            "{}",
            r.reason
        );
    }
}
