//! Data Modeling instances, nodes and edges: `POST /models/instances` (an upsert through a
//! view), at most 1 000 a request, with `autoCreateDirectRelations` so that a direct relation
//! may point at a node that arrives later, and `autoCreateStartNodes`/`autoCreateEndNodes` so
//! that an edge may arrive before its nodes.

use std::sync::Arc;

use serde::Serialize;
use serde_json::value::RawValue;

use super::{Kind, Request};

/// The API's limit of instances per request.
pub const MAX_INSTANCES_PER_REQUEST: usize = 1_000;

/// A view, by space, external id and version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ViewRef {
    /// The view's space (`cdf_cdm` for the core data model).
    pub space: String,
    /// The view's external id (`CogniteAsset`).
    pub external_id: String,
    /// The view's version (`v1`).
    pub version: String,
}

/// An instance by space and external id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceRef {
    /// The space.
    pub space: String,
    /// The external id.
    pub external_id: String,
}

/// What makes an instance an edge: its type and the nodes it joins.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EdgeEnds {
    /// The edge's type (a node).
    #[serde(rename = "type")]
    pub edge_type: InstanceRef,
    /// Where the edge starts.
    pub start_node: InstanceRef,
    /// Where the edge ends.
    pub end_node: InstanceRef,
}

/// A node (or, with `edge`, an edge) written through one view.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// The instance's space.
    pub space: String,
    /// The instance's external id.
    pub external_id: String,
    /// `Some`: an edge of this type between these nodes; `None`: a node.
    pub edge: Option<Box<EdgeEnds>>,
    /// The view the properties belong to; shared by a task's instances. `None` (an edge
    /// without properties): no sources.
    pub view: Option<Arc<ViewRef>>,
    /// The properties (a direct relation is `{"space", "externalId"}`); none is null (the API's
    /// spec has no null value).
    pub properties: serde_json::Map<String, serde_json::Value>,
}

/// A node as the queue keeps it: its id, and its JSON ready to send.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct StoredNode {
    id: String,
    json: Box<RawValue>,
}

/// The instances queue kind.
#[derive(Debug)]
pub struct Instances;

/// How CDF names an instance in `missing`/`duplicated` lists, and how the queue does.
pub(crate) fn instance_id(space: &str, external_id: &str) -> String {
    format!("{space}:{external_id}")
}

impl Kind for Instances {
    type Item = Node;
    type Stored = StoredNode;
    const NAME: &'static str = "instances";
    const READ_AHEAD: usize = 4 * MAX_INSTANCES_PER_REQUEST;
    const MAX_ITEMS: usize = MAX_INSTANCES_PER_REQUEST;

