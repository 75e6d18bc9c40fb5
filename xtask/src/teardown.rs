//! `cargo xtask teardown --env E`: removes everything billable of one environment and proves it.
//!
//! Order: empty the model bucket (every version and delete marker, or CloudFormation cannot delete
//! it), delete the repository's images, delete the stack, delete the function's log group (Lambda
//! recreates it on invocations after the stack deleted it), then list whatever still carries the
//! environment's tags and fail if anything does. Every resource acted on is checked to belong to
//! this environment, by its name and, where it has them, its tags: another environment's
//! resources are never touched.

use std::collections::BTreeMap;
use std::fmt;

use anyhow::{Context, bail};
use aws_config::SdkConfig;
use clap::Args;
use serde::Serialize;

use crate::config::{DeadLetter, EnvConfig};
use crate::ctx::Ctx;
use crate::stack::{self, ServiceOutputs};

/// Tear down the service stack of an environment.
#[derive(Debug, Clone, Default, Args)]
pub struct TeardownArgs {}

impl TeardownArgs {
    pub async fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let report = teardown(ctx).await?;
        ctx.emit(&report)
    }
}

/// One step of a teardown.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Delete every object version and delete marker of the bucket.
    EmptyBucket { bucket: String, versions: usize },
    /// Delete every image of the repository.
    DeleteImages { repository: String, images: usize },
    /// Delete the stack and wait.
    DeleteStack { stack: String },
    /// Delete a log group the stack does not own (any more).
    DeleteLogGroup { log_group: String },
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EmptyBucket { bucket, versions } => write!(
                f,
                "empty bucket s3://{bucket} ({versions} object versions and delete markers)"
            ),
            Self::DeleteImages { repository, images } => {
                write!(f, "delete {images} images of repository {repository}")
            }
            Self::DeleteStack { stack } => write!(f, "delete stack {stack}"),
            Self::DeleteLogGroup { log_group } => write!(f, "delete log group {log_group}"),
        }
    }
}

/// What a teardown did (or, in a dry run, would do).
#[derive(Debug, Clone, Serialize)]
pub struct TeardownReport {
    pub environment: String,
    pub dry_run: bool,
    pub actions: Vec<Action>,
    /// Billable resources still there afterwards (empty on success).
    pub remaining: Vec<String>,
}

impl fmt::Display for TeardownReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let head = if self.dry_run {
            "teardown plan"
        } else {
            "teardown"
        };
        writeln!(f, "{head} {}:", self.environment)?;
        if self.actions.is_empty() {
            writeln!(f, "  nothing to remove")?;
        }
        for a in &self.actions {
            writeln!(f, "  - {a}")?;
        }
        if !self.dry_run {
            write!(
                f,
                "nothing billable tagged environment={} remains",
                self.environment
            )?;
        }
        Ok(())
    }
}

/// Refuses a resource that does not belong to `env`: its name must carry the environment's name
/// and, when it has tags, `environment` must be this environment.
pub fn ensure_owned(
    env: &EnvConfig,
    kind: &str,
    name: &str,
    tags: Option<&BTreeMap<String, String>>,
) -> anyhow::Result<()> {
    if !name.contains(&env.name) {
        bail!(
            "refusing to touch {kind} {name}: its name does not carry the environment `{}`",
            env.name
        );
    }
    if let Some(tags) = tags {
        match tags.get("environment") {
            Some(e) if *e == env.name => {}
            Some(e) => bail!(
                "refusing to touch {kind} {name}: it is tagged environment={e}, not {}",
                env.name
            ),
            None => bail!(
                "refusing to touch {kind} {name}: it carries no environment tag, so it may not be `{}`'s",
                env.name
            ),
        }
    }
    Ok(())
}

