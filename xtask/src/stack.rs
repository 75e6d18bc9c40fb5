//! Shared CloudFormation helpers: the service template and its parameters, change sets printed as
//! readable diffs, execution with streamed stack events, and the stack's outputs.
//!
//! Everything the template names comes from [`EnvConfig`] through [`parameters`]; nothing here
//! hard-codes a bucket, stream or account.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use aws_config::SdkConfig;
use aws_sdk_cloudformation::Client as Cfn;
use aws_sdk_cloudformation::types::{
    Capability, ChangeAction, ChangeSetStatus, ChangeSetType, Parameter, Replacement, Tag,
};
use serde::Serialize;

use crate::config::{DeadLetter, EnvConfig};
use crate::ctx::Ctx;

/// The template, relative to the repository root.
pub const TEMPLATE: &str = "stacks/service.yaml";

/// How long a stack operation may take before xtask gives up waiting (CloudFormation goes on).
const STACK_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// How long a just-started operation may take to show up in DescribeStacks.
const START_GRACE: Duration = Duration::from_secs(30);

/// How long CloudFormation may take to compute a change set.
const CHANGE_SET_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// The template's path under `root`.
pub fn template_path(root: &Path) -> PathBuf {
    root.join(TEMPLATE)
}

/// The template's text.
pub fn template_body(root: &Path) -> anyhow::Result<String> {
    let path = template_path(root);
    std::fs::read_to_string(&path)
        .with_context(|| format!("read the service template {}", path.display()))
}

/// What the function runs. All empty creates the stack without the function (the first phase of a
/// first deploy: the bucket and repository must exist before a model and image can be put there).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Release {
    /// The image, `<repository uri>:<tag>` or `<repository uri>@sha256:<digest>`.
    pub image_uri: Option<String>,
    /// The model's run id under `<bucket>/<model_prefix>/`.
    pub run_id: Option<String>,
    /// An explicit `s3://` model location, instead of the run id.
    pub model_location: Option<String>,
}

/// Checks that the environment's tags say which environment they belong to: teardown finds
/// resources by these tags, so a wrong value would let one environment delete another's.
pub fn check_tags(env: &EnvConfig) -> anyhow::Result<()> {
    match env.tags.get("environment") {
        Some(v) if *v == env.name => {}
        Some(v) => bail!(
            "config/env/{0}.toml has tags.environment = \"{v}\": it must be \"{0}\", or teardown could not tell environments apart",
            env.name
        ),
        None => bail!(
            "config/env/{0}.toml has no tags.environment: add `environment = \"{0}\"` under [tags]",
            env.name
        ),
    }
    if !env.tags.contains_key("project") {
        bail!(
            "config/env/{}.toml has no tags.project: add `project = \"...\"` under [tags]",
            env.name
        );
    }
    Ok(())
}

