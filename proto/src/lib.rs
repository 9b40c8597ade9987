//! The contract between the Sluice control plane and its data planes: the error codes both
//! speak, the config-sync protocol (`sluice.config.v1`), and the pipeline spec with the one
//! validation both planes run.

pub mod catalogue;
pub mod error_code;
pub mod role;
pub mod spec;

pub use error_code::ErrorCode;
pub use role::Role;

/// The generated config-sync protocol.
#[cfg(feature = "grpc")]
pub mod config {
    pub mod v1 {
        #![allow(clippy::all, clippy::pedantic, missing_docs, unused_qualifications)]
        tonic::include_proto!("sluice.config.v1");

        impl Snapshot {
            /// The bytes the control plane signs and sends in a [`SignedSnapshot`].
            pub fn encode_to_bytes(&self) -> Vec<u8> {
                prost::Message::encode_to_vec(self)
            }
        }

        impl SignedSnapshot {
            /// The snapshot inside, with this send's nonce, without checking the signatures
            /// (a node checks them first; tools and tests that stand in for a node may not).
            pub fn decode_unverified(&self) -> Result<Snapshot, prost::DecodeError> {
                let mut snapshot = <Snapshot as prost::Message>::decode(self.snapshot.as_slice())?;
                snapshot.nonce.clone_from(&self.nonce);
                Ok(snapshot)
            }
        }
    }
}
