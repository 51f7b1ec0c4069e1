//! What a run sends to CDF: its [`Upload`] handle ([`RunContext::upload`](crate::RunContext::upload)),
//! the items it queues, and how CDF's refusals are handled ([`Policy`], [`Refusals`]).
//!
//! Items go into bounded queues shared by every task; the queues send them in batches at the
//! API's limits, retry what may pass, split a refused batch until the refused items stand alone
//! (dead-lettered, never blocking the rest), and acknowledge each task's items to its ledger, so
//! that a [`checkpoint`](Upload::checkpoint) becomes durable only once CDF has everything
//! queued before it.

pub use crate::cdf::Defaults;
pub use crate::queues::{
    Datapoint, DatapointValue, EdgeEnds, Event, InstanceRef, NewSeries, Node, OnDuplicate, Policy,
    RawRow, Refusals, StoredRow, Upload, ViewRef,
};