/// The template's parameters for an environment and a release, every value taken from the config.
pub fn parameters(env: &EnvConfig, release: &Release) -> anyhow::Result<BTreeMap<String, String>> {
    check_tags(env)?;
    let (dl_kind, dl_name, dl_prefix) = match env.dead_letter() {
        DeadLetter::Kinesis(stream) => ("kinesis", stream, String::new()),
        DeadLetter::S3 { bucket, prefix } => ("s3", bucket, prefix),
    };
    let p = [
        ("Environment", env.name.clone()),
        ("ProjectTag", env.tags["project"].clone()),
        ("ModelBucketName", env.model_bucket.clone()),
        ("ModelPrefix", env.model_prefix.clone()),
        ("InputStreamName", env.input_stream.clone()),
        ("OutputStreamName", env.output_stream.clone()),
        ("DeadLetterKind", dl_kind.to_string()),
        ("DeadLetterName", dl_name),
        ("DeadLetterPrefix", dl_prefix),
        ("FailureQueueName", env.failure_queue.clone()),
        ("RepositoryName", env.ecr_repository.clone()),
        ("FunctionName", env.function_name.clone()),
        ("InputShards", env.input_shards.to_string()),
        ("OutputShards", env.output_shards.to_string()),
        ("MemorySize", env.memory_mb.to_string()),
        ("Timeout", env.timeout_s.to_string()),
        ("BatchSize", env.batch_size.to_string()),
        ("BatchingWindow", env.batching_window_s.to_string()),
        ("MaximumRetryAttempts", env.max_retry_attempts.to_string()),
        ("LogRetentionDays", env.log_retention_days.to_string()),
        (
            "AlarmErrorsThreshold",
            env.alarm_errors_threshold.to_string(),
        ),
        ("AlarmIteratorAgeMs", env.alarm_iterator_age_ms.to_string()),
        ("ImageUri", release.image_uri.clone().unwrap_or_default()),
        ("RunId", release.run_id.clone().unwrap_or_default()),
        (
            "ModelLocation",
            release.model_location.clone().unwrap_or_default(),
        ),
    ];
    if env.input_stream == env.output_stream {
        bail!(
            "input_stream and output_stream are both `{}`: the function must never read its own output",
            env.input_stream
        );
    }
    Ok(p.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

/// Checks parameters against the template's declared constraints (AllowedValues, MinValue,
/// MaxValue, AllowedPattern, no unknown or missing keys) before anything is sent, so that a bad
/// config value fails with the config key named and the stack untouched.
pub fn validate_parameters(
    template: &str,
    params: &BTreeMap<String, String>,
) -> anyhow::Result<()> {
    let doc: serde_yaml::Value =
        serde_yaml::from_str(template).context("parse the service template")?;
    let declared = doc
        .get("Parameters")
        .and_then(|p| p.as_mapping())
        .context("the template declares no Parameters")?;
    let mut problems = Vec::new();
    for (k, spec) in declared {
        let key = k.as_str().unwrap_or_default();
        let Some(value) = params.get(key) else {
            if spec.get("Default").is_none() {
                problems.push(format!("{key}: missing"));
            }
            continue;
        };
        if let Some(allowed) = spec.get("AllowedValues").and_then(|a| a.as_sequence()) {
            let ok = allowed
                .iter()
                .any(|a| yaml_scalar(a).as_deref() == Some(value.as_str()));
            if !ok {
                let list: Vec<String> = allowed.iter().filter_map(yaml_scalar).collect();
                problems.push(format!(
                    "{key} = {value:?} is not one of [{}]",
                    list.join(", ")
                ));
            }
        }
        if spec.get("Type").and_then(|t| t.as_str()) == Some("Number") {
            match value.parse::<f64>() {
                Err(_) => problems.push(format!("{key} = {value:?} is not a number")),
                Ok(n) => {
                    if let Some(min) = spec.get("MinValue").and_then(|m| m.as_f64())
                        && n < min
                    {
                        problems.push(format!("{key} = {value} is below its minimum {min}"));
                    }
                    if let Some(max) = spec.get("MaxValue").and_then(|m| m.as_f64())
                        && n > max
                    {
                        problems.push(format!("{key} = {value} is above its maximum {max}"));
                    }
                }
            }
        }
        if let Some(pattern) = spec.get("AllowedPattern").and_then(|p| p.as_str())
            && !simple_pattern_matches(pattern, value)
        {
            problems.push(format!("{key} = {value:?} does not match {pattern}"));
        }
    }
    for key in params.keys() {
        if !declared.contains_key(key.as_str()) {
            problems.push(format!("{key}: the template declares no such parameter"));
        }
    }
    if !problems.is_empty() {
        bail!(
            "invalid stack parameters (fix them in config/env/<env>.toml or TAXI_* variables): {}",
            problems.join("; ")
        );
    }
    Ok(())
}

fn yaml_scalar(v: &serde_yaml::Value) -> Option<String> {
    match v {
        serde_yaml::Value::String(s) => Some(s.clone()),
        serde_yaml::Value::Number(n) => Some(n.to_string()),
        serde_yaml::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The template's patterns are of one shape, `^[class][class]{m,n}$` or `^[class]+$`; this checks
/// that shape without a regex engine. Other patterns are left to CloudFormation.
fn simple_pattern_matches(pattern: &str, value: &str) -> bool {
    let Some(body) = pattern.strip_prefix('^').and_then(|p| p.strip_suffix('$')) else {
        return true;
    };
    let mut classes: Vec<(String, usize, usize)> = Vec::new();
    let mut rest = body;
    while let Some(r) = rest.strip_prefix('[') {
        let Some(end) = r.find(']') else { return true };
        let class = r[..end].to_string();
        rest = &r[end + 1..];
        let (min, max, after) = if let Some(r2) = rest.strip_prefix('+') {
            (1, usize::MAX, r2)
        } else if let Some(r2) = rest.strip_prefix('{') {
            let Some(close) = r2.find('}') else {
                return true;
            };
            let (a, b) = r2[..close]
                .split_once(',')
                .unwrap_or((&r2[..close], &r2[..close]));
            let (Ok(a), Ok(b)) = (a.parse(), b.parse()) else {
                return true;
            };
            (a, b, &r2[close + 1..])
        } else {
            (1, 1, rest)
        };
        classes.push((class, min, max));
        rest = after;
    }
    if !rest.is_empty() {
        return true;
    }
    let in_class = |c: char, class: &str| {
        let chars: Vec<char> = class.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            if i + 2 < chars.len() && chars[i + 1] == '-' {
                if (chars[i]..=chars[i + 2]).contains(&c) {
                    return true;
                }
                i += 3;
            } else {
                if chars[i] == c {
                    return true;
                }
                i += 1;
            }
        }
        false
    };
    let mut chars = value.chars().peekable();
    for (class, min, max) in &classes {
        let mut n = 0;
        while n < *max && chars.peek().is_some_and(|c| in_class(*c, class)) {
            chars.next();
            n += 1;
        }
        if n < *min {
            return false;
        }
    }
    chars.next().is_none()
}

/// A CloudFormation client for the shared configuration.
pub fn client(sdk: &SdkConfig) -> Cfn {
    Cfn::new(sdk)
}

/// What DescribeStacks says about a stack.
#[derive(Debug, Clone, Serialize)]
pub struct StackInfo {
    pub name: String,
    pub id: String,
    pub status: String,
    pub status_reason: Option<String>,
    pub parameters: BTreeMap<String, String>,
    pub outputs: BTreeMap<String, String>,
    pub tags: BTreeMap<String, String>,
}

/// Describes a stack; `None` when it does not exist (or is deleted).
pub async fn describe_stack(cf: &Cfn, name: &str) -> anyhow::Result<Option<StackInfo>> {
    let out = match cf.describe_stacks().stack_name(name).send().await {
        Ok(out) => out,
        Err(e) => {
            let text = format!("{}", aws_sdk_cloudformation::error::DisplayErrorContext(&e));
            if text.contains("does not exist") {
                return Ok(None);
            }
            return Err(e).with_context(|| format!("describe stack {name}"));
        }
    };
    let Some(s) = out.stacks().first() else {
        return Ok(None);
    };
    let status = s
        .stack_status()
        .map(|s| s.as_str().to_string())
        .unwrap_or_default();
    if status == "DELETE_COMPLETE" {
        return Ok(None);
    }
    Ok(Some(StackInfo {
        name: s.stack_name().unwrap_or(name).to_string(),
        id: s.stack_id().unwrap_or_default().to_string(),
        status,
        status_reason: s.stack_status_reason().map(str::to_string),
        parameters: s
            .parameters()
            .iter()
            .map(|p| {
                (
                    p.parameter_key().unwrap_or_default().to_string(),
                    p.parameter_value().unwrap_or_default().to_string(),
                )
            })
            .collect(),
        outputs: s
            .outputs()
            .iter()
            .map(|o| {
                (
                    o.output_key().unwrap_or_default().to_string(),
                    o.output_value().unwrap_or_default().to_string(),
                )
            })
            .collect(),
        tags: s
            .tags()
            .iter()
            .map(|t| {
                (
                    t.key().unwrap_or_default().to_string(),
                    t.value().unwrap_or_default().to_string(),
                )
            })
            .collect(),
    }))
}

/// The logical id → physical id of a stack's resources.
pub async fn stack_resources(
    cf: &Cfn,
    name: &str,
) -> anyhow::Result<BTreeMap<String, (String, String)>> {
    let out = cf
        .describe_stack_resources()
        .stack_name(name)
        .send()
        .await
        .with_context(|| format!("list resources of stack {name}"))?;
    Ok(out
        .stack_resources()
        .iter()
        .filter_map(|r| {
            let logical = r.logical_resource_id().filter(|s| !s.is_empty())?;
            Some((
                logical.to_string(),
                (
                    r.resource_type().unwrap_or_default().to_string(),
                    r.physical_resource_id().unwrap_or_default().to_string(),
                ),
            ))
        })
        .collect())
}

/// One resource in a change set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResourceDiff {
    /// `add`, `modify`, `replace`, `remove`, or what CloudFormation says otherwise (`import`, `dynamic`).
    pub action: String,
    pub logical_id: String,
    pub resource_type: String,
    /// `True`, `Conditional` or `False` for modifications.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replacement: Option<String>,
    /// What changes: `Properties`, `Tags`, ...
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scope: Vec<String>,
}

/// One parameter whose value changes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParamDiff {
    pub key: String,
    pub old: Option<String>,
    pub new: String,
}

/// A computed change set: what executing it would do.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub stack: String,
    /// `create` or `update`.
    pub kind: String,
    /// The change set's id; `None` once it has been deleted because it changed nothing.
    pub change_set_id: Option<String>,
    pub resources: Vec<ResourceDiff>,
    pub parameters: Vec<ParamDiff>,
}

