//! Fixture tests for the scheduler: pool config, tag matching, placement
//! reasons and choices, and the demand plan.

use std::collections::BTreeMap;
use std::time::Duration;

use autogit_coordinator::config::pool::{self, default_command, pools_or_defaults, validate_pools};
use autogit_coordinator::runners::devices::device_nodes;
use autogit_coordinator::runners::spec::effective_mounts;
use autogit_coordinator::runners::template::render_runner;
use autogit_coordinator::scheduler::bytesize::GIB;
use autogit_coordinator::scheduler::*;
use figment::Figment;
use figment::providers::{Format, Toml};
use secrecy::SecretString;
use serde::Deserialize;
use time::OffsetDateTime;
use time::macros::datetime;
use uuid::Uuid;

// ------------------------------------------------------------- fixtures

#[derive(Debug, Deserialize)]
struct Config {
    #[serde(default)]
    pools: Vec<Pool>,
}

fn parse(toml: &str) -> Result<Vec<Pool>, String> {
    Figment::from(Toml::string(toml))
        .extract::<Config>()
        .map(|c| c.pools)
        .map_err(|e| e.to_string())
}

fn parse_one(toml: &str) -> Pool {
    let mut pools = parse(toml).expect("pool config parses");
    assert_eq!(pools.len(), 1);
    pools.remove(0)
}

fn validate_err(pool: &Pool) -> String {
    pool.validate()
        .expect_err("pool should be rejected")
        .to_string()
}

