//! Log-once bookkeeping for things the inventory cannot see.
//!
//! The agent re-collects its inventory periodically. When NVML is missing or
//! sysfs has no DRM class, saying so on every pass would flood the log, so a
//! [`Notes`] remembers the last message per topic and logs only when it
//! changes. When the condition goes away ([`Notes::clear`]) the next
//! occurrence is logged again.

use std::collections::HashMap;
use std::sync::Mutex;

/// Last message logged per topic.
#[derive(Debug, Default)]
pub(crate) struct Notes {
    last: Mutex<HashMap<&'static str, String>>,
}

impl Notes {
    /// Logs `message` at info level unless it is what `topic` last said.
    pub(crate) fn info(&self, topic: &'static str, message: String) {
        if self.is_new(topic, &message) {
            tracing::info!(topic, "{message}");
        }
    }

    /// Logs `message` at warn level unless it is what `topic` last said.
    pub(crate) fn warn(&self, topic: &'static str, message: String) {
        if self.is_new(topic, &message) {
            tracing::warn!(topic, "{message}");
        }
    }

    /// The condition behind `topic` is gone.
    pub(crate) fn clear(&self, topic: &'static str) {
        self.lock().remove(topic);
    }

    fn is_new(&self, topic: &'static str, message: &str) -> bool {
        let mut last = self.lock();
        if last.get(topic).is_some_and(|m| m == message) {
            return false;
        }
        last.insert(topic, message.to_owned());
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<&'static str, String>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.last.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_are_suppressed_until_cleared_or_changed() {
        let notes = Notes::default();
        assert!(notes.is_new("nvml", "gone"));
        assert!(!notes.is_new("nvml", "gone"));
        assert!(notes.is_new("drm", "gone"));
        assert!(notes.is_new("nvml", "different"));
        notes.clear("nvml");
        assert!(notes.is_new("nvml", "different"));
    }
}
