//! Datapoint inserts as protocol buffers (`POST /timeseries/data`, `Content-Type:
//! application/protobuf`, which the API documents beside JSON): Cognite's
//! `DataPointInsertionRequest` (cognitedata/protobuf-files, `v1/timeseries`), written by hand
//! in the wire format, as the messages are few and fixed:
//!
//! ```text
//! DataPointInsertionRequest { repeated DataPointInsertionItem items = 1; }
//! DataPointInsertionItem {
//!     oneof timeSeriesReference { int64 id = 1; string externalId = 2; InstanceId instanceId = 5; }
//!     oneof datapointType { NumericDatapoints numericDatapoints = 3; StringDatapoints stringDatapoints = 4; }
//! }
//! InstanceId { string space = 1; string externalId = 2; }
//! NumericDatapoints { repeated NumericDatapoint datapoints = 1; }
//! NumericDatapoint { int64 timestamp = 1; double value = 2; }
//! StringDatapoints { repeated StringDatapoint datapoints = 1; }
//! StringDatapoint { int64 timestamp = 1; string value = 2; }
//! ```
//!
//! Sizes are computed before writing, so the body is one allocation and each length prefix is
//! written in place.

use super::datapoints::{StoredPoint, Value};

/// The wire type of a varint field.
const VARINT: u64 = 0;
/// The wire type of a 64-bit field (a double).
const FIXED64: u64 = 1;
/// The wire type of a length-delimited field (a string, bytes, a message).
const LEN: u64 = 2;

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn key(out: &mut Vec<u8>, field: u64, wire: u64) {
    varint(out, (field << 3) | wire);
}

/// A length-delimited field's size: its key (one byte: fields below 16), length and bytes.
fn len_field_size(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

fn len_field(out: &mut Vec<u8>, field: u64, len: usize) {
    key(out, field, LEN);
    varint(out, len as u64);
}

/// A datapoint message's size (numeric: timestamp and double; string: timestamp and text).
fn point_size(timestamp: i64, value: &Value) -> usize {
    let ts = 1 + varint_len(timestamp as u64);
    match value {
        Value::Numeric(_) => ts + 1 + 8,
        Value::String(s) => ts + len_field_size(s.len()),
    }
}

/// One item of the request: a time series and its datapoints, all numeric or all strings.
struct Item<'a> {
    external_id: &'a str,
    space: Option<&'a str>,
    points: Vec<&'a StoredPoint>,
    /// The size of its `NumericDatapoints` or `StringDatapoints` message.
    points_size: usize,
}

impl Item<'_> {
    fn reference_size(&self) -> usize {
        match self.space {
            None => len_field_size(self.external_id.len()),
            Some(space) => len_field_size(
                len_field_size(space.len()) + len_field_size(self.external_id.len()),
            ),
        }
    }

    fn size(&self) -> usize {
        self.reference_size() + len_field_size(self.points_size)
    }
}

/// The `DataPointInsertionRequest` of `points`, one item per time series and kind of value,
/// in order of first appearance.
pub(crate) fn insertion_request(points: &[&StoredPoint]) -> Vec<u8> {
    let mut items: Vec<Item<'_>> = Vec::new();
    let mut index: foldhash::HashMap<(Option<&str>, &str, bool), usize> =
        foldhash::HashMap::default();
    for stored in points {
        let is_string = matches!(stored.point.value, Value::String(_));
        let (space, external_id) = (stored.node.as_deref(), stored.point.external_id.as_str());
        let i = *index
            .entry((space, external_id, is_string))
            .or_insert_with(|| {
                items.push(Item {
                    external_id,
                    space,
                    points: Vec::new(),
                    points_size: 0,
                });
                items.len() - 1
            });
        let item = &mut items[i];
        item.points_size +=
            len_field_size(point_size(stored.point.timestamp, &stored.point.value));
        item.points.push(stored);
    }
    let total: usize = items.iter().map(|i| len_field_size(i.size())).sum();
    let mut out = Vec::with_capacity(total);
    for item in &items {
        len_field(&mut out, 1, item.size());
        match item.space {
            None => {
                len_field(&mut out, 2, item.external_id.len());
                out.extend_from_slice(item.external_id.as_bytes());
            }
            Some(space) => {
                len_field(
                    &mut out,
                    5,
                    len_field_size(space.len()) + len_field_size(item.external_id.len()),
                );
                len_field(&mut out, 1, space.len());
                out.extend_from_slice(space.as_bytes());
                len_field(&mut out, 2, item.external_id.len());
                out.extend_from_slice(item.external_id.as_bytes());
            }
        }
        let numeric = matches!(item.points[0].point.value, Value::Numeric(_));
        len_field(&mut out, if numeric { 3 } else { 4 }, item.points_size);
        for stored in &item.points {
            let (timestamp, value) = (stored.point.timestamp, &stored.point.value);
            len_field(&mut out, 1, point_size(timestamp, value));
            key(&mut out, 1, VARINT);
            varint(&mut out, timestamp as u64);
            match value {
                Value::Numeric(v) => {
                    key(&mut out, 2, FIXED64);
                    out.extend_from_slice(&v.to_le_bytes());
                }
                Value::String(s) => {
                    len_field(&mut out, 2, s.len());
                    out.extend_from_slice(s.as_bytes());
                }
            }
        }
    }
    debug_assert_eq!(out.len(), total);
    out
}

