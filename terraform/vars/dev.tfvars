# Environment "dev": the values of config/env/dev.toml (a test in xtask keeps them equal).
# Generated once from that file; change both together.
name                   = "dev"
region                 = "us-east-1"
model_bucket           = "taxi-duration-models-dev"
model_prefix           = "models"
input_stream           = "taxi-duration-dev-ride-events"
output_stream          = "taxi-duration-dev-predictions"
dead_letter            = "kinesis:taxi-duration-dev-dead-letter"
failure_queue          = "taxi-duration-dev-failures"
ecr_repository         = "taxi-duration-dev-lambda"
function_name          = "taxi-duration-dev-predict"
input_shards           = 1
output_shards          = 1
memory_mb              = 256
timeout_s              = 30
batch_size             = 100
batching_window_s      = 1
max_retry_attempts     = 3
log_retention_days     = 7
alarm_errors_threshold = 1
alarm_iterator_age_ms  = 60000
tags = {
  project     = "taxi-duration"
  environment = "dev"
}
