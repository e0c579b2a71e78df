//! Placeholders in a pool's `command` and `env` values, filled by the
//! coordinator for each runner it starts.
//!
//! Syntax: `{name}` is replaced; `{{` and `}}` stand for literal braces. Any
//! other `{` or `}` is an error, and so is an unknown name: pool validation
//! rejects both, so a typo fails at startup rather than in a container.
//!
//! | placeholder      | value                                                       |
//! |------------------|-------------------------------------------------------------|
//! | `{gitlab_url}`   | the GitLab base URL runners talk to                         |
//! | `{runner_token}` | the runner's `glrt-` token (a secret; `env` only, never `command`) |
//! | `{runner_id}`    | AutoGit's id of this runner                                 |
//! | `{pool}`         | the pool's name                                             |
//! | `{gpu_uuids}`    | the assigned GPUs' uuids, comma-separated (empty if none)   |
//! | `{docker_gpus}`  | the assigned NVIDIA GPUs in Docker `--gpus` syntax          |
//! | `{render_node}`  | the assigned AMD/Intel GPU's render node (`gpu.count = 1`)  |
//!
//! `{docker_gpus}` renders `device=GPU-a` for one GPU and `"device=GPU-a,GPU-b"`
//! (quoted, as Docker's CSV parser needs) for several; gitlab-runner's
//! `--docker-gpus` takes exactly that syntax.
//!
//! The rendered strings may contain the runner token: [`RenderedRunner`]'s
//! `Debug` hides every value, and callers must never log them. Pool
//! validation (`config/pool.rs`) refuses `{runner_token}` in `command`, so
//! the token never reaches a process's argv; `runners/spec.rs` passes it as
//! `CI_SERVER_TOKEN`.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};

use crate::scheduler::{Placement, Pool};

/// Every placeholder name a template may use.
pub const PLACEHOLDERS: [&str; 7] = [
    "gitlab_url",
    "runner_token",
    "runner_id",
    "pool",
    "gpu_uuids",
    "docker_gpus",
    "render_node",
];

/// The values placeholders are filled with, for one runner.
#[derive(Debug, Clone, Copy)]
pub struct TemplateVars<'a> {
    pub gitlab_url: &'a str,
    pub runner_token: &'a SecretString,
    pub runner_id: &'a str,
    pub pool: &'a str,
    pub placement: &'a Placement,
}

/// A template that cannot be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("uses unknown placeholder {{{name}}} (known: {known})", known = known_list())]
    UnknownPlaceholder { name: String },
    #[error("has an unclosed '{{' at byte {at} (write '{{{{' for a literal brace)")]
    Unclosed { at: usize },
    #[error("has a stray '}}' at byte {at} (write '}}}}' for a literal brace)")]
    StrayClose { at: usize },
}

fn known_list() -> String {
    PLACEHOLDERS
        .iter()
        .map(|p| format!("{{{p}}}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One piece of a parsed template.
enum Piece<'t> {
    Text(&'t str),
    Placeholder(&'t str),
}

/// Splits a template into literal text and placeholders, checking syntax
/// and names.
fn parse(template: &str) -> Result<Vec<Piece<'_>>, TemplateError> {
    let bytes = template.as_bytes();
    let mut pieces = Vec::new();
    let mut text_start = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'{' if bytes.get(i + 1) == Some(&b'{') => {
                pieces.push(Piece::Text(&template[text_start..=i]));
                i += 2;
                text_start = i;
            }
            b'}' if bytes.get(i + 1) == Some(&b'}') => {
                pieces.push(Piece::Text(&template[text_start..=i]));
                i += 2;
                text_start = i;
            }
            b'{' => {
                let close = template[i + 1..]
                    .find(['}', '{'])
                    .map(|off| i + 1 + off)
                    .filter(|&c| bytes[c] == b'}')
                    .ok_or(TemplateError::Unclosed { at: i })?;
                let name = &template[i + 1..close];
                if !PLACEHOLDERS.contains(&name) {
                    return Err(TemplateError::UnknownPlaceholder {
                        name: name.to_owned(),
                    });
                }
                pieces.push(Piece::Text(&template[text_start..i]));
                pieces.push(Piece::Placeholder(name));
                i = close + 1;
                text_start = i;
            }
            b'}' => return Err(TemplateError::StrayClose { at: i }),
            _ => i += 1,
        }
    }
    pieces.push(Piece::Text(&template[text_start..]));
    Ok(pieces)
}

/// The placeholder names a template uses, after checking its syntax.
pub fn placeholders_in(template: &str) -> Result<Vec<&str>, TemplateError> {
    Ok(parse(template)?
        .into_iter()
        .filter_map(|p| match p {
            Piece::Placeholder(name) => Some(name),
            Piece::Text(_) => None,
        })
        .collect())
}

/// Fills a template's placeholders. Pure: same inputs, same output.
pub fn render_template(template: &str, vars: &TemplateVars<'_>) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(template.len());
    for piece in parse(template)? {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Placeholder(name) => out.push_str(&value_of(name, vars)),
        }
    }
    Ok(out)
}

fn value_of(name: &str, vars: &TemplateVars<'_>) -> String {
    let p = vars.placement;
    match name {
        "gitlab_url" => vars.gitlab_url.to_owned(),
        "runner_token" => vars.runner_token.expose_secret().to_owned(),
        "runner_id" => vars.runner_id.to_owned(),
        "pool" => vars.pool.to_owned(),
        "gpu_uuids" => p.gpus.join(","),
        "docker_gpus" => docker_gpus(&p.gpus),
        "render_node" => p.render_nodes.first().cloned().unwrap_or_default(),
        // `parse` only yields names from PLACEHOLDERS.
        _ => String::new(),
    }
}

