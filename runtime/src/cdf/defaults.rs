//! [`Defaults`]: what the runtime puts on what it creates in CDF, from `cognite:`
//! (`data-set`, `external-id-prefix`, `security-categories`), and the lookups that resolve a
//! data set or an extraction pipeline named by the other kind of id.

use serde_json::json;

use super::{CdfClient, CdfError, CdfErrorKind};
pub use crate::config::EitherId;

/// What the runtime puts on what it creates or writes in CDF (python-extractor-utils'
/// `cognite.data-set`, `external-id-prefix` and `security-categories`). Read it with
/// [`CdfClient::defaults`]; a reload that changes `cognite:` changes it for every clone.
///
/// Where each applies:
/// - `external_id_prefix`: before the external id of every classic time series datapoints are
///   written to (and that `create-missing` creates), of every event, and of every classic file
///   the `files` extractor uploads. Not on RAW rows (keys), Data Modeling instances (their space
///   is their namespace) or datapoints addressed by `instanceId`.
/// - `data_set_id`: on time series that `create-missing` creates, on events that name no data
///   set of their own, and on classic files.
/// - `security_categories`: on time series that `create-missing` creates and on classic files
///   (events have none).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Defaults {
    /// The data set, by its internal id.
    pub data_set_id: Option<i64>,
    /// Put before external ids (may be empty).
    pub external_id_prefix: String,
    /// Security categories (may be empty).
    pub security_categories: Vec<i64>,
}

impl Defaults {
    /// What `cognite:` says, before a data set named by external id is looked up
    /// ([`CdfClient::resolve_defaults`](super::CdfClient)).
    pub(crate) fn of(config: &crate::config::CogniteConfig) -> Defaults {
        Defaults {
            data_set_id: match config.data_set() {
                Some(EitherId::Id(id)) => Some(id),
                _ => None,
            },
            external_id_prefix: config.external_id_prefix.clone(),
            security_categories: config.security_categories.clone(),
        }
    }

    /// `external_id` with the prefix before it.
    pub fn prefixed(&self, external_id: &str) -> String {
        let mut s = String::with_capacity(self.external_id_prefix.len() + external_id.len());
        s.push_str(&self.external_id_prefix);
        s.push_str(external_id);
        s
    }

    /// Puts the prefix before `external_id` in place (nothing when the prefix is empty).
    pub(crate) fn prefix(&self, external_id: &mut String) {
        if !self.external_id_prefix.is_empty() {
            external_id.insert_str(0, &self.external_id_prefix);
        }
    }
}

/// The `{id}` or `{externalId}` item of a `/byids` request.
fn item(id: &EitherId) -> serde_json::Value {
    match id {
        EitherId::Id(id) => json!({"id": id}),
        EitherId::ExternalId(x) => json!({"externalId": x}),
    }
}

/// The one item CDF answers a `/byids` lookup with, or an error naming what was looked up.
async fn by_id(
    client: &CdfClient,
    endpoint: &'static str,
    what: &str,
    id: &EitherId,
) -> Result<serde_json::Value, CdfError> {
    let answer = client
        .post(endpoint, endpoint, &json!({"items": [item(id)]}))
        .await
        .map_err(|mut e| {
            if e.status() == Some(400) && !e.missing().is_empty() {
                // Keeps the status and the request id for Cognite support.
                e.0.message = format!(
                    "{what} with {id} does not exist in this project (or this client may not read it)"
                );
            }
            e
        })?;
    match answer["items"].get(0) {
        Some(item) => Ok(item.clone()),
        None => Err(CdfError::new(
            CdfErrorKind::BadResponse,
            endpoint,
            format!("CDF's answer for the {what} with {id} holds no item"),
        )),
    }
}

/// The internal id of the data set `id` (`POST /datasets/byids`); an internal id is returned as
/// it is, without a request.
pub async fn data_set_id(client: &CdfClient, id: &EitherId) -> Result<i64, CdfError> {
    if let EitherId::Id(id) = id {
        return Ok(*id);
    }
    let item = by_id(client, "/datasets/byids", "the data set", id).await?;
    item["id"].as_i64().ok_or_else(|| {
        CdfError::new(
            CdfErrorKind::BadResponse,
            "/datasets/byids",
            format!("CDF's answer for the data set with {id} has no numeric `id`"),
        )
    })
}

/// The external id of the extraction pipeline `id` (`POST /extpipes/byids`); an external id is
/// returned as it is, without a request.
pub async fn pipeline_external_id(client: &CdfClient, id: &EitherId) -> Result<String, CdfError> {
    if let EitherId::ExternalId(x) = id {
        return Ok(x.clone());
    }
    let item = by_id(client, "/extpipes/byids", "the extraction pipeline", id).await?;
    item["externalId"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| {
            CdfError::new(
                CdfErrorKind::BadResponse,
                "/extpipes/byids",
                format!("CDF's answer for the extraction pipeline with {id} has no `externalId`"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_goes_first_and_an_empty_one_changes_nothing() {
        let d = Defaults {
            external_id_prefix: "plant-a:".into(),
            ..Defaults::default()
        };
        assert_eq!(d.prefixed("pump-1"), "plant-a:pump-1");
        let mut s = "pump-2".to_owned();
        d.prefix(&mut s);
        assert_eq!(s, "plant-a:pump-2");
        let mut s = "pump-3".to_owned();
        Defaults::default().prefix(&mut s);
        assert_eq!(s, "pump-3");
    }
}
