//! The Lambda `bootstrap`: read the configuration, load the model once, serve invocations.

use lambda::{Config, Handler};
use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;

async fn start() -> Result<Handler, lambda::Error> {
    let config = Config::from_env()?;
    let sdk = lambda::aws_config().await;
    lambda::init(&config, &sdk).await
}

// One invocation at a time per sandbox, so a single-threaded runtime is enough and starts faster.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let handler = match start().await {
        Ok(handler) => handler,
        Err(e) => {
            tracing::error!(error_type = e.error_type(), "init failed: {e}");
            // lambda_runtime only reports errors once it runs, so an init failure is reported
            // here; without this Lambda would only see the process exit.
            if let Ok(api) = std::env::var("AWS_LAMBDA_RUNTIME_API")
                && let Err(report) = lambda::report_init_error(&api, &e)
            {
                tracing::error!("could not report the init error to the runtime API: {report}");
            }
            return Err(e.into());
        }
    };
    let handler = &handler;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        handler.handle(event.payload).await
    }))
    .await
}