fn id(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

fn agent(n: u128, arch: Arch, cpus: u32, mem_gib: u64) -> AgentView {
    AgentView::new(id(n), &format!("host{n}"), arch, cpus, mem_gib * GIB)
}

fn gpu(vendor: GpuVendor, uuid: &str, mem_gib: u64, node: Option<&str>) -> GpuView {
    GpuView {
        vendor,
        uuid: uuid.to_owned(),
        memory: mem_gib * GIB,
        render_node: node.map(str::to_owned),
    }
}

fn small_pool(name: &str, arch: Arch, cpu: f64, mem_gib: u64) -> Pool {
    let mut p = Pool::new(name, &[name], arch);
    p.cpu_limit = cpu;
    p.mem_limit = ByteSize::gib(mem_gib);
    p
}

const NOW: OffsetDateTime = datetime!(2025-06-01 12:00 UTC);

fn runner(n: u128, pool: &str, agent: u128, state: RunnerState) -> RunnerView {
    RunnerView {
        id: id(n),
        pool: pool.to_owned(),
        agent_id: id(agent),
        gpus: Vec::new(),
        cpu: 1.0,
        memory: GIB,
        state,
        created_at: NOW - time::Duration::hours(1),
    }
}

fn idle_for(minutes: i64) -> RunnerState {
    RunnerState::Idle {
        since: NOW - time::Duration::minutes(minutes),
    }
}

fn input(
    pools: Vec<Pool>,
    pending: &[(&str, u32)],
    runners: Vec<RunnerView>,
    agents: Vec<AgentView>,
) -> PlanInput {
    PlanInput {
        pools,
        pending: pending.iter().map(|(p, n)| ((*p).to_owned(), *n)).collect(),
        runners,
        agents,
        strategy: Strategy::Spread,
        now: NOW,
    }
}

fn starts_per_pool(plan: &Plan) -> BTreeMap<&str, usize> {
    let mut m = BTreeMap::new();
    for s in &plan.starts {
        *m.entry(s.pool.as_str()).or_default() += 1;
    }
    m
}

// --------------------------------------------------------------- config

#[test]
fn full_pool_config_parses_with_aliases_and_units() {
    let pool = parse_one(
        r#"
        [[pools]]
        name = "cuda"
        tags = ["gpu", "nvidia", "a100"]
        run_untagged = false
        arch = "amd64"
        gpu = { vendor = "nvidia", count = 2, min_memory = "40GiB" }
        image = "gitlab/gitlab-runner:v18.2.0"
        command = ["run-single", "--executor", "shell", "--url", "{gitlab_url}"]
        env = { RUNNER_NAME = "autogit-{pool}-{runner_id}" }
        cpu_limit = 8
        mem_limit = "32GiB"
        max_runners = 3
        idle_min = 1
        idle_timeout = "90s"
        runner_type = "group"
        group_id = 42
        network_mode = "host"
        mounts = [{ source = "/srv/cache", target = "/cache", read_only = true }]
        docker_socket = false
        "#,
    );
    assert_eq!(pool.arch, Arch::X86_64.into());
    assert_eq!(
        pool.gpu,
        Some(GpuRequirement {
            vendor: GpuVendor::Nvidia,
            count: 2,
            min_memory: Some(ByteSize::gib(40)),
        })
    );
    assert_eq!(pool.cpu_limit, 8.0);
    assert_eq!(pool.mem_limit, ByteSize::gib(32));
    assert_eq!(pool.idle_timeout, Duration::from_secs(90));
    assert_eq!(pool.runner_type, RunnerType::Group { group_id: 42 });
    assert_eq!(pool.runner_type.gitlab_runner_type(), "group_type");
    assert_eq!(pool.network_mode.as_deref(), Some("host"));
    assert_eq!(effective_mounts(&pool).len(), 1, "no docker socket mount");
    pool.validate().expect("valid");
}

#[test]
fn omitted_keys_take_documented_defaults() {
    let pool = parse_one(
        r#"
        [[pools]]
        name = "arm64"
        tags = ["arm64"]
        arch = "arm64"
        "#,
    );
    assert_eq!(pool.arch, Arch::Aarch64.into());
    assert!(!pool.run_untagged);
    assert_eq!(pool.gpu, None);
    assert_eq!(pool.image, pool::DEFAULT_RUNNER_IMAGE);
    assert_eq!(pool.command, default_command(None, Arch::Aarch64.into()));
    assert_eq!(pool.cpu_limit, 2.0);
    assert_eq!(pool.mem_limit, ByteSize::gib(4));
    assert_eq!(pool.max_runners, 4);
    assert_eq!(pool.idle_min, 0);
    assert_eq!(pool.idle_timeout, Duration::from_secs(300));
    assert_eq!(pool.runner_type, RunnerType::Instance);
    assert!(pool.docker_socket);
    let mounts = effective_mounts(&pool);
    assert_eq!(mounts.len(), 1);
    assert_eq!(mounts[0].target, "/var/run/docker.sock");
    pool.validate().expect("valid");
}

#[test]
fn gpu_pool_without_command_gets_gpu_flags() {
    let pool = parse_one(
        r#"
        [[pools]]
        name = "rocm"
        tags = ["rocm"]
        arch = "x86_64"
        gpu = { vendor = "amd" }
        "#,
    );
    assert_eq!(pool.gpu.as_ref().map(|g| g.count), Some(1));
    let cmd = pool.command.join(" ");
    assert!(
        cmd.ends_with("--docker-devices /dev/kfd --docker-devices {render_node}"),
        "{cmd}"
    );
    pool.validate().expect("valid");

    let err = parse(
        r#"
        [[pools]]
        name = "rocm2"
        tags = ["rocm"]
        arch = "x86_64"
        gpu = { vendor = "amd", count = 2 }
        "#,
    )
    .unwrap_err();
    assert!(err.contains("pool 'rocm2': command must be set"), "{err}");
}

#[test]
fn unknown_keys_are_rejected() {
    let err = parse(
        r#"
        [[pools]]
        name = "x"
        tags = ["x"]
        arch = "x86_64"
        max_runner = 3
        "#,
    )
    .unwrap_err();
    assert!(err.contains("max_runner"), "{err}");

    let err = parse(
        r#"
        [[pools]]
        name = "x"
        tags = ["x"]
        arch = "x86_64"
        gpu = { vendor = "nvidia", vram = "8GiB" }
        "#,
    )
    .unwrap_err();
    assert!(err.contains("vram"), "{err}");
}

#[test]
fn bad_values_are_rejected_while_parsing() {
    let cases = [
        ("arch = \"ppc64le\"", "ppc64le"),
        (
            "arch = \"x86_64\"\nmem_limit = \"2 parsecs\"",
            "unknown unit",
        ),
        ("arch = \"x86_64\"\nidle_timeout = \"soon\"", "idle_timeout"),
        ("arch = \"x86_64\"\ngpu = { vendor = \"matrox\" }", "matrox"),
        (
            "arch = \"x86_64\"\nrunner_type = \"group\"",
            "pool 'x': group_id is required",
        ),
        (
            "arch = \"x86_64\"\nproject_id = 7",
            "pool 'x': project_id is only allowed",
        ),
    ];
    for (extra, want) in cases {
        let toml = format!("[[pools]]\nname = \"x\"\ntags = [\"x\"]\n{extra}\n");
        let err = parse(&toml).expect_err(extra);
        assert!(err.contains(want), "{extra}: {err}");
    }
}

#[test]
fn validation_names_pool_and_key() {
    let mut p = Pool::new("arm64", &["arm64"], Arch::Aarch64);
    p.max_runners = 1;
    p.idle_min = 2;
    assert_eq!(
        validate_err(&p),
        "pool 'arm64': max_runners must be >= idle_min (1 < 2)"
    );

    let mut p = Pool::new("arm64", &["arm64"], Arch::Aarch64);
    p.env.insert("TOKEN".into(), "{runner_tokn}".into());
    let err = validate_err(&p);
    assert!(
        err.starts_with("pool 'arm64': env.TOKEN uses unknown placeholder {runner_tokn}"),
        "{err}"
    );

    let mut p = Pool::new("arm64", &["arm64"], Arch::Aarch64);
    p.command.push("--docker-gpus".into());
    p.command.push("{docker_gpus}".into());
    let err = validate_err(&p);
    let at = p.command.len() - 1;
    assert!(
        err.contains(&format!("command[{at}] uses {{docker_gpus}}")),
        "{err}"
    );

    let mut p = Pool::new("any", &[], Arch::X86_64);
    assert!(validate_err(&p).contains("pool 'any': tags is empty and run_untagged = false"));
    p.run_untagged = true;
    p.validate().expect("an untagged catch-all pool is fine");

    type Case = (fn(&mut Pool), &'static str);
    let cases: Vec<Case> = vec![
        (|p| p.name = "Big Pool".into(), "pool 'Big Pool': name"),
        (|p| p.tags.push("a,b".into()), "tags tag \"a,b\""),
        (|p| p.tags.push("x".into()), "tags lists \"x\" twice"),
        (|p| p.cpu_limit = 0.0, "cpu_limit must be"),
        (|p| p.cpu_limit = f64::NAN, "cpu_limit must be"),
        (
            |p| p.mem_limit = ByteSize(1024),
            "mem_limit must be at least",
        ),
        (|p| p.max_runners = 0, "max_runners must be >= 1"),
        (
            |p| p.idle_timeout = Duration::ZERO,
            "idle_timeout must be longer",
        ),
        (|p| p.image = "a b".into(), "image"),
        (
            |p| p.runner_type = RunnerType::Project { project_id: 0 },
            "project_id must be >= 1",
        ),
        (|p| p.network_mode = Some(String::new()), "network_mode"),
        (
            |p| p.env.insert("1BAD".into(), "v".into()).map_or((), drop),
            "env.1BAD is not a valid",
        ),
        (|p| p.command.push("{pool".into()), "unclosed"),
        (
            |p| {
                p.mounts.push(Mount {
                    source: "/x".into(),
                    target: "relative".into(),
                    read_only: false,
                })
            },
            "mounts[0] target \"relative\" must be an absolute path",
        ),
        (
            |p| {
                p.mounts.push(Mount {
                    source: "/run/docker.sock".into(),
                    target: "/var/run/docker.sock".into(),
                    read_only: false,
                })
            },
            "docker_socket = true already does",
        ),
        (
            |p| {
                p.gpu = Some(GpuRequirement {
                    vendor: GpuVendor::Nvidia,
                    count: 0,
                    min_memory: None,
                })
            },
            "gpu.count must be >= 1",
        ),
    ];
    for (mutate, want) in cases {
        let mut p = Pool::new("x", &["x"], Arch::X86_64);
        mutate(&mut p);
        let err = validate_err(&p);
        assert!(err.contains(want), "want {want:?} in {err:?}");
    }
}

#[test]
fn render_node_needs_one_amd_or_intel_gpu() {
    let mut p = Pool::new("i", &["i"], Arch::X86_64).with_gpu(GpuVendor::Intel, 1);
    p.validate().expect("intel default command is valid");
    p.gpu = Some(GpuRequirement {
        vendor: GpuVendor::Intel,
        count: 2,
        min_memory: None,
    });
    assert!(validate_err(&p).contains("{render_node}"));
    let nvidia = Pool::new("n", &["n"], Arch::X86_64).with_gpu(GpuVendor::Nvidia, 2);
    nvidia.validate().expect("nvidia with two GPUs is valid");
}

#[test]
fn pool_set_validation_catches_duplicates_and_shadowing() {
    let a = Pool::new("a", &["x", "y"], Arch::X86_64);
    let b = Pool::new("b", &["y", "x"], Arch::Aarch64);
    let err = validate_pools(&[a.clone(), b]).unwrap_err().to_string();
    assert!(
        err.starts_with("pool 'b': tags are the same as pool 'a''s"),
        "{err}"
    );

    let err = validate_pools(&[a.clone(), a.clone()])
        .unwrap_err()
        .to_string();
    assert_eq!(err, "pool 'a': name is used by more than one pool");

    // Same tags, but the later pool takes untagged jobs the earlier refuses.
    let mut c = Pool::new("c", &["x", "y"], Arch::X86_64);
    c.run_untagged = true;
    validate_pools(&[a.clone(), c]).expect("c still receives untagged demand");

    let d = Pool::new("d", &["x"], Arch::X86_64);
    validate_pools(&[a, d]).expect("different tag sets are fine");
}

#[test]
fn builtin_defaults_are_valid_and_documented() {
    let pools = Pool::builtin_defaults();
    validate_pools(&pools).expect("defaults validate");
    let by_name: BTreeMap<&str, &Pool> = pools.iter().map(|p| (p.name.as_str(), p)).collect();
    assert_eq!(
        by_name.keys().copied().collect::<Vec<_>>(),
        ["amd", "amd64", "arm64", "nvidia", "riscv64"]
    );
    assert_eq!(by_name["arm64"].arch, Arch::Aarch64.into());
    assert_eq!(by_name["riscv64"].arch, Arch::Riscv64.into());
    assert_eq!(by_name["nvidia"].tags, ["gpu", "nvidia"]);
    assert_eq!(by_name["nvidia"].arch, Arch::X86_64.into());
    assert_eq!(
        by_name["nvidia"].gpu.as_ref().map(|g| (g.vendor, g.count)),
        Some((GpuVendor::Nvidia, 1))
    );
    assert_eq!(
        by_name["amd"].gpu.as_ref().map(|g| g.vendor),
        Some(GpuVendor::Amd)
    );
    assert!(pools.iter().all(|p| !p.run_untagged));

    assert_eq!(pools_or_defaults(Vec::new()), pools);
    let mine = vec![Pool::new("only", &["only"], Arch::X86_64)];
    assert_eq!(pools_or_defaults(mine.clone()), mine);
    assert_eq!(parse("").unwrap(), Vec::<Pool>::new());
}

#[test]
fn pools_round_trip_through_serde() {
    let mut pools = Pool::builtin_defaults();
    pools[0].runner_type = RunnerType::Project { project_id: 9 };
    pools[1].gpu = None;
    let json = serde_json::to_string(&pools).unwrap();
    let back: Vec<Pool> = serde_json::from_str(&json).unwrap();
    assert_eq!(back, pools);
}

#[test]
fn default_command_renders_a_one_job_runner() {
    let token = SecretString::from("glrt-TOPSECRET");
    let nvidia = Pool::builtin_defaults()
        .into_iter()
        .find(|p| p.name == "nvidia")
        .unwrap();
    let placement = Placement {
        agent_id: id(1),
        arch: autogit_coordinator::scheduler::Arch::X86_64,
        gpus: vec!["GPU-1111".into()],
        render_nodes: vec![],
    };
    let r = render_runner(
        &nvidia,
        "https://gitlab.example.com",
        &token,
        "run-7",
        &placement,
    )
    .unwrap();
    assert_eq!(r.image, pool::DEFAULT_RUNNER_IMAGE);
    let expected = format!(
        "run-single --executor docker \
         --docker-image alpine:3.20 --max-builds 1 --wait-timeout {} --docker-disable-cache \
         --docker-gpus device=GPU-1111",
        pool::DEFAULT_WAIT_TIMEOUT_S
    );
    assert_eq!(r.command.join(" "), expected);
    assert!(!format!("{r:?}").contains("TOPSECRET"));

    let mut p = Pool::new("p", &["p"], Arch::X86_64);
    p.env
        .insert("RUNNER_NAME".into(), "autogit-{pool}-{runner_id}".into());
    let r = render_runner(&p, "u", &token, "r1", &placement).unwrap();
    assert_eq!(
        r.env,
        vec![("RUNNER_NAME".to_owned(), "autogit-p-r1".to_owned())]
    );
}

#[test]
fn default_command_disables_the_docker_cache_unless_the_pool_keeps_it() {
    let flag = pool::DISABLE_CACHE_FLAG;
    let off = parse_one("[[pools]]\nname = \"a\"\ntags = [\"a\"]\narch = \"x86_64\"\n");
    assert!(!off.docker_cache);
    assert!(off.command.iter().any(|a| a == flag), "{:?}", off.command);
    let on = parse_one(
        "[[pools]]\nname = \"a\"\ntags = [\"a\"]\narch = \"x86_64\"\ndocker_cache = true\n",
    );
    assert!(on.docker_cache);
    assert!(!on.command.iter().any(|a| a == flag), "{:?}", on.command);
    assert!(
        Pool::new("p", &["p"], Arch::X86_64)
            .command
            .iter()
            .any(|a| a == flag)
    );
}

// ------------------------------------------------------------- matching

#[test]
fn job_tags_must_be_a_subset_of_pool_tags() {
    let pools = vec![
        Pool::new("amd64", &["amd64"], Arch::X86_64),
        Pool::new("amd64-docker", &["amd64", "docker"], Arch::X86_64),
    ];
    let names = |tags: &[&str]| {
        pools_for_job(&pools, tags)
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&["amd64"]), ["amd64", "amd64-docker"]);
    assert_eq!(names(&["docker", "amd64"]), ["amd64-docker"]);
    assert!(names(&["amd64", "gpu"]).is_empty());
    assert!(names(&["AMD64"]).is_empty(), "tags compare exactly");
    assert!(names(&[]).is_empty(), "no pool takes untagged jobs");
}

#[test]
fn untagged_jobs_only_go_to_run_untagged_pools() {
    let mut catch_all = Pool::new("general", &["linux"], Arch::X86_64);
    catch_all.run_untagged = true;
    let pools = vec![Pool::new("amd64", &["amd64"], Arch::X86_64), catch_all];
    let empty: [&str; 0] = [];
    let names: Vec<_> = pools_for_job(&pools, &empty)
        .map(|p| p.name.clone())
        .collect();
    assert_eq!(names, ["general"]);
    assert_eq!(
        pool_for_job(&pools, &empty).map(|p| p.name.as_str()),
        Some("general")
    );
    // A run_untagged pool still takes tagged jobs that fit.
    assert_eq!(
        pool_for_job(&pools, &["linux"]).map(|p| p.name.as_str()),
        Some("general")
    );
}

#[test]
fn each_job_is_counted_for_its_most_specific_pool() {
    let pools = vec![
        Pool::new("gpu-a100", &["gpu", "nvidia", "a100"], Arch::X86_64),
        Pool::new("nvidia", &["gpu", "nvidia"], Arch::X86_64),
        Pool::new("amd", &["gpu", "amd"], Arch::X86_64),
    ];
    let pick = |tags: &[&str]| pool_for_job(&pools, tags).map(|p| p.name.as_str());
    assert_eq!(pick(&["gpu", "nvidia"]), Some("nvidia"));
    assert_eq!(pick(&["nvidia"]), Some("nvidia"));
    assert_eq!(pick(&["a100"]), Some("gpu-a100"));
    // Equally specific: config order decides.
    assert_eq!(pick(&["gpu"]), Some("nvidia"));
    assert_eq!(pick(&["tpu"]), None);

    let jobs: Vec<Vec<&str>> = vec![
        vec!["gpu", "nvidia"],
        vec!["gpu"],
        vec!["gpu", "nvidia", "a100"],
        vec!["amd"],
        vec!["tpu"],
        vec![],
    ];
    let demand = count_demand(&pools, jobs.iter().map(Vec::as_slice));
    assert_eq!(
        demand.per_pool,
        BTreeMap::from([
            ("amd".to_owned(), 1),
            ("gpu-a100".to_owned(), 1),
            ("nvidia".to_owned(), 2)
        ])
    );
    assert_eq!(demand.unmatched, 2);
    assert_eq!(
        demand.per_pool.values().sum::<u32>() + demand.unmatched,
        jobs.len() as u32
    );
}

// ------------------------------------------------------------ placement

#[test]
fn placement_explains_arch_state_and_cordon_blockers() {
    let arm = small_pool("arm64", Arch::Aarch64, 1.0, 1);
    let err = place(&arm, &[agent(1, Arch::X86_64, 8, 16)], Strategy::Spread).unwrap_err();
    assert_eq!(
        err,
        Unplaceable::NoAgentOfArch {
            arch: Arch::Aarch64.into()
        }
    );
    assert_eq!(err.to_string(), "no aarch64 agent ready (none enrolled)");

    let mut a = agent(1, Arch::Aarch64, 8, 16);
    a.state = AgentState::Unreachable;
    let mut b = agent(2, Arch::Aarch64, 8, 16);
    b.state = AgentState::Lost;
    let mut c = agent(3, Arch::Aarch64, 8, 16);
    c.state = AgentState::Unreachable;
    let err = place(&arm, &[a, b, c], Strategy::Spread).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no aarch64 agent ready (2 unreachable, 1 lost)"
    );

    let x86 = small_pool("amd64", Arch::X86_64, 1.0, 1);
    let mut a = agent(1, Arch::X86_64, 8, 16);
    a.cordoned = true;
    let mut b = agent(2, Arch::X86_64, 8, 16);
    b.cordoned = true;
    let mut revoked = agent(3, Arch::X86_64, 8, 16);
    revoked.state = AgentState::Revoked;
    let err = place(&x86, &[a.clone(), b, revoked], Strategy::Spread).unwrap_err();
    assert_eq!(err.to_string(), "2 x86_64 agents ready but all cordoned");
    assert_eq!(
        place(&x86, &[a], Strategy::Spread).unwrap_err().to_string(),
        "1 x86_64 agent ready but cordoned"
    );
}

