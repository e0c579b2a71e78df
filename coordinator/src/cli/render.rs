//! Tables for people, JSON for programs. Every renderer takes the JSON the
//! admin API serves (or the offline equivalent), so both modes print alike.

use serde_json::Value;

use crate::output::{Output, table};

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(x) if x.is_empty() => "-".into(),
        Value::String(x) => x.clone(),
        other => other.to_string(),
    }
}

fn short(v: &Value) -> String {
    s(v).chars().take(8).collect()
}

fn labels(v: &Value) -> String {
    match v.as_object() {
        Some(m) if !m.is_empty() => m
            .iter()
            .map(|(k, v)| format!("{k}={}", s(v)))
            .collect::<Vec<_>>()
            .join(","),
        _ => "-".into(),
    }
}

fn gpus(v: &Value) -> String {
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for g in v.as_array().into_iter().flatten() {
        *counts.entry(s(&g["vendor"])).or_default() += 1;
    }
    if counts.is_empty() {
        return "-".into();
    }
    counts
        .iter()
        .map(|(k, n)| format!("{n}x{k}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn print(
    out: Output,
    rows: &[Value],
    headers: &[&str],
    cells: impl Fn(&Value) -> Vec<String>,
) -> anyhow::Result<()> {
    match out {
        Output::Json => println!("{}", serde_json::to_string_pretty(rows)?),
        Output::Table => print!(
            "{}",
            table(headers, &rows.iter().map(cells).collect::<Vec<_>>())
        ),
    }
    Ok(())
}

/// One object: pretty JSON either way (it nests too deep for a table).
pub fn one(_out: Output, v: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub fn agents(out: Output, rows: &[Value]) -> anyhow::Result<()> {
    print(
        out,
        rows,
        &[
            "ID",
            "HOSTNAME",
            "ARCH",
            "STATE",
            "LAST SEEN",
            "GPUS",
            "RUNNERS",
            "TRUST LABELS",
        ],
        |a| {
            let mut state = s(&a["state"]);
            if a["drain"]["drained_at"].is_string() {
                state.push_str(",drained");
            } else if a["drain"].is_object() {
                state.push_str(",draining");
            } else if a["cordoned"] == true {
                state.push_str(",cordoned");
            }
            vec![
                s(&a["id"]),
                s(&a["hostname"]),
                s(&a["arch"]),
                state,
                s(&a["last_seen"]),
                gpus(&a["gpus"]),
                s(&a["runners"]),
                labels(&a["trust_labels"]),
            ]
        },
    )
}

pub fn runners(out: Output, rows: &[Value]) -> anyhow::Result<()> {
    print(
        out,
        rows,
        &[
            "ID",
            "POOL",
            "AGENT",
            "STATE",
            "GITLAB",
            "JOB",
            "IMAGE",
            "CREATED",
            "FINISHED",
            "EXIT/REASON",
        ],
        |r| {
            let exit = match (&r["exit_code"], &r["reason"]) {
                (Value::Null, Value::Null) => "-".into(),
                (c, Value::Null) => s(c),
                (Value::Null, m) => s(m),
                (c, m) => format!("{}: {}", s(c), s(m)),
            };
            vec![
                s(&r["id"]),
                s(&r["pool"]),
                short(&r["agent_id"]),
                s(&r["state"]),
                s(&r["gitlab_runner_id"]),
                s(&r["job_id"]),
                s(&r["image"]),
                s(&r["created_at"]),
                s(&r["finished_at"]),
                exit,
            ]
        },
    )
}

pub fn tokens(out: Output, rows: &[Value]) -> anyhow::Result<()> {
    print(
        out,
        rows,
        &["ID", "STATUS", "USES", "EXPIRES", "LABELS", "DESCRIPTION"],
        |t| {
            vec![
                s(&t["id"]),
                s(&t["status"]),
                format!("{}/{}", s(&t["uses"]), s(&t["max_uses"])),
                s(&t["expires_at"]),
                labels(&t["labels"]),
                s(&t["description"]),
            ]
        },
    )
}

pub fn admin_tokens(out: Output, rows: &[Value]) -> anyhow::Result<()> {
    print(
        out,
        rows,
        &[
            "ID",
            "NAME",
            "ROLE",
            "CREATED",
            "EXPIRES",
            "REVOKED",
            "LAST USED",
        ],
        |t| {
            vec![
                s(&t["id"]),
                s(&t["name"]),
                s(&t["role"]),
                s(&t["created_at"]),
                s(&t["expires_at"]),
                s(&t["revoked"]),
                s(&t["last_used_at"]),
            ]
        },
    )
}

pub fn admin_sessions(out: Output, rows: &[Value]) -> anyhow::Result<()> {
    print(
        out,
        rows,
        &["ID", "ACTOR", "ROLE", "VIA", "TOKEN", "CREATED", "EXPIRES"],
        |r| {
            vec![
                s(&r["id"]),
                s(&r["actor"]),
                s(&r["role"]),
                s(&r["via"]),
                s(&r["token_id"]),
                s(&r["created_at"]),
                s(&r["expires_at"]),
            ]
        },
    )
}

pub fn admin_certs(out: Output, rows: &[Value]) -> anyhow::Result<()> {
    print(
        out,
        rows,
        &["SERIAL", "NAME", "ROLE", "CREATED", "NOT AFTER", "REVOKED"],
        |c| {
            vec![
                s(&c["serial"]),
                s(&c["name"]),
                s(&c["role"]),
                s(&c["created_at"]),
                s(&c["not_after"]),
                s(&c["revoked_at"]),
            ]
        },
    )
}

pub fn pools(out: Output, rows: &[Value]) -> anyhow::Result<()> {
    print(
        out,
        rows,
        &[
            "POOL",
            "TAGS",
            "ARCH",
            "DEMAND",
            "RUNNING",
            "IDLE",
            "MAX",
            "WARM",
            "STOCK",
            "WINDOW",
            "NEXT CHANGE",
            "OBJECTIVE",
            "UNMET REASON",
        ],
        |p| {
            let tags = p["tags"]
                .as_array()
                .map(|t| t.iter().map(s).collect::<Vec<_>>().join(","))
                .unwrap_or_default();
            vec![
                s(&p["name"]),
                tags,
                s(&p["arch"]),
                s(&p["demand"]),
                s(&p["running"]),
                s(&p["idle"]),
                s(&p["max_runners"]),
                s(&p["idle_min"]),
                stock(p),
                active_windows(p),
                s(&p["next_change"]),
                wait_objective(&p["wait_objective"]),
                s(&p["unmet_reason"]),
            ]
        },
    )
}

/// A pool's GitLab runners in stock against its `stock`, e.g. `1/2`; `-`
/// for a pool that keeps none.
fn stock(p: &Value) -> String {
    match p["stock"].as_u64() {
        None | Some(0) => "-".into(),
        Some(n) => format!("{}/{n}", p["stocked"].as_u64().unwrap_or(0)),
    }
}

/// A pool's wait objective and the share of jobs that met it, e.g.
/// `30s: 97% 1h / 99% 24h`; `-` for a window without a measured job, or
/// for a pool without an objective. Shares are rounded down, so 100% means
/// every job met it.
fn wait_objective(o: &Value) -> String {
    if o.is_null() {
        return "-".into();
    }
    let share = |key: &str| match o[key].as_f64() {
        // 0.29 * 100.0 is 28.999…: nudge before rounding down.
        Some(r) => format!("{}%", (r * 100.0 + 1e-9).floor()),
        None => "-".into(),
    };
    format!(
        "{}: {} 1h / {} 24h",
        s(&o["target"]),
        share("met_1h"),
        share("met_24h")
    )
}

pub fn jobs(out: Output, rows: &[Value]) -> anyhow::Result<()> {
    print(
        out,
        rows,
        &["PROJECT", "JOB", "NAME", "TAGS", "POOL", "REASON", "SEEN"],
        |j| {
            let tags = j["tags"]
                .as_array()
                .map(|t| t.iter().map(s).collect::<Vec<_>>().join(","))
                .unwrap_or_default();
            vec![
                s(&j["project_id"]),
                s(&j["job_id"]),
                s(&j["name"]),
                tags,
                s(&j["pool"]),
                s(&j["reason"]),
                s(&j["seen_at"]),
            ]
        },
    )
}

pub fn events(out: Output, page: &Value) -> anyhow::Result<()> {
    let rows = page["events"].as_array().cloned().unwrap_or_default();
    match out {
        Output::Json => println!("{}", serde_json::to_string_pretty(page)?),
        Output::Table => {
            print(
                out,
                &rows,
                &["ID", "AT", "KIND", "ACTOR", "AGENT", "RUNNER", "DETAIL"],
                |e| {
                    vec![
                        s(&e["id"]),
                        s(&e["at"]),
                        s(&e["kind"]),
                        s(&e["actor"]),
                        short(&e["agent_id"]),
                        short(&e["runner_id"]),
                        e["detail"].to_string(),
                    ]
                },
            )?;
            if !page["next_before"].is_null() {
                println!("(more: --before {})", page["next_before"]);
            }
        }
    }
    Ok(())
}

/// What `reload` applied: one line per kind of pool change, and the
/// sections that wait for a restart.
pub fn reloaded(out: Output, v: &Value) -> anyhow::Result<()> {
    if out == Output::Json {
        return one(out, v);
    }
    let names = |key: &str| {
        v["pools"][key]
            .as_array()
            .map(|a| a.iter().map(s).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    let mut any = false;
    for (key, what) in [
        ("added", "pools added"),
        ("removed", "pools removed (busy runners finish their job)"),
        ("changed", "pools changed (idle runners are replaced)"),
        ("resized", "pools resized"),
    ] {
        let n = names(key);
        if !n.is_empty() {
            any = true;
            println!("{what}: {}", n.join(", "));
        }
    }
    if !any {
        println!("config reloaded: no pool changed");
    }
    if let Some(r) = v["restart_needed"].as_array().filter(|r| !r.is_empty()) {
        let r: Vec<String> = r.iter().map(s).collect();
        println!("changed, applies at the next restart: {}", r.join(", "));
    }
    Ok(())
}

/// The active schedule windows of a pool row ("-" when none is).
fn active_windows(p: &Value) -> String {
    let active: Vec<String> = p["schedule"]
        .as_array()
        .map(|ws| {
            ws.iter()
                .filter(|w| w["active"].as_bool() == Some(true))
                .map(|w| format!("{} {}", s(&w["cron"]), s(&w["timezone"])))
                .collect()
        })
        .unwrap_or_default();
    if active.is_empty() {
        "-".into()
    } else {
        active.join("; ")
    }
}

/// `cluster status`: the lease, then one row per replica.
pub fn cluster(out: Output, status: &crate::cluster::Status) -> anyhow::Result<()> {
    if out == Output::Json {
        println!("{}", serde_json::to_string_pretty(status)?);
        return Ok(());
    }
    let secs = |ms: i64| format!("{:.1}s", ms as f64 / 1000.0);
    println!("epoch:  {}", status.epoch);
    match (&status.leader, status.lease_age_ms) {
        (Some(id), Some(age)) => println!(
            "leader: {id} (lease taken {} ago, runs out in {} unless renewed)",
            secs(age),
            secs(status.lease_expires_in_ms)
        ),
        _ => println!("leader: none (the lease has run out; a replica will take it)"),
    }
    let rows: Vec<Value> = status
        .replicas
        .iter()
        .map(|r| serde_json::to_value(r).unwrap_or_default())
        .collect();
    print(
        out,
        &rows,
        &["ID", "ROLE", "HOST", "HTTP", "GRPC", "LAST SEEN"],
        |r| {
            vec![
                s(&r["id"]),
                s(&r["role"]),
                s(&r["hostname"]),
                s(&r["http_addr"]),
                s(&r["grpc_addr"]),
                format!("{} ago", secs(r["last_seen_ms_ago"].as_i64().unwrap_or(0))),
            ]
        },
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn the_objective_column_shows_the_target_and_both_shares_rounded_down() {
        let o = json!({"target": "30s", "target_seconds": 30.0,
            "met_1h": 0.999, "jobs_1h": 1000, "met_24h": 1.0, "jobs_24h": 5000});
        assert_eq!(super::wait_objective(&o), "30s: 99% 1h / 100% 24h");
        let quiet = json!({"target": "1m 30s", "target_seconds": 90.0,
            "met_1h": null, "jobs_1h": 0, "met_24h": 0.5, "jobs_24h": 2});
        assert_eq!(super::wait_objective(&quiet), "1m 30s: - 1h / 50% 24h");
        let exact = json!({"target": "5s", "met_1h": 0.29, "met_24h": 0.57});
        assert_eq!(super::wait_objective(&exact), "5s: 29% 1h / 57% 24h");
        assert_eq!(super::wait_objective(&serde_json::Value::Null), "-");
        let pool = |stock: u64, stocked: u64| json!({"stock": stock, "stocked": stocked});
        assert_eq!(super::stock(&pool(2, 1)), "1/2");
        assert_eq!(super::stock(&pool(0, 0)), "-");
        assert_eq!(super::stock(&serde_json::Value::Null), "-");
    }
}
