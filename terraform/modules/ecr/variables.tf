variable "repository_name" {
  type = string
}
variable "function_arn" {
  description = "The function allowed to pull, as an ARN string (it need not exist yet)."
  type        = string
}
variable "tags" {
  type = map(string)
}
