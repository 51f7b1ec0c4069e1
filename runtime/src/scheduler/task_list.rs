//! [`TaskList`]: the scheduler's tasks in config order, found by name in constant time.

use std::collections::HashMap;
use std::sync::Arc;

use super::Task;

/// The tasks in config order (tasks a reload adds come last), with an index by name: a reload
/// that adds or removes thousands of tasks costs time in proportion to them, not to their
/// square.
pub(super) struct TaskList {
    /// In order; `None` where a task was removed (compacted once most slots are empty).
    slots: Vec<Option<Arc<Task>>>,
    /// Each task's slot.
    index: HashMap<Arc<str>, usize>,
}

impl TaskList {
    /// The list of `tasks`, in their order. Names are unique (the config is validated).
    pub(super) fn new(tasks: Vec<Arc<Task>>) -> Self {
        let mut list = TaskList {
            slots: Vec::with_capacity(tasks.len()),
            index: HashMap::with_capacity(tasks.len()),
        };
        for task in tasks {
            list.push(task);
        }
        list
    }

    /// How many tasks there are.
    pub(super) fn len(&self) -> usize {
        self.index.len()
    }

    /// The task named `name`.
    pub(super) fn get(&self, name: &str) -> Option<&Arc<Task>> {
        self.slots[*self.index.get(name)?].as_ref()
    }

    /// Adds `task` last (replacing nothing: the caller checked its name is free).
    pub(super) fn push(&mut self, task: Arc<Task>) {
        self.index.insert(task.name.clone(), self.slots.len());
        self.slots.push(Some(task));
    }

    /// Takes the task named `name` out of the list.
    pub(super) fn remove(&mut self, name: &str) -> Option<Arc<Task>> {
        let slot = self.index.remove(name)?;
        let task = self.slots[slot].take();
        if self.slots.len() > 64 && self.index.len() < self.slots.len() / 2 {
            self.compact();
        }
        task
    }

    /// The tasks, in order.
    pub(super) fn to_vec(&self) -> Vec<Arc<Task>> {
        self.slots.iter().flatten().cloned().collect()
    }

    /// Drops the empty slots and renumbers the index.
    fn compact(&mut self) {
        self.slots.retain(Option::is_some);
        for (i, task) in self.slots.iter().flatten().enumerate() {
            *self.index.get_mut(&*task.name).expect("every listed task is indexed") = i;
        }
    }
}