testing_pub! {
    /// A `DataPointInsertionRequest` read back as the JSON body of the same insert
    /// (`{"items": [{"externalId" | "instanceId", "datapoints": [{"timestamp", "value"}]}]}`),
    /// for fakes of CDF; `Err` says what is malformed.
    fn insertion_request_json(bytes: &[u8]) -> Result<serde_json::Value, String> {
        use serde_json::{Value as Json, json};
        let mut items = Vec::new();
        for (field, item) in fields(bytes)? {
            let Field::Len(item) = item else {
                return Err(format!("items: field {field} is not a message"));
            };
            let mut out = serde_json::Map::new();
            let mut points = Vec::new();
            for (field, value) in fields(item)? {
                match (field, value) {
                    (1, Field::Varint(id)) => {
                        out.insert("id".into(), json!(id as i64));
                    }
                    (2, Field::Len(s)) => {
                        out.insert("externalId".into(), json!(text(s)?));
                    }
                    (5, Field::Len(m)) => {
                        let mut id = serde_json::Map::new();
                        for (f, v) in fields(m)? {
                            let name = if f == 1 { "space" } else { "externalId" };
                            let Field::Len(s) = v else {
                                return Err("instanceId: not a string".into());
                            };
                            id.insert(name.into(), json!(text(s)?));
                        }
                        out.insert("instanceId".into(), Json::Object(id));
                    }
                    (kind @ (3 | 4), Field::Len(list)) => {
                        for (_, point) in fields(list)? {
                            let Field::Len(point) = point else {
                                return Err("datapoints: not a message".into());
                            };
                            let (mut timestamp, mut value) = (0i64, Json::Null);
                            for (f, v) in fields(point)? {
                                match (f, v) {
                                    (1, Field::Varint(t)) => timestamp = t as i64,
                                    (2, Field::Fixed64(bits)) if kind == 3 => {
                                        value = json!(f64::from_bits(bits));
                                    }
                                    (2, Field::Len(s)) if kind == 4 => value = json!(text(s)?),
                                    (f, _) => return Err(format!("datapoint: field {f}")),
                                }
                            }
                            if value.is_null() {
                                value = if kind == 3 { json!(0.0) } else { json!("") };
                            }
                            points.push(json!({"timestamp": timestamp, "value": value}));
                        }
                    }
                    (f, _) => return Err(format!("item: field {f}")),
                }
            }
            out.insert("datapoints".into(), Json::Array(points));
            items.push(Json::Object(out));
        }
        Ok(json!({ "items": items }))
    }
}

testing_pub! {
    /// The datapoints a `DataPointInsertionRequest` carries, counted without decoding them
    /// (for a fake of CDF that only counts); `Err` says what is malformed.
    fn insertion_request_points(bytes: &[u8]) -> Result<usize, String> {
        let mut n = 0;
        for (_, item) in fields(bytes)? {
            let Field::Len(item) = item else {
                return Err("items: not a message".into());
            };
            for (field, value) in fields(item)? {
                if let (3 | 4, Field::Len(list)) = (field, value) {
                    n += fields(list)?.len();
                }
            }
        }
        Ok(n)
    }
}

