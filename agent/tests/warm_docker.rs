//! Warm images against the real Docker daemon (`DOCKER_HOST` or the
//! default socket): held images in the inventory, a warm pull from a local
//! registry (Debian's `docker-registry`, on loopback), and the disk-pressure
//! collector removing only what it may, least recently used first.

mod support;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use autogit_agent::docker::image_gc::{self, FreeSpace};
use autogit_agent::docker::images::ImageStore;
use autogit_agent::docker::pulled::{PULLED_FILE, PulledImages};
use autogit_agent::docker::warm::{ImageKeeper, KeeperConfig, WantedImage};
use support::{BUSYBOX_IMAGE, ensure_busybox_image};
use tokio::sync::mpsc;

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("run docker");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn uniq() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..10].to_owned()
}

/// A tiny image of its own (one file with unique content, so its own id).
fn make_image(reference: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), format!("{reference} {}\n", uniq())).unwrap();
    let script = format!(
        "tar -C '{}' -c f | docker import - {reference} >/dev/null",
        dir.path().display()
    );
    let ok = Command::new("sh").args(["-c", &script]).status().unwrap();
    assert!(ok.success(), "import {reference}");
    docker(&["image", "inspect", "-f", "{{.Id}}", reference])
}

/// Removes images by reference when dropped.
struct Images(Vec<String>);