impl Plan {
    /// True when executing would change nothing.
    pub fn is_empty(&self) -> bool {
        self.change_set_id.is_none()
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return write!(f, "stack {}: no changes", self.stack);
        }
        writeln!(f, "change set for stack {} ({}):", self.stack, self.kind)?;
        for r in &self.resources {
            let sign = match r.action.as_str() {
                "add" => "+",
                "remove" => "-",
                "replace" => "±",
                _ => "~",
            };
            let mut extra = String::new();
            if r.action == "modify" && r.replacement.as_deref() == Some("Conditional") {
                extra.push_str(" (may be replaced)");
            }
            if !r.scope.is_empty() {
                extra.push_str(&format!(" [{}]", r.scope.join(", ")));
            }
            writeln!(
                f,
                "  {sign} {:<8} {:<36} {}{extra}",
                r.action, r.resource_type, r.logical_id
            )?;
        }
        if !self.parameters.is_empty() {
            writeln!(f, "parameters:")?;
            for p in &self.parameters {
                match &p.old {
                    Some(old) => writeln!(f, "  ~ {}: {:?} -> {:?}", p.key, old, p.new)?,
                    None => writeln!(f, "  + {}: {:?}", p.key, p.new)?,
                }
            }
        }
        if self.resources.is_empty() && self.parameters.is_empty() {
            writeln!(f, "  (template text changed, no resource changes)")?;
        }
        Ok(())
    }
}

/// The diff's action for a CloudFormation change: a modification that replaces is `replace`.
pub fn action_name(action: Option<&ChangeAction>, replacement: Option<&Replacement>) -> String {
    match (action, replacement) {
        (Some(ChangeAction::Modify), Some(Replacement::True)) => "replace".into(),
        (Some(a), _) => a.as_str().to_lowercase(),
        (None, _) => "unknown".into(),
    }
}

/// The parameters whose values differ from the deployed ones.
pub fn param_diff(
    old: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
) -> Vec<ParamDiff> {
    new.iter()
        .filter(|(k, v)| old.get(*k) != Some(*v))
        .map(|(k, v)| ParamDiff {
            key: k.clone(),
            old: old.get(k).cloned(),
            new: v.clone(),
        })
        .collect()
}

/// True when a failed change set failed only because there was nothing to change.
pub fn is_no_change_reason(reason: &str) -> bool {
    reason.contains("didn't contain changes") || reason.contains("No updates are to be performed")
}

