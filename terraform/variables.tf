# The names of these variables are the keys of config/env/<env>.toml, and vars/<env>.tfvars holds
# the same values (a test in xtask keeps them in sync), so both engines deploy the same thing.

variable "name" {
  description = "The environment: dev, stg or prod."
  type        = string
  validation {
    condition     = contains(["dev", "stg", "prod"], var.name)
    error_message = "name must be dev, stg or prod."
  }
}
variable "region" {
  type = string
}
variable "model_bucket" {
  description = "Base name of the model bucket; the bucket is <model_bucket>-<account id>."
  type        = string
}
variable "model_prefix" {
  type = string
}
variable "input_stream" {
  type = string
}
variable "output_stream" {
  type = string
}
variable "dead_letter" {
  description = "kinesis:<stream> or s3://<bucket>/<prefix>."
  type        = string
}
variable "failure_queue" {
  type = string
}
variable "ecr_repository" {
  type = string
}
variable "function_name" {
  type = string
}
variable "input_shards" {
  type = number
}
variable "output_shards" {
  type = number
}
variable "memory_mb" {
  type = number
}
variable "timeout_s" {
  type = number
}
variable "batch_size" {
  type = number
}
variable "batching_window_s" {
  type = number
}
variable "max_retry_attempts" {
  type = number
}
variable "log_retention_days" {
  type = number
}
variable "alarm_errors_threshold" {
  type = number
}
variable "alarm_iterator_age_ms" {
  type = number
}
variable "tags" {
  description = "Tags on every resource; must include project and environment."
  type        = map(string)
  validation {
    condition     = contains(keys(var.tags), "project") && contains(keys(var.tags), "environment")
    error_message = "tags must include project and environment."
  }
}

# The release, passed by xtask with -var.
variable "image_uri" {
  description = "The function's image; empty creates everything but the function."
  type        = string
  default     = ""
}
variable "run_id" {
  type    = string
  default = ""
}
variable "model_location" {
  type    = string
  default = ""
}
variable "endpoint_url" {
  description = "An AWS emulator endpoint (moto, LocalStack); empty for AWS."
  type        = string
  default     = ""
}
