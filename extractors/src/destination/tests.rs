use extractor_runtime::queues::{DatapointValue, Event};
use serde_json::json;

use super::*;

fn dest(yaml_like: serde_json::Value) -> Result<Destination, Rejection> {
    let config: DestinationConfig = serde_json::from_value(yaml_like).unwrap();
    Destination::new(&config)
}

fn problems(r: Result<Destination, Rejection>) -> Vec<(String, String)> {
    r.unwrap_err().problems().to_vec()
}

#[test]
fn fields_are_columns_pointers_or_templates() {
    let record = json!({"id": 7, "site": "oslo", "sensor": {"id": "t-1", "a/b": 1}, "none": null});
    let f = Field::parse("id").unwrap();
    assert_eq!(f.render(&record).unwrap(), "7");
    assert_eq!(f.name(), "id");
    let f = Field::parse("/sensor/id").unwrap();
    assert_eq!(f.render(&record).unwrap(), "t-1");
    assert_eq!(f.name(), "id");
    assert_eq!(
        Field::parse("/sensor/a~1b")
            .unwrap()
            .render(&record)
            .unwrap(),
        "1"
    );
    let f = Field::parse("{site}-{/sensor/id}:{{x}}").unwrap();
    assert_eq!(f.render(&record).unwrap(), "oslo-t-1:{x}");
    assert!(f.is_present(&record));
    let f = Field::parse("'boiler-1'").unwrap();
    assert_eq!(f.render(&record).unwrap(), "boiler-1");
    assert!(f.is_present(&json!({})));
    assert_eq!(
        Field::parse("'").unwrap().render(&record),
        Err("'".into()),
        "a column named '"
    );
    // Missing and null values name what is missing.
    assert_eq!(
        Field::parse("nope").unwrap().render(&record),
        Err("nope".into())
    );
    assert_eq!(
        Field::parse("none").unwrap().render(&record),
        Err("none".into())
    );
    assert!(!Field::parse("{site}-{none}").unwrap().is_present(&record));
}

#[test]
fn bad_fields_say_what_is_wrong() {
    for (text, wanted) in [
        ("", "is empty"),
        ("  ", "is empty"),
        ("/a/~2", "`~` at byte 3 must be followed by 0"),
        ("{site", "the `{` at byte 0 is not closed"),
        ("a}b", "the `}` at byte 1 closes nothing"),
        ("x{}", "`{}` at byte 1 must name a column"),
        ("{/a~}", "`~` at byte 2"),
    ] {
        let e = Field::parse(text).unwrap_err();
        assert!(e.contains(wanted), "{text:?}: {e}");
    }
}

#[test]
fn mapping_problems_are_reported_at_their_keys_all_at_once() {
    assert_eq!(
        problems(dest(json!({"type": "raw", "database": "db", "key": "{id"}))),
        vec![
            ("".to_owned(), "`type: raw` needs `table`".to_owned()),
            (
                "key".to_owned(),
                "`{id`: the `{` at byte 0 is not closed (write `{{` for a literal brace)"
                    .to_owned()
            ),
        ]
    );
    let p = problems(dest(
        json!({"type": "datapoints", "external-id": "x", "table": "t"}),
    ));
    let paths: Vec<&str> = p.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(paths, ["table", "", ""], "{p:?}");
    assert!(
        p[0].1
            .contains("`table` does not apply to `type: datapoints`")
    );
    assert!(p[1].1.contains("needs `timestamp`"));
    assert!(p[2].1.contains("needs `value`"));
    let p = problems(dest(json!({"type": "events", "external-id": "id",
        "metadata": {"ok": "a", "bad": "/x~"}})));
    assert_eq!(p[0].0, "metadata.bad");
    let p = problems(dest(json!({"type": "events", "external-id": "id",
        "metadata": ["a", "{"]})));
    assert_eq!(p[0].0, "metadata[1]");
    let p = problems(dest(
        json!({"type": "raw", "database": " ", "table": "t", "key": "k"}),
    ));
    assert_eq!(p, vec![("database".into(), "must not be empty".into())]);
}

