#!/usr/bin/env python3
"""Cost per record of the Python reference: the course's Lambda predicts each ride with
`model.predict(features)` on one dict through a DictVectorizer + LinearRegression pipeline.

Compares with `cargo bench -p lambda --bench handler`. The pipeline is fitted on synthetic rides
with 20,000 pickup/dropoff pairs, the size the Rust benchmark's model has (prediction cost does
not depend on the coefficient values).

usage: python python_reference.py      (in the reference venv: pip install -r
       /work/shared/reference/requirements.txt)
prints one JSON object.
"""
import base64
import json
import random
import timeit

import sklearn
from sklearn.feature_extraction import DictVectorizer
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import make_pipeline

PAIRS = 20_000
random.seed(7)
pairs = set()
while len(pairs) < PAIRS:
    pairs.add((random.randint(1, 265), random.randint(1, 265)))
pairs = sorted(pairs)
rows = [{"PU_DO": f"{pu}_{do}", "trip_distance": random.random() * 15} for pu, do in pairs * 3]
y = [5 + 2.1 * r["trip_distance"] + random.random() * 4 for r in rows]
pipeline = make_pipeline(DictVectorizer(), LinearRegression())
pipeline.fit(rows, y)


# The course's handler, per record (streaming/lambda_function.py in the MLOps Zoomcamp).
def prepare_features(ride):
    return {"PU_DO": f"{ride['PULocationID']}_{ride['DOLocationID']}", "trip_distance": ride["trip_distance"]}


def predict(features):
    return float(pipeline.predict(features)[0])


def handle_record(data):
    ride_event = json.loads(base64.b64decode(data).decode("utf-8"))
    ride, ride_id = ride_event["ride"], ride_event["ride_id"]
    prediction = predict(prepare_features(ride))
    return json.dumps({"model": "ride_duration_prediction_model", "version": "v",
                       "prediction": {"ride_duration": prediction, "ride_id": ride_id}})


features = {"PU_DO": "130_205", "trip_distance": 3.66}
data = base64.b64encode(json.dumps(
    {"ride": {"PULocationID": 130, "DOLocationID": 205, "trip_distance": 3.66}, "ride_id": 256}).encode()).decode()


def best_per_call(stmt, number=2000, repeat=5):
    return min(timeit.repeat(stmt, number=number, repeat=repeat)) / number


predict_s = best_per_call(lambda: pipeline.predict(features))
record_s = best_per_call(lambda: handle_record(data))
batch = [prepare_features({"PULocationID": pu, "DOLocationID": do, "trip_distance": 1.0}) for pu, do in pairs[:500]]
batch_s = best_per_call(lambda: pipeline.predict(batch), number=50) / 500
print(json.dumps({
    "sklearn": sklearn.__version__,
    "pairs": PAIRS,
    "predict_one_dict_us": round(predict_s * 1e6, 2),
    "predict_one_dict_per_s": round(1 / predict_s),
    "course_handler_per_record_us": round(record_s * 1e6, 2),
    "course_handler_per_s": round(1 / record_s),
    "predict_500_dicts_at_once_us_per_record": round(batch_s * 1e6, 3),
}, indent=2))
