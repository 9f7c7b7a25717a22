//! `subscribe`: `LISTEN` on the store's channel through sqlx's `PgListener`, on a connection
//! of its own. Writers `NOTIFY` inside their write transactions (one small JSON payload per
//! stored item: ids and counts), so an event is delivered exactly when its write commits, to
//! every process that listens. `PgListener` reconnects and listens again by itself after a
//! lost connection; the task below keeps calling it until the stream is dropped.

use std::time::Duration;

use aimon_core::{EventStream, Result, StorageEvent};
use sqlx::postgres::PgListener;
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::backend::{DbResult, PostgresBackend};

impl PostgresBackend {
    pub(crate) async fn open_subscription(&self) -> Result<EventStream> {
        // A pool of one connection of its own: a listener holds its connection for as long as
        // it lives, so taking it from the store's pool would starve writers (with
        // max_connections = 1, the first subscriber would block every call).
        let own = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect_lazy_with((*self.pool.connect_options()).clone());
        let mut listener = PgListener::connect_with(&own).await.db()?;
        listener.listen(&self.channel).await.db()?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<StorageEvent>();
        let backend = self.config.name.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tx.closed() => break,
                    received = listener.recv() => match received {
                        Ok(notification) => {
                            match serde_json::from_str::<StorageEvent>(notification.payload()) {
                                Ok(event) => {
                                    if tx.send(event).is_err() {
                                        break;
                                    }
                                }
                                Err(e) => tracing::debug!(%backend, error = %e, "ignoring a foreign notification"),
                            }
                        }
                        Err(e) => {
                            // The next `recv` reconnects and listens again.
                            tracing::debug!(%backend, error = %e, "event listener lost its connection");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                }
            }
        });
        Ok(Box::pin(UnboundedReceiverStream::new(rx)))
    }
}
