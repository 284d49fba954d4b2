//! The one place where errors become gRPC `Status` values, so codes stay consistent (the
//! ship client's retry policy keys on them) and no detail that could carry an identifier
//! reaches a client: storage failures are logged here and answered with a generic message.
use tonic::{Code, Status};

use super::{store::StoreError, ServerError};
use crate::rpc::display_chain;

impl From<ServerError> for Status {
    fn from(e: ServerError) -> Self {
        match e {
            ServerError::Invalid(why) => Status::invalid_argument(why),
            ServerError::Unimplemented(what) => {
                Status::unimplemented(format!("{what} is not implemented by this collector yet"))
            }
            ServerError::Store(StoreError::InvalidBatch(why)) => {
                Status::invalid_argument(format!("invalid batch: {why}"))
            }
            ServerError::Store(StoreError::AgentTenant { .. }) => {
                Status::permission_denied("this agent id is bound to another tenant")
            }
            ServerError::Store(StoreError::NotSealed) => {
                Status::failed_precondition("encryption at rest is off on this collector")
            }
            ServerError::Store(e) => {
                tracing::error!(error = %display_chain(&e), "storage failed");
                Status::new(Code::Unavailable, "storage failed; retry later")
            }
            e @ (ServerError::Listen(_)
            | ServerError::TlsFile { .. }
            | ServerError::Transport(_)) => {
                tracing::error!(error = %display_chain(&e), "server failure");
                Status::internal("server failure")
            }
        }
    }
}
