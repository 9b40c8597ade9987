//! The node's shutdown flag: one `watch` channel every task selects on.

use tokio::sync::watch;

/// Resolves once the watched flag is true (or its sender is gone).
pub async fn until_true(flag: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not Send; drop it before anything else awaits.
    let _ = flag.wait_for(|value| *value).await.map(|_| ());
}
