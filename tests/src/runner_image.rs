//! Builds the local Docker image `autogit-test/runner:dev` without any registry.
//!
//! The image is a bare root filesystem: the `autogit-test-runner` binary as
//! `/usr/local/bin/gitlab-runner` (also linked from `/usr/bin/gitlab-runner`) and its
//! entrypoint, the shared libraries `ldd` lists for it, and Debian's static
//! `/bin/busybox` (package `busybox-static`) with a few applet links so `sh`, `sleep`
//! and friends exist. It is packed with `tar` and loaded with `docker import`, so no
//! base image has to be pulled. The Docker CLI honours `DOCKER_HOST`; without it the
//! daemon at `/var/run/docker.sock` is used.
//!
//! The image carries a label with a SHA-256 over everything copied into it; when an
//! image with the same label already exists, [`ensure_test_runner_image`] returns at
//! once, so calling it from every test is cheap.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};

/// The tag of the test runner image.
pub const TEST_RUNNER_IMAGE: &str = "autogit-test/runner:dev";
/// Label holding the content hash of the image's files.
pub const CONTENT_LABEL: &str = "org.autogit.test-runner.sha256";
/// Where the official image keeps the runner binary; ours matches.
pub const RUNNER_PATH_IN_IMAGE: &str = "/usr/local/bin/gitlab-runner";
/// Debian's statically linked busybox (`apt-get install busybox-static`).
pub const BUSYBOX: &str = "/bin/busybox";

/// Bumped when the layout below changes, so old images are rebuilt.
const RECIPE_VERSION: &str = "autogit-test-runner-image/1";
const APPLETS: &[&str] = &[
    "sh", "ls", "cat", "echo", "sleep", "env", "true", "false", "mkdir", "rm", "ps", "id", "uname",
    "kill", "hostname",
];

/// Serialises builds inside one test process.
static BUILD_LOCK: Mutex<()> = Mutex::new(());

/// True if the `docker` CLI is installed and its daemon answers.
pub fn docker_available() -> bool {
    Command::new("docker")
        .args(["version", "--format", "{{.Server.APIVersion}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Makes sure `autogit-test/runner:dev` exists and contains `runner_bin`; returns the
/// image tag. Rebuilds only when the binary, busybox or a library changed.
pub fn ensure_test_runner_image(runner_bin: &Path) -> anyhow::Result<String> {
    let _guard = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if !runner_bin.is_file() {
        bail!("test runner binary {} does not exist", runner_bin.display());
    }
    let busybox = Path::new(BUSYBOX);
    if !busybox.is_file() {
        bail!(
            "{BUSYBOX} not found: install Debian's busybox-static (apt-get install -y busybox-static)"
        );
    }
    let libs = shared_libraries(runner_bin)?;
    let hash = content_hash(runner_bin, busybox, &libs)?;
    if image_label(TEST_RUNNER_IMAGE)?.as_deref() == Some(hash.as_str()) {
        return Ok(TEST_RUNNER_IMAGE.to_owned());
    }
    let dir = tempfile::tempdir().context("create a temporary directory for the rootfs")?;
    let root = dir.path().join("root");
    build_rootfs(&root, runner_bin, busybox, &libs)?;
    import(&root, &hash)?;
    Ok(TEST_RUNNER_IMAGE.to_owned())
}

/// Absolute paths of the shared objects `ldd` resolves for `bin` (none if static).
fn shared_libraries(bin: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(bin)
        .output()
        .context("run ldd on the test runner binary")?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if text.contains("not a dynamic executable") || text.contains("statically linked") {
        return Ok(Vec::new());
    }
    if !out.status.success() {
        bail!("ldd {} failed: {}", bin.display(), text.trim());
    }
    let mut libs = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            if line.contains("not found") {
                bail!("ldd: library missing for {}: {line}", bin.display());
            }
            libs.push(PathBuf::from(p));
        }
    }
    libs.sort();
    libs.dedup();
    Ok(libs)
}

fn hash_file(hasher: &mut Sha256, path: &Path) -> anyhow::Result<()> {
    let mut f = fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut buf = vec![0u8; 1 << 16];
    hasher.update(path.as_os_str().as_encoded_bytes());
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("read {}", path.display()))?;
        if n == 0 {
            return Ok(());
        }
        hasher.update(&buf[..n]);
    }
}

