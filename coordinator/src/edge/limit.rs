//! A cap on concurrent connections of one listener.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// At most `max` connections at once; a permit is held per connection.
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct ConnLimit {
    name: &'static str,
    max: usize,
    permits: Arc<Semaphore>,
    refused: Arc<AtomicU64>,
}

impl ConnLimit {
    /// `name` appears in logs (e.g. `http`, `grpc`, `grpc-enrollment`).
    pub fn new(name: &'static str, max: usize) -> Self {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        ConnLimit {
            name,
            max,
            permits: Arc::new(Semaphore::new(max)),
            refused: Arc::new(AtomicU64::new(0)),
        }
    }

    /// A permit for one more connection, or `None` at the cap (counted).
    pub fn try_acquire(&self) -> Option<OwnedSemaphorePermit> {
        match self.permits.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// Connections open now.
    pub fn in_use(&self) -> usize {
        self.max - self.permits.available_permits()
    }

    /// Connections refused at the cap since start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_return_when_dropped() {
        let l = ConnLimit::new("t", 2);
        let a = l.try_acquire().expect("first");
        let _b = l.try_acquire().expect("second");
        assert!(l.try_acquire().is_none(), "over the cap");
        assert_eq!((l.in_use(), l.refused()), (2, 1));
        drop(a);
        assert!(l.try_acquire().is_some(), "a slot freed");
    }
}