impl Drop for Images {
    fn drop(&mut self) {
        for r in &self.0 {
            let _ = Command::new("docker")
                .args(["rmi", "-f", r])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

#[tokio::test]
async fn held_images_show_up_in_the_inventory_with_their_id() {
    let u = uniq();
    let reference = format!("autogit-test/held-{u}:1");
    let id = make_image(&reference);
    let second = format!("autogit-test/held-{u}:2");
    docker(&["tag", &reference, &second]);
    let _cleanup = Images(vec![reference.clone(), second.clone()]);
    let engine = support::engine().await;
    let info = engine.inventory_info().await;
    let mine: Vec<_> = info.images.iter().filter(|h| h.id == id).collect();
    let refs: Vec<_> = mine.iter().map(|h| h.reference.as_str()).collect();
    assert_eq!(refs, [reference.as_str(), second.as_str()], "{mine:?}");
    assert!(mine[0].size_bytes > 0);
    let mut sorted = info.images.clone();
    sorted.sort();
    assert_eq!(sorted, info.images, "sorted by reference");
    assert!(!info.images.iter().any(|h| h.reference.contains("<none>")));
    let wire = autogit_proto::v1::Inventory::from(&autogit_agent::inventory::Inventory {
        docker: info.clone(),
        ..Default::default()
    });
    assert!(
        wire.images
            .iter()
            .any(|h| h.reference == reference && h.id == id)
    );
}

/// A `docker-registry serve` on a free loopback port; killed on drop.
struct Registry {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Registry {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("storage").display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start docker-registry (Debian package docker-registry)");
        let reg = Registry {
            child,
            port,
            _dir: dir,
        };
        for _ in 0..100 {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
                let _ = s.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n");
                let mut answer = String::new();
                let _ = s.read_to_string(&mut answer);
                if answer.starts_with("HTTP/1.") {
                    return reg;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("docker-registry did not answer on 127.0.0.1:{port}");
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Plenty;

#[async_trait]
impl FreeSpace for Plenty {
    async fn free_bytes(&self) -> Option<u64> {
        Some(u64::MAX)
    }
}

#[tokio::test]
async fn warm_images_pulls_a_missing_image_from_the_registry_and_records_it() {
    ensure_busybox_image();
    let reg = Registry::start();
    let reference = format!("127.0.0.1:{}/warm/busybox:{}", reg.port, uniq());
    docker(&["tag", BUSYBOX_IMAGE, &reference]);
    docker(&["push", &reference]);
    docker(&["rmi", &reference]);
    let _cleanup = Images(vec![reference.clone()]);
    let engine = support::engine().await;
    assert_eq!(engine.image_id(&reference).await.unwrap(), None);

    let state = tempfile::tempdir().unwrap();
    let (tx, mut changed) = mpsc::channel(1);
    let keeper = ImageKeeper::spawn(
        Arc::new(engine.clone()),
        Arc::new(Plenty),
        PulledImages::load(&state.path().join(PULLED_FILE)),
        KeeperConfig {
            prepull: true,
            pull_concurrency: 2,
            gc_below_free: 1 << 30,
            allowed_images: vec!["*".into()],
            retry_after: Duration::from_secs(300),
        },
        tx,
    );
    keeper.want(vec![WantedImage {
        reference: reference.clone(),
        auth: None,
    }]);
    tokio::time::timeout(Duration::from_secs(60), changed.recv())
        .await
        .expect("the pull finishes within a minute")
        .expect("changed");
    let id = engine.image_id(&reference).await.unwrap().expect("pulled");
    let held = engine.inventory_info().await.images;
    assert!(held.iter().any(|h| h.reference == reference && h.id == id));
    // The record is written right after the pull is reported.
    let mut recorded = None;
    for _ in 0..50 {
        recorded = PulledImages::load(&state.path().join(PULLED_FILE))
            .get(&id)
            .cloned();
        if recorded.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let recorded = recorded.expect("AutoGit's pull is recorded");
    assert!(recorded.references.contains(&reference), "{recorded:?}");
}

/// Free space readings in turn (the last one repeats).
struct Scripted(Mutex<Vec<u64>>);

#[async_trait]
impl FreeSpace for Scripted {
    async fn free_bytes(&self) -> Option<u64> {
        let mut v = self.0.lock().unwrap();
        if v.len() > 1 {
            Some(v.remove(0))
        } else {
            v.first().copied()
        }
    }
}

#[tokio::test]
async fn the_collector_removes_only_autogit_images_nobody_wants_lru_first_until_above_the_threshold()
 {
    let u = uniq();
    let name = |n: &str| format!("autogit-test/gc-{u}-{n}:1");
    let [oldest, older, newer, wanted, operator, busy] =
        ["oldest", "older", "newer", "wanted", "operator", "busy"].map(name);
    let all = [&oldest, &older, &newer, &wanted, &operator, &busy];
    let ids: Vec<String> = all.iter().map(|r| make_image(r)).collect();
    let _cleanup = Images(all.iter().map(|s| s.to_string()).collect());
    // A container (never started) uses `busy`.
    let container = format!("autogit-test-gc-{u}");
    docker(&["create", "--name", &container, &busy, "/f"]);
    struct Rm(String);
    impl Drop for Rm {
        fn drop(&mut self) {
            let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
        }
    }
    let _rm = Rm(container);

    let mut pulled = PulledImages::in_memory();
    // `busy` is the least recently used and `wanted` next: both must stay.
    for (r, id, used) in [
        (&busy, &ids[5], 10),
        (&wanted, &ids[3], 20),
        (&oldest, &ids[0], 100),
        (&older, &ids[1], 200),
        (&newer, &ids[2], 300),
    ] {
        pulled.record_pull(id, r, used);
    }
    let engine = support::engine().await;
    let threshold = 1 << 40;
    // Below, below (after one removal), above (after two).
    let free = Scripted(Mutex::new(vec![1, 2, threshold + 1]));
    let removed = image_gc::collect(
        &engine,
        &free,
        &mut pulled,
        std::slice::from_ref(&wanted),
        threshold,
    )
    .await;
    let removed_ids: Vec<_> = removed.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(removed_ids, [ids[0].as_str(), ids[1].as_str()]);
    let present: HashSet<String> = engine
        .list_images()
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert!(!present.contains(&ids[0]) && !present.contains(&ids[1]));
    for (what, id) in [
        ("above the threshold again", &ids[2]),
        ("wanted", &ids[3]),
        ("not pulled by AutoGit", &ids[4]),
        ("used by a container", &ids[5]),
    ] {
        assert!(present.contains(id), "an image {what} was removed");
    }
    assert!(
        pulled.get(&ids[0]).is_none(),
        "a removed image is forgotten"
    );

    // Under lasting pressure everything removable goes, and nothing else.
    let free = Scripted(Mutex::new(vec![1]));
    let removed = image_gc::collect(
        &engine,
        &free,
        &mut pulled,
        std::slice::from_ref(&wanted),
        threshold,
    )
    .await;
    let removed_ids: Vec<_> = removed.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(removed_ids, [ids[2].as_str()]);
    // An image AutoGit pulled under two tags goes with both (untagged one
    // by one; removal by id would conflict).
    let twice = format!("autogit-test/gc-{u}-twice:1");
    let twice_id = make_image(&twice);
    let again = format!("autogit-test/gc-{u}-twice:2");
    docker(&["tag", &twice, &again]);
    let _cleanup2 = Images(vec![twice.clone(), again.clone()]);
    pulled.record_pull(&twice_id, &twice, 400);
    pulled.record_pull(&twice_id, &again, 400);
    let removed = image_gc::collect(
        &engine,
        &free,
        &mut pulled,
        std::slice::from_ref(&wanted),
        threshold,
    )
    .await;
    let removed_ids: Vec<_> = removed.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(removed_ids, [twice_id.as_str()]);
    assert_eq!(engine.image_id(&twice_id).await.unwrap(), None);
    // Disabled: nothing at all.
    let removed = image_gc::collect(&engine, &free, &mut pulled, &[], 0).await;
    assert!(removed.is_empty());
}
