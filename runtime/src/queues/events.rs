//! Events: `POST /events`, at most 1 000 a request.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Kind, Request};

/// The API's limit of events per request.
pub const MAX_EVENTS_PER_REQUEST: usize = 1_000;

/// An event, as CDF's `POST /events` takes it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Event {
    /// The event's external id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// Start, milliseconds since the Unix epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<i64>,
    /// End, milliseconds since the Unix epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_time: Option<i64>,
    /// The event's type.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The event's subtype.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subtype: Option<String>,
    /// A description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Metadata.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// The data set; when `None`, [`Upload::event`](crate::upload::Upload::event) puts
    /// `cognite.data-set` here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_set_id: Option<i64>,
}

/// The events queue kind.
#[derive(Debug)]
pub struct Events;

impl Kind for Events {
    type Item = Event;
    type Stored = Event;
    const NAME: &'static str = "events";
    const READ_AHEAD: usize = 4 * MAX_EVENTS_PER_REQUEST;
    const MAX_ITEMS: usize = MAX_EVENTS_PER_REQUEST;

    fn store(item: Event) -> Event {
        item
    }

    fn batch_len<'a>(items: impl Iterator<Item = &'a Event>) -> usize {
        items.take(MAX_EVENTS_PER_REQUEST).count()
    }

    fn request(events: &[&Event]) -> Request {
        Request {
            endpoint: "/events",
            path: "/events".to_owned(),
            items: events.len(),
            body: super::items_body(events),
        }
    }

    fn id(item: &Event) -> Option<std::borrow::Cow<'_, str>> {
        item.external_id.as_deref().map(Into::into)
    }

    fn from_json(v: serde_json::Value) -> Result<Event, String> {
        serde_json::from_value(v).map_err(|e| format!("not an event: {e}"))
    }

    fn encode(item: &Event) -> Vec<u8> {
        serde_json::to_vec(item).expect("an event serializes")
    }

    fn decode(bytes: &[u8]) -> Result<Event, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    fn to_json(item: &Event) -> serde_json::Value {
        serde_json::to_value(item).expect("an event serializes")
    }

    /// `/events/update` by external id, setting every field the event has.
    fn update(events: &[&Event]) -> Option<Vec<Request>> {
        #[derive(Serialize)]
        struct Set<T> {
            set: T,
        }
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Changes<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            start_time: Option<Set<i64>>,
            #[serde(skip_serializing_if = "Option::is_none")]
            end_time: Option<Set<i64>>,
            #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
            kind: Option<Set<&'a str>>,
            #[serde(skip_serializing_if = "Option::is_none")]
            subtype: Option<Set<&'a str>>,
            #[serde(skip_serializing_if = "Option::is_none")]
            description: Option<Set<&'a str>>,
            #[serde(skip_serializing_if = "Option::is_none")]
            metadata: Option<Set<&'a BTreeMap<String, String>>>,
        }
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Update<'a> {
            external_id: &'a str,
            update: Changes<'a>,
        }
        let set = |v| Set { set: v };
        let updates: Vec<Update<'_>> = events
            .iter()
            .map(|e| Update {
                external_id: e.external_id.as_deref().unwrap_or_default(),
                update: Changes {
                    start_time: e.start_time.map(set),
                    end_time: e.end_time.map(|v| Set { set: v }),
                    kind: e.kind.as_deref().map(|v| Set { set: v }),
                    subtype: e.subtype.as_deref().map(|v| Set { set: v }),
                    description: e.description.as_deref().map(|v| Set { set: v }),
                    metadata: (!e.metadata.is_empty()).then_some(Set { set: &e.metadata }),
                },
            })
            .collect();
        Some(
            updates
                .chunks(MAX_EVENTS_PER_REQUEST)
                .map(|chunk| Request {
                    endpoint: "/events/update",
                    path: "/events/update".to_owned(),
                    items: chunk.len(),
                    body: super::items_body(chunk),
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    #[test]
    fn at_most_1_000_events_in_camel_case() {
        let items: VecDeque<Event> = (0..2_500)
            .map(|i| Event {
                external_id: Some(format!("e{i}")),
                start_time: Some(i),
                kind: Some("alarm".into()),
                ..Event::default()
            })
            .collect();
        let r = Events::next_request(&items);
        assert_eq!(r.items, 1_000);
        assert_eq!(
            r.json()["items"][0],
            serde_json::json!({"externalId": "e0", "startTime": 0, "type": "alarm"})
        );
    }
}