#[test]
fn placement_explains_gpu_blockers() {
    let pool = small_pool("nvidia", Arch::X86_64, 1.0, 1).with_gpu(GpuVendor::Nvidia, 1);
    let plain = agent(1, Arch::X86_64, 8, 16);
    assert_eq!(
        place(&pool, &[plain], Strategy::Spread)
            .unwrap_err()
            .to_string(),
        "no ready, uncordoned x86_64 agent has an NVIDIA GPU"
    );

    let mut a = agent(1, Arch::X86_64, 32, 64);
    let mut b = agent(2, Arch::X86_64, 32, 64);
    for (ag, prefix) in [(&mut a, "A"), (&mut b, "B")] {
        for i in 0..2 {
            let uuid = format!("GPU-{prefix}{i}");
            ag.gpus.push(gpu(GpuVendor::Nvidia, &uuid, 16, None));
            ag.assigned_gpus.insert(uuid);
        }
    }
    let err = place(&pool, &[a.clone(), b.clone()], Strategy::Spread).unwrap_err();
    assert_eq!(err.to_string(), "all NVIDIA GPUs busy (4 of 4 assigned)");

    // Two free GPUs, but on different agents: a 2-GPU runner still cannot go.
    a.assigned_gpus.remove("GPU-A0");
    b.assigned_gpus.remove("GPU-B1");
    let two = small_pool("nvidia2", Arch::X86_64, 1.0, 1).with_gpu(GpuVendor::Nvidia, 2);
    assert_eq!(
        place(&two, &[a.clone(), b.clone()], Strategy::Spread)
            .unwrap_err()
            .to_string(),
        "no agent has 2 free NVIDIA GPUs (2 of 4 assigned)"
    );

    let mut big = pool.clone();
    big.gpu.as_mut().unwrap().min_memory = Some(ByteSize::gib(24));
    assert_eq!(
        place(&big, &[a.clone(), b.clone()], Strategy::Spread)
            .unwrap_err()
            .to_string(),
        "no agent has an NVIDIA GPU with at least 24.0 GiB memory (largest: 16.0 GiB)"
    );

    let amd = small_pool("amd", Arch::X86_64, 1.0, 1).with_gpu(GpuVendor::Amd, 1);
    let mut c = agent(3, Arch::X86_64, 8, 16);
    c.gpus
        .push(gpu(GpuVendor::Amd, "pci-0000:03:00.0", 16, None));
    assert_eq!(
        place(&amd, std::slice::from_ref(&c), Strategy::Spread)
            .unwrap_err()
            .to_string(),
        "no agent has an AMD GPU with a render node"
    );
    let mut amd_big = amd.clone();
    amd_big.gpu.as_mut().unwrap().min_memory = Some(ByteSize::gib(8));
    assert_eq!(
        place(&amd_big, &[c], Strategy::Spread)
            .unwrap_err()
            .to_string(),
        "no agent has an AMD GPU with a render node and at least 8.0 GiB memory"
    );
}

