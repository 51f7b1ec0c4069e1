//! A whole extractor in a user's crate: its config, its run, and its registration.

use extractor_runtime::extractor::{Extractor, Registry, RunContext, TaskError};

/// `tasks[].config` of `type: hello`.
#[derive(serde::Deserialize, extractor_runtime::schemars::JsonSchema)]
#[schemars(crate = "extractor_runtime::schemars")]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HelloConfig {
    pub greeting: String,
    #[serde(default)]
    pub fail: bool,
}

pub struct Hello(HelloConfig);

impl Extractor for Hello {
    async fn run(&self, ctx: RunContext) -> Result<(), TaskError> {
        tracing::info!(task = ctx.task(), "{}", self.0.greeting);
        if self.0.fail {
            return Err(TaskError::transient("asked to fail"));
        }
        Ok(())
    }
}

pub fn register(registry: &mut Registry) {
    registry.register("hello", |c: HelloConfig| match c.greeting.is_empty() {
        true => Err("`greeting` must not be empty".into()),
        false => Ok(Hello(c)),
    });
}
