//! A whole extractor in a user's crate: its config, its constructor (with a metric), its run.

use extractor_runtime::prometheus::IntCounter;
use extractor_runtime::{Extractor, Rejection, RunContext, Setup, TaskError};

/// `tasks[].config` of `type: hello`.
#[derive(Clone, PartialEq, serde::Deserialize, extractor_runtime::schemars::JsonSchema)]
#[schemars(crate = "extractor_runtime::schemars")]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HelloConfig {
    pub greeting: String,
    #[serde(default)]
    pub fail: bool,
}

pub struct Hello(HelloConfig, IntCounter);

/// The constructor of `type: hello`: checks its config, registers its metric.
pub fn new(config: HelloConfig, setup: &Setup<'_>) -> Result<Hello, Rejection> {
    if config.greeting.is_empty() {
        return Err("`greeting` must not be empty".into());
    }
    let said = setup.register(IntCounter::new("hello_greetings_total", "Greetings said.")?)?;
    Ok(Hello(config, said))
}

impl Extractor for Hello {
    async fn run(&self, ctx: RunContext) -> Result<(), TaskError> {
        // A typed watermark: durable once CDF has everything queued before it.
        let runs: u64 = ctx.upload().resume("runs")?.unwrap_or(0);
        tracing::info!(task = ctx.task(), runs, "{}", self.0.greeting);
        if self.0.fail {
            return Err(TaskError::transient("asked to fail"));
        }
        self.1.inc();
        ctx.upload().checkpoint("runs", &(runs + 1));
        ctx.upload().settled().await
    }
}
