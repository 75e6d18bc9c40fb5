variable "input_stream_name" {
  type = string
}
variable "output_stream_name" {
  type = string
}
variable "dead_letter_stream_name" {
  description = "Empty when the dead letter is an S3 location."
  type        = string
}
variable "input_shards" {
  type = number
}
variable "output_shards" {
  type = number
}
variable "failure_queue_name" {
  type = string
}
variable "tags" {
  type = map(string)
}
