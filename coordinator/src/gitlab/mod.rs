//! GitLab REST client and webhook payloads (work in progress).
