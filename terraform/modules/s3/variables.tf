variable "bucket_name" {
  description = "The full bucket name, <model_bucket>-<account id>."
  type        = string
}
variable "tags" {
  type = map(string)
}
