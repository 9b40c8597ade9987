//! The HTTP client destinations are reached with, held to the node's policy: the URL of every
//! request, every address a host name resolves to (so a name that resolves to a private
//! address is refused as that address would be), and every redirect.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::policy::{Policy, Refusal};

/// Redirects followed at most, each checked.
const MAX_REDIRECTS: usize = 5;

/// A client that refuses what the policy refuses.
#[derive(Clone)]
pub struct Guarded {
    client: reqwest::Client,
    policy: Arc<Policy>,
}

impl Guarded {
    pub fn new(policy: Arc<Policy>, pool_idle: Option<Duration>) -> Result<Self, reqwest::Error> {
        let redirects = policy.clone();
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .dns_resolver(Arc::new(Resolver(policy.clone())))
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() >= MAX_REDIRECTS {
                    return attempt.error(Refusal(format!("more than {MAX_REDIRECTS} redirects")));
                }
                match redirects.check_url(attempt.url()) {
                    Ok(()) => attempt.follow(),
                    Err(refusal) => attempt.error(Refusal(format!("a redirect: {}", refusal.0))),
                }
            }));
        if let Some(idle) = pool_idle {
            builder = builder.pool_idle_timeout(idle);
        }
        Ok(Self {
            client: builder.build()?,
            policy,
        })
    }

    /// A POST to `url`, unless the policy refuses it.
    pub fn post(&self, url: &str) -> Result<reqwest::RequestBuilder, Refusal> {
        let parsed = reqwest::Url::parse(url).map_err(|e| Refusal(format!("not a URL ({e})")))?;
        self.policy.check_url(&parsed)?;
        Ok(self.client.post(parsed))
    }
}

/// The policy's refusal inside a failed request (its resolver's or a redirect's), if that is
/// why it failed.
pub fn refusal(error: &reqwest::Error) -> Option<Refusal> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(refusal) = e.downcast_ref::<Refusal>() {
            return Some(refusal.clone());
        }
        source = e.source();
    }
    None
}

/// Resolves names as the system does, then keeps only the addresses the policy allows.
struct Resolver(Arc<Policy>);

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed = policy.check_resolved(&host, found.iter().map(SocketAddr::ip))?;
            let addrs: reqwest::dns::Addrs =
                Box::new(allowed.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}
