output "repository_name" {
  value = aws_ecr_repository.lambda.name
}
output "repository_uri" {
  value = aws_ecr_repository.lambda.repository_url
}
