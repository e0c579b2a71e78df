//! Counters of the demand module, readable at any time (for logs now and
//! metrics later) through [`DemandHandle::stats`](super::DemandHandle::stats).

use std::sync::atomic::{AtomicU64, Ordering};

/// What happened to a webhook delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookOutcome {
    /// A Job Hook handed to the tracker (200).
    Accepted,
    /// Same `Idempotency-Key` as an earlier accepted delivery (200, no
    /// effect).
    Duplicate,
    /// Missing or wrong `X-Gitlab-Token`, or webhooks disabled (401).
    Unauthorized,
    /// Not a valid Job Hook body (400).
    Malformed,
    /// Another event kind (200, ignored).
    Ignored,
    /// The tracker's queue was full (503; GitLab retries, polling covers).
    Overloaded,
}

/// Webhook deliveries by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WebhookStats {
    pub accepted: u64,
    pub duplicate: u64,
    pub unauthorized: u64,
    pub malformed: u64,
    pub ignored: u64,
    pub overloaded: u64,
}

/// Everything the demand module counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DemandStats {
    /// Webhook deliveries by outcome.
    pub webhooks: WebhookStats,
    /// Polls completed (whether or not every listing succeeded).
    pub polls: u64,
    /// Failed GitLab listings (one project, the GraphQL query or the
    /// member-project list).
    pub poll_errors: u64,
    /// Jobs fetched (`GET /projects/:id/jobs/:job_id`), successful or not.
    pub fetches: u64,
    /// Listings of one project's pending jobs that confirmed `pending`
    /// hints (`GET /projects/:id/jobs?scope[]=pending`).
    pub listings: u64,
    /// Failed job fetches and hint listings.
    pub fetch_errors: u64,
    /// Fetches not made because the fetch queue was full.
    pub fetches_dropped: u64,
}

/// The live counters behind [`DemandStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    accepted: AtomicU64,
    duplicate: AtomicU64,
    unauthorized: AtomicU64,
    malformed: AtomicU64,
    ignored: AtomicU64,
    overloaded: AtomicU64,
    pub polls: AtomicU64,
    pub poll_errors: AtomicU64,
    pub fetches: AtomicU64,
    pub listings: AtomicU64,
    pub fetch_errors: AtomicU64,
    pub fetches_dropped: AtomicU64,
}

impl Counters {
    pub fn webhook(&self, outcome: WebhookOutcome) {
        let c = match outcome {
            WebhookOutcome::Accepted => &self.accepted,
            WebhookOutcome::Duplicate => &self.duplicate,
            WebhookOutcome::Unauthorized => &self.unauthorized,
            WebhookOutcome::Malformed => &self.malformed,
            WebhookOutcome::Ignored => &self.ignored,
            WebhookOutcome::Overloaded => &self.overloaded,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn read(&self) -> DemandStats {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        DemandStats {
            webhooks: WebhookStats {
                accepted: r(&self.accepted),
                duplicate: r(&self.duplicate),
                unauthorized: r(&self.unauthorized),
                malformed: r(&self.malformed),
                ignored: r(&self.ignored),
                overloaded: r(&self.overloaded),
            },
            polls: r(&self.polls),
            poll_errors: r(&self.poll_errors),
            fetches: r(&self.fetches),
            listings: r(&self.listings),
            fetch_errors: r(&self.fetch_errors),
            fetches_dropped: r(&self.fetches_dropped),
        }
    }
}
