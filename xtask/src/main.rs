//! `cargo xtask`: the one entry point for data, training, images, stacks, local emulation,
//! end-to-end runs and monitoring. `main` parses and dispatches; each command lives in its own file.

use clap::{Parser, Subcommand};

use xtask::ctx::{Ctx, GlobalArgs};
use xtask::*;

/// taxi-duration: a ride-duration model from raw trip records to a monitored Lambda service.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", version, about)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Prepare data: `data synth` writes synthetic trip records.
    Data(data::DataArgs),
    /// Train the model on trip-record Parquet files.
    Train(train::TrainArgs),
    /// Predict one ride with a model artifact.
    Predict(predict::PredictArgs),
    /// Benchmarks side by side with the Python baseline.
    Bench(bench::BenchArgs),
    /// Run exactly what CI runs: fmt, clippy, tests, end-to-end.
    Ci(ci::CiArgs),
    /// The whole pipeline end to end: emulator, data, train, image, deploy, events, checks, teardown.
    E2e(e2e::E2eArgs),
    /// Retrain and ship: validate, train, evaluate (quality gate), register, deploy, smoke, promote; resumable.
    Pipeline(pipeline::PipelineArgs),
    /// Build an artifact: `build lambda` makes the static bootstrap binary.
    Build(build::BuildArgs),
    /// Build the Lambda container image, or push it to the environment's registry.
    Image(image::ImageArgs),
    /// Training runs: list, show, alias (staging, production), and the prod gate.
    Runs(runs::RunsArgs),
    /// Local AWS emulator: `local up|down|status|reset|poll`.
    Local(local::LocalArgs),
    /// Invoke the function once, locally (Runtime API emulator) or with --remote on AWS.
    Invoke(invoke::InvokeArgs),
    /// Deploy the service stack: `deploy --env E [--engine cloudformation|terraform] [--image-uri U] [--model-file F | --run-id R]`.
    Deploy(deploy::DeployArgs),
    /// Tear down an environment's stack and everything billable in it.
    Teardown(teardown::TeardownArgs),
    /// Drift between a reference and a current period: report, PostgreSQL metrics, alerts (exit 3).
    Monitor(monitor::MonitorArgs),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    util::init_tracing();
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) if e.is::<monitor::AlertFired>() => {
            eprintln!("alert: {e}");
            std::process::ExitCode::from(monitor::ALERT_EXIT_CODE)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let ctx = Ctx::new(&cli.global)?;
    match cli.cmd {
        Cmd::Data(args) => args.run(&ctx).await,
        Cmd::Train(args) => args.run(&ctx).await,
        Cmd::Predict(args) => args.run(&ctx).await,
        Cmd::Bench(args) => args.run(&ctx).await,
        Cmd::Ci(args) => args.run(&ctx).await,
        Cmd::E2e(args) => args.run(&ctx).await,
        Cmd::Pipeline(args) => args.run(&ctx).await,
        Cmd::Build(args) => args.run(&ctx).await,
        Cmd::Image(args) => args.run(&ctx).await,
        Cmd::Runs(args) => args.run(&ctx).await,
        Cmd::Local(args) => args.run(&ctx).await,
        Cmd::Invoke(args) => args.run(&ctx).await,
        Cmd::Deploy(args) => args.run(&ctx).await,
        Cmd::Teardown(args) => args.run(&ctx).await,
        Cmd::Monitor(args) => args.run(&ctx).await,
    }
}
