//! The last-known-good configuration: what the node runs on when the control plane is away.

use std::path::{Path, PathBuf};

use crate::applied::AppliedConfig;
use crate::identity::write_private;

const FILE: &str = "last-known-good.json";

pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE)
}

/// Persists `config` (mode 0600, atomic rename). It holds no secret values.
pub fn save(state_dir: &Path, config: &AppliedConfig) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(config).map_err(std::io::Error::other)?;
    write_private(&path(state_dir), &json)
}

/// The saved configuration, if there is a readable one.
pub fn load(state_dir: &Path) -> Option<AppliedConfig> {
    let file = path(state_dir);
    let bytes = match std::fs::read(&file) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::error!(path = %file.display(), error = %e, "cannot read the last-known-good configuration");
            return None;
        }
    };
    match serde_json::from_slice(&bytes) {
        Ok(config) => Some(config),
        Err(e) => {
            tracing::error!(path = %file.display(), error = %e, "the last-known-good configuration is unreadable; ignoring it");
            None
        }
    }
}
