variable "function_name" {
  type = string
}
variable "image_uri" {
  description = "Empty creates the log group only, as the CloudFormation stack does without ImageUri."
  type        = string
}
variable "role_arn" {
  type = string
}
variable "memory_mb" {
  type = number
}
variable "timeout_s" {
  type = number
}
variable "log_group_name" {
  type = string
}
variable "log_retention_days" {
  type = number
}
variable "model_bucket" {
  type = string
}
variable "model_prefix" {
  type = string
}
variable "run_id" {
  type = string
}
variable "model_location" {
  type = string
}
variable "predictions_stream" {
  type = string
}
variable "dead_letter" {
  type = string
}
variable "input_stream_arn" {
  description = "The stream the function reads: the INPUT stream, never the predictions stream."
  type        = string
}
variable "failure_queue_arn" {
  type = string
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
variable "alarm_errors_threshold" {
  type = number
}
variable "alarm_iterator_age_ms" {
  type = number
}
variable "tags" {
  type = map(string)
}
