//! Synthetic Kinesis events of valid rides, for load tests and benchmarks.
#![allow(dead_code)]

use serde_json::Value;

/// A Kinesis event of `n` valid rides with ride ids 0..n, in the course's shape.
pub fn kinesis_event(n: usize) -> Value {
    use base64::Engine as _;
    let records: Vec<Value> = (0..n)
        .map(|i| {
            let ride = serde_json::json!({
                "ride": {"PULocationID": 1 + i % 265, "DOLocationID": 1 + (i * 7) % 265, "trip_distance": (i % 40) as f64 * 0.37},
                "ride_id": i,
            });
            let seq = format!("4963008166608487929058118563032477039860870488080{:07}", i);
            serde_json::json!({
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": i.to_string(),
                    "sequenceNumber": seq,
                    "data": base64::engine::general_purpose::STANDARD.encode(ride.to_string()),
                    "approximateArrivalTimestamp": 1654161514.132,
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": format!("shardId-000000000000:{seq}"),
                "eventName": "aws:kinesis:record",
                "awsRegion": "us-east-1",
                "eventSourceARN": "arn:aws:kinesis:us-east-1:123456789012:stream/ride_events",
            })
        })
        .collect();
    serde_json::json!({ "Records": records })
}
