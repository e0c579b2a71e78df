//! placeholder

pub mod gitlab_sim;
pub mod runner_image;