/// Tears down `ctx.env`: see the module docs. Honours `ctx.dry_run` and asks `ctx.confirm`.
pub async fn teardown(ctx: &Ctx) -> anyhow::Result<TeardownReport> {
    let env = &ctx.env;
    stack::check_tags(env)?;
    let sdk = ctx.aws().await?;
    let cf = stack::client(&sdk);
    let s3 = crate::ctx::s3_client(&sdk);
    let ecr = aws_sdk_ecr::Client::new(&sdk);
    let logs = aws_sdk_cloudwatchlogs::Client::new(&sdk);

    let info = stack::describe_stack(&cf, &env.stack_name).await?;
    if let Some(info) = &info {
        let mut tags = info.tags.clone();
        if let Some(e) = info.parameters.get("Environment") {
            tags.entry("environment".into())
                .or_insert_with(|| e.clone());
        }
        ensure_owned(env, "stack", &info.name, Some(&tags))?;
        if info
            .parameters
            .get("Environment")
            .is_some_and(|e| *e != env.name)
        {
            bail!(
                "refusing to delete stack {}: its Environment parameter is not `{}`",
                info.name,
                env.name
            );
        }
    }
    let outputs = match &info {
        Some(_) => stack::service_outputs(&sdk, env).await.ok().flatten(),
        None => None,
    };

    // Plan.
    let mut actions = Vec::new();
    let bucket = match &outputs {
        Some(o) => Some(o.model_bucket.clone()),
        None => find_bucket(&s3, env).await?,
    };
    if let Some(b) = &bucket {
        ensure_owned(env, "bucket", b, Some(&bucket_tags(&s3, b).await?))?;
        if !b.starts_with(&format!("{}-", env.model_bucket)) {
            bail!(
                "refusing to empty bucket {b}: it is not `{}-<account>`",
                env.model_bucket
            );
        }
        let versions = list_versions(&s3, b).await?;
        actions.push(Action::EmptyBucket {
            bucket: b.clone(),
            versions: versions.len(),
        });
    }
    let repository = outputs
        .as_ref()
        .map(|o| o.repository_name.clone())
        .unwrap_or_else(|| env.ecr_repository.clone());
    if repository != env.ecr_repository {
        bail!(
            "refusing to touch repository {repository}: this environment's is {}",
            env.ecr_repository
        );
    }
    if let Some(arn) = repository_arn(&ecr, &repository).await? {
        ensure_owned(
            env,
            "repository",
            &repository,
            Some(&repository_tags(&ecr, &arn).await?),
        )?;
        let images = list_images(&ecr, &repository).await?;
        actions.push(Action::DeleteImages {
            repository: repository.clone(),
            images: images.len(),
        });
    }
    if let Some(info) = &info {
        actions.push(Action::DeleteStack {
            stack: info.name.clone(),
        });
    }
    let log_group = format!("/aws/lambda/{}", env.function_name);
    if info.is_some() || log_group_exists(&logs, &log_group).await? {
        actions.push(Action::DeleteLogGroup {
            log_group: log_group.clone(),
        });
    }

    if ctx.dry_run {
        return Ok(TeardownReport {
            environment: env.name.clone(),
            dry_run: true,
            actions,
            remaining: vec![],
        });
    }
    ctx.confirm("delete every resource of the service (bucket contents, images, stack, logs)")?;

    for action in &actions {
        ctx.note(format!("teardown {}: {action}", env.name));
        match action {
            Action::EmptyBucket { bucket, .. } => empty_bucket(&s3, bucket).await?,
            Action::DeleteImages { repository, .. } => delete_images(&ecr, repository).await?,
            Action::DeleteStack { stack: name } => {
                stack::delete(ctx, &cf, name).await?;
            }
            Action::DeleteLogGroup { log_group } => {
                if log_group_exists(&logs, log_group).await? {
                    logs.delete_log_group()
                        .log_group_name(log_group)
                        .send()
                        .await
                        .with_context(|| format!("delete log group {log_group}"))?;
                }
            }
        }
    }

    let remaining = remaining(&sdk, env, outputs.as_ref(), bucket.as_deref()).await?;
    if !remaining.is_empty() {
        bail!(
            "teardown of `{}` left billable resources behind: {}; run teardown again, and delete by hand what \
             carries the tags environment={} but belongs to no stack of this project",
            env.name,
            remaining.join(", "),
            env.name
        );
    }
    Ok(TeardownReport {
        environment: env.name.clone(),
        dry_run: false,
        actions,
        remaining,
    })
}

/// A bucket `<model_bucket>-<account id>` left without its stack.
async fn find_bucket(s3: &aws_sdk_s3::Client, env: &EnvConfig) -> anyhow::Result<Option<String>> {
    let prefix = format!("{}-", env.model_bucket);
    let out = s3.list_buckets().send().await.context("list buckets")?;
    Ok(out
        .buckets()
        .iter()
        .filter_map(|b| b.name())
        .find(|n| {
            n.strip_prefix(&prefix)
                .is_some_and(|acct| acct.len() == 12 && acct.bytes().all(|c| c.is_ascii_digit()))
        })
        .map(str::to_string))
}

async fn bucket_tags(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
) -> anyhow::Result<BTreeMap<String, String>> {
    let out = s3
        .get_bucket_tagging()
        .bucket(bucket)
        .send()
        .await
        .with_context(|| format!("read the tags of bucket {bucket}"))?;
    Ok(out
        .tag_set()
        .iter()
        .map(|t| (t.key().to_string(), t.value().to_string()))
        .collect())
}

