//! The CloudFormation template and the Terraform configuration, read as data: plain YAML, tags
//! everywhere, least privilege, the input stream (never the output) feeding the function, and
//! both engines declaring the same resources, names and permissions from the same config values.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_yaml::Value as Yaml;
use xtask::config::{ENVIRONMENTS, EnvConfig};
use xtask::stack::{self, Release};

use crate::moto;

fn root() -> PathBuf {
    xtask::ctx::repo_root()
}

fn template() -> Yaml {
    serde_yaml::from_str(&stack::template_body(&root()).unwrap()).unwrap()
}

fn resources(t: &Yaml) -> Vec<(String, Yaml)> {
    t["Resources"]
        .as_mapping()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.as_str().unwrap().to_string(), v.clone()))
        .collect()
}

fn strings(v: &Yaml) -> Vec<String> {
    match v {
        Yaml::String(s) => vec![s.clone()],
        Yaml::Sequence(s) => s.iter().flat_map(strings).collect(),
        _ => vec![],
    }
}

/// Every string value inside a value (keys such as `Fn::GetAtt` left out), so that references
/// can be searched without evaluating them.
fn all_strings(v: &Yaml, out: &mut Vec<String>) {
    match v {
        Yaml::String(s) => out.push(s.clone()),
        Yaml::Sequence(s) => s.iter().for_each(|x| all_strings(x, out)),
        Yaml::Mapping(m) => m.values().for_each(|x| all_strings(x, out)),
        Yaml::Tagged(t) => all_strings(&t.value, out),
        _ => {}
    }
}

fn has_tagged(v: &Yaml) -> bool {
    match v {
        Yaml::Tagged(_) => true,
        Yaml::Sequence(s) => s.iter().any(has_tagged),
        Yaml::Mapping(m) => m.iter().any(|(k, x)| has_tagged(k) || has_tagged(x)),
        _ => false,
    }
}

/// The role's Allow statements, with `Fn::If` branches unwrapped: (sid, actions, resources).
fn cfn_statements(t: &Yaml) -> Vec<(String, BTreeSet<String>, Yaml)> {
    let role = &t["Resources"]["FunctionRole"]["Properties"];
    let mut out = Vec::new();
    for policy in role["Policies"].as_sequence().unwrap() {
        for st in policy["PolicyDocument"]["Statement"].as_sequence().unwrap() {
            let st = match st.get("Fn::If") {
                Some(branches) => branches[1].clone(),
                None => st.clone(),
            };
            assert_eq!(st["Effect"], "Allow");
            out.push((
                st["Sid"].as_str().unwrap().to_string(),
                strings(&st["Action"]).into_iter().collect(),
                st["Resource"].clone(),
            ));
        }
    }
    out
}

#[test]
fn the_template_is_plain_yaml_with_long_form_intrinsics() {
    let text = stack::template_body(&root()).unwrap();
    let t: Yaml = serde_yaml::from_str(&text).unwrap();
    assert!(
        !has_tagged(&t),
        "short-form tags such as !Ref are not plain YAML"
    );
    assert!(
        !text.contains(" !"),
        "a short-form tag is in the template text"
    );
    assert!(t["Resources"].as_mapping().unwrap().len() >= 13);
}

#[test]
fn every_taggable_resource_carries_project_and_environment() {
    let t = template();
    for (id, r) in resources(&t) {
        if r["Type"] == "AWS::S3::BucketPolicy" {
            continue; // not taggable
        }
        let tags = r["Properties"]["Tags"]
            .as_sequence()
            .unwrap_or_else(|| panic!("{id} has no Tags"));
        let get = |k: &str| {
            tags.iter()
                .find(|t| t["Key"] == k)
                .map(|t| t["Value"]["Ref"].clone())
        };
        assert_eq!(get("project"), Some(Yaml::from("ProjectTag")), "{id}");
        assert_eq!(get("environment"), Some(Yaml::from("Environment")), "{id}");
    }
}

