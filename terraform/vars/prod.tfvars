# Environment "prod": the values of config/env/prod.toml (a test in xtask keeps them equal).
# Generated once from that file; change both together.
name                   = "prod"
region                 = "us-east-1"
model_bucket           = "taxi-duration-models-prod"
model_prefix           = "models"
input_stream           = "taxi-duration-prod-ride-events"
output_stream          = "taxi-duration-prod-predictions"
dead_letter            = "kinesis:taxi-duration-prod-dead-letter"
failure_queue          = "taxi-duration-prod-failures"
ecr_repository         = "taxi-duration-prod-lambda"
function_name          = "taxi-duration-prod-predict"
input_shards           = 2
output_shards          = 2
memory_mb              = 1024
timeout_s              = 30
batch_size             = 100
batching_window_s      = 1
max_retry_attempts     = 3
log_retention_days     = 30
alarm_errors_threshold = 10
alarm_iterator_age_ms  = 300000
tags = {
  project     = "taxi-duration"
  environment = "prod"
}