/// A field's value, as the wire format gives it.
#[cfg_attr(not(feature = "testing"), allow(dead_code))]
enum Field<'a> {
    Varint(u64),
    Fixed64(u64),
    Len(&'a [u8]),
}

/// The fields of a message, in order.
#[cfg_attr(not(feature = "testing"), allow(dead_code))]
fn fields(mut bytes: &[u8]) -> Result<Vec<(u64, Field<'_>)>, String> {
    fn read_varint(bytes: &mut &[u8]) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = bytes.split_first().ok_or("a varint is cut off")?;
            *bytes = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err("a varint is longer than 10 bytes".into())
    }
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let key = read_varint(&mut bytes)?;
        let value = match key & 7 {
            VARINT => Field::Varint(read_varint(&mut bytes)?),
            FIXED64 => {
                let (b, rest) = bytes.split_at_checked(8).ok_or("a double is cut off")?;
                bytes = rest;
                Field::Fixed64(u64::from_le_bytes(b.try_into().expect("8 bytes")))
            }
            LEN => {
                let len = usize::try_from(read_varint(&mut bytes)?).map_err(|e| e.to_string())?;
                let (b, rest) = bytes.split_at_checked(len).ok_or("a field is cut off")?;
                bytes = rest;
                Field::Len(b)
            }
            wire => return Err(format!("wire type {wire}")),
        };
        out.push((key >> 3, value));
    }
    Ok(out)
}

#[cfg_attr(not(feature = "testing"), allow(dead_code))]
fn text(bytes: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(bytes).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::super::datapoints::Datapoint;
    use super::*;
    use std::sync::Arc;

    fn point(external_id: &str, timestamp: i64, value: Value, node: Option<&str>) -> StoredPoint {
        StoredPoint {
            point: Datapoint {
                external_id: external_id.into(),
                timestamp,
                value,
            },
            series: None,
            node: node.map(Arc::from),
        }
    }

    #[test]
    fn known_bytes_and_a_round_trip_of_every_kind_of_item() {
        // One numeric point: item { externalId "a", numericDatapoints { { ts 1, value 1.5 } } }.
        let one = [point("a", 1, Value::Numeric(1.5), None)];
        let bytes = insertion_request(&one.iter().collect::<Vec<_>>());
        let mut want = vec![0x0a, 18, 0x12, 1, b'a', 0x1a, 13, 0x0a, 11, 0x08, 1, 0x11];
        want.extend_from_slice(&1.5f64.to_le_bytes());
        assert_eq!(bytes, want);

        let points = [
            point("s1", 1_700_000_000_000, Value::Numeric(0.0), None),
            point("text", -5, Value::String("ünï \"x\"".into()), None),
            point("s1", 1_700_000_000_001, Value::Numeric(-2.25e300), None),
            point("node", 7, Value::Numeric(3.0), Some("plant")),
            point("s1", 9, Value::String("mixed in".into()), None),
            point("text", 300, Value::String(String::new()), None),
        ];
        let bytes = insertion_request(&points.iter().collect::<Vec<_>>());
        assert_eq!(
            insertion_request_json(&bytes).unwrap(),
            serde_json::json!({"items": [
                {"externalId": "s1", "datapoints": [
                    {"timestamp": 1_700_000_000_000_i64, "value": 0.0},
                    {"timestamp": 1_700_000_000_001_i64, "value": -2.25e300}]},
                {"externalId": "text", "datapoints": [
                    {"timestamp": -5, "value": "ünï \"x\""}, {"timestamp": 300, "value": ""}]},
                {"instanceId": {"space": "plant", "externalId": "node"},
                 "datapoints": [{"timestamp": 7, "value": 3.0}]},
                // A string among a series' numbers: an item of its own (CDF refuses one).
                {"externalId": "s1", "datapoints": [{"timestamp": 9, "value": "mixed in"}]},
            ]})
        );
        assert!(insertion_request_json(&bytes[..bytes.len() - 1]).is_err());
        assert_eq!(insertion_request_points(&bytes), Ok(points.len()));
        assert!(insertion_request_points(&bytes[..bytes.len() - 1]).is_err());
    }
}
