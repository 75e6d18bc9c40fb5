# The function (image package), its log group, the event-source mapping on the INPUT stream and
# the alarms. The function reads its model only at cold start.

locals {
  deploy         = var.image_uri != ""
  model_location = var.model_location != "" ? var.model_location : "s3://${var.model_bucket}/${var.model_prefix}/${var.run_id}/model.json"
}

resource "aws_cloudwatch_log_group" "function" {
  name              = var.log_group_name
  retention_in_days = var.log_retention_days
  tags              = var.tags
}

resource "aws_lambda_function" "predict" {
  count         = local.deploy ? 1 : 0
  function_name = var.function_name
  package_type  = "Image"
  image_uri     = var.image_uri
  architectures = ["x86_64"]
  role          = var.role_arn
  memory_size   = var.memory_mb
  timeout       = var.timeout_s
  environment {
    variables = {
      MODEL_BUCKET            = var.model_bucket
      MODEL_PREFIX            = var.model_prefix
      RUN_ID                  = var.run_id
      MODEL_LOCATION          = local.model_location
      PREDICTIONS_STREAM_NAME = var.predictions_stream
      DEAD_LETTER             = var.dead_letter
    }
  }
  tags       = var.tags
  depends_on = [aws_cloudwatch_log_group.function]
}

resource "aws_lambda_event_source_mapping" "input" {
  count                              = local.deploy ? 1 : 0
  function_name                      = aws_lambda_function.predict[0].arn
  event_source_arn                   = var.input_stream_arn
  starting_position                  = "TRIM_HORIZON"
  batch_size                         = var.batch_size
  maximum_batching_window_in_seconds = var.batching_window_s
  bisect_batch_on_function_error     = true
  function_response_types            = ["ReportBatchItemFailures"]
  maximum_retry_attempts             = var.max_retry_attempts
  destination_config {
    on_failure {
      destination_arn = var.failure_queue_arn
    }
  }
  tags = var.tags
}

resource "aws_cloudwatch_metric_alarm" "errors" {
  count               = local.deploy ? 1 : 0
  alarm_name          = "${var.function_name}-errors"
  alarm_description   = "The function failed invocations."
  namespace           = "AWS/Lambda"
  metric_name         = "Errors"
  dimensions          = { FunctionName = aws_lambda_function.predict[0].function_name }
  statistic           = "Sum"
  period              = 60
  evaluation_periods  = 1
  threshold           = var.alarm_errors_threshold
  comparison_operator = "GreaterThanOrEqualToThreshold"
  treat_missing_data  = "notBreaching"
  tags                = var.tags
}

resource "aws_cloudwatch_metric_alarm" "iterator_age" {
  count               = local.deploy ? 1 : 0
  alarm_name          = "${var.function_name}-iterator-age"
  alarm_description   = "The function falls behind the input stream."
  namespace           = "AWS/Lambda"
  metric_name         = "IteratorAge"
  dimensions          = { FunctionName = aws_lambda_function.predict[0].function_name }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 5
  threshold           = var.alarm_iterator_age_ms
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  tags                = var.tags
}
