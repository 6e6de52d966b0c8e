//! Authentication crypto (being written by a teammate; this stub keeps the tree compiling).

/// A stored SCRAM-SHA-256 verifier (stub).
#[derive(Debug)]
pub struct ScramVerifier;

impl ScramVerifier {
    /// Parse the stored form (stub).
    ///
    /// # Errors
    /// Never in the stub.
    pub fn parse(_s: &str) -> Result<Self, String> {
        Ok(ScramVerifier)
    }
}
