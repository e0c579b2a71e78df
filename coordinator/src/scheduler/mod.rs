//! Pools, placement and demand: pure scheduling logic (work in progress).