/// Every version and delete marker of a bucket, as (key, version id).
async fn list_versions(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
) -> anyhow::Result<Vec<(String, Option<String>)>> {
    let mut all = Vec::new();
    let (mut key_marker, mut version_marker) = (None, None);
    loop {
        let out = s3
            .list_object_versions()
            .bucket(bucket)
            .set_key_marker(key_marker)
            .set_version_id_marker(version_marker)
            .send()
            .await
            .with_context(|| format!("list object versions of {bucket}"))?;
        for v in out.versions() {
            all.push((
                v.key().unwrap_or_default().to_string(),
                v.version_id().map(str::to_string),
            ));
        }
        for m in out.delete_markers() {
            all.push((
                m.key().unwrap_or_default().to_string(),
                m.version_id().map(str::to_string),
            ));
        }
        if out.is_truncated() != Some(true) {
            break;
        }
        key_marker = out.next_key_marker().map(str::to_string);
        version_marker = out.next_version_id_marker().map(str::to_string);
    }
    Ok(all)
}

/// Deletes every version and delete marker, 1000 per request (the API's limit).
pub async fn empty_bucket(s3: &aws_sdk_s3::Client, bucket: &str) -> anyhow::Result<()> {
    use aws_sdk_s3::types::{Delete, ObjectIdentifier};
    let versions = list_versions(s3, bucket).await?;
    for chunk in versions.chunks(1000) {
        let objects = chunk
            .iter()
            .map(|(k, v)| {
                ObjectIdentifier::builder()
                    .key(k)
                    .set_version_id(v.clone())
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let out = s3
            .delete_objects()
            .bucket(bucket)
            .delete(
                Delete::builder()
                    .set_objects(Some(objects))
                    .quiet(true)
                    .build()?,
            )
            .send()
            .await
            .with_context(|| format!("delete object versions of {bucket}"))?;
        if let Some(e) = out.errors().first() {
            bail!(
                "could not delete s3://{bucket}/{}: {}",
                e.key().unwrap_or_default(),
                e.message().unwrap_or_default()
            );
        }
    }
    let left = list_versions(s3, bucket).await?.len();
    if left > 0 {
        bail!(
            "bucket {bucket} still holds {left} object versions after emptying it: objects are being written; stop the writers and run teardown again"
        );
    }
    Ok(())
}

async fn repository_arn(ecr: &aws_sdk_ecr::Client, name: &str) -> anyhow::Result<Option<String>> {
    match ecr
        .describe_repositories()
        .repository_names(name)
        .send()
        .await
    {
        Ok(out) => Ok(out
            .repositories()
            .first()
            .and_then(|r| r.repository_arn())
            .map(str::to_string)),
        Err(e)
            if format!("{}", aws_sdk_ecr::error::DisplayErrorContext(&e))
                .contains("RepositoryNotFound") =>
        {
            Ok(None)
        }
        Err(e) => Err(e).with_context(|| format!("describe repository {name}")),
    }
}

async fn repository_tags(
    ecr: &aws_sdk_ecr::Client,
    arn: &str,
) -> anyhow::Result<BTreeMap<String, String>> {
    let out = ecr
        .list_tags_for_resource()
        .resource_arn(arn)
        .send()
        .await
        .with_context(|| format!("read the tags of {arn}"))?;
    Ok(out
        .tags()
        .iter()
        .map(|t| (t.key().to_string(), t.value().to_string()))
        .collect())
}

async fn list_images(
    ecr: &aws_sdk_ecr::Client,
    repository: &str,
) -> anyhow::Result<Vec<aws_sdk_ecr::types::ImageIdentifier>> {
    let mut all = Vec::new();
    let mut token = None;
    loop {
        let out = ecr
            .list_images()
            .repository_name(repository)
            .set_next_token(token)
            .send()
            .await
            .with_context(|| format!("list images of {repository}"))?;
        all.extend(out.image_ids().iter().cloned());
        token = out.next_token().map(str::to_string);
        if token.is_none() {
            return Ok(all);
        }
    }
}

/// Deletes every image of a repository, 100 per request (the API's limit).
pub async fn delete_images(ecr: &aws_sdk_ecr::Client, repository: &str) -> anyhow::Result<()> {
    let images = list_images(ecr, repository).await?;
    for chunk in images.chunks(100) {
        let out = ecr
            .batch_delete_image()
            .repository_name(repository)
            .set_image_ids(Some(chunk.to_vec()))
            .send()
            .await
            .with_context(|| format!("delete images of {repository}"))?;
        if let Some(f) = out.failures().first() {
            bail!(
                "could not delete an image of {repository}: {}",
                f.failure_reason().unwrap_or_default()
            );
        }
    }
    Ok(())
}

async fn log_group_exists(
    logs: &aws_sdk_cloudwatchlogs::Client,
    name: &str,
) -> anyhow::Result<bool> {
    let out = logs
        .describe_log_groups()
        .log_group_name_prefix(name)
        .send()
        .await
        .with_context(|| format!("describe log group {name}"))?;
    Ok(out
        .log_groups()
        .iter()
        .any(|g| g.log_group_name() == Some(name)))
}

/// Billable resources of `env` still there: everything the tagging API lists with this
/// environment's tags (stacks aside, which cost nothing), plus each resource probed by name,
/// because not every service reports its tags there (and emulators cover few).
pub async fn remaining(
    sdk: &SdkConfig,
    env: &EnvConfig,
    outputs: Option<&ServiceOutputs>,
    bucket: Option<&str>,
) -> anyhow::Result<Vec<String>> {
    use aws_sdk_resourcegroupstagging::types::TagFilter;
    let mut left = Vec::new();
    let tagging = aws_sdk_resourcegroupstagging::Client::new(sdk);
    let mut token: Option<String> = None;
    loop {
        let out = tagging
            .get_resources()
            .tag_filters(
                TagFilter::builder()
                    .key("environment")
                    .values(&env.name)
                    .build(),
            )
            .tag_filters(
                TagFilter::builder()
                    .key("project")
                    .values(&env.tags["project"])
                    .build(),
            )
            .set_pagination_token(token)
            .send()
            .await
            .context("list resources tagged with this environment")?;
        for r in out.resource_tag_mapping_list() {
            let arn = r.resource_arn().unwrap_or_default();
            if !arn.contains(":cloudformation:") {
                left.push(arn.to_string());
            }
        }
        token = out
            .pagination_token()
            .filter(|t| !t.is_empty())
            .map(str::to_string);
        if token.is_none() {
            break;
        }
    }

    let s3 = crate::ctx::s3_client(sdk);
    if let Some(b) = bucket
        && s3.head_bucket().bucket(b).send().await.is_ok()
    {
        left.push(format!("s3 bucket {b}"));
    }
    let kinesis = aws_sdk_kinesis::Client::new(sdk);
    let mut streams = vec![env.input_stream.clone(), env.output_stream.clone()];
    if let DeadLetter::Kinesis(s) = env.dead_letter() {
        streams.push(s);
    }
    if let Some(o) = outputs {
        streams.extend([o.input_stream.clone(), o.output_stream.clone()]);
    }
    streams.sort();
    streams.dedup();
    for s in streams {
        if kinesis
            .describe_stream_summary()
            .stream_name(&s)
            .send()
            .await
            .is_ok()
        {
            left.push(format!("kinesis stream {s}"));
        }
    }
    let ecr = aws_sdk_ecr::Client::new(sdk);
    if repository_arn(&ecr, &env.ecr_repository).await?.is_some() {
        left.push(format!("ecr repository {}", env.ecr_repository));
    }
    let lambda = aws_sdk_lambda::Client::new(sdk);
    if lambda
        .get_function()
        .function_name(&env.function_name)
        .send()
        .await
        .is_ok()
    {
        left.push(format!("lambda function {}", env.function_name));
    }
    let logs = aws_sdk_cloudwatchlogs::Client::new(sdk);
    let group = format!("/aws/lambda/{}", env.function_name);
    if log_group_exists(&logs, &group).await? {
        left.push(format!("log group {group}"));
    }
    left.sort();
    left.dedup();
    Ok(left)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev() -> EnvConfig {
        EnvConfig::load(&crate::ctx::repo_root(), "dev").unwrap()
    }

    #[test]
    fn another_environments_resources_are_refused() {
        let env = dev();
        let stg: BTreeMap<_, _> = [("environment".to_string(), "stg".to_string())].into();
        let own: BTreeMap<_, _> = [("environment".to_string(), "dev".to_string())].into();
        assert!(ensure_owned(&env, "bucket", "taxi-duration-models-dev-1", Some(&own)).is_ok());
        let err = ensure_owned(&env, "bucket", "taxi-duration-models-dev-1", Some(&stg))
            .unwrap_err()
            .to_string();
        assert!(err.contains("tagged environment=stg"), "{err}");
        let err = ensure_owned(&env, "bucket", "taxi-duration-models-stg-1", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not carry the environment"), "{err}");
        assert!(
            ensure_owned(
                &env,
                "bucket",
                "taxi-duration-models-dev-1",
                Some(&BTreeMap::new())
            )
            .is_err()
        );
    }
}
