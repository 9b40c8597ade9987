//! A generic webhook: the event (or its mapped fields) as JSON; batches as an array.

use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;
use sluice_proto::spec::WebhookSpec;

use super::payload::{Request, Shape, json_array};
use crate::json_out;

pub fn shape(event: &Map<String, Value>, output: Option<Map<String, Value>>) -> Shape {
    let mut out = Vec::with_capacity(512);
    json_out::write_map(&mut out, output.as_ref().unwrap_or(event));
    Shape::Payload(out)
}

pub fn request(
    spec: &WebhookSpec,
    secret: Option<&str>,
    batch: &[(&str, &[u8])],
    now_ms: i64,
) -> Request {
    let body = if spec.batch_size.unwrap_or(1) > 1 {
        json_array(batch.iter().map(|(_, p)| *p))
    } else {
        batch.first().map(|(_, p)| p.to_vec()).unwrap_or_default()
    };
    let mut headers = vec![("content-type".to_owned(), "application/json".to_owned())];
    headers.extend(
        spec.headers
            .iter()
            .map(|(k, v)| (k.to_lowercase(), v.clone())),
    );
    if let Some(secret) = secret {
        let t = now_ms / 1000;
        headers.push(("x-sluice-signature".into(), signature(secret, t, &body)));
    }
    Request {
        url: spec.url.clone(),
        headers,
        body,
    }
}

/// `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`: the timestamp lets a receiver
/// refuse replays.
pub fn signature(secret: &str, t: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={t},v1={hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_cover_the_time_and_the_body() {
        let a = signature("s3cret", 1_700_000_000, b"{}");
        assert!(
            a.starts_with("t=1700000000,v1=") && a.len() == 16 + 64,
            "{a}"
        );
        assert_ne!(a, signature("s3cret", 1_700_000_001, b"{}"));
        assert_ne!(a, signature("s3cret", 1_700_000_000, b"[]"));
        assert_ne!(a, signature("other", 1_700_000_000, b"{}"));
    }
}
