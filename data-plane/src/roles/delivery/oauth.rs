//! OAuth 2.0 access tokens for the definitions that authenticate so (Google Ads, Microsoft
//! Advertising): fetched from the token endpoint on first use and again a minute before
//! they expire, one at a time per destination.

use std::time::{Duration, Instant};

use sluice_pipeline::destinations::Resolved;

/// Refetched this long before the vendor says a token expires.
const EARLY: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct Tokens {
    current: tokio::sync::Mutex<Option<(String, Instant)>>,
}

impl Tokens {
    /// A valid access token, or why there is none (worth retrying: the token endpoint may
    /// be down, and a bad client secret is fixed on the node without losing events).
    pub async fn get(
        &self,
        http: &super::guard::Guarded,
        resolved: &Resolved,
    ) -> Result<String, String> {
        let Some((url, form)) = resolved.token_request() else {
            return Err("the definition names no token endpoint".into());
        };
        let mut current = self.current.lock().await;
        if let Some((token, expires)) = current.as_ref()
            && Instant::now() + EARLY < *expires
        {
            return Ok(token.clone());
        }
        let response = http
            .post(&url)
            .map_err(|refusal| format!("the token endpoint: {refusal}"))?
            .timeout(Duration::from_secs(10))
            .form(&form)
            .send()
            .await
            .map_err(|e| format!("cannot reach the token endpoint: {}", e.without_url()))?;
        let status = response.status().as_u16();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        let Some(token) = body.get("access_token").and_then(|t| t.as_str()) else {
            let why = body
                .get("error_description")
                .or_else(|| body.get("error"))
                .and_then(|e| e.as_str())
                .unwrap_or("no access_token in the answer");
            return Err(format!("the token endpoint refused (HTTP {status}): {why}"));
        };
        let lifetime = body
            .get("expires_in")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(3600);
        *current = Some((
            token.to_owned(),
            Instant::now() + Duration::from_secs(lifetime),
        ));
        tracing::debug!(destination = %resolved.spec.name, expires_in = lifetime, "oauth token fetched");
        Ok(token.to_owned())
    }

    /// Forgets the token (the vendor answered 401 to it).
    pub async fn forget(&self) {
        *self.current.lock().await = None;
    }
}