#[test]
fn placement_explains_cpu_and_memory_blockers() {
    let mut a = agent(1, Arch::X86_64, 16, 16);
    a.allocated_memory = 12 * GIB + GIB / 2;
    let b = agent(2, Arch::X86_64, 16, 8);
    let pool = small_pool("big", Arch::X86_64, 2.0, 24);
    assert_eq!(
        place(&pool, &[a.clone(), b.clone()], Strategy::Spread)
            .unwrap_err()
            .to_string(),
        "no agent has 24.0 GiB free memory (most free: 8.0 GiB)"
    );

    let cpu_hungry = small_pool("cpu", Arch::X86_64, 32.0, 1);
    assert_eq!(
        place(&cpu_hungry, &[a.clone(), b.clone()], Strategy::Spread)
            .unwrap_err()
            .to_string(),
        "no agent has 32 free CPUs (most free: 16)"
    );

    let mut c = agent(3, Arch::X86_64, 2, 64);
    c.allocated_cpu = 0.5;
    let both = small_pool("both", Arch::X86_64, 4.0, 12);
    assert_eq!(
        place(&both, &[b, c], Strategy::Spread)
            .unwrap_err()
            .to_string(),
        "no agent has both 4 free CPUs and 12.0 GiB free memory (1 agent short of CPU, 1 agent short of memory)"
    );

    // With a GPU requirement the message says which agents were considered.
    let mut g = agent(4, Arch::X86_64, 4, 4);
    g.gpus.push(gpu(GpuVendor::Nvidia, "GPU-x", 16, None));
    let gpu_pool = small_pool("g", Arch::X86_64, 1.0, 8).with_gpu(GpuVendor::Nvidia, 1);
    assert_eq!(
        place(&gpu_pool, &[g], Strategy::Spread)
            .unwrap_err()
            .to_string(),
        "no agent with a free NVIDIA GPU has 8.0 GiB free memory (most free: 4.0 GiB)"
    );
}

#[test]
fn placement_never_uses_wrong_arch_even_when_it_is_emptier() {
    let pool = small_pool("arm64", Arch::Aarch64, 1.0, 1);
    let mut busy_arm = agent(9, Arch::Aarch64, 4, 8);
    busy_arm.runner_count = 3;
    busy_arm.allocated_cpu = 3.0;
    let idle_x86 = agent(1, Arch::X86_64, 64, 256);
    let p = place(&pool, &[idle_x86, busy_arm], Strategy::Spread).unwrap();
    assert_eq!(p.agent_id, id(9));
}

#[test]
fn spread_and_binpack_choose_differently() {
    let pool = small_pool("amd64", Arch::X86_64, 1.0, 1);
    let mut loaded = agent(1, Arch::X86_64, 8, 16);
    loaded.runner_count = 3;
    loaded.allocated_cpu = 3.0;
    loaded.allocated_memory = 3 * GIB;
    let empty = agent(2, Arch::X86_64, 8, 16);
    let mut full = agent(3, Arch::X86_64, 8, 16);
    full.runner_count = 8;
    full.allocated_cpu = 8.0;
    full.allocated_memory = 8 * GIB;
    let agents = [loaded, empty, full];
    assert_eq!(
        place(&pool, &agents, Strategy::Spread).unwrap().agent_id,
        id(2)
    );
    assert_eq!(
        place(&pool, &agents, Strategy::BinPack).unwrap().agent_id,
        id(1)
    );
}

