//! Contract test: requests the CDF client makes are sent to Prism serving Cognite's own OpenAPI
//! spec (derived with `--strict --fix-oneof --uniform-422`), and must be accepted; the canary
//! runs first so that a mock that accepts anything cannot pass.
//!
//! Needs `../shared` (spec and tools) and the npm packages (`.ci/run` installs them and sets
//! `TOKEN_SERVER_NODE_MODULES`). Where they are absent (a user's clone) the test says that it
//! skipped; with `CI=true` it fails instead. Covers the upload queues' bodies, the delivery
//! policies' `/timeseries` create and `/events/update` bodies, Data Modeling nodes
//! (`/models/instances`), and the RAW state store's reads.

use extractor_runtime::cdf::{CdfClient, CdfErrorKind};
use extractor_runtime::queues::{
    Datapoint, DatapointValue, Datapoints, EdgeEnds, Event, Events, InstanceRef, Instances, Kind,
    NewSeries, Node, RawRow, RawRows, ViewRef,
};
use serde_json::json;
use wiremock::MockServer;

mod support;

use support::{cognite, mount_token_endpoint};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clients_requests_match_cognites_spec() {
    let Some(prism) = support::prism::Prism::start().await else {
        return;
    };
    let base = prism.base.clone();

    let idp = MockServer::start().await;
    mount_token_endpoint(&idp, "contract-token").await;
    let cognite = cognite(&base, ", connection: {max-retries: 0}");
    let tokens = support::token_manager(&idp.uri());
    let client = CdfClient::new(
        &cognite,
        Some(tokens.clone()),
        None,
        &prometheus::Registry::new(),
    )
    .unwrap();

    let accepted = [
        (
            "/raw/dbs/{db}/tables/{table}/rows",
            "/raw/dbs/plant/tables/readings/rows?ensureParent=true",
            json!({"items": [{"key": "r1", "columns": {"temperature": 21.5, "unit": "C"}}]}),
        ),
        (
            "/extpipes/runs",
            "/extpipes/runs",
            json!({"items": [{"externalId": "my-pipeline", "status": "success", "message": "3 rows"}]}),
        ),
        // metrics.cognite's asset: created, then looked up when it existed already.
        (
            "/assets",
            "/assets",
            json!({"items": [{"externalId": "plant-extractor", "name": "Plant extractor", "dataSetId": 55}]}),
        ),
        (
            "/assets/byids",
            "/assets/byids",
            json!({"items": [{"externalId": "plant-extractor"}]}),
        ),
    ];
    // The lookups of `cognite.data-set: {external-id}` and `extraction-pipeline: {id}`: Prism
    // answers them with the spec's example, whose ids are read.
    let data_set = extractor_runtime::cdf::data_set_id(
        &client,
        &extractor_runtime::cdf::EitherId::ExternalId("plant-data".into()),
    )
    .await
    .unwrap_or_else(|e| panic!("/datasets/byids was refused: {e}"));
    assert!(data_set > 0, "{data_set}");
    extractor_runtime::cdf::pipeline_external_id(
        &client,
        &extractor_runtime::cdf::EitherId::Id(42),
    )
    .await
    .unwrap_or_else(|e| panic!("/extpipes/byids was refused: {e}"));
    for (endpoint, path, body) in &accepted {
        client
            .post(endpoint, path, body)
            .await
            .unwrap_or_else(|e| panic!("{endpoint} was refused: {e}"));
    }
    // The bodies the upload queues build.
    let mut columns = serde_json::Map::new();
    columns.insert("v".into(), json!(1.5));
    let raw = RawRows::next_request(
        &[RawRows::store(RawRow {
            database: "db 1".into(),
            table: "t".into(),
            key: "k".into(),
            columns,
        })]
        .into(),
    );
    let points = Datapoints::next_request(
        &[
            Datapoint {
                external_id: "ts-num".into(),
                timestamp: 1_700_000_000_000,
                value: DatapointValue::Numeric(2.5),
            },
            Datapoint {
                external_id: "ts-str".into(),
                timestamp: 1_700_000_000_000,
                value: DatapointValue::String("on".into()),
            },
        ]
        .map(Datapoints::store)
        .into(),
    );
    let event = Event {
        external_id: Some("e1".into()),
        start_time: Some(1_700_000_000_000),
        end_time: Some(1_700_000_060_000),
        kind: Some("alarm".into()),
        subtype: Some("temperature".into()),
        description: Some("high".into()),
        metadata: [("site".to_owned(), "oslo".to_owned())].into(),
        data_set_id: Some(123),
    };
    let events = Events::next_request(&[event.clone()].into());
    // Data Modeling nodes through a view, with a direct relation; and one with no properties.
    let view = std::sync::Arc::new(ViewRef {
        space: "cdf_cdm".into(),
        external_id: "CogniteAsset".into(),
        version: "v1".into(),
    });
    let mut properties = serde_json::Map::new();
    properties.insert("name".into(), json!("Boiler 1"));
    properties.insert(
        "parent".into(),
        json!({"space": "plant", "externalId": "boiler-house"}),
    );
    let nodes = Instances::next_request(
        &[
            Instances::store(Node {
                space: "plant".into(),
                external_id: "boiler-1".into(),
                edge: None,
                view: Some(view.clone()),
                properties,
            }),
            Instances::store(Node {
                space: "plant".into(),
                external_id: "boiler-2".into(),
                edge: None,
                view: Some(view),
                properties: serde_json::Map::new(),
            }),
            // An edge between two nodes, without a view.
            Instances::store(Node {
                space: "plant".into(),
                external_id: "boiler-1->boiler-2".into(),
                edge: Some(Box::new(EdgeEnds {
                    edge_type: InstanceRef {
                        space: "plant".into(),
                        external_id: "backs-up".into(),
                    },
                    start_node: InstanceRef {
                        space: "plant".into(),
                        external_id: "boiler-2".into(),
                    },
                    end_node: InstanceRef {
                        space: "plant".into(),
                        external_id: "boiler-1".into(),
                    },
                })),
                view: None,
                properties: serde_json::Map::new(),
            }),
        ]
        .into(),
    );
    // What the delivery policies send: missing time series created (`create-missing`), and
    // duplicated events updated (`on-duplicate: update`), a full and a sparse one.
    let mut series = [
        Datapoint {
            external_id: "ts-new".into(),
            timestamp: 1,
            value: DatapointValue::Numeric(1.0),
        },
        Datapoint {
            external_id: "ts-new-text".into(),
            timestamp: 1,
            value: DatapointValue::String("on".into()),
        },
    ]
    .map(Datapoints::store);
    // One with everything a `new-series:` block can give.
    series[0].series = Some(std::sync::Arc::new(NewSeries {
        name: Some("New series".into()),
        unit: Some("kPa".into()),
        description: Some("created by create-missing".into()),
        metadata: [("site".to_owned(), "oslo".to_owned())].into(),
        // As the metrics.cognite series are created.
        asset_id: Some(7),
        data_set_id: Some(8),
    }));
    // With `cognite.data-set` and `security-categories`.
    let defaults = extractor_runtime::cdf::Defaults {
        data_set_id: Some(123),
        security_categories: vec![5, 6],
        external_id_prefix: String::new(),
    };
    let create = Datapoints::create_missing(&series.iter().collect::<Vec<_>>(), &defaults);
    // The series' own data set wins over `cognite.data-set`; the other takes the default.
    assert_eq!(create[0].json()["items"][0]["dataSetId"], 8);
    assert_eq!(create[0].json()["items"][1]["dataSetId"], 123);
    assert_eq!(create.len(), 1);
    // Datapoints by instanceId (CogniteTimeSeries), and the nodes create-missing writes.
    let mut by_node = [
        Datapoint {
            external_id: "boiler-1:temperature".into(),
            timestamp: 1,
            value: DatapointValue::Numeric(71.5),
        },
        Datapoint {
            external_id: "boiler-1:status".into(),
            timestamp: 1,
            value: DatapointValue::String("ok".into()),
        },
    ]
    .map(Datapoints::store);
    for stored in &mut by_node {
        stored.node = Some("plant".into());
    }
    by_node[0].series = Some(std::sync::Arc::new(NewSeries {
        name: Some("Boiler 1 temperature".into()),
        unit: Some("degC".into()),
        description: Some("created by create-missing".into()),
        metadata: Default::default(),
        ..NewSeries::default()
    }));
    let node_points = Datapoints::next_request(&by_node.clone().into());
    assert_eq!(
        node_points.json()["items"][0]["instanceId"],
        json!({"space": "plant", "externalId": "boiler-1:temperature"})
    );
    let node_series = Datapoints::create_missing(&by_node.iter().collect::<Vec<_>>(), &defaults);
    assert_eq!(node_series.len(), 1);
    assert_eq!(node_series[0].endpoint, "/models/instances");
    assert_eq!(create[0].json()["items"][1]["isString"], true);
    let sparse = Event {
        external_id: Some("e2".into()),
        start_time: Some(1_700_000_000_000),
        ..Event::default()
    };
    let updates = Events::update(&[&event, &sparse]).expect("events can be updated");
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0].endpoint, "/events/update");
    for request in [raw, points, events, nodes, node_points]
        .into_iter()
        .chain(create)
        .chain(node_series)
        .chain(updates)
    {
        client
            .post_body(request.endpoint, &request.path, request.body.clone())
            .await
            .unwrap_or_else(|e| panic!("{} was refused: {e}", request.endpoint));
    }
    // The RAW state store reads its table page by page.
    client
        .get(
            "/raw/dbs/{db}/tables/{table}/rows",
            "/raw/dbs/state%20db/tables/states/rows?limit=1000&cursor=abc",
        )
        .await
        .unwrap_or_else(|e| panic!("reading RAW rows was refused: {e}"));
    // And a misspelled field, through the same client, is refused: validation is live.
    let err = client
        .post(
            "/extpipes/runs",
            "/extpipes/runs",
            &json!({"items": [{"external_id": "p", "status": "success"}]}),
        )
        .await
        .unwrap_err();
    assert_eq!(
        (err.kind(), err.status()),
        (&CdfErrorKind::Rejected, Some(422)),
        "{err}"
    );
    tokens.shutdown();
}
