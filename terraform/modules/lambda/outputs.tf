output "log_group_name" {
  value = aws_cloudwatch_log_group.function.name
}
output "function_name" {
  value = local.deploy ? aws_lambda_function.predict[0].function_name : ""
}
output "function_arn" {
  value = local.deploy ? aws_lambda_function.predict[0].arn : ""
}
output "event_source_mapping_id" {
  value = local.deploy ? aws_lambda_event_source_mapping.input[0].uuid : ""
}