#[test]
fn spread_prefers_fewer_runners_then_more_free_resources() {
    let pool = small_pool("amd64", Arch::X86_64, 1.0, 1);
    let small = agent(1, Arch::X86_64, 4, 8);
    let large = agent(2, Arch::X86_64, 32, 64);
    let mut crowded = agent(3, Arch::X86_64, 128, 512);
    crowded.runner_count = 1;
    crowded.allocated_cpu = 1.0;
    crowded.allocated_memory = GIB;
    let agents = [small, large, crowded];
    assert_eq!(
        place(&pool, &agents, Strategy::Spread).unwrap().agent_id,
        id(2)
    );
    // Bin-packing fills the small host first.
    assert_eq!(
        place(&pool, &agents, Strategy::BinPack).unwrap().agent_id,
        id(1)
    );
}

#[test]
fn ties_go_to_the_lowest_agent_id_whatever_the_order() {
    let pool = small_pool("amd64", Arch::X86_64, 1.0, 1);
    let agents = vec![
        agent(30, Arch::X86_64, 8, 16),
        agent(7, Arch::X86_64, 8, 16),
        agent(12, Arch::X86_64, 8, 16),
    ];
    for strategy in [Strategy::Spread, Strategy::BinPack] {
        let mut reversed = agents.clone();
        reversed.reverse();
        assert_eq!(place(&pool, &agents, strategy).unwrap().agent_id, id(7));
        assert_eq!(place(&pool, &reversed, strategy).unwrap().agent_id, id(7));
    }
}

#[test]
fn gpu_placements_carry_uuids_and_device_nodes() {
    let mut host = agent(1, Arch::X86_64, 32, 128);
    host.gpus = vec![
        gpu(GpuVendor::Nvidia, "GPU-big", 80, None),
        gpu(GpuVendor::Nvidia, "GPU-small", 16, None),
        gpu(GpuVendor::Nvidia, "GPU-taken", 16, None),
        gpu(GpuVendor::Amd, "amd-0", 24, Some("/dev/dri/renderD128")),
        gpu(GpuVendor::Intel, "intel-0", 0, Some("/dev/dri/renderD129")),
    ];
    host.assigned_gpus.insert("GPU-taken".into());

    let nv = small_pool("nv", Arch::X86_64, 1.0, 1).with_gpu(GpuVendor::Nvidia, 1);
    let p = place(&nv, std::slice::from_ref(&host), Strategy::Spread).unwrap();
    assert_eq!(p.gpus, ["GPU-small"], "smallest free fitting GPU");
    assert!(p.render_nodes.is_empty());
    assert!(device_nodes(Some(GpuVendor::Nvidia), &p).is_empty());

    let mut nv_big = nv.clone();
    nv_big.gpu.as_mut().unwrap().min_memory = Some(ByteSize::gib(40));
    let p = place(&nv_big, std::slice::from_ref(&host), Strategy::Spread).unwrap();
    assert_eq!(p.gpus, ["GPU-big"]);

    let amd = small_pool("amd", Arch::X86_64, 1.0, 1).with_gpu(GpuVendor::Amd, 1);
    let p = place(&amd, std::slice::from_ref(&host), Strategy::Spread).unwrap();
    assert_eq!(p.gpus, ["amd-0"]);
    assert_eq!(p.render_nodes, ["/dev/dri/renderD128"]);
    assert_eq!(
        device_nodes(Some(GpuVendor::Amd), &p),
        ["/dev/kfd", "/dev/dri/renderD128"]
    );

    let intel = small_pool("intel", Arch::X86_64, 1.0, 1).with_gpu(GpuVendor::Intel, 1);
    let p = place(&intel, std::slice::from_ref(&host), Strategy::Spread).unwrap();
    assert_eq!(p.render_nodes, ["/dev/dri/renderD129"]);
    assert_eq!(
        device_nodes(Some(GpuVendor::Intel), &p),
        ["/dev/dri/renderD129"]
    );
}

// ----------------------------------------------------------------- plan

#[test]
fn idle_min_keeps_a_warm_pool() {
    let mut pool = small_pool("amd64", Arch::X86_64, 1.0, 1);
    pool.idle_min = 2;
    let agents = vec![agent(1, Arch::X86_64, 8, 16)];
    let p = plan(&input(vec![pool.clone()], &[], vec![], agents.clone()));
    assert_eq!(p.starts.len(), 2);
    assert!(p.stops.is_empty() && p.unmet.is_empty());

    // Two warm runners idle for an hour are kept: they are the idle_min.
    let warm = vec![
        runner(1, "amd64", 1, idle_for(60)),
        runner(2, "amd64", 1, idle_for(60)),
    ];
    let p = plan(&input(
        vec![pool.clone()],
        &[],
        warm.clone(),
        agents.clone(),
    ));
    assert_eq!(p, Plan::default());

    // A job arrives: one more runner so a warm one stays free.
    let p = plan(&input(vec![pool], &[("amd64", 1)], warm, agents));
    assert_eq!(p.starts.len(), 1);
}

#[test]
fn pending_jobs_are_met_by_available_runners_first() {
    let pool = small_pool("amd64", Arch::X86_64, 1.0, 1);
    let runners = vec![
        runner(1, "amd64", 1, idle_for(1)),
        runner(2, "amd64", 1, RunnerState::Provisioning),
        runner(3, "amd64", 1, RunnerState::Busy),
        runner(4, "amd64", 1, RunnerState::Stopping),
    ];
    let mut pool = pool;
    pool.max_runners = 10;
    let p = plan(&input(
        vec![pool],
        &[("amd64", 5)],
        runners,
        vec![agent(1, Arch::X86_64, 16, 32)],
    ));
    assert_eq!(p.starts.len(), 3, "5 pending - 2 available");
    assert!(p.starts.iter().all(|s| s.placement.agent_id == id(1)));
}

#[test]
fn max_runners_caps_starts_and_reports_the_rest() {
    let mut pool = small_pool("amd64", Arch::X86_64, 1.0, 1);
    pool.max_runners = 4;
    let runners = vec![
        runner(1, "amd64", 1, RunnerState::Busy),
        // Stopping runners do not count toward max_runners.
        runner(2, "amd64", 1, RunnerState::Stopping),
    ];
    let p = plan(&input(
        vec![pool],
        &[("amd64", 10)],
        runners,
        vec![agent(1, Arch::X86_64, 64, 64)],
    ));
    assert_eq!(p.starts.len(), 3);
    assert_eq!(
        p.unmet,
        vec![Unmet {
            pool: "amd64".into(),
            needed: 7,
            reason: UnmetReason::MaxRunners { max_runners: 4 },
        }]
    );
    assert_eq!(p.unmet[0].reason.to_string(), "pool is at max_runners (4)");
}

