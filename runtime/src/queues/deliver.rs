//! Delivering one batch: per-item handling of CDF's answers.
//!
//! CDF refuses a whole request for the sake of a few items. When it names them (`missing`,
//! `duplicated`) they are handled by their task's [`Policy`](super::Policy) and the rest is sent
//! again at once; when it does not (a bare 400 or 422) or the request is too large (413) the
//! request is split in halves until the culprits stand alone. Either way only the culprits are
//! refused, and a refused item never holds back the ones behind it.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use super::dead_letter::{DeadLetter, Refused};
use super::{Entry, Kind, OnDuplicate, Request};
use crate::cdf::{CdfClient, CdfError, CdfErrorKind};

/// Why CDF refused an item.
#[derive(Debug)]
pub(crate) struct Why {
    endpoint: &'static str,
    status: Option<u16>,
    message: String,
    request_id: Option<String>,
}

impl Why {
    fn from_error(e: &CdfError, endpoint: &'static str, reason: &str) -> Arc<Why> {
        Arc::new(Why {
            endpoint,
            status: e.status(),
            message: if reason.is_empty() {
                e.message().to_owned()
            } else {
                format!("{reason}: {}", e.message())
            },
            request_id: e.request_id().map(str::to_owned),
        })
    }
}

/// What became of an item of the batch.
#[derive(Clone, Debug)]
pub(crate) enum Outcome {
    /// Not settled: goes back to the queue.
    Pending,
    /// CDF accepted it.
    Accepted,
    /// Dropped by `on-duplicate: skip`.
    Skipped,
    /// Refused for good.
    Refused(Arc<Why>),
}

/// How a refused request is handled.
enum Answer {
    /// It concerns every item (transient, auth, permissions, project): stop, keep the items.
    Stop,
    /// CDF named items as missing or duplicated.
    Named,
    /// CDF refused the request without naming items, or it is too large: split it.
    Split,
}

fn classify(e: &CdfError) -> Answer {
    if *e.kind() != CdfErrorKind::Rejected {
        return Answer::Stop;
    }
    match e.status() {
        Some(400 | 409 | 422) if !e.missing().is_empty() || !e.duplicated().is_empty() => {
            Answer::Named
        }
        Some(400 | 409 | 413 | 422) => Answer::Split,
        _ => Answer::Stop,
    }
}

/// The ids in one of CDF's item lists, as [`Kind::id`] gives them: an external id
/// (`[{"externalId": "x"}, ...]`), or `space:externalId` for Data Modeling instances
/// (`{"space", "externalId"}`, or that under `instanceId`).
fn ids(list: &[serde_json::Value]) -> HashSet<std::borrow::Cow<'_, str>> {
    use serde_json::Value;
    list.iter()
        .filter_map(|v| {
            let v = v.get("instanceId").unwrap_or(v);
            let external_id = v.get("externalId").and_then(Value::as_str)?;
            Some(match v.get("space").and_then(Value::as_str) {
                Some(space) => super::instances::instance_id(space, external_id).into(),
                None => external_id.into(),
            })
        })
        .collect()
}

