//! Running the stages a conversation asks for: one [`ChainSession`] per party of the session,
//! made at the party's first stage and dropped with the session, so an instance serves one
//! party's view of one session and never another's. The listener and the scripted client
//! both run stages through this.

use std::collections::HashMap;
use std::sync::Arc;

use super::{StageData, StageRequest};
use crate::policy::{ChainSession, StageInput, StageResult};
use crate::tenants::{Party, Snapshot};

/// The chain sessions of one SMTP session.
pub struct Stages {
    snapshot: Arc<Snapshot>,
    sessions: HashMap<Party, ChainSession>,
}

impl Stages {
    /// The stages of a session on `snapshot` (the conversation's).
    pub fn new(snapshot: Arc<Snapshot>) -> Self {
        Self { snapshot, sessions: HashMap::new() }
    }

    /// Run the stage asked for through its party's chain.
    pub async fn run(&mut self, request: &StageRequest) -> StageResult {
        let snapshot = &self.snapshot;
        let session = self
            .sessions
            .entry(request.party)
            .or_insert_with(|| ChainSession::new(snapshot.party(request.party).chain.clone()));
        let input = match &request.data {
            StageData::Session => StageInput::Session,
            StageData::Recipient(to) => StageInput::Recipient(to),
            StageData::Message(message) => StageInput::Message(message),
        };
        session.run(request.stage, &request.context, input).await
    }
}