#[test]
fn idle_runners_past_timeout_stop_only_down_to_demand() {
    let mut pool = small_pool("amd64", Arch::X86_64, 1.0, 1);
    pool.idle_timeout = Duration::from_secs(5 * 60);
    pool.idle_min = 1;
    let runners = vec![
        runner(1, "amd64", 1, idle_for(6)),
        runner(2, "amd64", 1, idle_for(10)),
        runner(3, "amd64", 1, idle_for(1)),
        runner(4, "amd64", 1, RunnerState::Busy),
    ];
    let agents = vec![agent(1, Arch::X86_64, 16, 32)];
    let p = plan(&input(
        vec![pool.clone()],
        &[],
        runners.clone(),
        agents.clone(),
    ));
    let stopped: Vec<(Uuid, StopReason)> =
        p.stops.iter().map(|s| (s.runner_id, s.reason)).collect();
    assert_eq!(
        stopped,
        [
            (id(2), StopReason::IdleTimeout),
            (id(1), StopReason::IdleTimeout)
        ],
        "longest idle first; the 1-minute runner is the warm one"
    );
    assert!(p.starts.is_empty());

    // One pending job: keep one more.
    let p = plan(&input(
        vec![pool.clone()],
        &[("amd64", 1)],
        runners.clone(),
        agents.clone(),
    ));
    assert_eq!(
        p.stops.iter().map(|s| s.runner_id).collect::<Vec<_>>(),
        [id(2)]
    );

    // Not yet timed out: nothing stops even though there is a surplus.
    let mut patient = pool;
    patient.idle_timeout = Duration::from_secs(3600);
    let p = plan(&input(vec![patient], &[], runners, agents));
    assert_eq!(p, Plan::default());
}

#[test]
fn busy_runners_are_never_stopped_even_over_capacity() {
    let mut pool = small_pool("amd64", Arch::X86_64, 1.0, 1);
    pool.max_runners = 2;
    let runners = vec![
        runner(1, "amd64", 1, RunnerState::Busy),
        runner(2, "amd64", 1, RunnerState::Busy),
        runner(3, "amd64", 1, RunnerState::Busy),
        runner(4, "amd64", 1, idle_for(0)),
        runner(5, "amd64", 1, RunnerState::Provisioning),
    ];
    let p = plan(&input(
        vec![pool],
        &[("amd64", 4)],
        runners,
        vec![agent(1, Arch::X86_64, 16, 32)],
    ));
    let stopped: Vec<(Uuid, StopReason)> =
        p.stops.iter().map(|s| (s.runner_id, s.reason)).collect();
    assert_eq!(
        stopped,
        [
            (id(4), StopReason::OverCapacity),
            (id(5), StopReason::OverCapacity)
        ]
    );
    assert!(p.starts.is_empty());
    assert_eq!(p.unmet.len(), 1);
    assert_eq!(p.unmet[0].needed, 4);
}

#[test]
fn runners_of_removed_pools_are_stopped_unless_busy() {
    let pool = small_pool("amd64", Arch::X86_64, 1.0, 1);
    let runners = vec![
        runner(1, "gone", 1, idle_for(0)),
        runner(2, "gone", 1, RunnerState::Busy),
        runner(3, "gone", 1, RunnerState::Provisioning),
        runner(4, "gone", 1, RunnerState::Stopping),
    ];
    let p = plan(&input(
        vec![pool],
        &[],
        runners,
        vec![agent(1, Arch::X86_64, 16, 32)],
    ));
    let stopped: Vec<(Uuid, StopReason)> =
        p.stops.iter().map(|s| (s.runner_id, s.reason)).collect();
    assert_eq!(
        stopped,
        [
            (id(1), StopReason::PoolRemoved),
            (id(3), StopReason::PoolRemoved)
        ]
    );
}

#[test]
fn a_plan_never_gives_a_gpu_twice() {
    let mut pool = small_pool("nvidia", Arch::X86_64, 1.0, 1).with_gpu(GpuVendor::Nvidia, 1);
    pool.max_runners = 10;
    let mut host = agent(1, Arch::X86_64, 32, 64);
    host.gpus = vec![
        gpu(GpuVendor::Nvidia, "GPU-0", 16, None),
        gpu(GpuVendor::Nvidia, "GPU-1", 16, None),
        gpu(GpuVendor::Nvidia, "GPU-2", 16, None),
    ];
    // GPU-0 is held by a busy runner the agent view does not know about yet.
    let mut busy = runner(1, "nvidia", 1, RunnerState::Busy);
    busy.gpus = vec!["GPU-0".into()];
    let p = plan(&input(vec![pool], &[("nvidia", 3)], vec![busy], vec![host]));
    let given: Vec<&str> = p
        .starts
        .iter()
        .flat_map(|s| s.placement.gpus.iter().map(String::as_str))
        .collect();
    assert_eq!(given, ["GPU-1", "GPU-2"]);
    assert_eq!(p.unmet.len(), 1);
    assert_eq!(p.unmet[0].needed, 1);
    assert_eq!(
        p.unmet[0].reason.to_string(),
        "all NVIDIA GPUs busy (3 of 3 assigned)"
    );
}

#[test]
fn starts_in_one_plan_share_agent_capacity() {
    let mut pool = small_pool("amd64", Arch::X86_64, 2.0, 1);
    pool.max_runners = 10;
    let p = plan(&input(
        vec![pool],
        &[("amd64", 3)],
        vec![],
        vec![agent(1, Arch::X86_64, 4, 64)],
    ));
    assert_eq!(p.starts.len(), 2);
    assert_eq!(p.unmet.len(), 1);
    assert_eq!(p.unmet[0].needed, 1);
    assert_eq!(
        p.unmet[0].reason.to_string(),
        "no agent has 2 free CPUs (most free: 0)"
    );
}

#[test]
fn starts_are_shared_round_robin_between_pools() {
    let mut a = small_pool("a", Arch::X86_64, 1.0, 1);
    let mut b = small_pool("b", Arch::X86_64, 1.0, 1);
    a.max_runners = 10;
    b.max_runners = 10;
    let p = plan(&input(
        vec![a, b],
        &[("a", 6), ("b", 6)],
        vec![],
        vec![agent(1, Arch::X86_64, 4, 64)],
    ));
    assert_eq!(starts_per_pool(&p), BTreeMap::from([("a", 2), ("b", 2)]));
    assert_eq!(
        p.unmet
            .iter()
            .map(|u| (u.pool.as_str(), u.needed))
            .collect::<Vec<_>>(),
        [("a", 4), ("b", 4)]
    );
}

#[test]
fn spread_plan_distributes_and_binpack_plan_fills() {
    let mut pool = small_pool("amd64", Arch::X86_64, 1.0, 1);
    pool.max_runners = 10;
    let agents = vec![agent(1, Arch::X86_64, 4, 16), agent(2, Arch::X86_64, 4, 16)];
    let mut inp = input(vec![pool], &[("amd64", 4)], vec![], agents);
    let on = |p: &Plan| {
        p.starts
            .iter()
            .map(|s| s.placement.agent_id.as_u128())
            .collect::<Vec<_>>()
    };
    assert_eq!(on(&plan(&inp)), [1, 2, 1, 2]);
    inp.strategy = Strategy::BinPack;
    assert_eq!(on(&plan(&inp)), [1, 1, 1, 1]);
}