#[test]
fn raw_rows_carry_the_whole_record() {
    let d = dest(json!({"type": "raw", "database": "db", "table": "t", "key": "{a}-{b}"})).unwrap();
    let Item::Raw(row) = d.map(json!({"a": 1, "b": "x", "c": [1]})).unwrap() else {
        panic!()
    };
    assert_eq!(
        (row.database.as_str(), row.table.as_str(), row.key.as_str()),
        ("db", "t", "1-x")
    );
    assert_eq!(
        serde_json::Value::Object(row.columns),
        json!({"a": 1, "b": "x", "c": [1]})
    );
    // A scalar item (an HTTP API returning a list of numbers) becomes {value: ...}.
    let d = dest(json!({"type": "raw", "database": "db", "table": "t", "key": "/"})).unwrap();
    let e = d.map(json!(5)).unwrap_err();
    assert_eq!(e.key, "key");
    let e = d.map(json!({"a": 1})).unwrap_err();
    assert_eq!(e.to_string(), "destination.key: `/` has no value for `/`");
}

#[test]
fn datapoints_take_numbers_texts_and_times_in_several_forms() {
    let d = dest(
        json!({"type": "datapoints", "external-id": "sensor-{id}", "timestamp": "t", "value": "v"}),
    )
    .unwrap();
    let at = |t: serde_json::Value, v: serde_json::Value| d.map(json!({"id": 1, "t": t, "v": v}));
    let want = 1_764_237_600_000; // 2025-11-27T10:00:00Z
    for t in [
        json!(want),
        json!("2025-11-27T10:00:00Z"),
        json!("2025-11-27T11:00:00+01:00"),
        json!("2025-11-27 10:00:00"),
        json!("2025-11-27T10:00:00"),
    ] {
        let Item::Datapoint(dp, _) = at(t.clone(), json!(1.5)).unwrap() else {
            panic!()
        };
        assert_eq!(
            (dp.external_id.as_str(), dp.timestamp),
            ("sensor-1", want),
            "{t}"
        );
        assert_eq!(dp.value, DatapointValue::Numeric(1.5));
    }
    let Item::Datapoint(dp, _) = at(json!(0), json!("on")).unwrap() else {
        panic!()
    };
    assert_eq!(dp.value, DatapointValue::String("on".into()));
    let Item::Datapoint(dp, _) = at(json!(0), json!(true)).unwrap() else {
        panic!()
    };
    assert_eq!(dp.value, DatapointValue::Numeric(1.0));
    assert_eq!(
        at(json!("yesterday"), json!(1)).unwrap_err().to_string(),
        "destination.timestamp: `t` is not a time: `yesterday`"
    );
    assert_eq!(
        at(json!(0), json!(null)).unwrap_err().to_string(),
        "destination.value: `v` is missing or null"
    );
    assert_eq!(at(json!(0), json!([1])).unwrap_err().key, "value");
}

#[test]
fn events_map_optional_fields_and_metadata() {
    let d = dest(
        json!({"type": "events", "external-id": "alarm-{id}", "start-time": "start",
        "end-time": "end", "event-type": "kind", "subtype": "/detail/sub", "description": "text",
        "metadata": ["site", "/detail/level"]}),
    )
    .unwrap();
    let Item::Event(e) = d
        .map(
            json!({"id": 3, "start": 1000, "end": "1970-01-01T00:00:02Z", "kind": "alarm",
            "detail": {"sub": "high", "level": 4}, "site": "oslo"}),
        )
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(
        e,
        Event {
            external_id: Some("alarm-3".into()),
            start_time: Some(1000),
            end_time: Some(2000),
            kind: Some("alarm".into()),
            subtype: Some("high".into()),
            description: None,
            metadata: [("site".into(), "oslo".into()), ("level".into(), "4".into())].into(),
            data_set_id: None,
        }
    );
    // The external id is required per record.
    assert_eq!(d.map(json!({"start": 1})).unwrap_err().key, "external-id");
}

