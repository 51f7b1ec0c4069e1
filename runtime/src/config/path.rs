//! [`KeyPath`]: where a value sits in the config, as `tasks[1].schedule.expression`.

use std::fmt;

/// A key path built on the stack while walking the tree; rendered only when an error needs it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum KeyPath<'a> {
    /// The document itself.
    Root,
    /// A key of a mapping.
    Key(&'a KeyPath<'a>, &'a str),
    /// An item of a list.
    Index(&'a KeyPath<'a>, usize),
}

impl fmt::Display for KeyPath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyPath::Root => Ok(()),
            KeyPath::Key(KeyPath::Root, key) => f.write_str(key),
            KeyPath::Key(parent, key) => write!(f, "{parent}.{key}"),
            KeyPath::Index(parent, index) => write!(f, "{parent}[{index}]"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::KeyPath;

    #[test]
    fn renders_like_a_jq_path() {
        let tasks = KeyPath::Key(&KeyPath::Root, "tasks");
        let first = KeyPath::Index(&tasks, 1);
        let schedule = KeyPath::Key(&first, "schedule");
        let expr = KeyPath::Key(&schedule, "expression");
        assert_eq!(expr.to_string(), "tasks[1].schedule.expression");
        assert_eq!(KeyPath::Root.to_string(), "");
    }
}