/// Sends `batch`, filling in `outcomes`; returns the error that stopped it, if one did (the
/// items still `Pending` then go back to the queue).
pub(crate) async fn deliver<K: Kind>(
    client: &CdfClient,
    batch: &[Entry<K::Stored>],
    outcomes: &mut [Outcome],
) -> Result<(), CdfError> {
    // Groups of indices still to send; the last is sent first, so groups go in order.
    let mut stack: Vec<Vec<usize>> = vec![(0..batch.len()).collect()];
    // External ids whose missing resources were created once: missing again means refused.
    let mut created: HashSet<String> = HashSet::new();
    while let Some(group) = stack.pop() {
        let group: Vec<usize> = group
            .into_iter()
            .filter(|i| matches!(outcomes[*i], Outcome::Pending))
            .collect();
        if group.is_empty() {
            continue;
        }
        let items: Vec<&K::Stored> = group.iter().map(|i| &batch[*i].item).collect();
        let protobuf = if client.sends_protobuf() {
            K::protobuf_request(&items)
        } else {
            None
        };
        let (request, content_type) = match protobuf {
            Some(request) => (request, crate::cdf::PROTOBUF),
            None => (K::request(&items), crate::cdf::JSON),
        };
        let endpoint = request.endpoint;
        let e = match client
            .post_items_as(endpoint, &request.path, request.body, content_type)
            .await
        {
            Ok(()) => {
                for i in group {
                    outcomes[i] = Outcome::Accepted;
                }
                continue;
            }
            Err(e) => e,
        };
        let answer = classify(&e);
        // The items CDF named (missing, duplicated), if it named any of this group.
        let hits = match answer {
            Answer::Named => {
                let named = |list: &[serde_json::Value]| -> Vec<usize> {
                    let set = ids(list);
                    group
                        .iter()
                        .copied()
                        .filter(|i| K::id(&batch[*i].item).is_some_and(|id| set.contains(&id)))
                        .collect()
                };
                Some((named(e.missing()), named(e.duplicated())))
                    .filter(|(m, d)| !m.is_empty() || !d.is_empty())
            }
            _ => None,
        };
        match (answer, hits) {
            (Answer::Stop, _) => return Err(e),
            (_, Some((hit_missing, hit_duplicated))) => {
                resolve_missing::<K>(client, batch, outcomes, &e, &hit_missing, &mut created)
                    .await?;
                resolve_duplicated::<K>(client, batch, outcomes, &e, &hit_duplicated).await?;
                // The rest of the group goes again at once.
                stack.push(group);
            }
            // A refusal naming no item of the group (or naming ids we cannot match): find the
            // culprits by splitting.
            _ if group.len() == 1 => {
                outcomes[group[0]] = Outcome::Refused(Why::from_error(&e, endpoint, ""));
            }
            _ => {
                let (left, right) = group.split_at(group.len() / 2);
                stack.push(right.to_vec());
                stack.push(left.to_vec());
            }
        }
    }
    Ok(())
}

/// Items whose resource is missing: created once (`create-missing`) and sent again, else refused.
async fn resolve_missing<K: Kind>(
    client: &CdfClient,
    batch: &[Entry<K::Stored>],
    outcomes: &mut [Outcome],
    e: &CdfError,
    hit: &[usize],
    created: &mut HashSet<String>,
) -> Result<(), CdfError> {
    let endpoint = e.endpoint();
    let mut create = Vec::new();
    for &i in hit {
        let id = K::id(&batch[i].item).unwrap_or_default();
        if batch[i].policy.create_missing && !created.contains(id.as_ref()) {
            create.push(i);
        } else {
            let reason = if created.contains(id.as_ref()) {
                "missing even after it was created"
            } else {
                "missing (create-missing is off)"
            };
            outcomes[i] = Outcome::Refused(Why::from_error(e, endpoint, reason));
        }
    }
    if create.is_empty() {
        return Ok(());
    }
    let items: Vec<&K::Stored> = create.iter().map(|i| &batch[*i].item).collect();
    let requests = K::create_missing(&items, &client.defaults());
    for &i in &create {
        created.insert(K::id(&batch[i].item).unwrap_or_default().into_owned());
    }
    if requests.is_empty() {
        for &i in &create {
            outcomes[i] = Outcome::Refused(Why::from_error(e, endpoint, "missing"));
        }
        return Ok(());
    }
    for r in requests {
        match client.post_items(r.endpoint, &r.path, r.body).await {
            Ok(()) => {}
            // Created meanwhile by someone else: just as good.
            Err(c) if c.status() == Some(409) && !c.duplicated().is_empty() => {}
            Err(c) => match classify(&c) {
                Answer::Stop => return Err(c),
                _ => {
                    let why = Why::from_error(&c, r.endpoint, "missing, and creating it failed");
                    for &i in &create {
                        outcomes[i] = Outcome::Refused(why.clone());
                    }
                    return Ok(());
                }
            },
        }
    }
    tracing::info!(target: "extractor_runtime::queues", queue = K::NAME, count = created.len(), "created what CDF was missing; sending the items again");
    Ok(())
}