/// Creates a change set for `env`'s stack (create or update), waits until it is computed and
/// returns it as a [`Plan`]. A change set that changes nothing is deleted and returned empty.
/// A create change set for a dry run leaves a stack in REVIEW_IN_PROGRESS: [`discard`] removes it.
pub async fn create_change_set(
    cf: &Cfn,
    env: &EnvConfig,
    template: &str,
    params: &BTreeMap<String, String>,
) -> anyhow::Result<Plan> {
    validate_parameters(template, params)?;
    let name = &env.stack_name;
    let existing = describe_stack(cf, name).await?;
    let kind = match existing.as_ref().map(|s| s.status.as_str()) {
        None | Some("REVIEW_IN_PROGRESS") => ChangeSetType::Create,
        Some("ROLLBACK_COMPLETE") => bail!(
            "stack {name} is in ROLLBACK_COMPLETE after a failed first deploy and cannot be updated: \
             run `cargo xtask teardown --env {}` and deploy again",
            env.name
        ),
        Some(s) if s.ends_with("_IN_PROGRESS") => {
            bail!(
                "stack {name} is busy ({s}): wait for that operation to finish, then deploy again"
            )
        }
        Some(_) => ChangeSetType::Update,
    };
    let old_params = existing
        .as_ref()
        .map(|s| s.parameters.clone())
        .unwrap_or_default();
    let cs_name = format!("xtask-{}", chrono::Utc::now().format("%Y%m%d%H%M%S%3f"));
    let tags = env
        .tags
        .iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect::<Vec<_>>();
    let out = cf
        .create_change_set()
        .stack_name(name)
        .change_set_name(&cs_name)
        .change_set_type(kind.clone())
        .template_body(template)
        .set_parameters(Some(
            params
                .iter()
                .map(|(k, v)| {
                    Parameter::builder()
                        .parameter_key(k)
                        .parameter_value(v)
                        .build()
                })
                .collect(),
        ))
        .capabilities(Capability::CapabilityNamedIam)
        .set_tags(Some(tags))
        .description(format!("cargo xtask deploy --env {}", env.name))
        .send()
        .await
        .with_context(|| format!("create a change set for stack {name}"))?;
    let id = out
        .id()
        .context("CreateChangeSet returned no id")?
        .to_string();

    let started = Instant::now();
    let (status, reason) = loop {
        let d = cf
            .describe_change_set()
            .change_set_name(&id)
            .stack_name(name)
            .send()
            .await
            .context("describe change set")?;
        match d.status() {
            Some(ChangeSetStatus::CreateComplete) => break ("ok", None),
            Some(ChangeSetStatus::Failed) => {
                break ("failed", d.status_reason().map(str::to_string));
            }
            _ if started.elapsed() > CHANGE_SET_TIMEOUT => {
                bail!("change set {cs_name} of stack {name} not ready after {CHANGE_SET_TIMEOUT:?}")
            }
            _ => tokio::time::sleep(Duration::from_secs(2)).await,
        }
    };
    let kind_s = if kind == ChangeSetType::Create {
        "create"
    } else {
        "update"
    };
    let mut plan = Plan {
        stack: name.clone(),
        kind: kind_s.into(),
        change_set_id: Some(id.clone()),
        resources: vec![],
        parameters: vec![],
    };
    if status == "failed" {
        let reason = reason.unwrap_or_default();
        discard(cf, &plan).await?;
        if is_no_change_reason(&reason) {
            plan.change_set_id = None;
            return Ok(plan);
        }
        bail!("CloudFormation refused the change to stack {name}: {reason}");
    }

    let mut token = None;
    loop {
        let d = cf
            .describe_change_set()
            .change_set_name(&id)
            .stack_name(name)
            .set_next_token(token)
            .send()
            .await
            .context("describe change set")?;
        for c in d.changes() {
            let Some(r) = c.resource_change() else {
                continue;
            };
            plan.resources.push(ResourceDiff {
                action: action_name(r.action(), r.replacement()),
                logical_id: r.logical_resource_id().unwrap_or_default().to_string(),
                resource_type: r.resource_type().unwrap_or_default().to_string(),
                replacement: r.replacement().map(|x| x.as_str().to_string()),
                scope: r.scope().iter().map(|s| s.as_str().to_string()).collect(),
            });
        }
        token = d.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    plan.parameters = if kind == ChangeSetType::Update {
        param_diff(&old_params, params)
    } else {
        vec![]
    };

    // CloudFormation reports "no changes" itself; emulators that do not (moto lists only template
    // differences) are caught here: same template, same parameters, nothing listed.
    if kind == ChangeSetType::Update && plan.resources.is_empty() && plan.parameters.is_empty() {
        let deployed = cf
            .get_template()
            .stack_name(name)
            .send()
            .await
            .context("get the deployed template")?;
        if deployed.template_body() == Some(template) {
            discard(cf, &plan).await?;
            plan.change_set_id = None;
        }
    }
    Ok(plan)
}

/// Deletes a plan's change set; for a create plan also the empty REVIEW_IN_PROGRESS stack it left.
pub async fn discard(cf: &Cfn, plan: &Plan) -> anyhow::Result<()> {
    let Some(id) = &plan.change_set_id else {
        return Ok(());
    };
    cf.delete_change_set()
        .change_set_name(id)
        .stack_name(&plan.stack)
        .send()
        .await
        .context("delete the change set")?;
    if plan.kind == "create"
        && let Some(s) = describe_stack(cf, &plan.stack).await?
        && s.status == "REVIEW_IN_PROGRESS"
    {
        cf.delete_stack()
            .stack_name(&plan.stack)
            .send()
            .await
            .context("delete the stack left in REVIEW_IN_PROGRESS")?;
    }
    Ok(())
}

/// One stack event, as printed while a stack operation runs.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Event {
    pub id: String,
    pub time: String,
    pub logical_id: String,
    pub resource_type: String,
    pub status: String,
    pub reason: Option<String>,
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:<28} {:<30} {}",
            self.time, self.status, self.resource_type, self.logical_id
        )?;
        if let Some(r) = &self.reason {
            write!(f, ": {r}")?;
        }
        Ok(())
    }
}

