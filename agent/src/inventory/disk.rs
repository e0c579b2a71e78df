//! Free disk space, for Docker's data root.

use std::io;
use std::path::Path;

/// Bytes available to unprivileged users on the file system that holds
/// `path` (`statvfs(3)`: `f_bavail * f_frsize`).
///
/// The docker part of the agent calls this with the daemon's `DockerRootDir`.
/// When the agent runs in a container the path must be visible there (bind
/// mount it); otherwise this fails with `NotFound`.
pub fn free_bytes(path: &Path) -> io::Result<u64> {
    let stat = nix::sys::statvfs::statvfs(path).map_err(io::Error::from)?;
    // fsblkcnt_t and c_ulong are u64 on the 64-bit targets we build for, but
    // not on every target, hence the conversions.
    #[allow(clippy::useless_conversion)]
    let blocks = u64::from(stat.blocks_available());
    #[allow(clippy::useless_conversion)]
    let fragment = u64::from(stat.fragment_size());
    Ok(blocks.saturating_mul(fragment))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_bytes_of_a_real_directory_is_positive() {
        let dir = std::env::temp_dir();
        assert!(free_bytes(&dir).expect("statvfs temp dir") > 0);
    }

    #[test]
    fn free_bytes_of_a_missing_path_is_not_found() {
        let err = free_bytes(Path::new("/nonexistent/autogit/docker-root"))
            .expect_err("missing path must fail");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