#[test]
fn new_series_maps_each_record_and_needs_create_missing() {
    let d = dest(json!({"type": "datapoints", "external-id": "{site}:{id}", "timestamp": "t",
        "value": "v", "create-missing": true,
        "new-series": {"name": "{id} at {site}", "unit": "'kPa'", "metadata": {"site": "site", "line": "/where/line"}}}))
    .unwrap();
    assert!(d.policy().create_missing);
    let Item::Datapoint(dp, Some(series)) = d
        .map(json!({"id": "p1", "site": "oslo", "t": 0, "v": 1, "where": {"line": 2}}))
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(dp.external_id, "oslo:p1");
    assert_eq!(
        *series,
        NewSeries {
            name: Some("p1 at oslo".into()),
            unit: Some("kPa".into()),
            description: None,
            metadata: [("site".into(), "oslo".into()), ("line".into(), "2".into())].into(),
            ..NewSeries::default()
        }
    );
    // A record without a metadata field leaves that key out; a missing name field is an error.
    let Item::Datapoint(_, Some(series)) = d
        .map(json!({"id": "p2", "site": "oslo", "t": 0, "v": 1}))
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(series.metadata.len(), 1);
    assert_eq!(
        d.map(json!({"site": "oslo", "t": 0, "v": 1}))
            .unwrap_err()
            .key,
        "external-id"
    );

    // Only with create-missing: true, only for datapoints, and its fields are checked.
    assert_eq!(
        problems(dest(
            json!({"type": "datapoints", "external-id": "x", "timestamp": "t",
            "value": "v", "new-series": {"name": "{oops"}})
        )),
        [
            (
                "new-series".to_owned(),
                "`new-series` is used only with `create-missing: true`".to_owned()
            ),
            (
                "new-series.name".to_owned(),
                "`{oops`: the `{` at byte 0 is not closed (write `{{` for a literal brace)"
                    .to_owned()
            ),
        ]
    );
    assert_eq!(
        problems(dest(
            json!({"type": "events", "external-id": "x", "new-series": {}})
        ))[0]
            .0,
        "new-series"
    );
    // Without new-series, no per-record series.
    let plain = dest(
        json!({"type": "datapoints", "external-id": "'x'", "timestamp": "t", "value": "v",
        "create-missing": true}),
    )
    .unwrap();
    assert!(matches!(
        plain.map(json!({"t": 0, "v": 1})).unwrap(),
        Item::Datapoint(_, None)
    ));
}

#[test]
fn instances_map_records_to_nodes_through_a_view() {
    let d = dest(json!({
        "type": "instances", "space": "plant",
        "view": {"space": "cdf_cdm", "external-id": "CogniteAsset", "version": "v1"},
        "external-id": "id",
        "properties": {
            "name": "name",
            "sourceId": "csv:{id}",
            "parent": {"space": "plant", "external-id": "parent"},
            "rating": "/spec/rating"
        }
    }))
    .unwrap();
    let Item::Node(node) = d
        .map(json!({"id": "pump-1", "name": "Pump 1", "parent": "area-1", "spec": {"rating": 7.5}}))
        .unwrap()
    else {
        panic!("a node")
    };
    assert_eq!(
        (node.space.as_str(), node.external_id.as_str()),
        ("plant", "pump-1")
    );
    assert_eq!(node.view.as_ref().unwrap().external_id, "CogniteAsset");
    assert_eq!(
        serde_json::Value::Object(node.properties),
        json!({"name": "Pump 1", "sourceId": "csv:pump-1", "rating": 7.5,
               "parent": {"space": "plant", "externalId": "area-1"}})
    );
    // No parent, a null: left out (a sparse upsert), not sent as null.
    let Item::Node(root) = d
        .map(json!({"id": "plant", "name": null, "parent": "", "spec": {"rating": 1}}))
        .unwrap()
    else {
        panic!("a node")
    };
    assert_eq!(
        serde_json::Value::Object(root.properties),
        json!({"sourceId": "csv:plant", "rating": 1})
    );
    // A missing column is the record's problem, named.
    let e = d.map(json!({"id": "x", "parent": "p"})).unwrap_err();
    assert_eq!(e.key, "properties");
    assert!(e.message.contains("property `name`"), "{e}");
    let e = d.map(json!({"id": "", "name": "n"})).unwrap_err();
    assert_eq!(e.key, "external-id");
}

