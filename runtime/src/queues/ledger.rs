//! Per-task acknowledgements: which of a task's queued items CDF has settled, and the
//! watermarks (checkpoints) that become durable once everything queued before them is settled.
//!
//! Items are counted by *epoch*: every [`Ledger::checkpoint`] closes the current epoch, so a
//! checkpoint covers exactly the items added before it. An item is settled when CDF accepted
//! it, or a policy settled it (updated, skipped), or it was refused (dead-lettered): a refused
//! item never holds a watermark back. The ledger costs a few words per epoch, not per item.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::metrics::TaskSeries;
use crate::state::{StateStore, Watermarks};

/// How many refused ids a run's error names.
const NAMED_IDS: usize = 5;

/// A task's ledger, shared by its runs (it outlives them: items queued by a run that ended are
/// still acknowledged into the state store when a later flush delivers them).
pub(crate) struct Ledger {
    task: Arc<str>,
    state: Option<StateStore>,
    series: Option<Arc<TaskSeries>>,
    inner: Mutex<Inner>,
    /// Woken when items were settled (once for the items of a request: see
    /// [`Ledger::wake`]).
    pub(crate) settled: tokio::sync::Notify,
}

#[derive(Default)]
struct Inner {
    epoch: u64,
    /// Epoch -> items of that epoch not settled yet.
    outstanding: BTreeMap<u64, usize>,
    /// Checkpoints not durable yet, oldest first: (the epoch they close, state key, value).
    marks: VecDeque<(u64, String, Value)>,
    /// Refused since the last [`Ledger::take_refusals`].
    refused: Refusals,
}

/// Items CDF refused: how many, and the first few distinct ids.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Refusals {
    /// How many items were refused.
    pub count: usize,
    /// The first few distinct ids (external id or row key) among them.
    pub first_ids: Vec<String>,
    /// Whether more distinct ids were refused than `first_ids` names.
    pub more_ids: bool,
}

impl Refusals {
    /// Adds the refusals of `other`.
    pub fn merge(&mut self, other: Refusals) {
        self.count += other.count;
        self.more_ids |= other.more_ids;
        for id in other.first_ids {
            self.name(id);
        }
    }

    pub(crate) fn add(&mut self, id: Option<&str>) {
        self.count += 1;
        self.name(id.map_or_else(|| "(no id)".to_owned(), str::to_owned));
    }

    fn name(&mut self, id: String) {
        if self.first_ids.contains(&id) {
            return;
        }
        if self.first_ids.len() < NAMED_IDS {
            self.first_ids.push(id);
        } else {
            self.more_ids = true;
        }
    }
}

impl std::fmt::Display for Refusals {
    /// `a, b` when each named id was refused once; `a, b, c, d, e and more (120 items)` or
    /// `a, b (4 items)` otherwise.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.first_ids.join(", "))?;
        if self.more_ids {
            write!(f, " and more")?;
        }
        if self.more_ids || self.count != self.first_ids.len() {
            write!(f, " ({} items)", self.count)?;
        }
        Ok(())
    }
}

/// Which ledger an item belongs to, and its epoch.
#[derive(Clone)]
pub(crate) struct Tag {
    pub(crate) ledger: Arc<Ledger>,
    pub(crate) epoch: u64,
}

/// How an item left its queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Settled {
    /// CDF accepted it (created, or updated by the duplicate policy).
    Accepted,
    /// The duplicate policy `skip` dropped it: CDF already had it.
    Skipped,
    /// CDF refused it for good: dead-lettered.
    Refused,
}

impl Ledger {
    pub(crate) fn new(
        task: Arc<str>,
        state: Option<StateStore>,
        series: Option<Arc<TaskSeries>>,
    ) -> Arc<Self> {
        Arc::new(Ledger {
            task,
            state,
            series,
            inner: Mutex::new(Inner::default()),
            settled: tokio::sync::Notify::new(),
        })
    }

    /// The task's name.
    pub(crate) fn task(&self) -> &str {
        &self.task
    }

    /// The state store checkpoints go to.
    pub(crate) fn state(&self) -> Option<&StateStore> {
        self.state.as_ref()
    }

    /// Counts one item about to be queued; its tag settles it.
    pub(crate) fn enter(self: &Arc<Self>) -> Tag {
        let mut inner = self.inner.lock().expect("ledger lock");
        let epoch = inner.epoch;
        *inner.outstanding.entry(epoch).or_insert(0) += 1;
        Tag {
            ledger: self.clone(),
            epoch,
        }
    }

    /// Records that `value` is `key`'s watermark once every item entered so far is settled.
    pub(crate) fn checkpoint(&self, key: String, value: Value) {
        let mut inner = self.inner.lock().expect("ledger lock");
        let epoch = inner.epoch;
        inner.marks.push_back((epoch, key, value));
        inner.epoch += 1;
        self.apply(&mut inner);
    }

    /// The newest watermark of `key` not durable yet.
    pub(crate) fn pending(&self, key: &str) -> Option<Value> {
        let inner = self.inner.lock().expect("ledger lock");
        inner
            .marks
            .iter()
            .rev()
            .find(|(_, k, _)| k == key)
            .map(|(_, _, v)| v.clone())
    }