#[test]
fn clock_skew_counts_as_not_idle() {
    let pool = small_pool("amd64", Arch::X86_64, 1.0, 1);
    let future = RunnerState::Idle {
        since: NOW + time::Duration::hours(1),
    };
    let p = plan(&input(
        vec![pool],
        &[],
        vec![runner(1, "amd64", 1, future)],
        vec![],
    ));
    assert!(p.stops.is_empty());
}

// ---------------------------------------------------------- trust labels

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The hardware a compromised host would claim: arm64, 8 NVIDIA GPUs and
/// 2 TiB of memory.
fn rogue(n: u128) -> AgentView {
    let mut a = agent(n, Arch::Aarch64, 256, 2048);
    a.gpus = (0..8)
        .map(|i| gpu(GpuVendor::Nvidia, &format!("GPU-fake-{i}"), 80, None))
        .collect();
    a
}

fn deploy_pool() -> Pool {
    let mut p = Pool::new("deploy", &["deploy"], Arch::Aarch64).with_gpu(GpuVendor::Nvidia, 2);
    p.agent_selector = labels(&[("trust", "deploy")]);
    p
}

#[test]
fn agent_selector_parses_validates_and_round_trips() {
    let p = parse_one(
        "[[pools]]\nname = \"deploy\"\ntags = [\"deploy\"]\narch = \"x86_64\"\nagent_selector = { trust = \"deploy\", zone = \"eu-1\" }\n",
    );
    assert_eq!(
        p.agent_selector,
        labels(&[("trust", "deploy"), ("zone", "eu-1")])
    );
    p.validate().expect("valid");
    let json = serde_json::to_string(&p).expect("serialise");
    assert!(
        json.contains(r#""agent_selector":{"trust":"deploy","zone":"eu-1"}"#),
        "{json}"
    );
    assert_eq!(serde_json::from_str::<Pool>(&json).expect("parse"), p);

    let plain = parse_one("[[pools]]\nname = \"a\"\ntags = [\"a\"]\narch = \"x86_64\"\n");
    assert!(plain.agent_selector.is_empty(), "no selector by default");

    let mut bad = Pool::new("deploy", &["deploy"], Arch::X86_64);
    bad.agent_selector = labels(&[("trust", "de ploy")]);
    let err = validate_err(&bad);
    assert!(
        err.starts_with("pool 'deploy': agent_selector.trust label \"trust\": value \"de ploy\""),
        "{err}"
    );
    bad.agent_selector = labels(&[("-x", "y")]);
    assert!(validate_err(&bad).contains("agent_selector.-x label key \"-x\""));
    let err = parse(
        "[[pools]]\nname = \"a\"\ntags = [\"a\"]\narch = \"x86_64\"\nagent_selector = { trust = 1 }\n",
    )
    .expect_err("a number is not a label value");
    assert!(err.contains("agent_selector"), "{err}");
}

#[test]
fn a_selector_pool_never_goes_to_an_agent_without_the_trust_labels_whatever_it_claims() {
    let pool = deploy_pool();
    let err = place(&pool, &[rogue(1)], Strategy::Spread).unwrap_err();
    assert_eq!(
        err,
        Unplaceable::MissingLabels {
            missing: labels(&[("trust", "deploy")])
        }
    );
    assert_eq!(err.to_string(), "no agent with label trust=deploy");

    // A label with another value, or only in some other key, is not it.
    let mut wrong = rogue(1);
    wrong.trust_labels = labels(&[("trust", "build"), ("deploy", "trust")]);
    assert_eq!(
        place(&pool, &[wrong], Strategy::Spread)
            .unwrap_err()
            .to_string(),
        "no agent with label trust=deploy"
    );

    // The operator labels it: now it is eligible, on its claimed hardware.
    let mut labelled = rogue(1);
    labelled.trust_labels = labels(&[("trust", "deploy")]);
    let placed = place(&pool, &[rogue(2), labelled], Strategy::Spread).expect("placed");
    assert_eq!(placed.agent_id, id(1));
    assert_eq!(placed.gpus.len(), 2);

    // A pool without a selector behaves as before: the rogue gets it.
    let mut open = deploy_pool();
    open.agent_selector.clear();
    assert_eq!(
        place(&open, &[rogue(2)], Strategy::Spread).map(|p| p.agent_id),
        Ok(id(2))
    );
}

#[test]
fn selector_reasons_name_the_missing_pairs_and_then_the_hardware() {
    let mut pool = deploy_pool();
    pool.agent_selector = labels(&[("trust", "deploy"), ("zone", "eu")]);
    // One pair nobody has: only that one is named.
    let mut a = rogue(1);
    a.trust_labels = labels(&[("trust", "deploy")]);
    assert_eq!(
        place(&pool, &[a.clone()], Strategy::Spread)
            .unwrap_err()
            .to_string(),
        "no agent with label zone=eu"
    );
    // Each pair on some agent, none with both: the whole selector.
    let mut b = rogue(2);
    b.trust_labels = labels(&[("zone", "eu")]);
    assert_eq!(
        place(&pool, &[a, b], Strategy::Spread)
            .unwrap_err()
            .to_string(),
        "no agent with labels trust=deploy, zone=eu"
    );

    // Labelled agents exist, but not of the pool's arch.
    let pool = deploy_pool();
    let mut x86 = agent(3, Arch::X86_64, 8, 16);
    x86.trust_labels = labels(&[("trust", "deploy")]);
    let err = place(&pool, &[x86.clone(), rogue(4)], Strategy::Spread).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no aarch64 agent with label trust=deploy (1 aarch64 agent without)"
    );
    // Labelled and of the arch, but without the GPUs: the GPU is the blocker.
    let mut arm = agent(5, Arch::Aarch64, 8, 16);
    arm.trust_labels = labels(&[("trust", "deploy")]);
    let err = place(&pool, &[arm, rogue(4)], Strategy::Spread).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no ready, uncordoned aarch64 agent has 2 NVIDIA GPUs"
    );
}

#[test]
fn the_plan_reports_the_missing_label_as_unmet() {
    let plan = plan(&input(
        vec![deploy_pool()],
        &[("deploy", 2)],
        vec![],
        vec![rogue(1)],
    ));
    assert!(plan.starts.is_empty(), "{plan:?}");
    assert_eq!(plan.unmet.len(), 1);
    assert_eq!(plan.unmet[0].needed, 2);
    assert_eq!(
        plan.unmet[0].reason.to_string(),
        "no agent with label trust=deploy"
    );
}