/// Docker's `--gpus` syntax for exactly these devices.
pub fn docker_gpus(uuids: &[String]) -> String {
    match uuids {
        [] => String::new(),
        [one] => format!("device={one}"),
        many => format!("\"device={}\"", many.join(",")),
    }
}

/// The runner flag that names the job helper image (a pool's
/// `helper_image` for the placement's architecture).
pub const HELPER_IMAGE_FLAG: &str = "--docker-helper-image";

/// Fills `pool`'s command and env templates for one runner, with the image
/// (and helper image, appended to the command) for the placement's
/// architecture.
pub fn render_runner(
    pool: &Pool,
    gitlab_url: &str,
    runner_token: &SecretString,
    runner_id: &str,
    placement: &Placement,
) -> Result<RenderedRunner, TemplateError> {
    let vars = TemplateVars {
        gitlab_url,
        runner_token,
        runner_id,
        pool: &pool.name,
        placement,
    };
    let mut command: Vec<String> = pool
        .command
        .iter()
        .map(|arg| render_template(arg, &vars))
        .collect::<Result<_, _>>()?;
    if let Some(helper) = pool.helper_image.get(&placement.arch) {
        command.extend([HELPER_IMAGE_FLAG.to_owned(), helper.clone()]);
    }
    let env = pool
        .env
        .iter()
        .map(|(k, v)| Ok((k.clone(), render_template(v, &vars)?)))
        .collect::<Result<_, TemplateError>>()?;
    Ok(RenderedRunner {
        image: pool.image_for(placement.arch).to_owned(),
        command,
        env,
    })
}

/// A pool's command and environment with placeholders filled: what goes into
/// the runner container's spec. Holds the runner token, so `Debug` shows
/// only the shape.
#[derive(Clone, PartialEq, Eq)]
pub struct RenderedRunner {
    pub image: String,
    pub command: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl fmt::Debug for RenderedRunner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RenderedRunner")
            .field("image", &self.image)
            .field(
                "command",
                &format_args!("[{} args, redacted]", self.command.len()),
            )
            .field(
                "env",
                &self.env.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn placement(gpus: &[&str], render_nodes: &[&str]) -> Placement {
        Placement {
            agent_id: Uuid::nil(),
            arch: crate::scheduler::Arch::X86_64,
            gpus: gpus.iter().map(|s| s.to_string()).collect(),
            render_nodes: render_nodes.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn render(t: &str, p: &Placement) -> Result<String, TemplateError> {
        let token = SecretString::from("glrt-secret");
        let vars = TemplateVars {
            gitlab_url: "https://gitlab.example",
            runner_token: &token,
            runner_id: "r-1",
            pool: "amd64",
            placement: p,
        };
        render_template(t, &vars)
    }

    #[test]
    fn fills_every_placeholder() {
        let p = placement(&["GPU-a", "GPU-b"], &["/dev/dri/renderD129"]);
        assert_eq!(
            render(
                "{gitlab_url}|{runner_token}|{runner_id}|{pool}|{gpu_uuids}",
                &p
            )
            .unwrap(),
            "https://gitlab.example|glrt-secret|r-1|amd64|GPU-a,GPU-b"
        );
        assert_eq!(
            render("{docker_gpus}", &p).unwrap(),
            "\"device=GPU-a,GPU-b\""
        );
        assert_eq!(render("{render_node}", &p).unwrap(), "/dev/dri/renderD129");
        let one = placement(&["GPU-a"], &[]);
        assert_eq!(render("{docker_gpus}", &one).unwrap(), "device=GPU-a");
        assert_eq!(render("x{gpu_uuids}y", &placement(&[], &[])).unwrap(), "xy");
    }

    #[test]
    fn doubled_braces_are_literal() {
        let p = placement(&[], &[]);
        assert_eq!(
            render("{{\"a\": \"{pool}\"}}", &p).unwrap(),
            "{\"a\": \"amd64\"}"
        );
        assert_eq!(render("no placeholders", &p).unwrap(), "no placeholders");
        assert_eq!(render("", &p).unwrap(), "");
    }

    #[test]
    fn rejects_unknown_and_malformed() {
        let p = placement(&[], &[]);
        assert_eq!(
            render("{runner_tokn}", &p),
            Err(TemplateError::UnknownPlaceholder {
                name: "runner_tokn".into()
            })
        );
        assert_eq!(render("a{pool", &p), Err(TemplateError::Unclosed { at: 1 }));
        assert_eq!(
            render("{po{pool}", &p),
            Err(TemplateError::Unclosed { at: 0 })
        );
        assert_eq!(render("a}b", &p), Err(TemplateError::StrayClose { at: 1 }));
        assert!(matches!(
            render("{}", &p),
            Err(TemplateError::UnknownPlaceholder { .. })
        ));
        let msg = render("{nope}", &p).unwrap_err().to_string();
        assert!(
            msg.contains("{nope}") && msg.contains("{runner_token}"),
            "{msg}"
        );
    }

    #[test]
    fn lists_placeholders() {
        assert_eq!(
            placeholders_in("--url {gitlab_url} {{x}} {pool}").unwrap(),
            vec!["gitlab_url", "pool"]
        );
    }

    #[test]
    fn rendered_debug_hides_token() {
        let r = RenderedRunner {
            image: "img".into(),
            command: vec!["--token".into(), "glrt-secret".into()],
            env: vec![("CI_SERVER_TOKEN".into(), "glrt-secret".into())],
        };
        let dbg = format!("{r:?}");
        assert!(!dbg.contains("glrt-secret"), "{dbg}");
        assert!(dbg.contains("CI_SERVER_TOKEN"), "{dbg}");
    }
}
