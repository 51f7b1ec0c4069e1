//! Splitting tasks across replicas by rendezvous (highest random weight) hashing of task names.
//!
//! Every task runs on exactly one of `count` shards; going from N to N+1 shards moves about
//! 1/(N+1) of the tasks (only those the new shard wins); the assignment depends only on the
//! task name and the count, so it is the same after every restart and on every machine.

use std::fmt;

/// Why a shard (`--shard`, `EXTRACTOR_SHARD`, a pod name) could not be read: what was given and
/// what is expected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ShardError(String);

impl From<String> for ShardError {
    fn from(message: String) -> Self {
        ShardError(message)
    }
}

impl From<&str> for ShardError {
    fn from(message: &str) -> Self {
        ShardError(message.to_owned())
    }
}

/// One replica's share: shard `index` of `count` (0-based, like a StatefulSet ordinal).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    index: u32,
    count: u32,
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The weight of `task` on shard `shard`: FNV-1a over the name and the shard, then a
/// splitmix64 finaliser so that nearby shards get unrelated weights.
fn weight(task: &str, shard: u32) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325_u64;
    for b in task.bytes().chain([0xff]).chain(shard.to_le_bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

impl Shard {
    /// This shard's index (0-based).
    pub fn index(&self) -> u32 {
        self.index
    }

    /// Shard `index` of `count`.
    pub fn new(index: u32, count: u32) -> Result<Shard, ShardError> {
        if count == 0 {
            return Err("the shard count must be at least 1".into());
        }
        if index >= count {
            return Err(ShardError(format!(
                "shard index {index} is out of range for {count} shards (0 to {})",
                count - 1
            )));
        }
        Ok(Shard { index, count })
    }

    /// Parses `INDEX/COUNT`, like `2/5`.
    pub fn parse(text: &str) -> Result<Shard, ShardError> {
        let bad = || format!("invalid shard `{text}`: expected INDEX/COUNT, like `0/3`");
        let (i, n) = text.trim().split_once('/').ok_or_else(bad)?;
        Shard::new(
            i.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        )
    }

    /// The shard of a StatefulSet pod: the ordinal at the end of `pod_name` (`extractor-2`).
    pub fn from_pod_name(pod_name: &str, count: u32) -> Result<Shard, ShardError> {
        let ordinal = pod_name
            .rsplit_once('-')
            .and_then(|(_, n)| n.parse().ok())
            .ok_or_else(|| ShardError(format!("cannot read a StatefulSet ordinal from the pod name `{pod_name}` (expected NAME-ORDINAL)")))?;
        Shard::new(ordinal, count)
    }

    /// The shard from the environment: `EXTRACTOR_SHARD=INDEX/COUNT`, or `EXTRACTOR_SHARD_COUNT`
    /// with the StatefulSet pod name in `POD_NAME` or `HOSTNAME`. `None` when neither is set.
    pub fn from_env(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Option<Shard>, ShardError> {
        if let Some(s) = lookup("EXTRACTOR_SHARD").filter(|s| !s.is_empty()) {
            return Shard::parse(&s).map(Some);
        }
        let Some(count) = lookup("EXTRACTOR_SHARD_COUNT").filter(|s| !s.is_empty()) else {
            return Ok(None);
        };
        let count: u32 = count
            .trim()
            .parse()
            .map_err(|_| ShardError(format!("EXTRACTOR_SHARD_COUNT `{count}` is not a number")))?;
        let pod = lookup("POD_NAME").or_else(|| lookup("HOSTNAME")).ok_or(
            "EXTRACTOR_SHARD_COUNT is set but neither POD_NAME nor HOSTNAME names the pod",
        )?;
        Shard::from_pod_name(&pod, count).map(Some)
    }

    /// The shard that runs `task` among `count` shards.
    pub fn owner(task: &str, count: u32) -> u32 {
        (0..count.max(1))
            .max_by_key(|s| (weight(task, *s), *s))
            .unwrap_or(0)
    }

    /// Whether this shard runs `task`.
    pub fn owns(&self, task: &str) -> bool {
        Shard::owner(task, self.count) == self.index
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize, seed: u64) -> Vec<String> {
        let mut rng = fastrand::Rng::with_seed(seed);
        (0..n)
            .map(|i| {
                let len = rng.usize(1..20);
                let tail: String = (0..len).map(|_| rng.alphanumeric()).collect();
                format!("{tail}-{i}")
            })
            .collect()
    }

    #[test]
    fn every_task_runs_on_exactly_one_shard() {
        for seed in 0..50 {
            let tasks = names(200, seed);
            let count = 1 + (seed % 12) as u32;
            for task in &tasks {
                let owners = (0..count)
                    .filter(|i| Shard::new(*i, count).unwrap().owns(task))
                    .count();
                assert_eq!(owners, 1, "{task} with {count} shards");
            }
        }
    }

    #[test]
    fn growing_from_n_to_n_plus_1_moves_about_one_in_n_plus_1() {
        let tasks = names(5_000, 7);
        for n in 1..12u32 {
            let moved = tasks
                .iter()
                .filter(|t| Shard::owner(t, n) != Shard::owner(t, n + 1))
                .count();
            // Only tasks the new shard wins move, and it wins about 1/(n+1) of them.
            for t in &tasks {
                let (before, after) = (Shard::owner(t, n), Shard::owner(t, n + 1));
                assert!(
                    before == after || after == n,
                    "{t} moved between old shards"
                );
            }
            let fraction = moved as f64 / tasks.len() as f64;
            let ideal = 1.0 / f64::from(n + 1);
            assert!(
                (fraction - ideal).abs() < 0.03,
                "{n} -> {}: moved {fraction:.3}, ideal {ideal:.3}",
                n + 1
            );
        }
    }

    #[test]
    fn shards_get_even_shares() {
        let tasks = names(10_000, 11);
        let count = 7;
        for i in 0..count {
            let share = tasks.iter().filter(|t| Shard::owner(t, count) == i).count() as f64
                / tasks.len() as f64;
            assert!((share - 1.0 / 7.0).abs() < 0.02, "shard {i}: {share:.3}");
        }
    }

    #[test]
    fn the_assignment_is_stable_across_builds_and_restarts() {
        // Fixed values: a change here moves tasks between replicas on upgrade. Change the hash
        // only on purpose, with a note in the changelog.
        let owners: Vec<u32> = ["weather", "plant-db", "nightly", "t1", "t2", "t3"]
            .iter()
            .map(|t| Shard::owner(t, 5))
            .collect();
        assert_eq!(owners, GOLDEN);
    }

    const GOLDEN: [u32; 6] = [3, 2, 4, 1, 4, 2];

    #[test]
    fn parsing() {
        assert_eq!(Shard::parse("2/5").unwrap().to_string(), "2/5");
        assert!(Shard::parse("5/5").unwrap_err().to_string().contains("out of range"));
        assert!(Shard::parse("x").is_err() && Shard::parse("1/0").is_err());
        assert_eq!(
            Shard::from_pod_name("extractor-3", 4).unwrap(),
            Shard::new(3, 4).unwrap()
        );
        assert!(Shard::from_pod_name("extractor", 4).is_err());
        let env = |k: &str| match k {
            "EXTRACTOR_SHARD_COUNT" => Some("3".to_owned()),
            "HOSTNAME" => Some("cdf-extractor-2".to_owned()),
            _ => None,
        };
        assert_eq!(
            Shard::from_env(&env).unwrap(),
            Some(Shard::new(2, 3).unwrap())
        );
        assert_eq!(Shard::from_env(&|_| None).unwrap(), None);
    }
}