/// The first failed resource of an operation and its reason. Resources cancelled because another
/// failed are skipped, so the message names the cause, not the collateral.
pub fn first_failure(events: &[Event]) -> Option<&Event> {
    let cancelled = |e: &&Event| e.reason.as_deref().is_some_and(|r| r.contains("cancelled"));
    let failed = |e: &&Event| {
        e.status.ends_with("_FAILED") && e.resource_type != "AWS::CloudFormation::Stack"
    };
    events
        .iter()
        .filter(failed)
        .find(|e| !cancelled(e))
        .or_else(|| events.iter().find(failed))
}

/// Events newer than `after` (an event id), oldest first.
async fn events_since(cf: &Cfn, stack: &str, after: Option<&str>) -> anyhow::Result<Vec<Event>> {
    let mut out = Vec::new();
    let mut token = None;
    'pages: loop {
        let page = cf
            .describe_stack_events()
            .stack_name(stack)
            .set_next_token(token)
            .send()
            .await
            .context("describe stack events")?;
        for e in page.stack_events() {
            let id = e.event_id().unwrap_or_default();
            if Some(id) == after {
                break 'pages;
            }
            out.push(Event {
                id: id.to_string(),
                time: e
                    .timestamp()
                    .and_then(|t| t.fmt(aws_smithy_types::date_time::Format::DateTime).ok())
                    .unwrap_or_default(),
                logical_id: e.logical_resource_id().unwrap_or_default().to_string(),
                resource_type: e.resource_type().unwrap_or_default().to_string(),
                status: e
                    .resource_status()
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_default(),
                reason: e
                    .resource_status_reason()
                    .filter(|r| !r.is_empty())
                    .map(str::to_string),
            });
        }
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    out.reverse();
    Ok(out)
}

/// The newest event id of a stack, so that a following operation prints only its own events.
async fn last_event_id(cf: &Cfn, stack: &str) -> Option<String> {
    let page = cf
        .describe_stack_events()
        .stack_name(stack)
        .send()
        .await
        .ok()?;
    page.stack_events()
        .first()
        .and_then(|e| e.event_id())
        .map(str::to_string)
}

/// How a stack operation ended.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub stack: String,
    pub status: String,
    pub events: Vec<Event>,
}

/// Executes a plan's change set, prints the stack events as they come, and waits for the end.
/// A failure (the stack rolled back) is an error naming the failed resource and its reason.
pub async fn execute(ctx: &Ctx, cf: &Cfn, plan: &Plan) -> anyhow::Result<Outcome> {
    let id = plan
        .change_set_id
        .as_deref()
        .context("the plan changes nothing; there is no change set to execute")?;
    let stack = &plan.stack;
    let last = last_event_id(cf, stack).await;
    let exec = cf
        .execute_change_set()
        .change_set_name(id)
        .stack_name(stack)
        .send()
        .await;
    wait(
        ctx,
        cf,
        stack,
        last,
        "deploy",
        // The service's code and message (an image that is not in ECR, say), not just "service error".
        exec.err().map(|e| {
            anyhow::anyhow!(
                "execute the change set: {}",
                aws_sdk_cloudformation::error::DisplayErrorContext(&e)
            )
        }),
    )
    .await
}

/// A stack's template and parameters before a change, to put back when the change fails.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub template: String,
    pub parameters: BTreeMap<String, String>,
}

/// Reads what `stack` runs now; `None` when it does not exist.
pub async fn snapshot(cf: &Cfn, stack: &str) -> anyhow::Result<Option<Snapshot>> {
    let Some(info) = describe_stack(cf, stack).await? else {
        return Ok(None);
    };
    let template = cf
        .get_template()
        .stack_name(stack)
        .send()
        .await
        .with_context(|| format!("get the deployed template of stack {stack}"))?
        .template_body()
        .unwrap_or_default()
        .to_string();
    Ok(Some(Snapshot {
        template,
        parameters: info.parameters,
    }))
}

/// How a failed update ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RolledBack {
    /// CloudFormation rolled the stack back itself (`UPDATE_ROLLBACK_COMPLETE`).
    ByCloudFormation,
    /// The platform left the change in place (an emulator without rollback, or a stack left
    /// `*_FAILED`); xtask re-applied the previous template and parameters.
    ByXtask,
    /// Nothing needed undoing: the stack still had its previous template and parameters.
    NothingChanged,
}