#[test]
fn an_instances_block_says_what_is_missing_or_wrong() {
    let got = problems(dest(
        json!({"type": "instances", "external-id": "id", "table": "t"}),
    ));
    assert!(
        got.contains(&("".into(), "`type: instances` needs `space`".into())),
        "{got:?}"
    );
    assert!(
        got.contains(&(
            "".into(),
            "`type: instances` needs `view: {space, external-id, version}`".into()
        )),
        "{got:?}"
    );
    assert!(
        got.contains(&(
            "table".into(),
            "`table` does not apply to `type: instances`".into()
        )),
        "{got:?}"
    );
    let got = problems(dest(json!({
        "type": "instances", "space": "9-bad", "external-id": "id",
        "view": {"space": "cdf_cdm", "external-id": "", "version": "v1"},
        "properties": {"parent": {"space": "plant", "external-id": "{oops"}}
    })));
    let keys: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        ["space", "view.external-id", "properties.parent.external-id"],
        "{got:?}"
    );
    let got = problems(dest(
        json!({"type": "raw", "database": "d", "table": "t", "key": "k", "space": "s"}),
    ));
    assert!(
        got.contains(&(
            "space".into(),
            "`space` does not apply to `type: raw`".into()
        )),
        "{got:?}"
    );
}

#[test]
fn datapoints_by_instance_id_name_a_cognite_time_series_node() {
    let d = dest(json!({
        "type": "datapoints",
        "instance-id": {"space": "plant", "external-id": "{sensor}:temperature"},
        "timestamp": "time", "value": "temperature", "create-missing": true,
        "new-series": {"name": "{sensor} temperature", "unit": "'degC'"}
    }))
    .unwrap();
    assert!(d.policy().create_missing);
    let Item::NodeDatapoint(dp, space, Some(series)) = d
        .map(json!({"sensor": "boiler-1", "time": 1000, "temperature": 71.5}))
        .unwrap()
    else {
        panic!("a datapoint of a node")
    };
    assert_eq!(
        (&*space, dp.external_id.as_str()),
        ("plant", "boiler-1:temperature")
    );
    assert_eq!(dp.value, DatapointValue::Numeric(71.5));
    assert_eq!(series.name.as_deref(), Some("boiler-1 temperature"));
    let e = d.map(json!({"time": 1000, "temperature": 1})).unwrap_err();
    assert_eq!(e.key, "instance-id.external-id");

    let got = problems(dest(json!({
        "type": "datapoints", "external-id": "id",
        "instance-id": {"space": "plant", "external-id": "id"},
        "timestamp": "t", "value": "v"
    })));
    assert_eq!(got[0].0, "instance-id", "{got:?}");
    assert!(got[0].1.contains("not both"), "{got:?}");
    let got = problems(dest(json!({
        "type": "events", "external-id": "id",
        "instance-id": {"space": "plant", "external-id": "id"}
    })));
    assert!(
        got.contains(&(
            "instance-id".into(),
            "`instance-id` does not apply to `type: events`".into()
        )),
        "{got:?}"
    );
}

#[test]
fn instances_can_be_edges_between_nodes() {
    let d = dest(json!({
        "type": "instances", "instance-type": "edge", "space": "plant",
        "external-id": "{from}->{to}",
        "edge-type": {"space": "plant", "external-id": "'feeds'"},
        "start-node": {"space": "plant", "external-id": "from"},
        "end-node": {"space": "plant", "external-id": "to"}
    }))
    .unwrap();
    let Item::Node(edge) = d.map(json!({"from": "pump-1", "to": "line-2"})).unwrap() else {
        panic!("an instance")
    };
    assert_eq!(edge.external_id, "pump-1->line-2");
    assert!(edge.view.is_none());
    let ends = edge.edge.unwrap();
    assert_eq!(ends.edge_type.external_id, "feeds");
    assert_eq!(
        (
            ends.start_node.external_id.as_str(),
            ends.end_node.external_id.as_str()
        ),
        ("pump-1", "line-2")
    );
    let e = d.map(json!({"from": "pump-1"})).unwrap_err();
    assert_eq!(e.key, "external-id");

    let got = problems(dest(json!({
        "type": "instances", "instance-type": "edge", "space": "plant", "external-id": "id",
        "start-node": {"space": "plant", "external-id": "a"}
    })));
    assert!(
        got.contains(&(
            "".into(),
            "`instance-type: edge` needs `edge-type: {space, external-id}`".into()
        )) && got.contains(&(
            "".into(),
            "`instance-type: edge` needs `end-node: {space, external-id}`".into()
        )),
        "{got:?}"
    );
    let got = problems(dest(json!({
        "type": "instances", "space": "plant", "external-id": "id",
        "view": {"space": "cdf_cdm", "external-id": "CogniteAsset", "version": "v1"},
        "start-node": {"space": "plant", "external-id": "a"}
    })));
    assert_eq!(
        got,
        [(
            "start-node".to_owned(),
            "`start-node` applies only with `instance-type: edge`".to_owned()
        )]
    );
}

