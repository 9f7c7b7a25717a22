//! `subscribe`: a dedicated RESP3 connection subscribed to the namespace's event channel,
//! with redis-rs's automatic resubscription, so a reconnect does not lose the subscription.
//! Writers publish from inside their write scripts, so an event is published exactly when
//! its write happened, and every process that subscribes sees it.

use aimon_core::{EventStream, Result, StorageEvent};
use futures::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ProtocolVersion, PushKind, Value};
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::backend::{RedisBackend, bytes};
use crate::conn::data_node_url;
use crate::error::from_redis;

impl RedisBackend {
    pub(crate) async fn open_subscription(&self) -> Result<EventStream> {
        let url = data_node_url(&self.config).await?;
        let info =
            redis::IntoConnectionInfo::into_connection_info(url.as_str()).map_err(from_redis)?;
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let client = crate::conn::client(&self.config, info.set_redis_settings(settings))?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.config.connect_timeout))
            .set_response_timeout(Some(self.config.response_timeout))
            .set_push_sender(tx)
            .set_automatic_resubscription();
        let mut manager = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(from_redis)?;
        manager
            .subscribe(self.keys.channel())
            .await
            .map_err(from_redis)?;
        let stream = UnboundedReceiverStream::new(rx).filter_map(move |push| {
            // The stream owns the connection: dropping the stream unsubscribes.
            let _keep = &manager;
            let event = match push.kind {
                PushKind::Message => push
                    .data
                    .get(1)
                    .and_then(|v: &Value| bytes(v))
                    .and_then(|b| serde_json::from_slice::<StorageEvent>(b).ok()),
                _ => None,
            };
            futures::future::ready(event)
        });
        Ok(Box::pin(stream))
    }
}
