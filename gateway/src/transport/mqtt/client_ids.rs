//! Who an MQTT client id belongs to. A client id names a session, and rmqtt hands a session
//! (its subscriptions, the messages queued for it) to whoever connects with its id next; so
//! an id belongs to the identity that holds it: the one bound to it by configuration
//! (`client_ids`), else the one whose session has it, live or persistent, for as long as
//! that session exists. Another identity connecting with it is refused at CONNECT; it never
//! takes the session over, and never kicks the live connection.
//!
//! The holder of a session is read from rmqtt's own registry, so ownership lasts exactly as
//! long as the session (in memory: a restart forgets both). Between a CONNECT being let in
//! and its session entering the registry there is a moment in which two identities could
//! both find the id free; a claim made at CONNECT covers that moment.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rmqtt::context::ServerContext;
use rmqtt::types::ConnectInfo;

use crate::access::{AccessTable, Principal};

/// How long a claim made at CONNECT stands on its own: longer than any handshake (rmqtt's
/// handshake timeout is 30 s); by then its session is in the registry, or was never made.
const CLAIM: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct ClientIds {
    claims: Mutex<HashMap<String, (Principal, Instant)>>,
}

impl ClientIds {
    /// Lets `who` use the client id of `info`, or says why not. The claim is made before the
    /// registry is read, so that of two identities connecting at once, one sees the other's
    /// claim or its session.
    pub async fn claim(
        &self,
        scx: &ServerContext,
        access: &AccessTable,
        info: &ConnectInfo,
        who: &Principal,
    ) -> Result<(), String> {
        let client_id: &str = &info.id().client_id;
        access.may_use_client_id(who, client_id)?;
        {
            let mut claims = self.claims.lock().unwrap_or_else(|e| e.into_inner());
            claims.retain(|_, (_, at)| at.elapsed() < CLAIM);
            if let Some((holder, _)) = claims.get(client_id).filter(|(holder, _)| holder != who) {
                return Err(format!(
                    "client id '{client_id}' is being connected by another identity ({holder})"
                ));
            }
            claims.insert(client_id.to_owned(), (who.clone(), Instant::now()));
        }
        let session = scx.extends.shared().await.entry(info.id().clone()).session();
        if let Some(session) = session {
            let holder = super::gate::principal_of(access, session.connect_info().await.ok().as_deref());
            if &holder != who {
                self.release(client_id, who);
                return Err(format!("client id '{client_id}' is in use by another identity ({holder})"));
            }
        }
        Ok(())
    }

    /// A CONNECT by `who` with `client_id` was refused after its claim: the id is free again.
    pub fn release(&self, client_id: &str, who: &Principal) {
        let mut claims = self.claims.lock().unwrap_or_else(|e| e.into_inner());
        if claims.get(client_id).is_some_and(|(holder, _)| holder == who) {
            claims.remove(client_id);
        }
    }

    /// The session of `client_id` is in the registry now, and speaks for its holder.
    pub fn settled(&self, client_id: &str) {
        self.claims.lock().unwrap_or_else(|e| e.into_inner()).remove(client_id);
    }
}
