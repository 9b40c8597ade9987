use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// Subject on which control-plane replicas share events.
const SUBJECT: &str = "sluice.control.events";
/// Events buffered per subscriber before it lags (and re-reads the store instead).
const CAPACITY: usize = 4096;

/// Something every config-sync stream may need to act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ControlEvent {
    /// The tenant's configuration has a new version.
    ConfigChanged { tenant_id: String },
    /// A key was revoked: streams using it close, caches forget it.
    KeyRevoked {
        tenant_id: String,
        key_id: String,
        public_id: String,
    },
    /// The tenant is gone: its streams close.
    TenantDeleted { tenant_id: String },
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    origin: String,
    event: ControlEvent,
}

/// Fans events out to this replica's streams and, with NATS, to every other replica's.
#[derive(Clone)]
pub struct ChangeHub {
    local: broadcast::Sender<ControlEvent>,
    nats: Option<async_nats::Client>,
    origin: String,
}

impl ChangeHub {
    /// A hub for one process (the embedded default).
    pub fn in_process() -> Self {
        Self {
            local: broadcast::channel(CAPACITY).0,
            nats: None,
            origin: uuid::Uuid::new_v4().to_string(),
        }
    }

    /// A hub shared with the other replicas through NATS at `url`.
    pub async fn with_nats(url: &str) -> Result<Self, async_nats::ConnectError> {
        let client = async_nats::ConnectOptions::new()
            .name("sluice-control-plane")
            .retry_on_initial_connect()
            .connect(url)
            .await?;
        let hub = Self {
            nats: Some(client.clone()),
            ..Self::in_process()
        };
        let mut subscription = match client.subscribe(SUBJECT).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot subscribe to control events on nats");
                return Ok(hub);
            }
        };
        let (local, origin) = (hub.local.clone(), hub.origin.clone());
        tokio::spawn(async move {
            use futures_util::StreamExt as _;
            while let Some(message) = subscription.next().await {
                match serde_json::from_slice::<Envelope>(&message.payload) {
                    Ok(envelope) if envelope.origin != origin => {
                        let _ = local.send(envelope.event);
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "ignoring a malformed control event"),
                }
            }
            tracing::warn!("nats subscription to control events ended");
        });
        tracing::info!(url, "sharing control events over nats");
        Ok(hub)
    }

    /// Tells this replica's subscribers at once, and the other replicas through NATS.
    pub async fn publish(&self, event: ControlEvent) {
        let _ = self.local.send(event.clone());
        if let Some(nats) = &self.nats {
            let envelope = Envelope {
                origin: self.origin.clone(),
                event,
            };
            let payload = serde_json::to_vec(&envelope).unwrap_or_default();
            if let Err(e) = nats.publish(SUBJECT, payload.into()).await {
                tracing::error!(error = %e, "cannot share a control event over nats");
            } else if let Err(e) = nats.flush().await {
                tracing::warn!(error = %e, "nats flush failed");
            }
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<ControlEvent> {
        self.local.subscribe()
    }
}