/// An item as the tests compare them: a RAW row's columns as a JSON value.
#[derive(Debug, PartialEq)]
enum Made {
    Raw(String, Value),
    Item(Item),
}

/// What `map` makes of the record of `cells`, or the error's text.
fn mapped(d: &Destination, names: &[String], cells: &[Cell<'_>]) -> Result<Made, String> {
    let mut record = serde_json::Map::new();
    for (name, cell) in names.iter().zip(cells) {
        record.insert(name.clone(), cell.clone().into_value());
    }
    match d.map(Value::Object(record)) {
        Ok(Item::Raw(row)) => Ok(Made::Raw(row.key, Value::Object(row.columns))),
        Ok(item) => Ok(Made::Item(item)),
        Err(e) => Err(e.to_string()),
    }
}

/// What the writer makes of `cells`, in the same form.
fn written(w: &RowWriter, cells: &[Cell<'_>]) -> Result<Made, String> {
    match w.write(cells) {
        Ok(Written::Raw(row)) => {
            let columns = serde_json::from_str(row.columns()).expect("the columns are JSON");
            Ok(Made::Raw(row.key().to_owned(), columns))
        }
        Ok(Written::Item(item)) => Ok(Made::Item(item)),
        Err(e) => Err(e.to_string()),
    }
}

/// Rows of the columns `id, site, value, flag, note, site` (a name twice: the last wins),
/// with texts to escape, nulls, empty texts, floats, booleans and texts that are times.
fn rows() -> (Vec<String>, Vec<Vec<Cell<'static>>>) {
    let names = ["id", "site", "value", "flag", "note", "site"]
        .map(String::from)
        .to_vec();
    let float = |v: f64| Cell::Number(serde_json::Number::from_f64(v).unwrap());
    let rows = vec![
        vec![
            Cell::Number(7.into()),
            Cell::Text("first"),
            float(2.5),
            Cell::Bool(true),
            Cell::Text("a \"quoted\"\ttab, ünïcødé \u{1}"),
            Cell::Text("north"),
        ],
        vec![
            Cell::Text("x-1"),
            Cell::Null,
            float(1e300),
            Cell::Bool(false),
            Cell::Text(""),
            Cell::Text("south"),
        ],
        vec![
            Cell::Null,
            Cell::Text("a"),
            Cell::Null,
            Cell::Null,
            Cell::Null,
            Cell::Text("b"),
        ],
        vec![
            Cell::Text(""),
            Cell::Text("a"),
            Cell::Text("12.5"),
            Cell::Null,
            Cell::Text("2026-11-27T10:00:00Z"),
            Cell::Text(""),
        ],
        vec![
            float(1.7e12),
            Cell::Text("west"),
            Cell::Text("a text value"),
            Cell::Bool(true),
            Cell::Text("2026-11-27 10:00:00"),
            Cell::Text("east"),
        ],
        // A time, and no value.
        vec![
            Cell::Number(1_000.into()),
            Cell::Text("s"),
            Cell::Null,
            Cell::Null,
            Cell::Null,
            Cell::Text("s2"),
        ],
    ];
    (names, rows)
}

#[test]
fn a_row_writer_gives_what_mapping_the_record_gives() {
    let (names, rows) = rows();
    let mut destinations = Vec::new();
    for key in [
        "id",
        "{site}/{id}",
        "'fixed'",
        "n{{{value}}}",
        "{flag}{note}",
    ] {
        destinations.push(json!({"type": "raw", "database": "db", "table": "t", "key": key}));
    }
    for (external_id, timestamp, value) in [
        ("site", "id", "value"),
        ("{site}:{flag}", "note", "flag"),
        ("note", "value", "note"),
        ("id", "flag", "id"),
    ] {
        destinations.push(json!({
            "type": "datapoints", "external-id": external_id, "timestamp": timestamp,
            "value": value
        }));
        destinations.push(json!({
            "type": "datapoints", "instance-id": {"space": "sp", "external-id": external_id},
            "timestamp": timestamp, "value": value
        }));
    }
    let mut outcomes = std::collections::BTreeSet::new();
    for config in destinations {
        let d = dest(config.clone()).unwrap();
        let w = d.row_writer(&names).expect("the fields name columns only");
        for cells in &rows {
            let made = written(&w, cells);
            assert_eq!(made, mapped(&d, &names, cells), "{config}, cells {cells:?}");
            outcomes.insert(match made {
                Ok(Made::Raw(..)) => "raw".to_owned(),
                Ok(Made::Item(Item::Datapoint(..))) => "datapoint".to_owned(),
                Ok(Made::Item(Item::NodeDatapoint(..))) => "node datapoint".to_owned(),
                Ok(other) => panic!("{other:?}"),
                Err(e) => e.split(':').next().unwrap().to_owned(),
            });
        }
    }
    // Each kind of item and of error was compared.
    assert_eq!(
        outcomes.into_iter().collect::<Vec<_>>(),
        [
            "datapoint",
            "destination.external-id",
            "destination.instance-id.external-id",
            "destination.key",
            "destination.timestamp",
            "destination.value",
            "node datapoint",
            "raw"
        ]
    );
    // Spot checks of what both give: the last `site` wins, in the key and in the columns.
    let d =
        dest(json!({"type": "raw", "database": "db", "table": "t", "key": "{site}/{id}"})).unwrap();
    let w = d.row_writer(&names).unwrap();
    let Ok(Made::Raw(key, columns)) = written(&w, &rows[0]) else {
        panic!()
    };
    assert_eq!(key, "north/7");
    assert_eq!(columns["site"], json!("north"));
    assert_eq!(columns["value"], json!(2.5));
    assert_eq!(
        written(&w, &rows[2]).unwrap_err(),
        "destination.key: `{site}/{id}` has no value for `id`"
    );
    let d = dest(json!({"type": "raw", "database": "db", "table": "t", "key": "note"})).unwrap();
    assert_eq!(
        written(&d.row_writer(&names).unwrap(), &rows[1]).unwrap_err(),
        "destination.key: `note` is empty; a RAW row needs a key"
    );
    let d = dest(json!({
        "type": "datapoints", "external-id": "site", "timestamp": "note", "value": "value"
    }))
    .unwrap();
    let Ok(Made::Item(Item::Datapoint(point, None))) =
        written(&d.row_writer(&names).unwrap(), &rows[4])
    else {
        panic!()
    };
    assert_eq!(
        (point.external_id.as_str(), point.timestamp, point.value),
        (
            "east",
            1_795_773_600_000,
            DatapointValue::String("a text value".into())
        )
    );
}

#[test]
fn a_row_writer_is_only_made_where_its_items_equal_the_mapped_ones() {
    let names: Vec<String> = ["id", "value"].map(String::from).to_vec();
    let raw = |key: &str| dest(json!({"type": "raw", "database": "db", "table": "t", "key": key}));
    assert!(raw("id").unwrap().row_writer(&names).is_some());
    // A JSON pointer, or a column the rows do not have: each record is mapped.
    assert!(raw("/id").unwrap().row_writer(&names).is_none());
    assert!(raw("{id}-{site}").unwrap().row_writer(&names).is_none());
    let points = |extra: serde_json::Value| {
        let mut config = json!({
            "type": "datapoints", "external-id": "id", "timestamp": "id", "value": "value"
        });
        config
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        dest(config).unwrap()
    };
    assert!(points(json!({})).row_writer(&names).is_some());
    // How a created series looks is mapped per record.
    let created = points(json!({"create-missing": true, "new-series": {"name": "{id}"}}));
    assert!(created.row_writer(&names).is_none());
    let events = dest(json!({
        "type": "events", "external-id": "id", "start-time": "id"
    }))
    .unwrap();
    assert!(events.row_writer(&names).is_none());
}
