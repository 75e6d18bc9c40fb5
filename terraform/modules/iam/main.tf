# The function's role, least privilege, statement for statement the same as FunctionRole in
# stacks/service.yaml (a test compares them): read the input stream only, write the output and
# dead-letter destinations, read this environment's model prefix, write its own log group, send
# on-failure records to its queue. "*" only for kinesis:ListStreams, which has no resource ARN.

data "aws_iam_policy_document" "assume" {
  statement {
    effect  = "Allow"
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "function" {
  name               = var.role_name
  assume_role_policy = data.aws_iam_policy_document.assume.json
  tags               = var.tags
}

data "aws_iam_policy_document" "service" {
  statement {
    sid       = "ReadInputStream"
    effect    = "Allow"
    actions   = ["kinesis:DescribeStream", "kinesis:DescribeStreamSummary", "kinesis:GetRecords", "kinesis:GetShardIterator", "kinesis:ListShards", "kinesis:SubscribeToShard"]
    resources = [var.input_stream_arn]
  }
  statement {
    sid       = "ListStreams"
    effect    = "Allow"
    actions   = ["kinesis:ListStreams"]
    resources = ["*"]
  }
  statement {
    sid       = "WritePredictions"
    effect    = "Allow"
    actions   = ["kinesis:PutRecord", "kinesis:PutRecords"]
    resources = [var.output_stream_arn]
  }
  dynamic "statement" {
    for_each = var.dead_letter_stream_arn == "" ? [] : [var.dead_letter_stream_arn]
    content {
      sid       = "WriteDeadLetterStream"
      effect    = "Allow"
      actions   = ["kinesis:PutRecord", "kinesis:PutRecords"]
      resources = [statement.value]
    }
  }
  dynamic "statement" {
    for_each = var.dead_letter_s3 == "" ? [] : [var.dead_letter_s3]
    content {
      sid       = "WriteDeadLetterObjects"
      effect    = "Allow"
      actions   = ["s3:PutObject"]
      resources = ["arn:aws:s3:::${statement.value}/*"]
    }
  }
  statement {
    sid       = "ReadModels"
    effect    = "Allow"
    actions   = ["s3:GetObject"]
    resources = ["${var.model_bucket_arn}/${var.model_prefix}/*"]
  }
  statement {
    sid       = "WriteOwnLogs"
    effect    = "Allow"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${var.log_group_arn}:*"]
  }
  statement {
    sid       = "SendFailureRecords"
    effect    = "Allow"
    actions   = ["sqs:SendMessage"]
    resources = [var.failure_queue_arn]
  }
}

resource "aws_iam_role_policy" "service" {
  name   = "service"
  role   = aws_iam_role.function.id
  policy = data.aws_iam_policy_document.service.json
}