#[test]
fn the_function_reads_the_input_stream_and_never_its_output() {
    let t = template();
    let mappings: Vec<_> = resources(&t)
        .into_iter()
        .filter(|(_, r)| r["Type"] == "AWS::Lambda::EventSourceMapping")
        .collect();
    assert_eq!(mappings.len(), 1);
    let p = &mappings[0].1["Properties"];
    assert_eq!(p["EventSourceArn"]["Fn::GetAtt"][0], "InputStream");
    let mut refs = Vec::new();
    all_strings(p, &mut refs);
    assert!(
        !refs.iter().any(|s| s.contains("OutputStream")),
        "the mapping mentions the output stream: {refs:?}"
    );
    assert_eq!(p["FunctionName"]["Ref"], "Function");
    assert_eq!(p["BisectBatchOnFunctionError"], true);
    assert_eq!(
        strings(&p["FunctionResponseTypes"]),
        ["ReportBatchItemFailures"]
    );
    assert_eq!(p["BatchSize"]["Ref"], "BatchSize");
    assert_eq!(p["MaximumBatchingWindowInSeconds"]["Ref"], "BatchingWindow");
    assert_eq!(p["MaximumRetryAttempts"]["Ref"], "MaximumRetryAttempts");
    assert_eq!(
        p["DestinationConfig"]["OnFailure"]["Destination"]["Fn::GetAtt"][0],
        "FailureQueue"
    );
    // The input and output stream names are distinct parameters, distinct in every environment.
    let input = &t["Resources"]["InputStream"]["Properties"]["Name"]["Ref"];
    let output = &t["Resources"]["OutputStream"]["Properties"]["Name"]["Ref"];
    assert_ne!(input, output);
    let vars = &t["Resources"]["Function"]["Properties"]["Environment"]["Variables"];
    assert_eq!(vars["PREDICTIONS_STREAM_NAME"]["Ref"], "OutputStreamName");
    for env in ENVIRONMENTS {
        let p = stack::parameters(&EnvConfig::load(&root(), env).unwrap(), &Release::default())
            .unwrap();
        assert_ne!(p["InputStreamName"], p["OutputStreamName"], "{env}");
    }
}

#[test]
fn the_role_is_least_privilege() {
    let t = template();
    let statements = cfn_statements(&t);
    assert!(statements.len() >= 7);
    for (sid, actions, resource) in &statements {
        for a in actions {
            assert!(!a.contains('*'), "{sid}: wildcard action {a}");
        }
        let res = strings(resource);
        if res.iter().any(|r| r == "*") {
            assert_eq!(
                actions.iter().map(String::as_str).collect::<Vec<_>>(),
                ["kinesis:ListStreams"],
                "{sid}: `*` resource"
            );
        }
        let mut mentioned = Vec::new();
        all_strings(resource, &mut mentioned);
        let reads = actions.iter().any(|a| {
            a.contains("GetRecords")
                || a.contains("GetShardIterator")
                || a.contains("SubscribeToShard")
        });
        if reads {
            assert!(
                mentioned.iter().all(|s| s == "InputStream" || s == "Arn"),
                "{sid} reads beyond the input stream: {mentioned:?}"
            );
        }
        if actions.contains("s3:GetObject") {
            assert_eq!(mentioned, ["${ModelBucket.Arn}/${ModelPrefix}/*"], "{sid}");
        }
        if actions.iter().any(|a| a.starts_with("logs:")) {
            assert!(
                mentioned[0].ends_with("log-group:/aws/lambda/${FunctionName}:*"),
                "{sid}: {mentioned:?}"
            );
        }
    }
    let managed = &t["Resources"]["FunctionRole"]["Properties"]["ManagedPolicyArns"];
    assert!(
        managed.is_null(),
        "managed policies grant more than the service needs"
    );
}

