output "input_stream_name" {
  value = aws_kinesis_stream.input.name
}
output "input_stream_arn" {
  value = aws_kinesis_stream.input.arn
}
output "output_stream_name" {
  value = aws_kinesis_stream.output.name
}
output "output_stream_arn" {
  value = aws_kinesis_stream.output.arn
}
output "dead_letter_stream_arn" {
  value = length(aws_kinesis_stream.dead_letter) > 0 ? aws_kinesis_stream.dead_letter[0].arn : ""
}
output "failure_queue_arn" {
  value = aws_sqs_queue.failures.arn
}
