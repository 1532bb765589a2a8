//! Whether the hub can serve: [`Hub::check_engines`] asks both storage engines for an answer,
//! which a load balancer's readiness probe turns into "send me clients" or "not now".

use crate::error::{CoreError, ErrorKind, Result};
use crate::hub::Hub;
use crate::model::BlobId;

impl Hub {
    /// Asks each engine for something cheap: the metadata store reads the policy version in a
    /// read unit, and the blob store opens an id that no blob has (its "not found" is an
    /// answer). Ok when both answered; else the first error, whose message names the engine.
    pub async fn check_engines(&self) -> Result<()> {
        self.read(|tx| tx.policy_version())
            .await
            .map_err(|err| named("the metadata store", &err))?;
        let probe = BlobId::parse("00000000000000000000000000000000")?;
        match self.blobs.open(&probe).await {
            Ok(_) => Ok(()),
            Err(err) if err.kind() == ErrorKind::NotFound => Ok(()),
            Err(err) => Err(named("the blob store", &err)),
        }
    }
}

/// `err` with the engine it came from in front of its message.
fn named(engine: &str, err: &CoreError) -> CoreError {
    CoreError::new(err.kind(), format!("{engine}: {}", err.message()))
}
