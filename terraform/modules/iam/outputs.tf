output "role_name" {
  value = aws_iam_role.function.name
}
output "role_arn" {
  value = aws_iam_role.function.arn
}
