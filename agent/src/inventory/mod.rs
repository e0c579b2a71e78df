//! Hardware inventory (work in progress).