#[test]
fn a_pool_across_architectures_has_an_image_and_helper_per_architecture() {
    let pool = parse_one(
        r#"
        [[pools]]
        name = "any"
        tags = ["portable"]
        arch = ["x86_64", "arm64"]
        image = { x86_64 = "registry.local/runner:amd64", aarch64 = "registry.local/runner:arm64" }
        helper_image = { aarch64 = "registry.local/helper:arm64" }
        "#,
    );
    assert!(pool.arch.contains(Arch::X86_64) && pool.arch.contains(Arch::Aarch64));
    assert!(!pool.arch.contains(Arch::Riscv64));
    assert_eq!(pool.arch.to_string(), "x86_64 or aarch64");
    let token = SecretString::from("glrt-TOPSECRET");
    let on = |arch| Placement {
        agent_id: id(1),
        arch,
        gpus: vec![],
        render_nodes: vec![],
    };
    let x86 = render_runner(&pool, "https://gl", &token, "r1", &on(Arch::X86_64)).unwrap();
    let arm = render_runner(&pool, "https://gl", &token, "r2", &on(Arch::Aarch64)).unwrap();
    assert_eq!(x86.image, "registry.local/runner:amd64");
    assert_eq!(arm.image, "registry.local/runner:arm64");
    assert!(!x86.command.iter().any(|a| a == "--docker-helper-image"));
    assert!(
        arm.command
            .windows(2)
            .any(|w| w[0] == "--docker-helper-image" && w[1] == "registry.local/helper:arm64"),
        "{:?}",
        arm.command
    );
    // Round trip: the table forms come back.
    let back: Pool = serde_json::from_str(&serde_json::to_string(&pool).unwrap()).unwrap();
    assert_eq!(back, pool);

    // The plan places the pool's runners on both architectures.
    let agents = vec![
        agent(1, Arch::X86_64, 2, 8),
        agent(2, Arch::Aarch64, 2, 8),
        agent(3, Arch::Riscv64, 64, 256),
    ];
    let mut small = pool.clone();
    small.cpu_limit = 2.0;
    let input = PlanInput {
        pools: vec![small],
        pending: BTreeMap::from([("any".to_string(), 3)]),
        runners: vec![],
        agents,
        strategy: Strategy::Spread,
        now: datetime!(2026-11-30 09:00 UTC),
    };
    let plan = plan(&input);
    let mut on_agents: Vec<Uuid> = plan.starts.iter().map(|s| s.placement.agent_id).collect();
    on_agents.sort();
    assert_eq!(
        on_agents,
        vec![id(1), id(2)],
        "one each on x86_64 and aarch64, none on riscv64"
    );
    assert_eq!(
        plan.unmet[0].reason.to_string(),
        "no agent has 2 free CPUs (most free: 0)",
        "the riscv64 agent's free CPUs do not count"
    );
    // Why pending names every architecture the pool accepts.
    let mut far = pool.clone();
    far.arch = Archs::of([Arch::Aarch64, Arch::Riscv64]).unwrap();
    let only_x86 = vec![agent(1, Arch::X86_64, 8, 32)];
    assert_eq!(
        place(&far, &only_x86, Strategy::Spread)
            .unwrap_err()
            .to_string(),
        "no aarch64 or riscv64 agent ready (none enrolled)"
    );
}

#[test]
fn multi_architecture_mistakes_are_named() {
    let base = "[[pools]]\nname = \"x\"\ntags = [\"x\"]\n";
    for (extra, want) in [
        (
            "arch = []",
            "pool 'x': arch must name at least one architecture",
        ),
        ("arch = [\"x86_64\", \"ppc64le\"]", "ppc64le"),
        (
            "arch = [\"x86_64\", \"aarch64\"]\nimage = { x86_64 = \"r:1\" }",
            "pool 'x': image has no entry for aarch64",
        ),
        (
            "arch = \"x86_64\"\nimage = { riscv64 = \"r:1\", x86_64 = \"r:1\" }",
            "pool 'x': image.riscv64 names riscv64, which is not one of the pool's arch (x86_64)",
        ),
        ("arch = \"x86_64\"\nimage = { sparc = \"r:1\" }", "sparc"),
        (
            "arch = \"x86_64\"\nhelper_image = { x86_64 = \"two words\" }",
            "pool 'x': helper_image.x86_64 \"two words\" is not an image reference",
        ),
    ] {
        let toml = format!("{base}{extra}\n");
        let err = parse(&toml)
            .and_then(|p| validate_pools(&p).map_err(|e| e.to_string()))
            .expect_err(extra);
        assert!(err.contains(want), "{extra}: {err}");
    }
}

#[test]
fn a_riscv64_pool_asks_for_a_helper_flavour_that_exists() {
    let riscv = Pool::new("rv", &["riscv64"], Arch::Riscv64);
    assert!(
        riscv
            .command
            .windows(2)
            .any(|w| w[0] == "--docker-helper-image-flavor" && w[1] == "alpine-latest"),
        "{:?}",
        riscv.command
    );
    let x86 = Pool::new("x", &["x"], Arch::X86_64);
    assert!(
        !x86.command
            .iter()
            .any(|a| a.starts_with("--docker-helper-image"))
    );
}

// ------------------------------------------------------------ warm images

fn holding(mut a: AgentView, images: &[&str]) -> AgentView {
    a.images = std::sync::Arc::new(images.iter().map(|i| images::normalise(i)).collect());
    a
}

#[test]
fn a_warm_agent_is_chosen_over_emptier_cold_ones_under_either_strategy() {
    let mut pool = small_pool("p", Arch::X86_64, 1.0, 1);
    pool.image = "registry.example:5000/ci/runner".into();
    let mut busy_warm = holding(
        agent(3, Arch::X86_64, 8, 16),
        &["registry.example:5000/ci/runner:latest"],
    );
    busy_warm.runner_count = 5;
    busy_warm.allocated_cpu = 5.0;
    busy_warm.allocated_memory = 5 * GIB;
    let empty_cold = agent(1, Arch::X86_64, 8, 16);
    let other_image = holding(
        agent(2, Arch::X86_64, 8, 16),
        &["registry.example:5000/ci/other"],
    );
    let agents = [empty_cold, other_image, busy_warm];
    for strategy in [Strategy::Spread, Strategy::BinPack] {
        let p = place(&pool, &agents, strategy).unwrap();
        assert_eq!(
            p.agent_id,
            id(3),
            "{strategy:?}: the agent holding the image"
        );
    }
    // Without a warm agent the strategy alone decides, as before.
    let p = place(&pool, &agents[..2], Strategy::Spread).unwrap();
    assert_eq!(p.agent_id, id(1));
    // Warm but full: the cold agent that fits gets it.
    let mut full = agents.clone();
    full[2].allocated_cpu = 8.0;
    assert_eq!(
        place(&pool, &full, Strategy::Spread).unwrap().agent_id,
        id(1)
    );
}

#[test]
fn a_two_arch_pool_is_warm_where_the_agent_holds_its_own_architectures_image() {
    let mut pool = small_pool("p", Arch::X86_64, 1.0, 1);
    pool.arch = Archs::of([Arch::X86_64, Arch::Aarch64]).unwrap();
    pool.image = "reg:5000/runner:amd64".into();
    pool.images
        .insert(Arch::Aarch64, "reg:5000/runner:arm64".into());
    // The x86 agent holds only the arm image: cold for it.
    let x86 = holding(agent(1, Arch::X86_64, 8, 16), &["reg:5000/runner:arm64"]);
    let arm = holding(agent(2, Arch::Aarch64, 8, 16), &["reg:5000/runner:arm64"]);
    let mut loaded_arm = arm.clone();
    loaded_arm.runner_count = 3;
    let p = place(&pool, &[x86.clone(), loaded_arm], Strategy::Spread).unwrap();
    assert_eq!((p.agent_id, p.arch), (id(2), Arch::Aarch64));
    // Any spelling of the reference counts.
    let mut x86_warm = x86;
    x86_warm.images = std::sync::Arc::new([images::normalise("reg:5000/runner:amd64")].into());
    assert!(x86_warm.holds("reg:5000/runner:amd64") && !arm.holds("reg:5000/runner:amd64"));
}