#[test]
fn the_bucket_is_versioned_encrypted_private_and_tls_only() {
    let t = template();
    let b = &t["Resources"]["ModelBucket"]["Properties"];
    assert_eq!(b["VersioningConfiguration"]["Status"], "Enabled");
    assert!(b["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]["SSEAlgorithm"].is_string());
    for k in [
        "BlockPublicAcls",
        "BlockPublicPolicy",
        "IgnorePublicAcls",
        "RestrictPublicBuckets",
    ] {
        assert_eq!(b["PublicAccessBlockConfiguration"][k], true, "{k}");
    }
    assert_eq!(
        b["BucketName"]["Fn::Sub"],
        "${ModelBucketName}-${AWS::AccountId}"
    );
    let st = &t["Resources"]["ModelBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"][0];
    assert_eq!(st["Effect"], "Deny");
    assert_eq!(st["Condition"]["Bool"]["aws:SecureTransport"], "false");
    let repo = &t["Resources"]["Repository"]["Properties"];
    assert_eq!(repo["ImageTagMutability"], "IMMUTABLE");
    assert_eq!(repo["ImageScanningConfiguration"]["ScanOnPush"], true);
    let rules: serde_json::Value = serde_json::from_str(
        repo["LifecyclePolicy"]["LifecyclePolicyText"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert!(!rules["rules"].as_array().unwrap().is_empty());
    for s in ["InputStream", "OutputStream", "DeadLetterStream"] {
        assert_eq!(
            t["Resources"][s]["Properties"]["StreamEncryption"]["EncryptionType"], "KMS",
            "{s}"
        );
    }
}

// ---- Terraform ----

fn tf_dir() -> PathBuf {
    root().join("terraform")
}

fn parse_hcl(path: &Path) -> hcl::Body {
    hcl::parse(&std::fs::read_to_string(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every `.tf` file: root and modules.
fn tf_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![tf_dir()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() && p.file_name().unwrap() != ".terraform" {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "tf") {
                files.push(p);
            }
        }
    }
    files.sort();
    files
}

fn label(b: &hcl::Block, i: usize) -> String {
    b.labels()[i].as_str().to_string()
}

/// (type, name) of every `resource` block.
fn tf_resources() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for f in tf_files() {
        for b in parse_hcl(&f).blocks() {
            if b.identifier() == "resource" {
                out.push((label(b, 0), label(b, 1)));
            }
        }
    }
    out
}

/// CloudFormation resource type → the Terraform resource type of the same thing.
const SAME_RESOURCE: [(&str, &str); 10] = [
    ("AWS::S3::Bucket", "aws_s3_bucket"),
    ("AWS::S3::BucketPolicy", "aws_s3_bucket_policy"),
    ("AWS::Kinesis::Stream", "aws_kinesis_stream"),
    ("AWS::SQS::Queue", "aws_sqs_queue"),
    ("AWS::ECR::Repository", "aws_ecr_repository"),
    ("AWS::Logs::LogGroup", "aws_cloudwatch_log_group"),
    ("AWS::IAM::Role", "aws_iam_role"),
    ("AWS::Lambda::Function", "aws_lambda_function"),
    (
        "AWS::Lambda::EventSourceMapping",
        "aws_lambda_event_source_mapping",
    ),
    ("AWS::CloudWatch::Alarm", "aws_cloudwatch_metric_alarm"),
];

/// Terraform resources that are properties of a CloudFormation resource, with that property.
const SUB_RESOURCE: [(&str, &str, &str); 7] = [
    (
        "aws_s3_bucket_versioning",
        "ModelBucket",
        "VersioningConfiguration",
    ),
    (
        "aws_s3_bucket_server_side_encryption_configuration",
        "ModelBucket",
        "BucketEncryption",
    ),
    (
        "aws_s3_bucket_public_access_block",
        "ModelBucket",
        "PublicAccessBlockConfiguration",
    ),
    (
        "aws_s3_bucket_ownership_controls",
        "ModelBucket",
        "OwnershipControls",
    ),
    ("aws_ecr_lifecycle_policy", "Repository", "LifecyclePolicy"),
    (
        "aws_ecr_repository_policy",
        "Repository",
        "RepositoryPolicyText",
    ),
    ("aws_iam_role_policy", "FunctionRole", "Policies"),
];

#[test]
fn every_module_has_the_four_files() {
    for m in ["ecr", "kinesis", "lambda", "s3", "iam"] {
        for f in ["main.tf", "variables.tf", "outputs.tf", "versions.tf"] {
            let p = tf_dir().join("modules").join(m).join(f);
            assert!(p.exists(), "{} missing", p.display());
            parse_hcl(&p);
        }
    }
}

#[test]
fn both_engines_declare_the_same_resources() {
    let t = template();
    let mut cfn: BTreeMap<String, usize> = BTreeMap::new();
    for (_, r) in resources(&t) {
        let ty = r["Type"].as_str().unwrap();
        let tf = SAME_RESOURCE
            .iter()
            .find(|(c, _)| *c == ty)
            .unwrap_or_else(|| panic!("{ty} has no Terraform counterpart"))
            .1;
        *cfn.entry(tf.to_string()).or_default() += 1;
    }
    let mut tf: BTreeMap<String, usize> = BTreeMap::new();
    for (ty, name) in tf_resources() {
        if let Some((_, logical, property)) = SUB_RESOURCE.iter().find(|(s, _, _)| *s == ty) {
            assert!(
                !t["Resources"][*logical]["Properties"][*property].is_null(),
                "{ty}.{name}: {logical} has no {property}"
            );
            continue;
        }
        *tf.entry(ty).or_default() += 1;
    }
    assert_eq!(
        cfn, tf,
        "CloudFormation (left) and Terraform (right) differ"
    );
}

/// The statements of the iam module's `service` policy document, `dynamic` ones included.
fn tf_statements() -> Vec<(String, BTreeSet<String>, Vec<String>)> {
    let body = parse_hcl(&tf_dir().join("modules/iam/main.tf"));
    let doc = body
        .blocks()
        .find(|b| {
            b.identifier() == "data"
                && label(b, 0) == "aws_iam_policy_document"
                && label(b, 1) == "service"
        })
        .expect("data.aws_iam_policy_document.service");
    let mut out = Vec::new();
    for b in doc.body().blocks() {
        let st = match b.identifier() {
            "statement" => b.body().clone(),
            "dynamic" if label(b, 0) == "statement" => b
                .body()
                .blocks()
                .find(|c| c.identifier() == "content")
                .unwrap()
                .body()
                .clone(),
            _ => continue,
        };
        let attr = |k: &str| {
            st.attributes()
                .find(|a| a.key() == k)
                .map(|a| a.expr().clone())
        };
        let list = |k: &str| match attr(k) {
            Some(hcl::Expression::Array(items)) => items
                .iter()
                .map(|e| e.to_string().trim_matches('"').to_string())
                .collect::<Vec<_>>(),
            other => panic!("{k}: expected a list, found {other:?}"),
        };
        let sid = attr("sid")
            .unwrap()
            .to_string()
            .trim_matches('"')
            .to_string();
        out.push((
            sid,
            list("actions").into_iter().collect(),
            list("resources"),
        ));
    }
    out
}

#[test]
fn both_engines_grant_the_same_permissions() {
    let cfn: BTreeMap<String, BTreeSet<String>> = cfn_statements(&template())
        .into_iter()
        .map(|(s, a, _)| (s, a))
        .collect();
    let tf_st = tf_statements();
    let tf: BTreeMap<String, BTreeSet<String>> = tf_st
        .iter()
        .map(|(s, a, _)| (s.clone(), a.clone()))
        .collect();
    assert_eq!(cfn, tf);
    for (sid, actions, resources) in &tf_st {
        if resources.iter().any(|r| r == "*") {
            assert_eq!(
                actions.iter().map(String::as_str).collect::<Vec<_>>(),
                ["kinesis:ListStreams"],
                "{sid}"
            );
        }
        if actions.contains("kinesis:GetRecords") {
            assert_eq!(resources, &["var.input_stream_arn"], "{sid}");
        }
    }
    // The root module feeds the iam and lambda modules the INPUT stream as the stream to read.
    let main = std::fs::read_to_string(tf_dir().join("main.tf")).unwrap();
    assert!(main.contains("input_stream_arn       = module.kinesis.input_stream_arn"));
    let lambda = std::fs::read_to_string(tf_dir().join("modules/lambda/main.tf")).unwrap();
    assert!(lambda.contains("event_source_arn                   = var.input_stream_arn"));
}

#[test]
fn both_engines_give_the_function_the_same_environment() {
    let t = template();
    let cfn: BTreeSet<String> =
        t["Resources"]["Function"]["Properties"]["Environment"]["Variables"]
            .as_mapping()
            .unwrap()
            .keys()
            .map(|k| k.as_str().unwrap().to_string())
            .collect();
    let body = parse_hcl(&tf_dir().join("modules/lambda/main.tf"));
    let f = body
        .blocks()
        .find(|b| b.identifier() == "resource" && label(b, 0) == "aws_lambda_function")
        .unwrap();
    let env = f
        .body()
        .blocks()
        .find(|b| b.identifier() == "environment")
        .unwrap();
    let vars = env
        .body()
        .attributes()
        .find(|a| a.key() == "variables")
        .unwrap()
        .expr()
        .clone();
    let hcl::Expression::Object(obj) = vars else {
        panic!("variables is not an object")
    };
    let tf: BTreeSet<String> = obj.keys().map(|k| k.to_string()).collect();
    assert_eq!(cfn, tf);
    for want in [
        "MODEL_BUCKET",
        "MODEL_PREFIX",
        "RUN_ID",
        "MODEL_LOCATION",
        "PREDICTIONS_STREAM_NAME",
        "DEAD_LETTER",
    ] {
        assert!(cfn.contains(want), "{want}");
    }
}

fn tfvars(env: &str) -> BTreeMap<String, serde_json::Value> {
    let body = parse_hcl(&tf_dir().join(format!("vars/{env}.tfvars")));
    body.attributes()
        .map(|a| {
            let v: serde_json::Value = hcl::from_str(&format!("v = {}", a.expr()))
                .map(|m: BTreeMap<String, serde_json::Value>| m["v"].clone())
                .unwrap();
            (a.key().to_string(), v)
        })
        .collect()
}

/// CloudFormation parameter → the config key (and tfvars variable) it is filled from.
const PARAM_FROM: [(&str, &str); 17] = [
    ("Environment", "name"),
    ("ModelBucketName", "model_bucket"),
    ("ModelPrefix", "model_prefix"),
    ("InputStreamName", "input_stream"),
    ("OutputStreamName", "output_stream"),
    ("FailureQueueName", "failure_queue"),
    ("RepositoryName", "ecr_repository"),
    ("FunctionName", "function_name"),
    ("InputShards", "input_shards"),
    ("OutputShards", "output_shards"),
    ("MemorySize", "memory_mb"),
    ("Timeout", "timeout_s"),
    ("BatchSize", "batch_size"),
    ("BatchingWindow", "batching_window_s"),
    ("MaximumRetryAttempts", "max_retry_attempts"),
    ("LogRetentionDays", "log_retention_days"),
    ("AlarmErrorsThreshold", "alarm_errors_threshold"),
];

#[test]
fn tfvars_hold_the_environment_config_values() {
    let declared: BTreeSet<String> = parse_hcl(&tf_dir().join("variables.tf"))
        .blocks()
        .filter(|b| b.identifier() == "variable")
        .map(|b| label(b, 0))
        .collect();
    for env in ENVIRONMENTS {
        let cfg = EnvConfig::load(&root(), env).unwrap();
        let want = serde_json::to_value(&cfg).unwrap();
        let vars = tfvars(env);
        for (k, v) in &vars {
            assert!(declared.contains(k), "{env}.tfvars sets undeclared {k}");
            let cv = &want[k];
            let same = match (cv.as_f64(), v.as_f64()) {
                (Some(a), Some(b)) => a == b,
                _ => cv == v,
            };
            assert!(same, "{env}: tfvars {k} = {v} but config says {cv}");
        }
        for k in &declared {
            let release =
                ["image_uri", "run_id", "model_location", "endpoint_url"].contains(&k.as_str());
            assert!(release || vars.contains_key(k), "{env}.tfvars lacks {k}");
        }
        // The stack parameters come from the same keys, with the same values.
        let params = stack::parameters(&cfg, &Release::default()).unwrap();
        for (param, key) in PARAM_FROM {
            let tf = &vars[key];
            let tf = tf
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| tf.to_string());
            assert_eq!(params[param], tf, "{env}: {param} vs tfvars {key}");
        }
        assert_eq!(
            params["AlarmIteratorAgeMs"],
            vars["alarm_iterator_age_ms"].to_string()
        );
        assert_eq!(vars["tags"]["environment"], env);
        // Its backend config keeps the state per environment, in the environment's region.
        let backend =
            std::fs::read_to_string(tf_dir().join(format!("backend-{env}.conf"))).unwrap();
        let backend: BTreeMap<String, serde_json::Value> = hcl::from_str(&backend).unwrap();
        assert_eq!(backend["region"], cfg.region.as_str(), "{env}");
        assert!(
            backend["key"].as_str().unwrap().contains(env)
                && backend["bucket"].as_str().unwrap().contains(env)
        );
    }
}

/// cfn-lint (installed with moto's CloudFormation extra) checks the template against the
/// CloudFormation resource specification: property names, types, value ranges.
#[test]
fn cfn_lint_accepts_the_template() {
    let bin = moto::cache_dir().join("venvs/moto/bin/cfn-lint");
    assert!(
        bin.exists(),
        "{} missing: run `bash tools/setup.sh`",
        bin.display()
    );
    let out = std::process::Command::new(&bin)
        .arg(stack::template_path(&root()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cfn-lint found problems:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
