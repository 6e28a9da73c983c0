//! The JetStream stream that holds every worker's batches: its settings and
//! the one call that finds or creates it. Publisher and consumer both call
//! [`ensure_stream`], so either may start first.

use std::time::Duration;

use async_nats::jetstream::{self, stream};

use crate::error::{ConfigError, NatsError};
use crate::subjects::Subjects;

/// How the stream is created when it does not exist (an existing stream is
/// used as it is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSettings {
    /// The stream's name.
    pub name: String,
    /// The subjects: events go to `<events_prefix>.<worker>`.
    pub subjects: Subjects,
    /// How long JetStream remembers a message id to drop a retried batch
    /// (default 2 minutes: longer than any retry of the publisher).
    pub duplicate_window: Duration,
    /// Oldest batch kept (zero: no limit). A consumer that needs an older
    /// one resynchronises from a snapshot.
    pub max_age: Duration,
    /// Batches kept per worker (-1: no limit).
    pub max_messages_per_worker: i64,
    /// Batches kept in all (-1: no limit).
    pub max_messages: i64,
    /// In memory instead of on disk (a broker restart then loses the stream).
    pub in_memory: bool,
}

impl StreamSettings {
    /// Settings for a stream named `name` over `subjects`, keeping
    /// everything, on disk.
    ///
    /// # Errors
    ///
    /// [`ConfigError::BadName`] for a name JetStream refuses.
    pub fn new(name: &str, subjects: Subjects) -> Result<Self, ConfigError> {
        check_name(name)?;
        Ok(Self {
            name: name.to_owned(),
            subjects,
            duplicate_window: Duration::from_secs(120),
            max_age: Duration::ZERO,
            max_messages_per_worker: -1,
            max_messages: -1,
            in_memory: false,
        })
    }
}

/// Refuses names JetStream refuses (and anything that is not plain).
pub(crate) fn check_name(name: &str) -> Result<(), ConfigError> {
    let plain = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    if name.is_empty() || name.len() > 200 || !name.chars().all(plain) {
        return Err(ConfigError::BadName(name.to_owned()));
    }
    Ok(())
}

/// Finds the stream, or creates it with `settings`.
///
/// # Errors
///
/// [`NatsError::Stream`] if the broker is unreachable or refuses.
pub async fn ensure_stream(
    js: &jetstream::Context,
    settings: &StreamSettings,
) -> Result<stream::Stream, NatsError> {
    let config = stream::Config {
        name: settings.name.clone(),
        subjects: vec![settings.subjects.all_events()],
        duplicate_window: settings.duplicate_window,
        max_age: settings.max_age,
        max_messages_per_subject: settings.max_messages_per_worker,
        max_messages: settings.max_messages,
        storage: if settings.in_memory {
            stream::StorageType::Memory
        } else {
            stream::StorageType::File
        },
        ..Default::default()
    };
    js.get_or_create_stream(config)
        .await
        .map_err(|e| NatsError::Stream {
            stream: settings.name.clone(),
            message: e.to_string(),
        })
}

/// Connects to `url` with settings suited to a long-lived event transport:
/// reconnect forever with a short, capped delay.
///
/// # Errors
///
/// [`NatsError::Connect`] if no broker answers at `url` now (a broker that
/// is down at start is reported, not waited for).
pub async fn connect(url: &str) -> Result<async_nats::Client, NatsError> {
    async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(2))
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis((50 * attempts as u64).min(1000))
        })
        .connect(url)
        .await
        .map_err(|source| NatsError::Connect {
            url: url.to_owned(),
            source,
        })
}
