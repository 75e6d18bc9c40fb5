//! `cargo xtask deploy --engine terraform`: the same service from terraform/, by Terraform or
//! OpenTofu: `init -backend-config=backend-<env>.conf`, `plan -var-file=vars/<env>.tfvars`
//! (printed), then `apply` of that saved plan.
//!
//! The tfvars files hold the same values as config/env/<env>.toml (a test keeps them in sync);
//! the release (image, run id) is passed with `-var`. Terraform creates everything in one apply,
//! so the model and image must already exist: pass --image-uri and --run-id (or --model-location).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::ctx::Ctx;
use crate::deploy::{DeployArgs, DeployReport, DeployStatus, Engine};

/// The tools tried, in order.
pub const CANDIDATES: [&str; 2] = ["terraform", "tofu"];

/// How to get one, for the error when none works.
pub const INSTALL_HINT: &str = "install OpenTofu (https://opentofu.org/docs/intro/install/, e.g. `snap install --classic opentofu` \
     or the standalone .deb from its GitHub releases) or Terraform (https://developer.hashicorp.com/terraform/install), \
     and make sure `tofu version` or `terraform version` runs; or deploy with the default --engine cloudformation";

/// A working Terraform-compatible binary.
#[derive(Debug, Clone)]
pub struct Tool {
    pub program: PathBuf,
    pub version: String,
}

/// The first of `candidates` whose `version` command succeeds. A binary that exists but fails
/// (a broken install, a bad CLI config) is skipped with its error remembered for the message.
pub fn find_tool(candidates: &[&str]) -> anyhow::Result<Tool> {
    let mut why = Vec::new();
    for name in candidates {
        match Command::new(name).arg("version").output() {
            Ok(out) if out.status.success() => {
                let version = String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_string();
                return Ok(Tool {
                    program: PathBuf::from(name),
                    version,
                });
            }
            Ok(out) => {
                let err = String::from_utf8_lossy(&out.stderr);
                why.push(format!(
                    "`{name} version` failed ({}): {}",
                    out.status,
                    err.trim().lines().last().unwrap_or_default()
                ))
            }
            Err(e) => why.push(format!("{name}: {e}")),
        }
    }
    bail!(
        "no working terraform or tofu ({}): {INSTALL_HINT}",
        why.join("; ")
    )
}

/// The terraform/ folder.
pub fn dir(root: &Path) -> PathBuf {
    root.join("terraform")
}

fn run(tool: &Tool, dir: &Path, args: &[String], what: &str) -> anyhow::Result<()> {
    let mut args = args.to_vec();
    if !std::io::stderr().is_terminal() {
        // Colour codes would garble logs and CI output.
        args.insert(1, "-no-color".into());
    }
    let status = Command::new(&tool.program)
        .arg(format!("-chdir={}", dir.display()))
        .args(&args)
        .env("TF_IN_AUTOMATION", "1")
        .status()
        .with_context(|| format!("start {}", tool.program.display()))?;
    if !status.success() {
        bail!(
            "`{} {}` failed ({status}) while {what}: see its output above{}",
            tool.program.display(),
            args.join(" "),
            if what.starts_with("initialising") {
                "; init downloads the AWS provider, so it needs registry.terraform.io (or a provider mirror in the CLI config)"
            } else {
                ""
            }
        );
    }
    Ok(())
}

/// Deploys `ctx.env` with Terraform/OpenTofu. A dry run stops after printing the plan; prod asks
/// `ctx.confirm` before applying.
pub async fn deploy(ctx: &Ctx, args: &DeployArgs) -> anyhow::Result<DeployReport> {
    let env = &ctx.env;
    crate::stack::check_tags(env)?;
    let tool = find_tool(&CANDIDATES)?;
    ctx.note(format!(
        "using {} ({})",
        tool.program.display(),
        tool.version
    ));
    if args.model_file.is_some() || args.model.is_some() {
        bail!(
            "--engine terraform does not upload or resolve models: deploy the model once with the default engine \
             (`cargo xtask deploy --model ...`), then pass --run-id <id> or --model-location s3://..."
        );
    }
    let image = args
        .image_uri
        .as_deref()
        .context("--engine terraform needs --image-uri <repository uri>:<tag>")?;
    if args.run_id.is_none() && args.model_location.is_none() {
        bail!("--engine terraform needs --run-id <id> or --model-location s3://...");
    }
    let dir = dir(&ctx.root);
    let mut init = vec![
        "init".to_string(),
        "-input=false".into(),
        "-reconfigure".into(),
        format!("-backend-config=backend-{}.conf", env.name),
    ];
    let mut vars = vec![
        format!("-var-file=vars/{}.tfvars", env.name),
        format!("-var=image_uri={image}"),
    ];
    if let Some(r) = &args.run_id {
        vars.push(format!("-var=run_id={r}"));
    }
    if let Some(l) = &args.model_location {
        vars.push(format!("-var=model_location={l}"));
    }
    if let Some(endpoint) = ctx.endpoint()? {
        // An emulator: the state stays local and the provider talks to the endpoint.
        init = vec![
            "init".into(),
            "-input=false".into(),
            "-reconfigure".into(),
            "-backend=false".into(),
        ];
        vars.push(format!("-var=endpoint_url={endpoint}"));
    }
    run(&tool, &dir, &init, "initialising")?;
    let plan_file = format!("{}.tfplan", env.name);
    let mut plan = vec![
        "plan".to_string(),
        "-input=false".into(),
        format!("-out={plan_file}"),
    ];
    plan.extend(vars);
    run(&tool, &dir, &plan, "planning")?;
    if ctx.dry_run {
        return Ok(report(env, DeployStatus::Planned));
    }
    if env.name == "prod" {
        ctx.confirm("apply the Terraform plan")?;
    }
    run(
        &tool,
        &dir,
        &["apply".into(), "-input=false".into(), plan_file],
        "applying",
    )?;
    Ok(report(env, DeployStatus::Updated))
}

fn report(env: &crate::config::EnvConfig, status: DeployStatus) -> DeployReport {
    DeployReport {
        environment: env.name.clone(),
        engine: Engine::Terraform,
        status,
        plans: vec![],
        model: None,
        image_uri: None,
        image: None,
        gate: None,
        alias: None,
        outputs: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tools_say_how_to_install_one() {
        let err = find_tool(&[
            "taxi-duration-no-such-terraform",
            "taxi-duration-no-such-tofu",
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("install OpenTofu"), "{err}");
        assert!(err.contains("taxi-duration-no-such-tofu"), "{err}");
    }
}