/// Executes an update plan; when it fails, makes sure the stack is back where it was and returns
/// the failure (naming the failed resource and its reason) with how it was rolled back. On AWS
/// CloudFormation rolls back by itself; emulators such as moto do not, so the previous template
/// and parameters are applied again.
pub async fn execute_or_roll_back(
    ctx: &Ctx,
    cf: &Cfn,
    plan: &Plan,
    before: &Snapshot,
) -> anyhow::Result<Outcome> {
    let env = &ctx.env;
    let failure = match execute(ctx, cf, plan).await {
        Ok(outcome) => return Ok(outcome),
        Err(e) => e,
    };
    let status = describe_stack(cf, &plan.stack)
        .await?
        .map(|s| s.status)
        .unwrap_or_default();
    let how = if status == "UPDATE_ROLLBACK_COMPLETE" {
        RolledBack::ByCloudFormation
    } else {
        ctx.note(format!(
            "the change failed and stack {} is {status}: applying its previous template and parameters again",
            plan.stack
        ));
        match restore(ctx, cf, before).await {
            Ok(how) => how,
            Err(restore_err) => {
                // moto cannot undo a function whose creation failed: its stack stays unreadable.
                let emulator = if ctx.on_emulator().unwrap_or(false) {
                    "; on the local emulator, `cargo xtask local reset` starts it afresh"
                } else {
                    ""
                };
                return Err(failure.context(format!(
                    "and rolling back failed too ({restore_err:#}): inspect stack {} and run `cargo xtask deploy --env {}` \
                     again, or `cargo xtask teardown --env {}`{emulator}",
                    plan.stack, env.name, env.name
                )));
            }
        }
    };
    let what = match how {
        RolledBack::ByCloudFormation => {
            "CloudFormation rolled the stack back to its previous state"
        }
        RolledBack::ByXtask => "the stack was rolled back to its previous template and parameters",
        RolledBack::NothingChanged => "the stack kept its previous template and parameters",
    };
    Err(failure.context(format!(
        "deploy failed and was rolled back ({what}); fix the cause named below and deploy again"
    )))
}

/// Applies `before` again; `NothingChanged` when the stack already matches it.
async fn restore(ctx: &Ctx, cf: &Cfn, before: &Snapshot) -> anyhow::Result<RolledBack> {
    let plan = create_change_set(cf, &ctx.env, &before.template, &before.parameters).await?;
    if plan.is_empty() {
        return Ok(RolledBack::NothingChanged);
    }
    ctx.note(format!("rollback plan:\n{plan}"));
    execute(ctx, cf, &plan).await?;
    Ok(RolledBack::ByXtask)
}

/// Deletes a stack and waits until it is gone.
pub async fn delete(ctx: &Ctx, cf: &Cfn, stack: &str) -> anyhow::Result<Outcome> {
    let last = last_event_id(cf, stack).await;
    let res = cf.delete_stack().stack_name(stack).send().await;
    wait(
        ctx,
        cf,
        stack,
        last,
        "delete",
        res.err()
            .map(|e| anyhow::Error::new(e).context("delete the stack")),
    )
    .await
}

/// Streams events and waits for a terminal status. `started_err` is the error of the call that
/// started the operation, reported together with whatever state the stack is left in.
async fn wait(
    ctx: &Ctx,
    cf: &Cfn,
    stack: &str,
    mut last: Option<String>,
    what: &str,
    started_err: Option<anyhow::Error>,
) -> anyhow::Result<Outcome> {
    let spinner = ctx.spinner(format!("{what} {stack}"));
    let started = Instant::now();
    let mut all = Vec::new();
    let mut started_op = false;
    let status = loop {
        let info = describe_stack(cf, stack).await?;
        if let Ok(events) = events_since(cf, stack, last.as_deref()).await {
            for e in &events {
                spinner.suspend(|| ctx.note(format!("  {e}")));
            }
            if let Some(e) = events.last() {
                last = Some(e.id.clone());
            }
            all.extend(events);
        }
        let status = match info {
            None => "DELETE_COMPLETE".to_string(),
            Some(i) => i.status,
        };
        spinner.set_message(format!("{what} {stack}: {status}"));
        // DescribeStacks may still show the previous operation's final status for a moment after
        // Execute/Delete returns: a terminal status counts once this operation has started (an
        // event of the stack itself, or an in-progress status), or after a grace period.
        started_op |= status.ends_with("_IN_PROGRESS")
            || all
                .iter()
                .any(|e| e.resource_type == "AWS::CloudFormation::Stack");
        let terminal = !status.ends_with("_IN_PROGRESS");
        if started_err.is_some()
            || (terminal
                && (started_op || status == "DELETE_COMPLETE" || started.elapsed() > START_GRACE))
        {
            break status;
        }
        if started.elapsed() > STACK_TIMEOUT {
            bail!(
                "stack {stack} still {status} after {STACK_TIMEOUT:?}: follow it in the CloudFormation console"
            );
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
    };
    spinner.finish_and_clear();
    let ok = matches!(
        status.as_str(),
        "CREATE_COMPLETE" | "UPDATE_COMPLETE" | "IMPORT_COMPLETE" | "DELETE_COMPLETE"
    );
    if let Some(err) = started_err {
        let cause = first_failure(&all).map(|e| {
            format!(
                "; {} ({}) {}: {}",
                e.logical_id,
                e.resource_type,
                e.status,
                e.reason.as_deref().unwrap_or("no reason given")
            )
        });
        return Err(err.context(format!(
            "{what} of stack {stack} failed, stack is {status}{}",
            cause.unwrap_or_default()
        )));
    }
    if !ok {
        let cause = match first_failure(&all) {
            Some(e) => format!(
                "{} ({}) {}: {}",
                e.logical_id,
                e.resource_type,
                e.status,
                e.reason.as_deref().unwrap_or("no reason given")
            ),
            None => "no failed resource in the events".into(),
        };
        bail!("{what} of stack {stack} failed and ended {status}: {cause}");
    }
    Ok(Outcome {
        stack: stack.to_string(),
        status,
        events: all,
    })
}

/// What xtask (and e2e, monitor) need to know about a deployed environment.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct ServiceOutputs {
    pub environment: String,
    pub stack: String,
    pub status: String,
    /// The actual bucket name, `<model_bucket>-<account id>`.
    pub model_bucket: String,
    pub model_prefix: String,
    pub input_stream: String,
    pub output_stream: String,
    pub dead_letter: String,
    pub repository_name: String,
    pub repository_uri: String,
    pub log_group: String,
    /// Present once the function is deployed.
    pub function_name: Option<String>,
    pub function_arn: Option<String>,
    pub event_source_mapping_id: Option<String>,
    pub image_uri: Option<String>,
    pub run_id: Option<String>,
    pub model_location: Option<String>,
}

