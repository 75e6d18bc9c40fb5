# Environment "stg": the values of config/env/stg.toml (a test in xtask keeps them equal).
# Generated once from that file; change both together.
name                   = "stg"
region                 = "us-east-1"
model_bucket           = "taxi-duration-models-stg"
model_prefix           = "models"
input_stream           = "taxi-duration-stg-ride-events"
output_stream          = "taxi-duration-stg-predictions"
dead_letter            = "kinesis:taxi-duration-stg-dead-letter"
failure_queue          = "taxi-duration-stg-failures"
ecr_repository         = "taxi-duration-stg-lambda"
function_name          = "taxi-duration-stg-predict"
input_shards           = 1
output_shards          = 1
memory_mb              = 512
timeout_s              = 30
batch_size             = 100
batching_window_s      = 1
max_retry_attempts     = 3
log_retention_days     = 14
alarm_errors_threshold = 5
alarm_iterator_age_ms  = 120000
tags = {
  project     = "taxi-duration"
  environment = "stg"
}
