//! The Graph API client shared by the Send API (`deliver.rs`) and the Messenger Profile
//! API (`profile.rs`): JSON POSTs with the page token as `access_token`, and Graph's
//! error envelope `{"error":{"message","type","code","error_subcode","fbtrace_id"}}`
//! decoded. The token is never logged: errors drop the request URL.

use std::time::Duration;

use segue_bot::Secret;
use serde::Deserialize;
use serde_json::Value;

/// A Graph API error as Meta reports it.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct GraphErrorBody {
    #[serde(default)]
    pub message: String,
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub code: i64,
    #[serde(default)]
    pub error_subcode: Option<i64>,
    #[serde(default)]
    pub fbtrace_id: Option<String>,
}

#[derive(Deserialize)]
struct Envelope {
    error: GraphErrorBody,
}

/// Why a Graph call failed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum GraphError {
    /// Graph answered with its error envelope.
    #[error(
        "Graph API error {} (subcode {}, HTTP {status}, {}): {} [fbtrace_id {}]",
        .error.code,
        .error.error_subcode.map_or_else(|| "none".to_owned(), |s| s.to_string()),
        .error.kind,
        .error.message,
        .error.fbtrace_id.as_deref().unwrap_or("-")
    )]
    Api { status: u16, error: GraphErrorBody },
    /// A non-2xx answer without Graph's envelope (a proxy, an outage page).
    #[error("Graph API answered HTTP {status} without an error body")]
    Http { status: u16 },
    /// The request didn't get an answer (connection, timeout).
    #[error("Graph API unreachable: {0}")]
    Network(String),
}

/// A Graph API client for one page.
#[derive(Clone)]
pub(super) struct Graph {
    http: reqwest::Client,
    base: String,
    token: Secret,
}

impl std::fmt::Debug for Graph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Graph")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl Graph {
    pub(super) fn new(base: &str, token: Secret) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token,
        }
    }

    /// POSTs `body` to `{graph_url}/{path}`; the answer's JSON on success.
    pub(super) async fn post(&self, path: &str, body: &Value) -> Result<Value, GraphError> {
        let res = self
            .http
            .post(format!("{}/{path}", self.base))
            .query(&[("access_token", self.token.expose())])
            .json(body)
            .send()
            .await
            .map_err(|e| GraphError::Network(e.without_url().to_string()))?;
        let status = res.status().as_u16();
        let bytes = res
            .bytes()
            .await
            .map_err(|e| GraphError::Network(e.without_url().to_string()))?;
        if (200..300).contains(&status) {
            return Ok(serde_json::from_slice(&bytes).unwrap_or(Value::Null));
        }
        match serde_json::from_slice::<Envelope>(&bytes) {
            Ok(e) => Err(GraphError::Api {
                status,
                error: e.error,
            }),
            Err(_) => Err(GraphError::Http { status }),
        }
    }
}
