//! Names on the wire: the subject each worker publishes to, the subject its
//! snapshot responder answers on, and the message id that lets JetStream
//! drop a batch published twice.
//!
//! This module only formats and parses strings; it never talks to a broker.
//!
//! ```text
//! <events_prefix>.<worker>      one subject per worker, all in one stream
//! <snapshot_prefix>.<worker>    request/reply: the worker's current snapshot
//! Nats-Msg-Id: <worker>:<epoch>:<seq>
//! ```
//!
//! The snapshot prefix must not overlap the events prefix: a request on a
//! subject the stream captures would be stored and acknowledged by JetStream
//! instead of answered by the worker ([`Subjects::new`] refuses that).

use kvblocks::events::{InstanceId, StreamPosition};

use crate::error::ConfigError;

/// The header JetStream deduplicates on (set and read through
/// `async_nats::header::NATS_MESSAGE_ID`: a `&str` key makes a custom header
/// name that does not match the standard one a received message carries).
pub const MSG_ID_HEADER: &str = "Nats-Msg-Id";

/// The subjects of one deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects {
    events_prefix: String,
    snapshot_prefix: String,
}

impl Default for Subjects {
    fn default() -> Self {
        Self {
            events_prefix: "kvblocks.events".into(),
            snapshot_prefix: "kvblocks.snapshot".into(),
        }
    }
}

fn valid_prefix(prefix: &str) -> bool {
    !prefix.is_empty()
        && prefix.split('.').all(|token| {
            !token.is_empty()
                && token != "*"
                && token != ">"
                && !token.chars().any(|c| c.is_whitespace())
        })
}

impl Subjects {
    /// Subjects under `events_prefix` (events) and `snapshot_prefix`
    /// (snapshot requests).
    ///
    /// # Errors
    ///
    /// [`ConfigError::BadPrefix`] for an empty token, a wildcard or white
    /// space; [`ConfigError::OverlappingPrefixes`] if one prefix is inside the
    /// other.
    pub fn new(events_prefix: &str, snapshot_prefix: &str) -> Result<Self, ConfigError> {
        for prefix in [events_prefix, snapshot_prefix] {
            if !valid_prefix(prefix) {
                return Err(ConfigError::BadPrefix(prefix.to_owned()));
            }
        }
        let inside = |a: &str, b: &str| a == b || a.starts_with(&format!("{b}."));
        if inside(events_prefix, snapshot_prefix) || inside(snapshot_prefix, events_prefix) {
            return Err(ConfigError::OverlappingPrefixes);
        }
        Ok(Self {
            events_prefix: events_prefix.to_owned(),
            snapshot_prefix: snapshot_prefix.to_owned(),
        })
    }

    /// The events prefix.
    pub fn events_prefix(&self) -> &str {
        &self.events_prefix
    }

    /// The snapshot prefix.
    pub fn snapshot_prefix(&self) -> &str {
        &self.snapshot_prefix
    }

    /// The subject `worker` publishes its batches to.
    pub fn events(&self, worker: InstanceId) -> String {
        format!("{}.{worker}", self.events_prefix)
    }

    /// Every worker's events (the stream's subject filter).
    pub fn all_events(&self) -> String {
        format!("{}.>", self.events_prefix)
    }

    /// The subject `worker`'s snapshot responder listens on.
    pub fn snapshot(&self, worker: InstanceId) -> String {
        format!("{}.{worker}", self.snapshot_prefix)
    }

    /// The worker an events subject names, if it is one of ours.
    pub fn worker_of(&self, subject: &str) -> Option<InstanceId> {
        subject
            .strip_prefix(&self.events_prefix)?
            .strip_prefix('.')?
            .parse()
            .ok()
    }
}

/// The message id of `worker`'s batch at `position`: the same batch
/// published twice (a retry) gets the same id, and JetStream stores it once.
pub fn msg_id(worker: InstanceId, position: StreamPosition) -> String {
    format!("{worker}:{}:{}", position.epoch, position.seq)
}

/// The worker and position a message id names.
pub fn parse_msg_id(id: &str) -> Option<(InstanceId, StreamPosition)> {
    let mut parts = id.split(':');
    let worker = parts.next()?.parse().ok()?;
    let epoch = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    if parts.next().is_some() {
        return None;
    }
    Some((worker, StreamPosition { epoch, seq }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_name_the_worker_and_parse_back() {
        let subjects = Subjects::new("a.events", "a.snap").unwrap();
        assert_eq!(subjects.events(42), "a.events.42");
        assert_eq!(subjects.worker_of("a.events.42"), Some(42));
        assert_eq!(subjects.worker_of("a.events.x"), None);
        assert_eq!(subjects.worker_of("a.eventsX.42"), None);
        assert_eq!(subjects.worker_of("a.events.4.2"), None);
        assert_eq!(
            subjects.snapshot(u128::MAX),
            format!("a.snap.{}", u128::MAX)
        );
        assert_eq!(subjects.all_events(), "a.events.>");
    }

    #[test]
    fn bad_or_overlapping_prefixes_are_refused() {
        assert!(matches!(
            Subjects::new("", "b"),
            Err(ConfigError::BadPrefix(_))
        ));
        assert!(matches!(
            Subjects::new("a..b", "c"),
            Err(ConfigError::BadPrefix(_))
        ));
        assert!(matches!(
            Subjects::new("a.>", "c"),
            Err(ConfigError::BadPrefix(_))
        ));
        assert!(matches!(
            Subjects::new("a b", "c"),
            Err(ConfigError::BadPrefix(_))
        ));
        assert_eq!(
            Subjects::new("a", "a.snap"),
            Err(ConfigError::OverlappingPrefixes)
        );
        assert_eq!(
            Subjects::new("a.ev", "a.ev"),
            Err(ConfigError::OverlappingPrefixes)
        );
        assert!(Subjects::new("a.ev", "a.evx").is_ok());
    }

    #[test]
    fn message_ids_round_trip_and_reject_garbage() {
        let position = StreamPosition { epoch: 7, seq: 12 };
        assert_eq!(parse_msg_id(&msg_id(3, position)), Some((3, position)));
        assert_eq!(parse_msg_id("3:7"), None);
        assert_eq!(parse_msg_id("3:7:1:2"), None);
        assert_eq!(parse_msg_id("x:7:1"), None);
    }
}