impl ServiceOutputs {
    /// The S3 key of a run's model, `<prefix>/<run id>/model.json`.
    pub fn model_key(&self, run_id: &str) -> String {
        format!(
            "{}/{run_id}/{}",
            self.model_prefix,
            model::artifact::FILE_NAME
        )
    }
}

impl fmt::Display for ServiceOutputs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let none = || "-".to_string();
        writeln!(
            f,
            "stack {} ({}) [{}]",
            self.stack, self.environment, self.status
        )?;
        writeln!(
            f,
            "  model bucket     s3://{}/{}/",
            self.model_bucket, self.model_prefix
        )?;
        writeln!(f, "  input stream     {}", self.input_stream)?;
        writeln!(f, "  output stream    {}", self.output_stream)?;
        writeln!(f, "  dead letter      {}", self.dead_letter)?;
        writeln!(f, "  repository       {}", self.repository_uri)?;
        writeln!(f, "  log group        {}", self.log_group)?;
        writeln!(
            f,
            "  function         {}",
            self.function_arn
                .clone()
                .or(self.function_name.clone())
                .unwrap_or_else(none)
        )?;
        writeln!(
            f,
            "  mapping          {}",
            self.event_source_mapping_id.clone().unwrap_or_else(none)
        )?;
        writeln!(
            f,
            "  image            {}",
            self.image_uri.clone().unwrap_or_else(none)
        )?;
        write!(
            f,
            "  model            {}",
            self.model_location
                .clone()
                .or(self.run_id.clone())
                .unwrap_or_else(none)
        )
    }
}