    fn store(node: Node) -> StoredNode {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Source<'a> {
            source: SourceRef<'a>,
            // The spec wants at least one property when `properties` is there.
            #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
            properties: &'a serde_json::Map<String, serde_json::Value>,
        }
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct SourceRef<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            #[serde(flatten)]
            view: &'a ViewRef,
        }
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Write<'a> {
            instance_type: &'static str,
            space: &'a str,
            external_id: &'a str,
            #[serde(flatten, skip_serializing_if = "Option::is_none")]
            edge: Option<&'a EdgeEnds>,
            #[serde(skip_serializing_if = "Vec::is_empty")]
            sources: Vec<Source<'a>>,
        }
        let json = serde_json::value::to_raw_value(&Write {
            instance_type: if node.edge.is_some() { "edge" } else { "node" },
            space: &node.space,
            external_id: &node.external_id,
            edge: node.edge.as_deref(),
            sources: node
                .view
                .iter()
                .map(|view| Source {
                    source: SourceRef { kind: "view", view },
                    properties: &node.properties,
                })
                .collect(),
        })
        .expect("an instance serializes");
        StoredNode {
            id: instance_id(&node.space, &node.external_id),
            json,
        }
    }

    /// Up to 1 000 nodes, stopping before a node the batch has already: Data Modeling refuses
    /// a request that writes one instance twice, and the later write must land last.
    fn batch_len<'a>(items: impl Iterator<Item = &'a StoredNode>) -> usize {
        let mut seen = std::collections::HashSet::new();
        items
            .take(MAX_INSTANCES_PER_REQUEST)
            .take_while(|n| seen.insert(n.id.as_str()))
            .count()
    }

    fn request(nodes: &[&StoredNode]) -> Request {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Body<'a> {
            items: Vec<&'a RawValue>,
            auto_create_direct_relations: bool,
            auto_create_start_nodes: bool,
            auto_create_end_nodes: bool,
        }
        let body = serde_json::to_vec(&Body {
            items: nodes.iter().map(|n| &*n.json).collect(),
            auto_create_direct_relations: true,
            auto_create_start_nodes: true,
            auto_create_end_nodes: true,
        })
        .expect("nodes serialize");
        Request {
            endpoint: "/models/instances",
            path: "/models/instances".to_owned(),
            items: nodes.len(),
            body: body.into(),
        }
    }

    fn id(item: &StoredNode) -> Option<std::borrow::Cow<'_, str>> {
        Some(item.id.as_str().into())
    }

    fn from_json(v: serde_json::Value) -> Result<StoredNode, String> {
        let (Some(space), Some(external_id)) = (v["space"].as_str(), v["externalId"].as_str())
        else {
            return Err("an instance without `space` and `externalId`".to_owned());
        };
        Ok(StoredNode {
            id: instance_id(space, external_id),
            json: serde_json::value::to_raw_value(&v).map_err(|e| e.to_string())?,
        })
    }

    fn encode(item: &StoredNode) -> Vec<u8> {
        serde_json::to_vec(item).expect("a stored node serializes")
    }

    fn decode(bytes: &[u8]) -> Result<StoredNode, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    fn to_json(item: &StoredNode) -> serde_json::Value {
        serde_json::from_str(item.json.get()).expect("a stored node is JSON")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_is_written_through_its_view() {
        let view = Arc::new(ViewRef {
            space: "cdf_cdm".into(),
            external_id: "CogniteAsset".into(),
            version: "v1".into(),
        });
        let mut properties = serde_json::Map::new();
        properties.insert("name".into(), "Pump 1".into());
        properties.insert(
            "parent".into(),
            serde_json::json!({"space": "plant", "externalId": "area-1"}),
        );
        let stored = Instances::store(Node {
            space: "plant".into(),
            external_id: "pump-1".into(),
            edge: None,
            view: Some(view),
            properties,
        });
        assert_eq!(Instances::id(&stored).as_deref(), Some("plant:pump-1"));
        let request = Instances::request(&[&stored]);
        assert_eq!(
            request.json(),
            serde_json::json!({"items": [{
                "instanceType": "node", "space": "plant", "externalId": "pump-1",
                "sources": [{
                    "source": {"type": "view", "space": "cdf_cdm", "externalId": "CogniteAsset", "version": "v1"},
                    "properties": {"name": "Pump 1", "parent": {"space": "plant", "externalId": "area-1"}}
                }]
            }], "autoCreateDirectRelations": true, "autoCreateStartNodes": true, "autoCreateEndNodes": true})
        );
        let many: Vec<StoredNode> = (0..1500)
            .map(|i| {
                Instances::store(Node {
                    space: "s".into(),
                    external_id: format!("n{i}"),
                    edge: None,
                    view: None,
                    properties: serde_json::Map::new(),
                })
            })
            .collect();
        assert_eq!(Instances::batch_len(many.iter()), 1000);
        // The same node again ends the batch: it goes in the next request.
        let again: Vec<&StoredNode> = vec![&many[0], &many[1], &many[0], &many[2]];
        assert_eq!(Instances::batch_len(again.into_iter()), 2);
        // An edge without a view: its ends, no sources.
        let r = |x: &str| InstanceRef {
            space: "plant".into(),
            external_id: x.into(),
        };
        let edge = Instances::store(Node {
            space: "plant".into(),
            external_id: "pump-1->line-2".into(),
            edge: Some(Box::new(EdgeEnds {
                edge_type: r("feeds"),
                start_node: r("pump-1"),
                end_node: r("line-2"),
            })),
            view: None,
            properties: serde_json::Map::new(),
        });
        assert_eq!(
            Instances::to_json(&edge),
            serde_json::json!({"instanceType": "edge", "space": "plant", "externalId": "pump-1->line-2",
                "type": {"space": "plant", "externalId": "feeds"},
                "startNode": {"space": "plant", "externalId": "pump-1"},
                "endNode": {"space": "plant", "externalId": "line-2"}})
        );
    }
}
