//! The node's stable identity and private files in its state directory.

use std::path::Path;

const NODE_ID_FILE: &str = "node-id";

/// The node id kept in `state_dir`, created on first start.
pub fn node_id(state_dir: &Path) -> std::io::Result<String> {
    let path = state_dir.join(NODE_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(id) if is_node_id(id.trim()) => Ok(id.trim().to_owned()),
        Ok(_) => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "{} does not hold a node id; delete it to get a new one",
                path.display()
            ),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = uuid::Uuid::now_v7().to_string();
            write_private(&path, id.as_bytes())?;
            tracing::info!(node_id = %id, "new node identity");
            Ok(id)
        }
        Err(e) => Err(e),
    }
}

fn is_node_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Creates `dir` (and parents) readable only by its owner.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

pub use sluice_keys::private_file::write as write_private;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_id_is_created_once_and_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = node_id(dir.path()).expect("create");
        assert_eq!(node_id(dir.path()).expect("read"), first);
        std::fs::write(dir.path().join(NODE_ID_FILE), "not/an id").expect("write");
        assert!(node_id(dir.path()).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn private_files_are_mode_0600() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        write_private(&path, b"one").expect("write");
        write_private(&path, b"two").expect("overwrite");
        assert_eq!(std::fs::read(&path).expect("read"), b"two");
        assert_eq!(
            std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777,
            0o600
        );
        assert!(!path.with_extension("tmp").exists());
    }
}
