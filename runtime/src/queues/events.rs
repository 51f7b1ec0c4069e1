//! Events: `POST /events`, at most 1 000 a request.

use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;

use super::{Kind, Request};

/// The API's limit of events per request.
pub const MAX_EVENTS_PER_REQUEST: usize = 1_000;

/// An event, as CDF's `POST /events` takes it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
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
}

/// The events queue kind.
#[derive(Debug)]
pub struct Events;

impl Kind for Events {
    type Item = Event;
    type Stored = Event;

    fn store(item: Event) -> Event {
        item
    }
    const NAME: &'static str = "events";

    fn next_request(items: &VecDeque<Event>) -> Request {
        let events: Vec<&Event> = items.iter().take(MAX_EVENTS_PER_REQUEST).collect();
        Request {
            endpoint: "/events",
            path: "/events".to_owned(),
            items: events.len(),
            body: super::items_body(&events),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
