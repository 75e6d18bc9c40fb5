variable "role_name" {
  type = string
}
variable "input_stream_arn" {
  type = string
}
variable "output_stream_arn" {
  type = string
}
variable "dead_letter_stream_arn" {
  description = "Empty when the dead letter is an S3 location."
  type        = string
}
variable "dead_letter_s3" {
  description = "<bucket>/<prefix> when the dead letter is an S3 location, else empty."
  type        = string
}
variable "model_bucket_arn" {
  type = string
}
variable "model_prefix" {
  type = string
}
variable "log_group_arn" {
  description = "The function's own log group ARN (without the trailing :*)."
  type        = string
}
variable "failure_queue_arn" {
  type = string
}
variable "tags" {
  type = map(string)
}