/// The outputs of `env`'s stack; `None` when there is no stack.
///
/// Outputs the stack does not report are read from its resources' physical ids and the services
/// themselves: moto evaluates no Outputs for stacks made by change sets, and this keeps xtask
/// working there too.
pub async fn service_outputs(
    sdk: &SdkConfig,
    env: &EnvConfig,
) -> anyhow::Result<Option<ServiceOutputs>> {
    let cf = client(sdk);
    let Some(info) = describe_stack(&cf, &env.stack_name).await? else {
        return Ok(None);
    };
    let res = stack_resources(&cf, &env.stack_name).await?;
    let physical = |logical: &str| {
        res.get(logical)
            .map(|(_, p)| p.clone())
            .filter(|p| !p.is_empty())
    };
    let get =
        |key: &str, logical: &str| info.outputs.get(key).cloned().or_else(|| physical(logical));
    let missing = |what: &str| {
        anyhow::anyhow!(
            "stack {} has no {what}: it is {}; deploy it again",
            env.stack_name,
            info.status
        )
    };
    let param = |k: &str| info.parameters.get(k).cloned().filter(|v| !v.is_empty());

    let repository_name =
        get("RepositoryName", "Repository").ok_or_else(|| missing("repository"))?;
    let repository_uri = match info.outputs.get("RepositoryUri") {
        Some(uri) => uri.clone(),
        None => {
            let ecr = aws_sdk_ecr::Client::new(sdk);
            let out = ecr
                .describe_repositories()
                .repository_names(&repository_name)
                .send()
                .await
                .context("describe the repository")?;
            out.repositories()
                .first()
                .and_then(|r| r.repository_uri())
                .map(str::to_string)
                .ok_or_else(|| missing("repository uri"))?
        }
    };
    let function_name = get("FunctionName", "Function");
    let function_arn = match (info.outputs.get("FunctionArn"), &function_name) {
        (Some(arn), _) => Some(arn.clone()),
        (None, Some(name)) => {
            let lambda = aws_sdk_lambda::Client::new(sdk);
            let f = lambda
                .get_function()
                .function_name(name)
                .send()
                .await
                .context("get the function")?;
            f.configuration()
                .and_then(|c| c.function_arn())
                .map(str::to_string)
        }
        (None, None) => None,
    };
    let dead_letter = info
        .outputs
        .get("DeadLetter")
        .cloned()
        .unwrap_or_else(|| env.dead_letter().to_env_value());
    Ok(Some(ServiceOutputs {
        environment: param("Environment").unwrap_or_else(|| env.name.clone()),
        stack: info.name.clone(),
        status: info.status.clone(),
        model_bucket: get("ModelBucketName", "ModelBucket")
            .ok_or_else(|| missing("model bucket"))?,
        model_prefix: param("ModelPrefix").unwrap_or_else(|| env.model_prefix.clone()),
        input_stream: get("InputStreamName", "InputStream")
            .ok_or_else(|| missing("input stream"))?,
        output_stream: get("OutputStreamName", "OutputStream")
            .ok_or_else(|| missing("output stream"))?,
        dead_letter,
        repository_name,
        repository_uri,
        log_group: get("LogGroupName", "LogGroup")
            .unwrap_or_else(|| format!("/aws/lambda/{}", env.function_name)),
        function_name,
        function_arn,
        event_source_mapping_id: get("EventSourceMappingId", "InputMapping"),
        image_uri: param("ImageUri"),
        run_id: param("RunId"),
        model_location: param("ModelLocation"),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(status: &str, logical: &str, reason: Option<&str>) -> Event {
        Event {
            id: logical.into(),
            time: String::new(),
            logical_id: logical.into(),
            resource_type: if logical == "Stack" {
                "AWS::CloudFormation::Stack".into()
            } else {
                "AWS::Kinesis::Stream".into()
            },
            status: status.into(),
            reason: reason.map(str::to_string),
        }
    }

    #[test]
    fn first_failure_names_the_cause_not_the_cancelled() {
        let events = vec![
            ev("CREATE_IN_PROGRESS", "InputStream", None),
            ev(
                "CREATE_FAILED",
                "OutputStream",
                Some("Resource creation cancelled"),
            ),
            ev(
                "CREATE_FAILED",
                "InputStream",
                Some("ShardCount must be positive"),
            ),
            ev(
                "ROLLBACK_IN_PROGRESS",
                "Stack",
                Some("The following resource(s) failed to create"),
            ),
        ];
        let f = first_failure(&events).unwrap();
        assert_eq!(f.logical_id, "InputStream");
        assert_eq!(f.reason.as_deref(), Some("ShardCount must be positive"));
    }

    #[test]
    fn a_replacing_modification_reads_as_replace() {
        assert_eq!(
            action_name(Some(&ChangeAction::Modify), Some(&Replacement::True)),
            "replace"
        );
        assert_eq!(
            action_name(Some(&ChangeAction::Modify), Some(&Replacement::Conditional)),
            "modify"
        );
        assert_eq!(action_name(Some(&ChangeAction::Add), None), "add");
        assert_eq!(action_name(Some(&ChangeAction::Remove), None), "remove");
    }

    #[test]
    fn param_diff_lists_only_changed_values() {
        let old: BTreeMap<_, _> = [
            ("RunId".to_string(), "a".to_string()),
            ("X".into(), "1".into()),
        ]
        .into();
        let new: BTreeMap<_, _> = [
            ("RunId".to_string(), "b".to_string()),
            ("X".into(), "1".into()),
        ]
        .into();
        assert_eq!(
            param_diff(&old, &new),
            vec![ParamDiff {
                key: "RunId".into(),
                old: Some("a".into()),
                new: "b".into()
            }]
        );
    }

    #[test]
    fn plan_prints_every_action() {
        let plan = Plan {
            stack: "s".into(),
            kind: "update".into(),
            change_set_id: Some("id".into()),
            resources: vec![
                ResourceDiff {
                    action: "add".into(),
                    logical_id: "A".into(),
                    resource_type: "T".into(),
                    replacement: None,
                    scope: vec![],
                },
                ResourceDiff {
                    action: "replace".into(),
                    logical_id: "B".into(),
                    resource_type: "T".into(),
                    replacement: Some("True".into()),
                    scope: vec!["Properties".into()],
                },
                ResourceDiff {
                    action: "remove".into(),
                    logical_id: "C".into(),
                    resource_type: "T".into(),
                    replacement: None,
                    scope: vec![],
                },
            ],
            parameters: vec![ParamDiff {
                key: "RunId".into(),
                old: Some("a".into()),
                new: "b".into(),
            }],
        };
        let text = plan.to_string();
        for want in [
            "+ add",
            "± replace",
            "- remove",
            "B [Properties]",
            "RunId: \"a\" -> \"b\"",
        ] {
            assert!(text.contains(want), "{want} missing in\n{text}");
        }
    }

    #[test]
    fn every_environment_fits_the_template_constraints() {
        let root = crate::ctx::repo_root();
        let template = template_body(&root).unwrap();
        for name in crate::config::ENVIRONMENTS {
            let env = EnvConfig::load(&root, name).unwrap();
            validate_parameters(&template, &parameters(&env, &Release::default()).unwrap())
                .unwrap();
        }
    }

    #[test]
    fn out_of_range_values_are_refused_with_their_key() {
        let root = crate::ctx::repo_root();
        let template = template_body(&root).unwrap();
        let mut env = EnvConfig::load(&root, "dev").unwrap();
        env.batch_size = 0;
        env.log_retention_days = 8;
        env.model_bucket = "Upper_Case".into();
        let err = validate_parameters(&template, &parameters(&env, &Release::default()).unwrap())
            .unwrap_err()
            .to_string();
        for want in [
            "BatchSize = 0 is below its minimum 1",
            "LogRetentionDays = \"8\" is not one of",
            "ModelBucketName = \"Upper_Case\"",
        ] {
            assert!(err.contains(want), "{want} missing in {err}");
        }
    }

    #[test]
    fn simple_patterns_match_like_regexes() {
        assert!(simple_pattern_matches(
            "^[a-z0-9][a-z0-9.-]{1,49}$",
            "taxi-duration-models-dev"
        ));
        assert!(!simple_pattern_matches("^[a-z0-9][a-z0-9.-]{1,49}$", "-x"));
        assert!(!simple_pattern_matches("^[a-z0-9][a-z0-9.-]{1,49}$", "a"));
        assert!(simple_pattern_matches("^[A-Za-z0-9._-]+$", "models"));
        assert!(!simple_pattern_matches("^[A-Za-z0-9._-]+$", "models/x"));
    }

    #[test]
    fn wrong_environment_tag_is_refused() {
        let root = crate::ctx::repo_root();
        let mut env = EnvConfig::load(&root, "dev").unwrap();
        env.tags.insert("environment".into(), "stg".into());
        let err = parameters(&env, &Release::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("must be \"dev\""), "{err}");
    }
}