/// Items CDF has already: updated or skipped by their policy.
async fn resolve_duplicated<K: Kind>(
    client: &CdfClient,
    batch: &[Entry<K::Stored>],
    outcomes: &mut [Outcome],
    e: &CdfError,
    hit: &[usize],
) -> Result<(), CdfError> {
    let endpoint = e.endpoint();
    let mut update = Vec::new();
    for &i in hit {
        match batch[i].policy.on_duplicate {
            OnDuplicate::Skip => outcomes[i] = Outcome::Skipped,
            OnDuplicate::Update => update.push(i),
        }
    }
    if update.is_empty() {
        return Ok(());
    }
    let items: Vec<&K::Stored> = update.iter().map(|i| &batch[*i].item).collect();
    let Some(requests) = K::update(&items) else {
        for &i in &update {
            outcomes[i] = Outcome::Refused(Why::from_error(e, endpoint, "duplicated"));
        }
        return Ok(());
    };
    // One update request carries at most the batch of one create request, in order.
    let mut at = 0;
    for r in requests {
        let chunk: Vec<usize> = update[at..at + r.items].to_vec();
        at += r.items;
        match send_update(client, &r).await {
            Ok(()) => {
                for i in chunk {
                    outcomes[i] = Outcome::Accepted;
                }
            }
            Err(c) => match classify(&c) {
                Answer::Stop => return Err(c),
                _ => {
                    let why = Why::from_error(&c, r.endpoint, "duplicated, and updating it failed");
                    for i in chunk {
                        outcomes[i] = Outcome::Refused(why.clone());
                    }
                }
            },
        }
    }
    Ok(())
}

async fn send_update(client: &CdfClient, r: &Request) -> Result<(), CdfError> {
    client
        .post_items(r.endpoint, &r.path, r.body.clone())
        .await
}

/// The refused items of a batch, per task and reason (the first few ids and a count): logged
/// once it is known where they went.
pub(crate) struct RefusalLog(Vec<(String, Arc<Why>, super::Refusals)>);

impl RefusalLog {
    pub(crate) fn of<K: Kind>(batch: &[Entry<K::Stored>], outcomes: &[Outcome]) -> RefusalLog {
        let mut groups: BTreeMap<(&str, *const Why), (&Arc<Why>, super::Refusals)> =
            BTreeMap::new();
        for (entry, outcome) in batch.iter().zip(outcomes) {
            if let Outcome::Refused(why) = outcome {
                let task = entry.task();
                groups
                    .entry((task, Arc::as_ptr(why)))
                    .or_insert_with(|| (why, super::Refusals::default()))
                    .1
                    .add(K::id(&entry.item).as_deref());
            }
        }
        RefusalLog(
            groups
                .into_iter()
                .map(|((task, _), (why, refusals))| (task.to_owned(), why.clone(), refusals))
                .collect(),
        )
    }

    /// Whether nothing was refused.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Logs each group, saying where its items went (`destination`).
    pub(crate) fn log(self, queue: &str, destination: &str) {
        for (task, why, refusals) in self.0 {
            tracing::error!(
                target: "extractor_runtime::queues",
                queue,
                task,
                endpoint = why.endpoint,
                status = why.status,
                request_id = why.request_id.as_deref(),
                count = refusals.count,
                "CDF refused {} item(s): {} ({}); {destination}",
                refusals.count,
                refusals,
                why.message,
            );
        }
    }
}

/// The dead-letter line of each of a batch's refused items, in order.
pub(crate) fn dead_letter_lines<K: Kind>(
    batch: &[Entry<K::Stored>],
    outcomes: &[Outcome],
) -> Vec<Vec<u8>> {
    let time = jiff::Timestamp::now().to_string();
    batch
        .iter()
        .zip(outcomes)
        .filter_map(|(entry, outcome)| match outcome {
            Outcome::Refused(why) => Some(DeadLetter::encode(&Refused {
                time: &time,
                task: entry.task(),
                queue: K::NAME,
                endpoint: why.endpoint,
                status: why.status,
                message: &why.message,
                request_id: why.request_id.as_deref(),
                item: K::to_json(&entry.item),
            })),
            _ => None,
        })
        .collect()
}