    /// Settles one item.
    pub(crate) fn settle(&self, tag: &Tag, how: Settled, id: Option<&str>) {
        let mut inner = self.inner.lock().expect("ledger lock");
        inner.release(tag.epoch);
        if how == Settled::Refused {
            inner.refused.add(id);
            if let Some(s) = &self.series {
                s.records(true, 1);
            }
        }
        self.apply(&mut inner);
    }

    /// The ledgers of these items' tags, each once in a row (a request's items mostly share
    /// one): to [wake](Self::wake) once they are settled.
    pub(crate) fn of<'a>(tags: impl Iterator<Item = Option<&'a Tag>>) -> Vec<Arc<Ledger>> {
        let mut ledgers: Vec<Arc<Ledger>> = Vec::new();
        for tag in tags.flatten() {
            if !ledgers.last().is_some_and(|l| Arc::ptr_eq(l, &tag.ledger)) {
                ledgers.push(tag.ledger.clone());
            }
        }
        ledgers
    }

    /// Wakes the producers waiting for items of this ledger to be settled.
    pub(crate) fn wake(&self) {
        self.settled.notify_waiters();
    }

    /// Items entered before now that are not settled yet.
    pub(crate) fn outstanding(&self) -> usize {
        self.inner
            .lock()
            .expect("ledger lock")
            .outstanding
            .values()
            .sum()
    }

    /// The refusals since the last call.
    pub(crate) fn take_refusals(&self) -> Refusals {
        std::mem::take(&mut self.inner.lock().expect("ledger lock").refused)
    }

    /// Moves every checkpoint whose items are all settled to the state store.
    fn apply(&self, inner: &mut Inner) {
        let oldest = inner.outstanding.keys().next().copied().unwrap_or(u64::MAX);
        while inner.marks.front().is_some_and(|(e, _, _)| *e < oldest) {
            let (_, key, value) = inner.marks.pop_front().expect("checked");
            if let Some(state) = &self.state {
                let low = state.get(&key).and_then(|w| w.low).or(Some(value.clone()));
                state.set(
                    &key,
                    Watermarks {
                        low,
                        high: Some(value),
                    },
                );
            }
        }
    }
}

impl Inner {
    fn release(&mut self, epoch: u64) {
        if let Some(n) = self.outstanding.get_mut(&epoch) {
            *n -= 1;
            if *n == 0 {
                self.outstanding.remove(&epoch);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::LocalStateStore;

    fn ledger() -> (Arc<Ledger>, StateStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let state = StateStore::Local(
            LocalStateStore::open(&dir.path().join("state.json"), false).unwrap(),
        );
        (
            Ledger::new("t".into(), Some(state.clone()), None),
            state,
            dir,
        )
    }

    fn high(state: &StateStore, key: &str) -> Option<Value> {
        state.get(key).and_then(|w| w.high)
    }

    #[test]
    fn a_checkpoint_waits_for_the_items_before_it_only() {
        let (l, state, _dir) = ledger();
        let a = l.enter();
        let b = l.enter();
        l.checkpoint("k".into(), 2.into());
        let c = l.enter();
        l.checkpoint("k".into(), 3.into());
        assert_eq!(l.pending("k"), Some(3.into()));
        // Settled out of order: the later item first does not move the mark.
        l.settle(&c, Settled::Accepted, None);
        l.settle(&b, Settled::Accepted, None);
        assert_eq!(high(&state, "k"), None);
        l.settle(&a, Settled::Refused, Some("a"));
        assert_eq!(
            high(&state, "k"),
            Some(3.into()),
            "a refused item does not hold it"
        );
        assert_eq!(l.pending("k"), None);
        let r = l.take_refusals();
        assert_eq!((r.count, r.first_ids), (1, vec!["a".to_owned()]));
        assert_eq!(l.take_refusals().count, 0);
    }

    #[test]
    fn a_checkpoint_with_nothing_queued_is_durable_at_once() {
        let (l, state, _dir) = ledger();
        l.checkpoint("k".into(), "x".into());
        assert_eq!(high(&state, "k"), Some("x".into()));
        let t = l.enter();
        assert_eq!(l.outstanding(), 1);
        l.settle(&t, Settled::Skipped, None);
        assert_eq!(l.outstanding(), 0);
    }

    #[test]
    fn refusals_name_the_first_few() {
        let mut r = Refusals::default();
        for i in 0..8 {
            r.add(Some(&format!("id{i}")));
        }
        assert_eq!(r.to_string(), "id0, id1, id2, id3, id4 and more (8 items)");
        let mut r = Refusals::default();
        for id in ["a", "b", "a", "a"] {
            r.add(Some(id));
        }
        assert_eq!(r.to_string(), "a, b (4 items)");
        let mut once = Refusals::default();
        once.add(Some("c"));
        assert_eq!(once.to_string(), "c");
        r.merge(once);
        assert_eq!(r.to_string(), "a, b, c (5 items)");
    }
}
