# The service of one environment, the same resources as stacks/service.yaml.

provider "aws" {
  region = var.region
  default_tags {
    tags = var.tags
  }
  # On an emulator: path-style S3, no credential or account checks against real AWS.
  s3_use_path_style           = var.endpoint_url != ""
  skip_credentials_validation = var.endpoint_url != ""
  dynamic "endpoints" {
    for_each = var.endpoint_url == "" ? [] : [var.endpoint_url]
    content {
      cloudwatch = endpoints.value
      ecr        = endpoints.value
      iam        = endpoints.value
      kinesis    = endpoints.value
      lambda     = endpoints.value
      logs       = endpoints.value
      s3         = endpoints.value
      sqs        = endpoints.value
      sts        = endpoints.value
    }
  }
}

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
  # Bucket names are global: the account id makes the name unique, as in the CloudFormation stack.
  model_bucket           = "${var.model_bucket}-${local.account_id}"
  dead_letter_is_kinesis = startswith(var.dead_letter, "kinesis:")
  dead_letter_stream     = local.dead_letter_is_kinesis ? trimprefix(var.dead_letter, "kinesis:") : ""
  dead_letter_s3         = local.dead_letter_is_kinesis ? "" : trimsuffix(trimprefix(var.dead_letter, "s3://"), "/")
  log_group_name         = "/aws/lambda/${var.function_name}"
  function_arn           = "arn:${local.partition}:lambda:${var.region}:${local.account_id}:function:${var.function_name}"
}

module "s3" {
  source      = "./modules/s3"
  bucket_name = local.model_bucket
  tags        = var.tags
}

module "kinesis" {
  source                  = "./modules/kinesis"
  input_stream_name       = var.input_stream
  output_stream_name      = var.output_stream
  dead_letter_stream_name = local.dead_letter_stream
  input_shards            = var.input_shards
  output_shards           = var.output_shards
  failure_queue_name      = var.failure_queue
  tags                    = var.tags
}

module "ecr" {
  source          = "./modules/ecr"
  repository_name = var.ecr_repository
  function_arn    = local.function_arn
  tags            = var.tags
}

module "iam" {
  source                 = "./modules/iam"
  role_name              = "${var.function_name}-role"
  input_stream_arn       = module.kinesis.input_stream_arn
  output_stream_arn      = module.kinesis.output_stream_arn
  dead_letter_stream_arn = module.kinesis.dead_letter_stream_arn
  dead_letter_s3         = local.dead_letter_s3
  model_bucket_arn       = module.s3.bucket_arn
  model_prefix           = var.model_prefix
  log_group_arn          = "arn:${local.partition}:logs:${var.region}:${local.account_id}:log-group:${local.log_group_name}"
  failure_queue_arn      = module.kinesis.failure_queue_arn
  tags                   = var.tags
}

module "lambda" {
  source                 = "./modules/lambda"
  function_name          = var.function_name
  image_uri              = var.image_uri
  role_arn               = module.iam.role_arn
  memory_mb              = var.memory_mb
  timeout_s              = var.timeout_s
  log_group_name         = local.log_group_name
  log_retention_days     = var.log_retention_days
  model_bucket           = module.s3.bucket_name
  model_prefix           = var.model_prefix
  run_id                 = var.run_id
  model_location         = var.model_location
  predictions_stream     = module.kinesis.output_stream_name
  dead_letter            = var.dead_letter
  input_stream_arn       = module.kinesis.input_stream_arn
  failure_queue_arn      = module.kinesis.failure_queue_arn
  batch_size             = var.batch_size
  batching_window_s      = var.batching_window_s
  max_retry_attempts     = var.max_retry_attempts
  alarm_errors_threshold = var.alarm_errors_threshold
  alarm_iterator_age_ms  = var.alarm_iterator_age_ms
  tags                   = var.tags
}
