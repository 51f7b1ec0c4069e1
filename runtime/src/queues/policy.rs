//! What to do with items CDF refuses for a known reason: a datapoint of a time series that does
//! not exist (`missing`), an event whose external id exists already (`duplicated`).

/// A task's delivery policy, set on its [`Upload`](super::Upload) handle.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Datapoints of a time series that does not exist: create the (classic) time series
    /// (external id, name = external id, `isString` from the value) and send them again.
    /// `false` (the default): refuse them to the dead-letter file.
    pub create_missing: bool,
    /// An event whose external id exists already.
    pub on_duplicate: OnDuplicate,
}

/// What happens to an event whose external id CDF already has.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum OnDuplicate {
    /// Update the existing event with the new fields (`/events/update`): replays are idempotent.
    #[default]
    Update,
    /// Keep the existing event, drop the new one (counted as `skipped`).
    Skip,
}
