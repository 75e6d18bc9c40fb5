# The same outputs as stacks/service.yaml, in snake case.

output "model_bucket_name" {
  value = module.s3.bucket_name
}
output "model_prefix" {
  value = var.model_prefix
}
output "input_stream_name" {
  value = module.kinesis.input_stream_name
}
output "input_stream_arn" {
  value = module.kinesis.input_stream_arn
}
output "output_stream_name" {
  value = module.kinesis.output_stream_name
}
output "output_stream_arn" {
  value = module.kinesis.output_stream_arn
}
output "dead_letter" {
  value = var.dead_letter
}
output "failure_queue_arn" {
  value = module.kinesis.failure_queue_arn
}
output "repository_name" {
  value = module.ecr.repository_name
}
output "repository_uri" {
  value = module.ecr.repository_uri
}
output "log_group_name" {
  value = module.lambda.log_group_name
}
output "role_arn" {
  value = module.iam.role_arn
}
output "function_name" {
  value = module.lambda.function_name
}
output "function_arn" {
  value = module.lambda.function_arn
}
output "event_source_mapping_id" {
  value = module.lambda.event_source_mapping_id
}