fn content_hash(runner_bin: &Path, busybox: &Path, libs: &[PathBuf]) -> anyhow::Result<String> {
    let mut h = Sha256::new();
    h.update(RECIPE_VERSION.as_bytes());
    hash_file(&mut h, runner_bin)?;
    hash_file(&mut h, busybox)?;
    for lib in libs {
        hash_file(&mut h, lib)?;
    }
    Ok(hex::encode(h.finalize()))
}

/// The content label of `image`, or `None` if the image does not exist.
fn image_label(image: &str) -> anyhow::Result<Option<String>> {
    let format = format!("{{{{ index .Config.Labels \"{CONTENT_LABEL}\" }}}}");
    let out = Command::new("docker")
        .args(["image", "inspect", "--format", &format, image])
        .output()
        .context("run `docker image inspect` (is the docker CLI installed?)")?;
    if !out.status.success() {
        return Ok(None);
    }
    let label = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    Ok((!label.is_empty() && label != "<no value>").then_some(label))
}

fn copy_into(root: &Path, src: &Path, dest_in_image: &Path) -> anyhow::Result<()> {
    let rel = dest_in_image.strip_prefix("/").unwrap_or(dest_in_image);
    let dest = root.join(rel);
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
    }
    fs::copy(src, &dest).with_context(|| format!("copy {} into the rootfs", src.display()))?;
    Ok(())
}

fn build_rootfs(
    root: &Path,
    runner_bin: &Path,
    busybox: &Path,
    libs: &[PathBuf],
) -> anyhow::Result<()> {
    use std::os::unix::fs::{PermissionsExt, symlink};
    for d in [
        "bin",
        "usr/bin",
        "usr/local/bin",
        "etc",
        "tmp",
        "root",
        "home/gitlab-runner",
    ] {
        fs::create_dir_all(root.join(d)).with_context(|| format!("create /{d} in the rootfs"))?;
    }
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777))
        .context("make /tmp world-writable")?;
    copy_into(root, runner_bin, Path::new(RUNNER_PATH_IN_IMAGE))?;
    fs::set_permissions(
        root.join(RUNNER_PATH_IN_IMAGE.trim_start_matches('/')),
        fs::Permissions::from_mode(0o755),
    )
    .context("make the runner executable")?;
    symlink(RUNNER_PATH_IN_IMAGE, root.join("usr/bin/gitlab-runner"))
        .context("link /usr/bin/gitlab-runner")?;
    copy_into(root, busybox, Path::new("/bin/busybox"))?;
    for applet in APPLETS {
        symlink("/bin/busybox", root.join("bin").join(applet))
            .with_context(|| format!("link /bin/{applet}"))?;
    }
    for lib in libs {
        copy_into(root, lib, lib)?;
    }
    fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")
        .context("write /etc/passwd")?;
    fs::write(root.join("etc/group"), "root:x:0:\n").context("write /etc/group")?;
    Ok(())
}

/// `tar -C root -c . | docker import --change ... - autogit-test/runner:dev`.
fn import(root: &Path, hash: &str) -> anyhow::Result<()> {
    let mut tar = Command::new("tar")
        .arg("-C")
        .arg(root)
        .args(["--numeric-owner", "--owner=0", "--group=0", "-c", "."])
        .stdout(Stdio::piped())
        .spawn()
        .context("run tar (is it installed?)")?;
    let tar_out = tar.stdout.take().context("capture tar output")?;
    let import = Command::new("docker")
        .args([
            "import",
            "--change",
            &format!("ENTRYPOINT [\"{RUNNER_PATH_IN_IMAGE}\"]"),
            "--change",
            &format!("LABEL {CONTENT_LABEL}={hash}"),
            "--change",
            "WORKDIR /home/gitlab-runner",
            "-",
            TEST_RUNNER_IMAGE,
        ])
        .stdin(Stdio::from(tar_out))
        .output()
        .context("run docker import")?;
    let tar_status = tar.wait().context("wait for tar")?;
    if !tar_status.success() {
        bail!("tar of the runner rootfs failed: {tar_status}");
    }
    if !import.status.success() {
        bail!(
            "docker import of {TEST_RUNNER_IMAGE} failed: {}",
            String::from_utf8_lossy(&import.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_of_a_dynamic_binary_lists_libc() {
        let libs = shared_libraries(Path::new("/bin/ls")).unwrap_or_default();
        assert!(
            libs.iter().any(|l| l.to_string_lossy().contains("libc.so")),
            "{libs:?}"
        );
    }

    #[test]
    fn static_busybox_has_no_libraries() {
        if Path::new(BUSYBOX).is_file() {
            assert_eq!(shared_libraries(Path::new(BUSYBOX)).ok(), Some(vec![]));
        }
    }
}
