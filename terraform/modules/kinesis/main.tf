# The streams, encrypted with the AWS-managed key (no kms permissions needed by the function),
# and the SQS queue receiving the event-source mapping's on-failure records: AWS accepts SQS, SNS
# or S3 as that destination, not a Kinesis stream.

resource "aws_kinesis_stream" "input" {
  name             = var.input_stream_name
  shard_count      = var.input_shards
  retention_period = 24
  encryption_type  = "KMS"
  kms_key_id       = "alias/aws/kinesis"
  tags             = var.tags
}

resource "aws_kinesis_stream" "output" {
  name             = var.output_stream_name
  shard_count      = var.output_shards
  retention_period = 24
  encryption_type  = "KMS"
  kms_key_id       = "alias/aws/kinesis"
  tags             = var.tags
}

resource "aws_kinesis_stream" "dead_letter" {
  count            = var.dead_letter_stream_name == "" ? 0 : 1
  name             = var.dead_letter_stream_name
  shard_count      = 1
  retention_period = 168
  encryption_type  = "KMS"
  kms_key_id       = "alias/aws/kinesis"
  tags             = var.tags
}

resource "aws_sqs_queue" "failures" {
  name                      = var.failure_queue_name
  message_retention_seconds = 1209600
  sqs_managed_sse_enabled   = true
  tags                      = var.tags
}
